"""Wall-clock time and peak memory per phase (load, train, evaluate) of a run.

    python -c "from trainers.metering import Meter; m = Meter(); \
exec('with m.phase(\"x\"): bytearray(10**8)'); print(m.as_dict())"

On CPU the peak is the phase's own peak resident set: the kernel's high-water mark (VmHWM) is
reset at the start of each phase, because `ru_maxrss` is a process-lifetime peak and would carry
one phase's peak into the next. On a GPU: CUDA `max_memory_allocated` / `max_memory_reserved`
(reset per phase) and NVML's per-process usage, which includes the CUDA context, polled (the
device found by UUID; missing, not zero, where NVML cannot see this process).
"""
from __future__ import annotations

import os
import resource
import threading
import time
from contextlib import contextmanager

import torch

from trainers.distributed import say

MiB = 2**20


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


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
    def __init__(self, device: torch.device | None = None):
        self.device = device or torch.device("cpu")
        self.phases: dict[str, dict] = {}
        self._started = time.perf_counter()

    @contextmanager
    def phase(self, name: str):
        cuda = self.device.type == "cuda"
        scoped = _reset_rss_peak()
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        poller = _nvml_poller(self.device) if cuda else None
        start, finished = time.perf_counter(), False
        try:
            if poller:
                with poller:
                    yield
            else:
                yield
            finished = True
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            rec = {"seconds": round(time.perf_counter() - start, 3), "peak_rss_mib": round(_rss_peak_mib(), 1),
                   "peak_rss_scope": "phase" if scoped else "process"}
            if cuda:
                rec["cuda_max_allocated_mib"] = round(torch.cuda.max_memory_allocated(self.device) / MiB, 1)
                rec["cuda_max_reserved_mib"] = round(torch.cuda.max_memory_reserved(self.device) / MiB, 1)
                if poller:  # None: NVML does not list this process (another PID namespace) or failed
                    rec["nvml_process_peak_mib"] = None if poller.peak_mib is None else round(poller.peak_mib, 1)
                    if poller.error:
                        rec["nvml_error"] = poller.error
            self.phases[name] = _merge(self.phases[name], rec) if name in self.phases else rec
            if finished:  # a phase that raised leaves the terminal to its error
                say(f"{name}: {rec['seconds']:.1f} s, peak {rec.get('cuda_max_allocated_mib', rec['peak_rss_mib']):.0f} MiB")

    def as_dict(self) -> dict:
        peaks = [p.get("cuda_max_allocated_mib", p["peak_rss_mib"]) for p in self.phases.values()]
        return {"phases": self.phases, "total_seconds": round(time.perf_counter() - self._started, 3),
                "peak_memory_mib": max(peaks, default=0.0),
                "peak_memory_kind": "cuda_max_allocated" if self.device.type == "cuda" else "rss"}


def _merge(old: dict, new: dict) -> dict:
    """A phase entered twice (e.g. evaluation after every epoch): times add up, peaks take the max."""
    out = dict(new)
    out["seconds"] = round(old["seconds"] + new["seconds"], 3)
    for k, v in old.items():
        if k.endswith("_mib"):
            known = [x for x in (v, new.get(k)) if x is not None]
            out[k] = max(known) if known else None
    return out
