"""One trial = one Ray Train worker group running a method from `trainers/` (or, for a one-worker trial
of a space that asks for it with `resources.in_process`, the method inside the Tune trial itself).

    python -m orchestrator sweep --space smoke          # every trial goes through `run_trial`

`run_trial` is the Tune function trainable (Ray Train V2's pattern: it builds a `TorchTrainer`
and calls `fit()`); `worker_loop` runs on every worker of the group. Workers report each epoch
with `ray.train.report` (all ranks call it; `TuneReportCallback` forwards rank 0's), then one
final report carrying the whole result record as JSON, with peak memory reduced (max) across
ranks. An exception inside the method becomes a `failed` record on the spot (a deterministic
error would only fail again); a crashed worker process is retried by Ray Train up to the
space's `max_failures`, a worker group that fails or times out starting up to its
`max_start_failures`; past them, Ray's exception becomes the trial's `failed` record. An in-process
trial (Ray Train's local mode, without its machinery: the Tune trial reserves the worker's CPUs and
GPU and runs `worker_loop` itself, reporting to Tune) skips the worker group's start and stop, about
7 s a trial on a 2-core machine; a crash of its process is retried by Tune up to `max_failures`.
"""
from __future__ import annotations

import json
import os
import time
import traceback

import ray.train
import ray.tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.planning.plan import in_process
from trainers.config import RunConfig
from trainers.contract import Record, TrialSpec, dump, load

# How often Ray Train's controller polls its workers (Ray's default 2 s). A finished trial waits about
# four polls (the final report, the group's end) before its worker group is torn down: 3-5 s at 2 s,
# 1.0 s at 0.25 s (benchmarks/sweep/sweep_overhead.py measures both). A driver's own value is passed on.
HEALTH_CHECK_INTERVAL = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
TRIAL_MEMORY = 2**20  # the Tune-level driver only waits on its worker group: reserve no CPU for it


def pack_run(cfg: RunConfig) -> str:
    """A resolved run config as Tune's trial config carries it (Ray's edge): one compact JSON string of
    the fields that differ from RunConfig's defaults. Tune keeps every trial's config to the sweep's end
    (twice, pickled and hex-encoded, once flattened key by key, once in the trial's name): a nested dict
    of every field cost the driver about 8 KB a trial there."""
    run = cfg.to_dict()
    defaults = RunConfig(method=cfg.method, model=cfg.model).to_dict()
    diff = {k: ({kk: vv for kk, vv in v.items() if defaults[k].get(kk) != vv} if isinstance(v, dict) else v)
            for k, v in run.items() if v != defaults.get(k)}
    return json.dumps({"method": run["method"], "model": run["model"], **diff}, separators=(",", ":"))


def run_of(spec: TrialSpec) -> dict:
    """The trial's whole resolved run config, every field, from its packed form (`pack_run`): the JSON
    form a worker receives (Ray's edge; `from_dict` there imports a methods file first)."""
    return config_of(spec).to_dict()


def config_of(spec: TrialSpec):
    """The trial's RunConfig."""
    from trainers.config import from_dict
    return from_dict(json.loads(spec.run))


def _failed_record(cfg: RunConfig, error: BaseException) -> Record:
    from trainers.records import bare_record
    tb = traceback.format_exception(type(error), error, error.__traceback__)
    return bare_record(cfg, "failed",
                        error=f"{type(error).__name__}: {error}".strip(), extra={"traceback": "".join(tb[-6:])})


def worker_loop(loop_config: dict, report=None) -> None:
    """Runs on each worker: the method's entry point, with per-epoch reports to Ray (`report`:
    Ray Train's, or for a trial that runs in its own Tune process, Tune's)."""
    worker_started = time.time()
    report = report or ray.train.report
    import torch

    from trainers.config import from_dict
    from trainers.runtime.distributed import all_reduce, rank_and_world
    from trainers.methods.entry import run

    torch.set_num_threads(max(1, int(loop_config["cpus_per_worker"])))
    cuda = torch.cuda.is_available() and loop_config["use_gpu"]
    if cuda and loop_config.get("in_process"):
        torch.cuda.set_device(0)  # Ray gave this process its GPU alone (CUDA_VISIBLE_DEVICES)
    elif cuda:
        torch.cuda.set_device(ray.train.torch.get_device())
    if loop_config.get("gate"):  # serving measured alone: this worker's node (CPU) or GPU takes turns
        from orchestrator.engine.gate import GateClient
        from trainers.runtime import metering
        key = metering.cuda_uuid(torch.device("cuda", torch.cuda.current_device())) if cuda else \
            ray.get_runtime_context().get_node_id()
        metering.set_gate(GateClient(loop_config["gate"], loop_config["trial"], key))
    cfg = None
    try:
        from orchestrator.planning import identity
        cfg = from_dict(loop_config["run"])  # parsed once, here (a methods file is imported first)
        identity.ensure_fixtures(loop_config.get("fixtures"))  # the smoke space's, where this node lacks them
        identity.check(cfg, loop_config.get("identity"))  # what the plan checked, or fail naming both
        record = run(cfg, lambda epoch: report(dump(epoch)))  # an epoch's report: Ray's edge
    except Exception as e:  # the record says what went wrong; the sweep goes on
        record = _failed_record(cfg or from_dict(loop_config["run"]), e)
    resources = record.resources
    # where a trial's time goes outside the method (the driver adds when it saw the trial start and end)
    resources.timeline = {"trial_started": loop_config.get("trial_started"), "worker_started": worker_started,
                          "method_ended": time.time()}
    resources.peak_memory_mib = all_reduce(resources.peak_memory_mib or 0.0, "max")
    resources.ranks = rank_and_world()[1]
    final = {"epoch": max(1, len(record.history)), "record": json.dumps(dump(record))}  # JSON: Ray's edge
    if record.metrics.dev and record.status == "completed":
        final["dev_accuracy"] = record.metrics.dev.accuracy
    report(final)


