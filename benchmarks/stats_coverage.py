"""Does the verdict rule keep its promises? Simulated sweeps with both kinds of noise: the interval's
coverage, how often it calls a difference that is not there, and its power at the difference the dry
run prints, beside the old two-level bootstrap (examples counted twice) for comparison.

    python -m benchmarks.stats_coverage                 # 600 sweeps per row; writes results/bench/stats_coverage.{md,json}
    python -m benchmarks.stats_coverage --sweeps 100    # a quick look

A simulated sweep: n data seeds; each seed moves both methods' accuracy by a shared shift (sd 0.05)
and their gap by its own draw (δ + N(0, seed_sd)); each method then answers m examples right with its
accuracy, independently (Bernoulli). The interval and verdict are `orchestrator.analysis.stats.paired`, the
module the summaries use. Coverage: the share of sweeps whose interval holds δ; false verdicts: the
share of sweeps with δ = 0 that name a better method (the nominal level is 5 %); power: the share of
sweeps at δ = the dry run's printed difference (`power.seed_spread` from the simulation's own
spread, then `stats.detectable`) that name the right method (the dry run promises 80 %). A second
table: every seed scores the same examples (a whole validation set), whose own effects no number of
seeds averages away: the interval's coverage of the population's difference, with the shared
examples' variance (`stats.shared_examples`) and with the seeds' spread alone.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import ROOT, publish, table  # noqa: E402
from orchestrator.analysis import power  # noqa: E402
from orchestrator.analysis.stats import MIN_SEEDS, detectable, paired, t95  # noqa: E402
from trainers.records import environment  # noqa: E402

DESIGNS = [(3, 64, 0.016), (3, 277, 0.05), (10, 64, 0.016), (10, 277, 0.016), (10, 277, 0.05), (12, 277, 0.016),
           (40, 64, 0.016), (40, 64, 0.05)]
BASE, SHIFT_SD = 0.65, 0.05


def simulate(rng, n: int, m: int, delta: float, seed_sd: float) -> tuple[dict, dict]:
    a, b = {}, {}
    for s in range(n):
        pb = min(max(BASE + rng.normal(0, SHIFT_SD), 0.05), 0.95)
        pa = min(max(pb + delta + rng.normal(0, seed_sd), 0.05), 0.95)
        a[s], b[s] = (rng.random(m) < pa).astype(float), (rng.random(m) < pb).astype(float)
    return a, b


def simulate_shared(rng, n: int, m: int, delta: float, seed_sd: float, effect_sd: float = 0.3) -> tuple[dict, dict, dict]:
    """Every seed scores the same m examples (a whole validation set, drawn anew for each sweep from the
    population of examples); each example has its own effect on the difference (sd `effect_sd`), so
    what the seeds share no number of seeds averages away. The true difference is over the population."""
    pb = np.clip(rng.beta(4, 2, size=m), 0.02, 0.98)
    effect = rng.normal(0, effect_sd, size=m)
    a, b = {}, {}
    for s in range(n):
        shift = rng.normal(0, SHIFT_SD)
        gap = delta + rng.normal(0, seed_sd)
        pbs = np.clip(pb + shift, 0.0, 1.0)
        pas = np.clip(pbs + gap + effect, 0.0, 1.0)
        a[s], b[s] = (rng.random(m) < pas).astype(float), (rng.random(m) < pbs).astype(float)
    ids = {s: list(range(m)) for s in range(n)}
    return a, b, ids


def shared_design(n: int, m: int, seed_sd: float, sweeps: int, rng) -> dict:
    """Coverage of the population's difference when every seed scores the same examples: the interval
    with the shared examples' variance, and the seeds' alone (what it was before)."""
    # the population's true difference: the clipping makes it differ a little from delta; estimated once
    delta, truth = 0.05, _population_delta(rng, 0.05, seed_sd)
    with_shared = seeds_only = 0
    for _ in range(sweeps):
        a, b, ids = simulate_shared(rng, n, m, delta, seed_sd)
        lo, hi = paired(a, b, ids)["ci95"]
        with_shared += lo <= truth <= hi
        lo, hi = paired(a, b)["ci95"]
        seeds_only += lo <= truth <= hi
    return {"seeds": n, "examples": m, "seed_sd": seed_sd, "sweeps": sweeps, "shared": True,
            "coverage": with_shared / sweeps, "seeds_only_coverage": seeds_only / sweeps}


def _population_delta(rng, delta: float, seed_sd: float, draws: int = 200_000) -> float:
    pb = np.clip(rng.beta(4, 2, size=draws), 0.02, 0.98)
    gap = delta + rng.normal(0, seed_sd, size=draws) + rng.normal(0, 0.3, size=draws)
    pbs = np.clip(pb + rng.normal(0, SHIFT_SD, size=draws), 0.0, 1.0)
    return float(np.mean(np.clip(pbs + gap, 0.0, 1.0) - pbs))


def two_level_interval(a: dict, b: dict, rng, rounds: int = 1000) -> tuple[float, float]:
    """The interval the summaries used before 2026-12: seeds resampled, then each drawn seed's
    examples, widened to the t-interval over seeds (kept here only to show what changed)."""
    diffs = [a[s] - b[s] for s in sorted(a)]
    n = len(diffs)
    boot = np.empty(rounds)
    for r in range(rounds):
        boot[r] = np.mean([rng.choice(diffs[i], size=len(diffs[i])).mean() for i in rng.integers(0, n, n)])
    observed = [d.mean() for d in diffs]
    lo, hi = np.percentile(boot, 2.5), np.percentile(boot, 97.5)
    if n > 1:
        half = t95(n - 1) * np.std(observed, ddof=1) / math.sqrt(n)
        lo, hi = min(lo, np.mean(observed) - half), max(hi, np.mean(observed) + half)
    return float(lo), float(hi)


def example_sd(rng, m: int, seed_sd: float) -> float:
    """One example's paired-difference spread in this simulation (what a --prior would measure)."""
    a, b = simulate(rng, 400, m, 0.0, seed_sd)
    return math.sqrt(np.mean([np.var(a[s] - b[s], ddof=1) for s in a]))


