"""GPU memory as NVML reports it, checked against a stand-in NVML: found by UUID, missing is not zero, errors stay quiet."""
import dataclasses
import types

import torch

from trainers.runtime import metering
from trainers.contract import Phase, Resources, Serving, dump
from trainers.runtime.metering import MiB, _merge, _NvmlPoller, cuda_uuid


class FakeNvml:
    """The four pynvml calls the poller makes; `procs` per UUID, an optional failure."""

    def __init__(self, procs: dict[str, list[tuple[int, int | None]]], fail: Exception | None = None):
        self.procs, self.fail, self.lookups = procs, fail, []

    def nvmlInit(self):
        pass

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.lookups.append(uuid)
        return uuid

    def nvmlDeviceGetHandleByIndex(self, index):  # NVML's physical index: never the right device under Ray
        raise AssertionError("looked up by index")

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if self.fail:
            raise self.fail
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.procs[handle]]


def poll(nvml, uuid="GPU-b", pid=42) -> _NvmlPoller:
    with _NvmlPoller(uuid, pid=pid, interval=0.001, nvml=nvml) as poller:
        pass
    return poller


def test_the_device_is_found_by_uuid_and_only_this_process_counts():
    nvml = FakeNvml({"GPU-a": [(42, 9 * MiB)], "GPU-b": [(42, 300 * MiB), (7, 5000 * MiB)]})
    p = poll(nvml)
    assert nvml.lookups == ["GPU-b"] and p.peak_mib == 300.0 and p.error is None


def test_a_process_nvml_does_not_list_reads_as_missing_not_zero():
    p = poll(FakeNvml({"GPU-b": [(7, 5000 * MiB), (8, None)]}))  # another PID namespace: our pid is not there
    assert p.peak_mib is None


def test_an_nvml_error_is_recorded_and_never_raised():
    p = poll(FakeNvml({"GPU-b": []}, fail=RuntimeError("NVML_ERROR_GPU_IS_LOST")))
    assert p.peak_mib is None and "GPU_IS_LOST" in p.error


def test_cuda_uuid_is_spelled_as_nvml_spells_it(monkeypatch):
    props = types.SimpleNamespace(uuid="3f0a5d52-1c2b-4b4e-9a3e-0123456789ab")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    assert cuda_uuid(torch.device("cuda", 0)) == "GPU-3f0a5d52-1c2b-4b4e-9a3e-0123456789ab"
    props.uuid = "GPU-already"
    assert cuda_uuid(torch.device("cuda", 0)) == "GPU-already"


def test_a_poller_that_cannot_start_leaves_the_cuda_figures(monkeypatch):
    monkeypatch.setattr(metering, "cuda_uuid", lambda device: (_ for _ in ()).throw(RuntimeError("no driver")))
    assert metering._nvml_poller(torch.device("cuda", 0)) is None


def test_phases_entered_twice_keep_a_missing_nvml_peak_missing():
    a = Phase(seconds=1.0, peak_rss_mib=10.0, wall=[[0.0, 1.0]])
    b = Phase(seconds=2.0, peak_rss_mib=5.0, wall=[[5.0, 7.0]])
    merged = _merge(a, b)
    assert (merged.seconds, merged.peak_rss_mib, merged.nvml_process_peak_mib) == (3.0, 10.0, None)
    assert merged.wall == [[0.0, 1.0], [5.0, 7.0]] and dump(merged) == {"seconds": 3.0, "peak_rss_mib": 10.0,
                                                                         "wall": [[0.0, 1.0], [5.0, 7.0]]}
    assert _merge(a, dataclasses.replace(b, nvml_process_peak_mib=80.0)).nvml_process_peak_mib == 80.0


def test_a_nested_phase_pauses_the_enclosing_one(monkeypatch):
    clock = iter(range(0, 1000, 10))  # every reading 10 s later
    monkeypatch.setattr(metering.time, "perf_counter", lambda: float(next(clock)))
    m = metering.Meter()
    with m.phase("train"):  # enters at t=10
        with m.phase("dev"):  # pauses train at t=20, enters at 30
            pass  # leaves at 40, train resumes at 50
    # train: 10..20 and 50..60 = 20 s; dev: 30..40 = 10 s
    assert m.phases["train"].seconds == 20.0 and m.phases["dev"].seconds == 10.0


def test_costs_sum_the_adaptation_phases_and_take_the_measured_serving_cost():
    phases = {"load": Phase(5.0, 900.0), "train": Phase(8.0, 1.0), "dev": Phase(2.0, 1.0),
              "teacher_eval": Phase(30.0, 1.0), "serve": Phase(1.5, 700.0)}
    resources = Resources(phases=phases, serving=Serving(ms_per_query=25.0, queries=32))
    out = metering.costs(resources)
    assert out.adaptation_seconds == 10.0 and out.dev_seconds_uncharged is None  # not load, not the teacher's evaluation
    assert dump(out.serving) == {"ms_per_query": 25.0, "queries": 32, "peak_memory_mib": 700.0, "memory_kind": "rss"}
    replicate = metering.costs(resources, dev_selects=False)  # a replicate keeping its last epoch: dev selects nothing
    assert replicate.adaptation_seconds == 8.0 and replicate.dev_seconds_uncharged == 2.0
    assert metering.costs(Resources(phases=phases)).serving is None  # nothing measured
    assert metering.costs(Resources(phases={"train": phases["train"]}, serving=resources.serving)).serving is None  # no serve phase


class Turns:
    """A gate that records what each phase asked for."""

    def __init__(self):
        self.asked = []

    def hold(self, exclusive):
        import contextlib
        self.asked.append(exclusive)
        return contextlib.nullcontext(True)


def test_top_level_phases_take_the_gate_shared_and_serve_exclusively(monkeypatch):
    gate = Turns()
    monkeypatch.setattr(metering, "_GATE", gate)
    m = metering.Meter()
    with m.phase("train"):
        with m.phase("dev"):  # nested: already inside its trial's turn
            pass
    with m.phase("serve") as state:
        assert state.exclusive is True
    with m.phase("evaluate") as state:
        assert state.exclusive is False
    assert gate.asked == [False, True, False]
    assert [len(m.phases[p].wall) for p in ("train", "dev", "serve")] == [1, 1, 1]
    assert m.phases["serve"].wall[0][0] <= m.phases["serve"].wall[0][1]
