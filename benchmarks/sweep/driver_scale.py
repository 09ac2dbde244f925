"""The driver at scale: N trials whose work returns at once, through the real driver (preflight,
search with its Optuna studies, the pruning scheduler, records, tables, callbacks, the report).

    python -m benchmarks.sweep.driver_scale --trials 1000      # prints and writes results/bench/driver_scale.{md,json}

Every trial is the smoke space's pbft cell with a searched learning rate; its Tune function reports
one epoch and a made-up record at once, in place of a Ray Train worker group, so what is measured is
the driver: its resident memory growth per 1,000 trials (sampled as each trial finishes; the
least-squares slope over the search's trials after its first tenth) and its own CPU seconds per trial (the driver process's user + system time over the sweep, less Ray's start-up).
Aims: at most 50 MiB per 1,000 trials and 0.5 s per trial.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import publish, table

MiB = 2 ** 20


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope: RSS moves in allocator-sized steps, so two end points alone mislead."""
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))


def fake_trainable(finished, storage_path, limits):
    """A Tune function trainable that reports one epoch and a record at once (no worker group)."""
    import ray.tune

    def run(config):
        from trainers.config import from_dict
        from trainers.contract import TrialSpec, dump, load
        from trainers.records import build_record
        spec = load(TrialSpec, config)  # as orchestrator.engine.trial.run_trial reads it, without that module's torch import
        lr = spec.searched.get("train.lr", 0.01)
        dev = round(min(1.0, 0.5 + lr * 10), 4)
        ray.tune.report({"epoch": 1, "dev_accuracy": dev})
        run_config = json.loads(spec.run)
        rec = build_record(from_dict(run_config), "completed", resolved={}, history=[{"epoch": 1, "dev_accuracy": dev}],
                           metrics={"dev": {"accuracy": dev}})
        ray.tune.report({"epoch": 1, "dev_accuracy": dev, "record": json.dumps(dump(rec))})

    return ray.tune.with_resources(run, {"CPU": 0.01})


def measure(trials: int, concurrent: int) -> dict:
    from orchestrator.engine import driver
    from orchestrator.space import load_space
    samples = []
    space = load_space("smoke", [f"budget={trials}", "methods={pbft: [lora]}", "data_seeds=[0]", "pruner={type: none}",
                                 f"max_concurrent_trials={concurrent}", "search={pbft: {train.lr: {loguniform: [1e-4, 1e-1]}}}"])
    results = Path(tempfile.mkdtemp(prefix="driver-scale-"))
    original_line = driver.Progress.line

    def line(self, rec, seconds, trial_id=None):  # sample the driver as each trial finishes; keep the terminal short
        samples.append((self.done + 1, _rss_mib(), time.process_time()))
        self.done += 1
        if self.done % 100 == 0:
            print(f"  {self.done} trials, RSS {samples[-1][1]:.0f} MiB", flush=True)

    driver.Progress.line = line
    driver.trainable = fake_trainable
    start = time.perf_counter()
    try:
        code = driver.run_sweep(space, name="scale", results_root=results)
    finally:
        driver.Progress.line = original_line
    wall = time.perf_counter() - start
    n = len(samples)
    # the search's trials after its first tenth (Ray's start-up, first imports), not the replicate's own experiment
    steady = samples[min(n - 1, max(0, trials // 10)):trials] or samples[-1:]
    first, last = steady[0], steady[-1]
    growth = _slope([s[0] for s in steady], [s[1] for s in steady]) * 1000
    cpu = (last[2] - first[2]) / max(1, last[0] - first[0])
    return {"trials": n, "exit": code, "wall_seconds": round(wall, 1), "rss_start_mib": round(samples[0][1], 1),
            "rss_end_mib": round(last[1], 1), "rss_growth_mib_per_1000_trials": round(growth, 1),
            "driver_cpu_seconds_per_trial": round(cpu, 4), "wall_seconds_per_trial": round(wall / max(1, n), 3),
            "concurrent": concurrent}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--concurrent", type=int, default=8, help="trials at once (each reserves 0.01 CPU)")
    p.add_argument("--out-dir", default="results/bench")
    args = p.parse_args(argv)
    os.environ.setdefault("FEWSHOT_HEARTBEAT_S", "3600")
    figures = measure(args.trials, args.concurrent)
    rows = [["trials", figures["trials"]], ["driver RSS growth per 1,000 trials (MiB)", figures["rss_growth_mib_per_1000_trials"]],
            ["driver CPU seconds per trial", figures["driver_cpu_seconds_per_trial"]],
            ["wall seconds per trial", figures["wall_seconds_per_trial"]], ["exit status", figures["exit"]]]
    from trainers.records import environment
    env = environment()
    text = (f"# The driver at scale: {figures['trials']} trials that return at once\n\n"
            f"    python -m benchmarks.sweep.driver_scale {' '.join(argv if argv is not None else sys.argv[1:])}\n\n"
            f"{table(['figure', 'value'], rows)}\n\naims: ≤ 50 MiB per 1,000 trials, ≤ 0.5 s per trial\n"
            f"- machine: {os.cpu_count()} CPUs, load average at end {os.getloadavg()[0]:.1f}; commit {env['git_commit']}\n")
    publish("driver_scale", Path(args.out_dir), text, {"benchmark": "driver_scale", "args": vars(args), "figures": figures,
                                                        "env": env})
    return figures


if __name__ == "__main__":
    main()