def one_design(n: int, m: int, seed_sd: float, sweeps: int, old_sweeps: int, rng) -> dict:
    delta = 0.05
    width_new, width_old, covered, covered_old = [], [], 0, 0
    for i in range(sweeps):
        a, b = simulate(rng, n, m, delta, seed_sd)
        r = paired(a, b)
        covered += r["ci95"][0] <= delta <= r["ci95"][1]
        width_new.append(r["ci95"][1] - r["ci95"][0])
        if i < old_sweeps:
            lo, hi = two_level_interval(a, b, rng)
            covered_old += lo <= delta <= hi
            width_old.append(hi - lo)
    false = sum(paired(*simulate(rng, n, m, 0.0, seed_sd))["verdict"] in ("a better", "b better") for _ in range(sweeps))
    row = {"seeds": n, "examples": m, "seed_sd": seed_sd, "sweeps": sweeps, "coverage": covered / sweeps,
           "false_verdicts": false / sweeps, "mean_width": float(np.mean(width_new)),
           "old_coverage": covered_old / max(1, old_sweeps), "old_width_ratio": float(np.mean(width_old) / np.mean(width_new[:old_sweeps]))
           if old_sweeps else None}
    if n >= MIN_SEEDS:
        prior = {"seed_sd": seed_sd, "example_sd": example_sd(rng, m, seed_sd)}
        printed = detectable(n, power.seed_spread(prior, m))
        hits = sum(paired(*simulate(rng, n, m, printed, seed_sd))["verdict"] == "a better" for _ in range(sweeps))
        row.update({"printed_detectable": printed, "power_at_printed": hits / sweeps})
    return row


def render(rows: list[dict]) -> str:
    headers = ["seeds", "examples/seed", "seed sd", "sweeps", "coverage (aim 93-97 %)", "false verdicts (aim <= 5 %)",
               "interval width", "old two-level: coverage", "old width / new", "printed detectable", "power there (aim 0.75-0.85)"]
    body = [[r["seeds"], r["examples"], r["seed_sd"], r["sweeps"], f"{100 * r['coverage']:.1f} %",
             f"{100 * r['false_verdicts']:.1f} %", f"{r['mean_width']:.3f}", f"{100 * r['old_coverage']:.1f} %",
             f"{r['old_width_ratio']:.2f}x" if r["old_width_ratio"] else "-",
             f"{r['printed_detectable']:.3f}" if "printed_detectable" in r else "no power (< 6 seeds)",
             f"{r['power_at_printed']:.3f}" if "power_at_printed" in r else "-"] for r in rows]
    return table(headers, body) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweeps", type=int, default=600, help="simulated sweeps per design and question (default: %(default)s)")
    p.add_argument("--old-sweeps", type=int, default=150, help="of those, how many also get the old two-level interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"))
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    load, start = os.getloadavg(), time.perf_counter()
    rows = []
    for n, m, sd in DESIGNS:
        rows.append(one_design(n, m, sd, args.sweeps, args.old_sweeps, rng))
        print(f"  {n} seeds x {m} examples, seed sd {sd}: coverage {rows[-1]['coverage']:.3f}, false verdicts "
              f"{rows[-1]['false_verdicts']:.3f}, power at printed {rows[-1].get('power_at_printed', '-')}", flush=True)
    shared = [shared_design(n, 277, 0.016, args.sweeps, rng) for n in (3, 10)]
    for r in shared:
        print(f"  {r['seeds']} seeds x the same 277 examples: coverage {r['coverage']:.3f} (the seeds' spread alone: "
              f"{r['seeds_only_coverage']:.3f})", flush=True)
    wall = time.perf_counter() - start
    command = "python -m benchmarks.stats_coverage" + (f" --sweeps {args.sweeps}" if args.sweeps != 600 else "")
    shared_table = table(["seeds", "the same examples for every seed", "coverage of the population's difference",
                          "the seeds' spread alone (before)"],
                         [[r["seeds"], r["examples"], f"{100 * r['coverage']:.1f} %", f"{100 * r['seeds_only_coverage']:.1f} %"]
                          for r in shared])
    text = (f"# The verdict rule against simulated sweeps (both noises)\n\n    {command}\n\n{render(rows)}\n"
            f"Every seed scoring the same 277 examples (a whole validation set, drawn anew per sweep; examples' own "
            f"effects sd 0.3):\n\n{shared_table}\n\n"
            f"- each row: {args.sweeps} simulated sweeps for coverage (true difference 0.05), {args.sweeps} for false "
            f"verdicts (no difference), {args.sweeps} for power at the printed difference; the old interval on the first "
            f"{args.old_sweeps}\n- machine: 1-minute load {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
            f"{wall:.0f} s in all\n")
    publish("stats_coverage", Path(args.out_dir), text, {"benchmark": "stats_coverage", "command": command, "args": vars(args),
                                                         "figures": rows, "shared": shared, "run": {"wall_seconds": round(wall, 1)},
                                                         "env": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