def _held_resources() -> str:
    """What holds the cluster: free CPUs/GPUs and the placement groups that reserve them."""
    from ray.util import placement_group_table
    free, total = ray.available_resources(), ray.cluster_resources()
    groups = [(pg_id[:8], sum(b.get("CPU", 0) for b in g["bundles"].values()), g.get("name") or "")
              for pg_id, g in placement_group_table().items() if g.get("state") == "CREATED"]
    held = ", ".join(f"{pid} ({cpus:g} CPU{', ' + name if name else ''})" for pid, cpus, name in groups) or "none"
    return (f"resources held by placement groups {held}; "
            f"{free.get('CPU', 0):g}/{total.get('CPU', 0):g} CPU and {free.get('GPU', 0):g}/{total.get('GPU', 0):g} GPU free")


def _describe_failure(error: BaseException, start_timeout_s: float) -> str:
    """Ray's own exception type and message; a worker group that never started says what holds the cluster."""
    inner = getattr(error, "controller_failure", None) or error
    if type(inner).__name__ == "WorkerGroupStartupTimeoutError":
        try:
            held = _held_resources()
        except Exception as e:  # noqa: BLE001 - the reason matters more than the inventory
            held = f"(could not list them: {e})"
        return f"worker group did not start in {start_timeout_s:g} s: {held}"
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return f"{type(inner).__name__}: {' '.join(lines[:3])[:600]}"


def _run_name(spec: TrialSpec, trial_id: str) -> str:
    cell = spec.cell.replace("/", ".").replace("+", "-")
    return f"{spec.sweep or 'sweep'}.{cell}.{spec.phase}.s{config_of(spec).data_seed}.{trial_id}"


def run_trial(config: dict, finished: dict, storage_path: str, limits: dict) -> None:
    """Tune function trainable: launch the trial's worker group and wait for it. Whatever Ray Train
    raises (a worker killed past its retries, a group that never started) becomes this trial's
    `failed` record with Ray's own message, and the sweep goes on."""
    trial_started = time.time()
    spec = load(TrialSpec, config)  # Tune's trial config: Ray's edge
    if spec.trial_key in finished:  # resumed sweep: this trial already has its record
        ray.tune.report(finished[spec.trial_key])
        return
    if limits.get("gate"):  # a restarted trial's earlier attempt holds no turn
        from orchestrator.engine.gate import forget
        forget(limits["gate"], spec.trial_key)
    r = spec.resources
    use_gpu = r.gpus_per_worker > 0
    loop_config = {"run": run_of(spec), "cpus_per_worker": r.cpus_per_worker, "use_gpu": use_gpu,
                   "gate": limits.get("gate"), "trial": spec.trial_key, "trial_started": trial_started,
                   "identity": spec.identity, "fixtures": spec.fixtures, "in_process": in_process(r)}
    if in_process(r):  # one worker, in this Tune trial's own process and resources: no worker group to start
        worker_loop(loop_config, report=ray.tune.report)
        return
    # read by Ray Train's controller (it propagates this variable from here): a group waiting longer fails
    os.environ["RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"] = str(limits["worker_start_timeout_s"])
    os.environ.setdefault(*HEALTH_CHECK_INTERVAL)
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(num_workers=r.workers, use_gpu=use_gpu, resources_per_worker=r.per_worker()),
        run_config=ray.train.RunConfig(
            # the dashboard's Train tab lists runs by this name: sweep, cell, phase, data seed
            name=_run_name(spec, ray.tune.get_context().get_trial_id()),
            storage_path=storage_path, callbacks=[TuneReportCallback()],
            # every retry bounded: crashed workers, and worker groups that fail or time out starting
            failure_config=ray.train.FailureConfig(max_failures=limits["max_failures"],
                                                   controller_failure_limit=limits["max_start_failures"],
                                                   max_preemption_failures=limits["max_failures"]),
        ),
    )
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - recorded, with Ray's type and message
        from trainers.records import bare_record
        rec = bare_record(config_of(spec), "failed",
                           error=_describe_failure(e, limits["worker_start_timeout_s"]),
                           extra={"traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__)[-8:])})
        ray.tune.report({"epoch": 1, "record": json.dumps(dump(rec))})


def trainable(finished: dict, storage_path: str, limits: dict):
    """`run_trial` with its fixed arguments bound and its (tiny) resource request. `limits`:
    max_failures, max_start_failures, worker_start_timeout_s, and the name of the sweep's serving gate."""
    bound = ray.tune.with_parameters(run_trial, finished=finished, storage_path=storage_path, limits=limits)
    return ray.tune.with_resources(bound, trial_resources)


def trial_resources(config: dict) -> dict:
    """What a Tune trial reserves: almost nothing when it only waits on its worker group (which
    reserves the trial's CPUs and GPUs); the worker's CPUs and GPUs when it runs the method itself."""
    r = load(TrialSpec, config).resources
    return r.per_worker() if in_process(r) else {"memory": TRIAL_MEMORY}
