"""Sweep overhead: how much of a sweep's wall time is spent outside the methods' own compute, and
what one Ray Train worker group costs to start and stop.

    python -m benchmarks.sweep.sweep_overhead                 # the smoke space on a local Ray instance
    python benchmarks/sweep/sweep_overhead.py --repeats 5

Three measurements in one Ray session:
1. `--repeats` times, a `TorchTrainer` whose one worker does nothing (the worker group's start and
   stop), at Ray Train's default health-check interval (2 s) and at the sweep's (0.25 s,
   `orchestrator/engine/trial.py`), interleaved; and a plain Tune function trial that does nothing (a trial
   without a worker group);
2. the `smoke` sweep (one trial at a time, so time adds up) three times: every trial a Ray Train
   worker group (`resources.in_process: false`) at Ray's default interval, then at the sweep's, then
   every trial in its own Tune process (`in_process: true`, the smoke space's default): each sweep's
   wall time against the sum of the methods' own time as their records measure it
   (`resources.total_seconds`); the rest is overhead;
3. per trial, the driver's view of the trial (`trial_seconds`) minus the method's own time, and
   where a worker-group trial's time goes (the records' `resources.timeline`): from the Tune trial's
   start to its worker's (the controller, placement group and worker process), the worker's imports
   until the method starts, and from the method's end until the driver hears of it (teardown).
Writes results/bench/sweep_overhead.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable, as `-m` from it does
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

from benchmarks.common import ROOT, publish, table  # noqa: E402
from orchestrator.engine.trial import HEALTH_CHECK_INTERVAL  # noqa: E402
from trainers.records import environment  # noqa: E402

INTERVAL, SWEEP = HEALTH_CHECK_INTERVAL
RAY_DEFAULT = "2.0"  # Ray Train's DEFAULT_HEALTH_CHECK_INTERVAL_S
MODES = {"worker_group_ray_default": "a worker group per trial, Ray's 2 s health checks",
         "worker_group": f"a worker group per trial, the sweep's {SWEEP} s health checks",
         "in_process": "in-process trials"}


def _noop_worker(config: dict) -> None:
    import ray.train
    ray.train.report({"done": 1})


def _noop_trial(config: dict) -> None:
    import ray.tune
    ray.tune.report({"done": 1})


def worker_group_seconds(storage: str, interval: str) -> float:
    import ray.train
    from ray.train.torch import TorchTrainer
    os.environ[INTERVAL] = interval  # Ray Train passes it from here to the controller it starts
    start = time.perf_counter()
    TorchTrainer(_noop_worker, scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                 run_config=ray.train.RunConfig(storage_path=storage, name=f"noop-{time.time_ns()}")).fit()
    return time.perf_counter() - start


def tune_trial_seconds(storage: str) -> float:
    import ray.tune
    start = time.perf_counter()
    ray.tune.Tuner(_noop_trial, run_config=ray.tune.RunConfig(storage_path=storage, name=f"noop-{time.time_ns()}",
                                                            verbose=0)).fit()
    return time.perf_counter() - start


def smoke_sweep(results_root: Path, mode: str) -> tuple[float, list[dict]]:
    from orchestrator.engine.driver import run_sweep
    from orchestrator.analysis.results import load_records
    from orchestrator.space import load_space
    name, in_process = mode, mode == "in_process"
    os.environ[INTERVAL] = RAY_DEFAULT if mode == "worker_group_ray_default" else SWEEP  # the driver passes it to trials
    space = load_space("smoke", ["max_concurrent_trials=1", f"resources.in_process={str(in_process).lower()}"])
    start = time.perf_counter()
    run_sweep(space, name=name, results_root=results_root)
    return time.perf_counter() - start, load_records(results_root / name)


def _timeline(records: list) -> dict:
    """Medians, over the records that have one, of where a trial's time goes outside the method."""
    parts = {"tune trial start -> worker start": [], "worker start -> method start (imports)": [],
             "method end -> driver (teardown, report)": []}
    for r in records:
        t = r.resources.timeline or {}
        walls = [w[0] for p in r.resources.phases.values() for w in p.wall]
        if not (t.get("trial_started") and t.get("driver_ended") and walls):
            continue
        parts["tune trial start -> worker start"].append(t["worker_started"] - t["trial_started"])
        parts["worker start -> method start (imports)"].append(min(walls) - t["worker_started"])
        parts["method end -> driver (teardown, report)"].append(t["driver_ended"] - t["method_ended"])
    return {k: round(statistics.median(v), 1) for k, v in parts.items() if v}


