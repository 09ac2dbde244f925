"""Wall-clock time and peak memory per phase (load, train, evaluate) of a run.

    python -c "from trainers.runtime.metering import Meter; m = Meter(); \
exec('with m.phase(\"x\"): bytearray(10**8)'); print(m.as_dict())"

On CPU the peak is the phase's own peak resident set: the kernel's high-water mark (VmHWM) is
reset at the start of each phase, because `ru_maxrss` is a process-lifetime peak and would carry
one phase's peak into the next. On a GPU: CUDA `max_memory_allocated` / `max_memory_reserved`
(reset per phase) and NVML's per-process usage, which includes the CUDA context, polled (the
device found by UUID; missing, not zero, where NVML cannot see this process).
"""
from __future__ import annotations

import ctypes
import gc
import os
import resource
import threading
import time
from contextlib import contextmanager, nullcontext

import torch

from trainers.runtime.distributed import say

MiB = 2**20
# What adapting a model to the task costs, beyond loading it: the teacher's targets (CD), the
# training steps and the per-epoch dev evaluation that selects and prunes. The teacher's own
# evaluation ("teacher_eval") repeats ICL and is reported apart; "serve" is the in-domain set
# scored as deployed, "evaluate" the other sets, "diagnostics" what only the record needs.
SETUP_PHASE = "teacher_targets"  # a distilling method's teacher pass: adaptation time, carried by its first report
ADAPTATION_PHASES = (SETUP_PHASE, "train", "dev")
_GATE = None  # inside a sweep: trials on one node/device take turns with serving (orchestrator/engine/gate.py)


def set_gate(gate) -> None:
    """`gate.hold(exclusive: bool)` -> context manager yielding whether the turn was granted; every
    top-level phase holds it shared, "serve" exclusively. None (a single run): no turns."""
    global _GATE
    _GATE = gate


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Collect garbage and return the C heap's free pages to the kernel (glibc's malloc_trim)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the peak may include memory the allocator kept
        pass


