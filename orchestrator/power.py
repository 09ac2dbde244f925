"""Power before spending: the smallest difference a planned sweep can detect, and whether its seeds
can reach significance at all.

    python -m orchestrator sweep --space cd_vs_icl --dry-run                    # from the stated prior
    python -m orchestrator sweep --space cd_vs_icl --dry-run --prior results/sizes_cpu   # from a past sweep

Per task, every pair of methods of a model × shots is compared over the planned data seeds, each on
that seed's evaluation examples. The smallest true difference found with 80 % power at two-sided 5 %
is (t_{0.975, n-1} + z_{0.8}) · sd / √n, where sd, the spread of one seed's difference, holds the
spread across few-shot draws (`seed_sd`) and the evaluation noise of two methods scored on m
examples (2 p (1 - p) / m, independent errors). The prior is stated: `seed_sd` 0.05 (the reference
paper's seed-to-seed spread is often 5–10 points) and accuracy 0.6, unless `--prior DIR` reads both
from an earlier sweep's records. Fewer than 6 seeds can never reach p < 0.05 with the exact
sign-flip test the summary uses; the plan says so before any GPU hour is spent.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from orchestrator.stats import MIN_SEEDS, min_p, planned_detectable

DEFAULT_SEED_SD, DEFAULT_ACCURACY, ASSUMED_EVAL = 0.05, 0.6, 277  # 277: RTE's validation set, when no limit is set


def prior_from(folder: Path) -> dict:
    """seed_sd and accuracy from an earlier sweep's comparisons: the spread of its per-seed paired
    differences less their own evaluation noise, and its mean accuracy."""
    from orchestrator.compare import aligned, comparisons
    from orchestrator.results import load_records, trials_table
    records = load_records(folder, set_aside=False)
    table = trials_table(records)
    comps = [c for c in comparisons(table, records) if c["n"] > 1]
    if not comps:
        raise ValueError(f"{folder} has no comparison over two or more data seeds to take a prior from")
    accs = table[(table["phase"] != "search") & (table["status"] == "completed")]["in_domain_accuracy"].dropna()
    p = float(accs.mean()) if len(accs) else DEFAULT_ACCURACY
    variances, sizes = [], []
    for c in comps:
        ra = table[(table["cell"] == c["a"]) & (table["phase"] != "search") & (table["status"] == "completed")]
        rb = table[(table["cell"] == c["b"]) & (table["phase"] != "search") & (table["status"] == "completed")]
        diffs, ms = [], []
        for s in c["seeds"]:
            ia, ib = ra.index[ra["data_seed"] == s], rb.index[rb["data_seed"] == s]
            if len(ia) and len(ib):
                a, b = aligned(records[ia[-1]], records[ib[-1]], c["set"])
                diffs.append(float((a - b).mean()))
                ms.append(len(a))
        if len(diffs) > 1:
            variances.append(float(np.var(diffs, ddof=1)))
            sizes.append(float(np.mean(ms)))
    m = float(np.mean(sizes)) if sizes else ASSUMED_EVAL
    seed_var = max(0.0, float(np.median(variances)) - 2 * p * (1 - p) / m) if variances else DEFAULT_SEED_SD ** 2
    return {"seed_sd": math.sqrt(seed_var), "accuracy": p, "source": f"the records of {folder}"}


def default_prior() -> dict:
    return {"seed_sd": DEFAULT_SEED_SD, "accuracy": DEFAULT_ACCURACY,
            "source": f"the stated prior (seed spread {DEFAULT_SEED_SD}, accuracy {DEFAULT_ACCURACY})"}


def eval_size(space, task: str) -> tuple[int, str]:
    """Examples per evaluation set: --eval-limit, else the local file's rows, else an assumption said as such."""
    limit = space.fixed.get("eval_limit")
    if limit:
        return int(limit), f"eval_limit {limit}"
    if space.data_dir:
        from trainers.tasks import task_spec
        path = Path(space.data_dir) / task_spec(task)["eval"]["local"]
        if path.is_file():
            with path.open() as f:
                return sum(1 for _ in f), f"{path.name}'s rows"
    return ASSUMED_EVAL, f"assumed {ASSUMED_EVAL} (no eval_limit; the set's size is known once its data loads)"


def plan_lines(space, prior: dict | None = None) -> list[str]:
    """The dry run's power section: per task, how many comparisons and the smallest detectable difference."""
    from orchestrator import plan
    prior = prior or default_prior()
    n = len(space.data_seeds)
    lines = [f"power: {n} data seeds; prior from {prior['source']}"]
    for task in space.tasks:
        variants = {c.variant for c in plan.cells(space) if c.task == task}
        pairs = len(variants) * (len(variants) - 1) // 2 * len(space.models) * len(space.shots)
        m, how = eval_size(space, task)
        size = planned_detectable(n, prior["seed_sd"], prior["accuracy"], m) if n > 1 else float("nan")
        lines.append(f"  {task}: {pairs} paired comparison(s) per evaluation set, {m} examples each ({how}): "
                     f"differences of {size:.3f} or more are detected with 80 % power" if n > 1 else
                     f"  {task}: {pairs} paired comparison(s); one seed: no test across seeds")
    if n < MIN_SEEDS:
        lines.append(f"warning: with {n} data seed(s) no comparison can reach p < 0.05 (the sign-flip test's smallest p "
                     f"is {min_p(n):.4g}): every verdict will be 'inconclusive'; use at least {MIN_SEEDS} data seeds "
                     f"(--set 'data_seeds=[{', '.join(map(str, range(MIN_SEEDS)))}]') for a verdict")
    return lines
