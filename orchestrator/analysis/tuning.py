"""Was a method under-tuned? The expected best dev accuracy after k search trials, per cell, against
k and against the compute those k trials cost.

    python -m orchestrator report results/acceptance/task_matrix_cpu    # the report's "tuning budget" figure

Dodge et al. (2019, "Show Your Work") plot the expected maximum of k draws from the n observed
trials' scores. Drawn with replacement, that estimate is biased; Tang et al. (2020, "Showing Your
Work Doesn't Always Work") give the unbiased one, the mean maximum over every k-subset of the n
trials (without replacement): with scores sorted v(1) ≤ … ≤ v(n), E[max of k] = Σᵢ v(i) · C(i−1, k−1)
/ C(n, k), defined for k ≤ n. A curve still rising at k = n says more trials would likely have found
a better configuration.
"""
from __future__ import annotations

from math import comb
from pathlib import Path

import matplotlib.ticker

from orchestrator.analysis.figures import Skip, color, plt, save, variant
from trainers.contract import Record


def expected_max(values: list[float], k: int) -> float:
    """The unbiased estimate of the expected best of k trials from n observed ones (k ≤ n)."""
    v = sorted(values)
    n = len(v)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the {n} trials observed, not {k}")
    return sum(v[i - 1] * comb(i - 1, k - 1) for i in range(k, n + 1)) / comb(n, k)


def search_scores(records: list[Record]) -> dict[str, tuple[list[float], list[float]]]:
    """cell -> (each search trial's last dev accuracy, its seconds): pruned trials count at the dev
    accuracy they were stopped with, and what they cost."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in records:
        if r.phase != "search" or r.status not in ("completed", "pruned") or not r.history:
            continue
        scores, seconds = out.setdefault(r.cell, ([], []))
        scores.append(float(r.history[-1].dev_accuracy))
        seconds.append(float(r.trial_seconds or 0.0))
    return out


def tuning_curves(records: list[Record], out: Path) -> list[Path]:
    """Expected best dev accuracy against the number of search trials and against their compute, one
    line per searched cell (panels name their task)."""
    scores = {c: v for c, v in search_scores(records).items() if len(v[0]) >= 2}
    if not scores:
        raise Skip("fewer than two finished search trials per cell")
    fig, (by_k, by_s) = plt.subplots(1, 2, figsize=(11, 4.2))
    tasks = sorted({cell.split("/")[0] for cell in scores})
    for cell, (values, seconds) in sorted(scores.items()):
        marker = "osD^vP*X"[tasks.index(cell.split("/")[0]) % 8]  # colour: method; shape: task
        ks = list(range(1, len(values) + 1))
        curve = [expected_max(values, k) for k in ks]
        mean_s = sum(seconds) / len(seconds)
        label = f"{cell.split('/')[0]}: {variant(cell)} · {cell.split('/')[2]} ({len(values)} trials)"
        by_k.plot(ks, curve, marker=marker, color=color(variant(cell)), label=label)
        by_s.plot([k * mean_s for k in ks], curve, marker=marker, color=color(variant(cell)), label=label)
    by_k.set(xlabel="search trials (k)", ylabel="expected best dev accuracy")
    by_k.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    by_s.set(xlabel="search compute (seconds: k × the mean trial's)", ylabel="expected best dev accuracy")
    for ax in (by_k, by_s):
        ax.grid(alpha=0.3)
    by_s.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("Expected best dev accuracy against the tuning budget (unbiased, Tang et al. 2020); "
                 "still rising at the last trial: under-tuned", y=1.02, fontsize=10)
    return save(fig, out, "tuning_budget")
