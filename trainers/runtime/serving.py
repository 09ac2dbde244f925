"""Serving cost: what one query costs the adapted model, measured alone, repeated, with CPU time.

    python -m trainers run --method icl --task rte --model PATH --data-dir ../shared/data --eval-limit 64

After a run's evaluation, `measure` scores a fixed sample of in-domain queries as the model would be
deployed (ICL with its k demonstrations behind their key/value cache, built once before timing; the
trained models the query alone), at the run's `eval_batch_size`: one warm-up pass, then
`serve_repeats` timed passes. The record keeps the median milliseconds per query and its spread,
the process CPU time per query beside it, the peak memory of the phase, its wall-clock start and
end and where it ran. Inside a sweep the phase runs alone on its node (CPU) or device (GPU): the
metering's gate (`trainers.runtime.metering.set_gate`) holds every other trial's phases back meanwhile, so
no other trial's training or serving shares the machine with the timed passes.
"""
from __future__ import annotations

import socket
import statistics
import time
from typing import Callable

from trainers.contract import Serving
from trainers.runtime.metering import Meter
from trainers.data.tasks import Example


def _device(meter: Meter) -> str:
    """The device serving ran on: "cpu", or the GPU's UUID (which card, whatever the worker's index)."""
    if meter.device.type == "cuda":
        from trainers.runtime.metering import cuda_uuid
        return cuda_uuid(meter.device)
    return meter.device.type


def measure(predict: Callable[[list[Example], str], object], examples: list[Example], meter: Meter,
            batch_size: int, queries: int, repeats: int) -> Serving | None:
    """Time `predict` on the first `queries` examples, `repeats` times after a warm-up, in the meter's
    "serve" phase; None when there is nothing to serve."""
    sample = list(examples[:queries])
    if not sample:
        return None
    with meter.phase("serve", trim=True) as phase:
        predict(sample[:batch_size], "serve warm-up")  # caches built, allocator and kernels warm
        wall, cpu = [], []
        for i in range(repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            predict(sample, f"serve {i + 1}/{repeats}")
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        end = time.time()  # inside the phase: its turn is released only after
    n = len(sample)
    ms = sorted(1000 * w / n for w in wall)
    return Serving(ms_per_query=round(statistics.median(ms), 3), ms_per_query_runs=[round(x, 3) for x in ms],
                   spread_ms=[round(ms[0], 3), round(ms[-1], 3)],
                   cpu_ms_per_query=round(statistics.median(1000 * c / n for c in cpu), 3),
                   queries=n, repeats=repeats, batch_size=batch_size,
                   waited_seconds=round(phase.waited, 3), exclusive=phase.exclusive,
                   start=round(phase.start_wall, 3), end=round(end, 3), node=socket.gethostname(), device=_device(meter))
