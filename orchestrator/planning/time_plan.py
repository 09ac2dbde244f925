"""Planned seconds per trial, before any trial has run: a sweep's first ETA.

    python -m orchestrator sweep --space quickstart     # "6 trials to run, 2 at a time, ETA ~9m (planned)"

A trial's work is counted in floating-point operations from its configuration and the model's
shape (`trainers.runtime.memory_plan.shape_of`, the config alone): 2 per parameter and token for a forward
pass, 6 for a training step of every weight (4 when only adapters or biases train: no weight
gradients for the frozen ones), plus attention over the demonstrations' cache for each query token.
Token counts are the mean prompt length preflight measured per task and model. The rate is a
matmul this machine runs at the start (fp32, the trial's threads) times an efficiency measured
once against real trials (`EFFICIENCY`); a GPU trial assumes `GPU_FLOPS`. Each trial adds Ray's
fixed start-up and teardown (`RAY_OVERHEAD_S`). Once trials finish, the sweep's ETA uses their
measured durations instead; this estimate only fills the gap before the first one ends.
"""
from __future__ import annotations

import functools
import time

from trainers.config import RunConfig
from trainers.methods import spec

RAY_OVERHEAD_S = 9.5  # a worker group's start and stop on a 2-core machine (results/bench/sweep_overhead.md: 9.25 s)
IN_PROCESS_OVERHEAD_S = 2.0  # a one-worker trial inside its Tune trial (resources.in_process: 1.85 s measured there)
EFFICIENCY = 0.35  # transformer layers at small batch reach this share of a large matmul's rate on CPU (fitted: quickstart)
GPU_FLOPS = 100e12  # bf16 on a current data-centre GPU at moderate utilisation; a guess until a GPU run says otherwise
DEFAULT_TOKENS = 64  # prompt tokens of one example when preflight measured none


@functools.lru_cache(maxsize=8)
def cpu_flops(threads: int = 1) -> float:
    """This machine's fp32 matmul rate with `threads` threads (best of three 512 x 512 x 512 products)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(8):
            a @ b
        best = min(best, time.perf_counter() - start)
    torch.set_num_threads(before)
    return 8 * 2 * 512 ** 3 / best


def trial_flops(run: RunConfig, params: float, layers: int, kv_width: int, tokens: float, sets: dict[str, int]) -> float:
    """Floating-point operations of one trial. `run`: its resolved config; `tokens`: the mean prompt
    tokens of one example; `sets`: evaluation set sizes (in-domain and OOD) before --eval-limit."""
    def limited(name: str, n: int) -> int:
        limit = run.eval_limit if name == "in_domain" else run.ood_limit or run.eval_limit
        return min(n, limit) if limit else n

    queries = sum(limited(name, n) for name, n in sets.items()) if run.final_eval else 0
    method, shots, epochs = run.method, run.shots, run.train.epochs
    per_step = 6 * params if run.peft.kind == "none" else 4 * params
    forward = 2 * params

    def with_context(n_queries: float) -> float:  # the demonstrations once, then each query attends to them
        context = shots * tokens
        return forward * (context + n_queries * tokens) + n_queries * tokens * 4 * layers * kv_width * context

    dev = run.n_dev
    traits = spec.get(method)
    if not traits.trains:
        return with_context(dev + queries)
    train_rows = run.n_unlabeled if traits.distils else shots
    flops = epochs * (train_rows * tokens * per_step + dev * tokens * forward) + queries * tokens * forward
    if traits.distils:  # the teacher labels the unlabelled inputs (and, in a replicate, scores every set)
        flops += with_context(train_rows + dev + queries)
    return flops


def trial_seconds(run: RunConfig, shape, tokens: float | None, sets: dict[str, int], cpus: float, gpus: float,
                  in_process: bool = False) -> float:
    """Planned wall-clock seconds of one trial, Ray's overhead included (a worker group's, or an in-process trial's)."""
    kv_width = shape.kv_heads * shape.head_dim
    flops = trial_flops(run, shape.params, shape.layers, kv_width, tokens or DEFAULT_TOKENS, sets)
    rate = GPU_FLOPS * max(gpus, 0.1) if gpus else cpu_flops(int(max(1, cpus))) * EFFICIENCY
    load = shape.params * 4 / 400e6  # reading fp32 weights at ~400 MB/s
    return (IN_PROCESS_OVERHEAD_S if in_process else RAY_OVERHEAD_S) + load + flops / rate


def planned(space, has_gpus: bool) -> dict[tuple[str, str], float]:
    """(phase, cell id) -> planned seconds of one trial, for every cell whose model's shape is known."""
    from orchestrator.planning import plan
    from trainers.runtime.memory_plan import shape_of
    out = {}
    for cell in plan.cells(space):
        try:
            shape = shape_of(cell.model)
        except Exception:  # noqa: BLE001 - no estimate for this cell: the sweep waits for a measured one
            continue
        lengths = space.lengths.get(cell.task) or {}
        r = plan.resources(space, cell, has_gpus)
        for phase in ("search", "replicate"):
            run = plan.run_config(space, cell, space.tuning_data_seed, {}, final_eval=phase == "replicate")
            seconds = trial_seconds(run, shape, (lengths.get("tokens") or {}).get(cell.model), lengths.get("sets") or {},
                                    r.cpus_per_worker, r.gpus_per_worker, plan.in_process(r))
            out[(phase, cell.id)] = seconds / max(1, r.workers) ** 0.5  # data parallel helps, not linearly
    return out