def measure(args) -> dict:
    import ray
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, log_to_driver=False)
        ray_start = time.perf_counter() - start
        groups = {RAY_DEFAULT: [], SWEEP: []}
        for _ in range(args.repeats):
            for interval in groups:
                groups[interval].append(round(worker_group_seconds(tmp, interval), 2))
        trials = [tune_trial_seconds(tmp) for _ in range(args.repeats)]
        sweeps = {mode: smoke_sweep(Path(tmp), mode) for mode in MODES}
        ray.shutdown()
    out = {"ray_init_seconds": round(ray_start, 2), "worker_group_seconds": groups[SWEEP],
           "worker_group_seconds_ray_default": groups[RAY_DEFAULT], "tune_trial_seconds": [round(x, 2) for x in trials]}
    for mode, (wall, records) in sweeps.items():
        method = sum(r.resources.total_seconds or 0.0 for r in records)
        per_trial = [r.trial_seconds - (r.resources.total_seconds or 0.0) for r in records if r.trial_seconds is not None]
        out[mode] = {"sweep_wall_seconds": round(wall, 1), "method_seconds": round(method, 1),
                     "overhead_share": round(1 - method / wall, 3), "trials": len(records),
                     "per_trial_overhead_seconds": [round(x, 1) for x in per_trial], "timeline": _timeline(records),
                     "statuses": {s: sum(r.status == s for r in records) for s in {r.status for r in records}}}
    return out


def render(f: dict) -> str:
    med = statistics.median
    rows = [["ray.init (local instance)", f["ray_init_seconds"]],
            [f"worker group start + stop (no-op TorchTrainer.fit, median), Ray's {RAY_DEFAULT} s health checks",
             med(f["worker_group_seconds_ray_default"])],
            [f"worker group start + stop (no-op TorchTrainer.fit, median), the sweep's {SWEEP} s",
             med(f["worker_group_seconds"])],
            ["Tune function trial, no worker group (median)", med(f["tune_trial_seconds"])]]
    for mode, label in MODES.items():
        s = f[mode]
        rows += [[f"smoke sweep, {label}: wall ({s['trials']} trials, one at a time)", s["sweep_wall_seconds"]],
                 ["  methods' own time (sum over records)", s["method_seconds"]],
                 ["  overhead share of the wall time", f"{100 * s['overhead_share']:.1f} %"],
                 ["  overhead per trial (trial seconds - method seconds, median)", med(s["per_trial_overhead_seconds"])]]
        rows += [[f"    {part}", seconds] for part, seconds in s["timeline"].items()]
    notes = (f"- every worker group: {f['worker_group_seconds_ray_default']} s at {RAY_DEFAULT} s health checks, "
             f"{f['worker_group_seconds']} s at {SWEEP} s; every Tune trial: {f['tune_trial_seconds']} s\n"
             + "".join(f"- {mode}: per-trial overhead {f[mode]['per_trial_overhead_seconds']} s; statuses "
                       f"{f[mode]['statuses']}\n" for mode in MODES))
    return table(["figure", "seconds"], rows) + "\n\n" + notes


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="no-op worker groups and Tune trials to time (default: 3)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray instance (default: all)")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "bench"))
    args = p.parse_args(argv)
    load = os.getloadavg()
    figures = measure(args)
    text = (f"# Sweep overhead: the smoke space on a local Ray instance\n\n    python -m benchmarks.sweep.sweep_overhead "
            f"{' '.join(argv or sys.argv[1:])}\n\n{render(figures)}- machine: {os.cpu_count()} CPUs; 1-minute load "
            f"average {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    publish("sweep_overhead", Path(args.out_dir), text,
            {"benchmark": "sweep_overhead", "args": vars(args), "figures": figures, "env": environment()})
    return figures


if __name__ == "__main__":
    main()