def _rss_peak_mib() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _NvmlPoller:
    """Polls this process's GPU memory as NVML sees it; keeps the maximum.

    NVML numbers devices physically and ignores CUDA_VISIBLE_DEVICES (which Ray sets per worker),
    so the device is found by the CUDA device's UUID, never by its index. A process NVML does not
    list (a container with its own PID namespace) reads as missing (None), not as 0 MiB, and an
    NVML error stops the polling, never the run.
    """

    def __init__(self, uuid: str, pid: int | None = None, interval: float = 0.05, nvml=None):
        if nvml is None:
            import pynvml as nvml
        nvml.nvmlInit()
        self._nvml, self._handle = nvml, nvml.nvmlDeviceGetHandleByUUID(uuid)
        self._pid, self._interval = pid or os.getpid(), interval
        self.peak_mib: float | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        if self.error:
            return
        try:
            procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception as e:  # a driver hiccup must not fail a finished run
            self.error = f"{type(e).__name__}: {e}"
            return
        used = [p.usedGpuMemory for p in procs if p.pid == self._pid and p.usedGpuMemory is not None]
        if used:
            self.peak_mib = max(self.peak_mib or 0.0, sum(used) / MiB)

    def _run(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def cuda_uuid(device: torch.device) -> str:
    """The CUDA device's UUID as NVML spells it ("GPU-…")."""
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _nvml_poller(device: torch.device):
    try:
        return _NvmlPoller(cuda_uuid(device))
    except Exception:  # no NVML library or driver: the CUDA allocator figures still stand
        return None


class Meter:
    """Per-phase wall-clock time and peak memory. A phase entered inside another (the dev
    evaluation inside training) pauses the outer one: the outer phase's seconds exclude it and its
    peak is taken over its own stretches only."""

    def __init__(self, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.phases: dict[str, dict] = {}
        self._started = time.perf_counter()
        self._open: list[dict] = []  # the phases entered and not yet left, innermost last
        self.serving: dict | None = None  # trainers.runtime.serving.measure's result, when the run measured it

    def _peak_now(self) -> dict:
        peak = {"peak_rss_mib": _rss_peak_mib()}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) / MiB
            peak["cuda_max_reserved_mib"] = torch.cuda.max_memory_reserved(self.device) / MiB
        return peak

    def _reset(self) -> bool:
        scoped = _reset_rss_peak()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return scoped

    @contextmanager
    def phase(self, name: str, trim: bool = False):
        """`trim`: hand freed heap memory back to the system first, so the phase's peak resident set
        is what the phase holds (serving after training), not what the allocator kept. Yields the
        phase's state: its wall-clock start, how long it waited for its turn (inside a sweep) and
        whether it ran alone ("serve")."""
        exclusive, gated = name == "serve", _GATE is not None and not self._open
        waited_from = time.perf_counter() if gated else 0.0
        with _GATE.hold(exclusive) if gated else nullcontext(None) as granted:
            waited = time.perf_counter() - waited_from if gated else 0.0
            with self._phase(name, trim) as state:
                state.update(waited=waited, exclusive=bool(granted) and exclusive)
                yield state

    @contextmanager
    def _phase(self, name: str, trim: bool):
        cuda = self.device.type == "cuda"
        if self._open:  # pause the enclosing phase: bank its time and peak so far
            outer = self._open[-1]
            outer["seconds"] += time.perf_counter() - outer["start"]
            outer["peaks"].append(self._peak_now())
        if trim:
            _trim_heap()
        state = {"start": time.perf_counter(), "seconds": 0.0, "peaks": [], "scoped": self._reset(),
                 "start_wall": time.time()}
        self._open.append(state)
        poller = _nvml_poller(self.device) if cuda and len(self._open) == 1 else None
        finished = False
        try:
            if poller:
                with poller:
                    yield state
            else:
                yield state
            finished = True
        finally:
            self._open.pop()
            state["peaks"].append(self._peak_now())
            rec = {"seconds": round(state["seconds"] + time.perf_counter() - state["start"], 3)}
            for key in state["peaks"][0]:
                rec[key] = round(max(p[key] for p in state["peaks"]), 1)
            rec["peak_rss_scope"] = "phase" if state["scoped"] else "process"
            rec["wall"] = [[round(state["start_wall"], 3), round(time.time(), 3)]]  # when, for overlap checks
            if poller:  # None: NVML does not list this process (another PID namespace) or failed
                rec["nvml_process_peak_mib"] = None if poller.peak_mib is None else round(poller.peak_mib, 1)
                if poller.error:
                    rec["nvml_error"] = poller.error
            self.phases[name] = _merge(self.phases[name], rec) if name in self.phases else rec
            if self._open:  # resume the enclosing phase
                self._open[-1]["start"] = time.perf_counter()
                self._reset()
            if finished:  # a phase that raised leaves the terminal to its error
                say(f"{name}: {rec['seconds']:.1f} s, peak {rec.get('cuda_max_allocated_mib', rec['peak_rss_mib']):.0f} MiB")

    def as_dict(self) -> dict:
        peaks = [p.get("cuda_max_allocated_mib", p["peak_rss_mib"]) for p in self.phases.values()]
        out = {"phases": self.phases, "total_seconds": round(time.perf_counter() - self._started, 3),
               "peak_memory_mib": max(peaks, default=0.0),
               "peak_memory_kind": "cuda_max_allocated" if self.device.type == "cuda" else "rss"}
        if self.serving:
            out["serving_measured"] = self.serving
        return out


def _merge(old: dict, new: dict) -> dict:
    """A phase entered twice (e.g. evaluation after every epoch): times add up, peaks take the max."""
    out = dict(new)
    out["seconds"] = round(old["seconds"] + new["seconds"], 3)
    if "wall" in old or "wall" in new:
        out["wall"] = old.get("wall", []) + new.get("wall", [])
    for k, v in old.items():
        if k.endswith("_mib"):
            known = [x for x in (v, new.get(k)) if x is not None]
            out[k] = max(known) if known else None
    return out


def costs(resources: dict, dev_selects: bool = True) -> dict:
    """The record's cost summary: adaptation seconds (the teacher's targets, training, and the dev
    passes when they select something: an epoch, a pruning decision; a replicate that keeps its last
    epoch has them reported as `dev_seconds_uncharged`), and the serving cost `serving.measure` took."""
    phases = resources.get("phases") or {}
    charged = [p for p in ADAPTATION_PHASES if p != "dev" or dev_selects]
    out = {"adaptation_seconds": round(sum(phases[p]["seconds"] for p in charged if p in phases), 3)}
    if not dev_selects and "dev" in phases:
        out["dev_seconds_uncharged"] = phases["dev"]["seconds"]
    measured, serve = resources.get("serving_measured"), phases.get("serve")
    if measured and serve:
        cuda = "cuda_max_allocated_mib" in serve
        out["serving"] = {**measured, "peak_memory_mib": serve["cuda_max_allocated_mib" if cuda else "peak_rss_mib"],
                          "memory_kind": "cuda_max_allocated" if cuda else "rss"}
    return out
