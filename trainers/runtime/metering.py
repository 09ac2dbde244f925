"""Wall-clock time and peak memory per phase (load, train, evaluate) of a run.

    python -c "from trainers.runtime.metering import Meter; m = Meter(); \
exec('with m.phase(\"x\"): bytearray(10**8)'); print(m.resources())"

On CPU the peak is the phase's own peak resident set: the kernel's high-water mark (VmHWM) is
reset at the start of each phase, because `ru_maxrss` is a process-lifetime peak and would carry
one phase's peak into the next. On a GPU: CUDA `max_memory_allocated` / `max_memory_reserved`
(reset per phase) and NVML's per-process usage, which includes the CUDA context, polled (the
device found by UUID; missing, not zero, where NVML cannot see this process).
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import os
import resource
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from trainers.contract import Phase, Resources, Serving
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


@dataclass
class Peak:
    """Memory high-water marks of one stretch of a phase, in MiB (CUDA's None on CPU)."""
    rss: float
    cuda_allocated: float | None = None
    cuda_reserved: float | None = None


@dataclass
class PhaseState:
    """An open phase, as `Meter.phase` yields it: when it started, the stretches it has run (a nested
    phase pauses it), how long it waited for its turn (inside a sweep) and whether it ran alone."""
    start: float                 # perf_counter at its last (re)start
    start_wall: float
    scoped: bool                 # the resident-set peak was reset for it (else it is the process's)
    seconds: float = 0.0
    peaks: list[Peak] = field(default_factory=list)
    waited: float = 0.0
    exclusive: bool = False


class Meter:
    """Per-phase wall-clock time and peak memory. A phase entered inside another (the dev
    evaluation inside training) pauses the outer one: the outer phase's seconds exclude it and its
    peak is taken over its own stretches only."""

    def __init__(self, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.phases: dict[str, Phase] = {}
        self._started = time.perf_counter()
        self._open: list[PhaseState] = []  # the phases entered and not yet left, innermost last
        self.serving: Serving | None = None  # trainers.runtime.serving.measure's result, when the run measured it

    def _peak_now(self) -> Peak:
        if self.device.type != "cuda":
            return Peak(_rss_peak_mib())
        torch.cuda.synchronize(self.device)
        return Peak(_rss_peak_mib(), torch.cuda.max_memory_allocated(self.device) / MiB,
                    torch.cuda.max_memory_reserved(self.device) / MiB)

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
        phase's `PhaseState`."""
        exclusive, gated = name == "serve", _GATE is not None and not self._open
        waited_from = time.perf_counter() if gated else 0.0
        with _GATE.hold(exclusive) if gated else nullcontext(None) as granted:
            waited = time.perf_counter() - waited_from if gated else 0.0
            with self._phase(name, trim) as state:
                state.waited, state.exclusive = waited, bool(granted) and exclusive
                yield state

    @contextmanager
    def _phase(self, name: str, trim: bool):
        cuda = self.device.type == "cuda"
        if self._open:  # pause the enclosing phase: bank its time and peak so far
            outer = self._open[-1]
            outer.seconds += time.perf_counter() - outer.start
            outer.peaks.append(self._peak_now())
        if trim:
            _trim_heap()
        state = PhaseState(start=time.perf_counter(), start_wall=time.time(), scoped=self._reset())
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
            state.peaks.append(self._peak_now())
            done = self._finished(state, poller)
            self.phases[name] = _merge(self.phases[name], done) if name in self.phases else done
            if self._open:  # resume the enclosing phase
                self._open[-1].start = time.perf_counter()
                self._reset()
            if finished:  # a phase that raised leaves the terminal to its error
                say(f"{name}: {done.seconds:.1f} s, peak {done.peak_mib:.0f} MiB")

    def _finished(self, state: PhaseState, poller) -> Phase:
        top = lambda get: None if get(state.peaks[0]) is None else round(max(get(p) for p in state.peaks), 1)  # noqa: E731
        return Phase(
            seconds=round(state.seconds + time.perf_counter() - state.start, 3), peak_rss_mib=top(lambda p: p.rss),
            cuda_max_allocated_mib=top(lambda p: p.cuda_allocated), cuda_max_reserved_mib=top(lambda p: p.cuda_reserved),
            peak_rss_scope="phase" if state.scoped else "process",
            wall=[[round(state.start_wall, 3), round(time.time(), 3)]],  # when, for overlap checks
            # None: NVML does not list this process (another PID namespace) or failed
            nvml_process_peak_mib=None if not poller or poller.peak_mib is None else round(poller.peak_mib, 1),
            nvml_error=poller.error if poller else None)

    def resources(self) -> Resources:
        """What the run cost so far, phase by phase, with the serving cost it measured (the record's
        `resources`; `trainers.records.build_record` adds the costs worked out from them)."""
        return Resources(phases=dict(self.phases), total_seconds=round(time.perf_counter() - self._started, 3),
                         peak_memory_mib=max((p.peak_mib for p in self.phases.values()), default=0.0),
                         peak_memory_kind="cuda_max_allocated" if self.device.type == "cuda" else "rss",
                         serving=self.serving)


_PEAKS = ("peak_rss_mib", "cuda_max_allocated_mib", "cuda_max_reserved_mib", "nvml_process_peak_mib")


def _merge(old: Phase, new: Phase) -> Phase:
    """A phase entered twice (e.g. evaluation after every epoch): times add up, peaks take the max."""
    peaks = {}
    for k in _PEAKS:
        known = [x for x in (getattr(old, k), getattr(new, k)) if x is not None]
        peaks[k] = max(known) if known else None
    return dataclasses.replace(new, seconds=round(old.seconds + new.seconds, 3), wall=old.wall + new.wall, **peaks)


def costs(resources: Resources, dev_selects: bool = True) -> Resources:
    """The record's cost summary: adaptation seconds (the teacher's targets, training, and the dev
    passes when they select something: an epoch, a pruning decision; a replicate that keeps its last
    epoch has them reported as `dev_seconds_uncharged`), and the serving cost `serving.measure` took,
    with the serve phase's peak memory."""
    phases = resources.phases
    charged = [p for p in ADAPTATION_PHASES if p != "dev" or dev_selects]
    serve, serving = phases.get("serve"), resources.serving
    if serving and serve:
        cuda = serve.cuda_max_allocated_mib is not None
        serving = dataclasses.replace(serving, peak_memory_mib=serve.peak_mib,
                                      memory_kind="cuda_max_allocated" if cuda else "rss")
    return dataclasses.replace(
        resources, adaptation_seconds=round(sum(phases[p].seconds for p in charged if p in phases), 3),
        dev_seconds_uncharged=phases["dev"].seconds if not dev_selects and "dev" in phases else None,
        serving=serving if serve else None)
