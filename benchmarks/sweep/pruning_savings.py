"""Pruning savings: the same sweep with and without the pruner, side by side in one Ray session.

    python -m benchmarks.sweep.pruning_savings                # smoke space: 2 cells, 8 search trials each
    python benchmarks/sweep/pruning_savings.py --budget 12 --epochs 8

The `smoke` space (tiny random OPT, synthetic RTE/HANS), widened to two cells (8 and 16 shots) and
a longer search, is run twice: with its median pruner and with `pruner: {type: none}`. One trial
runs at a time and the TPE sampler is seeded, and with fewer trials than TPE's 10 random start-up
trials both runs propose the same configurations in the same order, so the runs differ only in
what the pruner stops. Reported per run: trial-epochs of the search, the search phase's trials and
wall time of the whole sweep, and per cell the best configuration found (and whether both agree).
Writes results/bench/pruning_savings.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

from benchmarks.common import ROOT, publish, table  # noqa: E402
from trainers.records import environment  # noqa: E402


def one_sweep(root: Path, name: str, overrides: list[str]) -> dict:
    from orchestrator.engine.driver import run_sweep
    from orchestrator.analysis.results import best_search_trials, load_records
    from orchestrator.space import load_space
    start = time.perf_counter()
    run_sweep(load_space("smoke", overrides), name=name, results_root=root)
    wall = time.perf_counter() - start
    records = load_records(root / name)
    search = [r for r in records if r.phase == "search"]
    return {"wall_seconds": round(wall, 1), "search_trials": len(search),
            "trial_epochs": sum(len(r.history) for r in search),
            "pruned": sum(r.status == "pruned" for r in search),
            "best": {cell: rec.searched for cell, rec in best_search_trials(records).items()},
            "tried": sorted(round(r.searched["train.lr"], 8) for r in search)}


def measure(args) -> dict:
    import ray
    common = ["methods={pbft: [lora]}", "shots=[8, 16]", "data_seeds=[0]", f"budget={args.budget}",
              f"fixed.train.epochs={args.epochs}", "max_concurrent_trials=1"]
    with tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=args.cpus, log_to_driver=False)
        pruned = one_sweep(Path(tmp), "with_pruner", common)
        unpruned = one_sweep(Path(tmp), "without_pruner", common + ["pruner={type: none}"])
        ray.shutdown()
    return {"with_pruner": pruned, "without_pruner": unpruned,
            "same_configurations_tried": pruned["tried"] == unpruned["tried"],
            "same_best_per_cell": {cell: pruned["best"].get(cell) == unpruned["best"].get(cell)
                                   for cell in sorted(set(pruned["best"]) | set(unpruned["best"]))}}


def render(f: dict) -> str:
    a, b = f["with_pruner"], f["without_pruner"]
    rows = [["search trials", a["search_trials"], b["search_trials"]],
            ["of which pruned", a["pruned"], b["pruned"]],
            ["trial-epochs of the search", a["trial_epochs"], b["trial_epochs"]],
            ["sweep wall seconds (search + replicates)", a["wall_seconds"], b["wall_seconds"]]]
    lines = [table(["figure", "with pruner", "without"], rows), "",
             f"- trial-epochs saved: {1 - a['trial_epochs'] / b['trial_epochs']:.0%}; "
             f"wall time saved: {1 - a['wall_seconds'] / b['wall_seconds']:.0%}",
             f"- same configurations tried in both runs: {f['same_configurations_tried']}"]
    for cell, same in f["same_best_per_cell"].items():
        lines.append(f"- {cell}: best with pruner {a['best'].get(cell)}, without {b['best'].get(cell)} -> "
                     f"{'same' if same else 'different'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=8, help="search trials per cell (default: 8)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per trial (default: 6)")
    p.add_argument("--cpus", type=int, default=None, help="CPUs for the local Ray instance (default: all)")
    p.add_argument("--out-dir", default=str(ROOT / "results" / "bench"))
    args = p.parse_args(argv)
    load = os.getloadavg()
    figures = measure(args)
    text = (f"# Pruning savings: smoke space, 2 cells x {args.budget} search trials x {args.epochs} epochs\n\n"
            f"    python -m benchmarks.sweep.pruning_savings {' '.join(argv or sys.argv[1:])}\n\n{render(figures)}"
            f"- machine: {os.cpu_count()} CPUs; 1-minute load average {load[0]:.1f} at start, "
            f"{os.getloadavg()[0]:.1f} at end\n")
    publish("pruning_savings", Path(args.out_dir), text,
            {"benchmark": "pruning_savings", "args": vars(args), "figures": figures, "env": environment()})
    return figures


if __name__ == "__main__":
    main()
