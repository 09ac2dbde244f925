"""Statistics over data seeds: a confidence interval per cell, and paired differences between
methods that say when a difference is noise.

    python -m orchestrator summarize results/quickstart      # summary.md/json carry these

Seeds are the replicates: a cell's accuracy over its data seeds gets a t-interval; two methods
of the same task × model × shots are compared on the data seeds they share (the same few-shot
draws), with a paired bootstrap 95 % interval of the mean difference and a sign-flip permutation
p-value (exact up to 16 seeds). A difference whose interval contains 0, or whose p is 0.05 or
more, is "within noise" (so fewer than 5 seeds never separate two methods).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

# two-sided 95 % quantiles of Student's t by degrees of freedom (no SciPy dependency for 30 numbers)
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
COLLAPSE = 0.9  # a set answered with one class at least this often is flagged "collapsed"
BOOTSTRAP = 10_000
ALPHA = 0.05


def t95(df: int) -> float:
    return T95[df - 1] if df <= len(T95) else 1.96


def mean_ci(values: list[float]) -> dict | None:
    """{"mean", "std", "n", "ci95": [lo, hi] or None for a single value}."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return None
    n, mean = len(v), sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    half = t95(n - 1) * std / math.sqrt(n) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half] if half is not None else None}


def sign_flip_p(diffs: list[float], rounds: int = BOOTSTRAP, seed: int = 0) -> float:
    """Two-sided p-value of the mean paired difference under random signs (exact for n ≤ 16)."""
    d = np.asarray(diffs, dtype=float)
    observed = abs(d.mean())
    if len(d) <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(rounds, len(d)))
    flipped = np.abs((signs * d).mean(axis=1))
    return float((flipped >= observed - 1e-12).mean())


def bootstrap_ci(diffs: list[float], rounds: int = BOOTSTRAP, seed: int = 0) -> list[float]:
    """Percentile 95 % interval of the mean difference, resampling seeds with replacement."""
    d = np.asarray(diffs, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(rounds, len(d)))
    means = d[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    """A − B over the data seeds both have: mean difference, bootstrap interval, p-value, verdict."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds if a[s] is not None and b[s] is not None]
    if not diffs:
        return None
    lo, hi = bootstrap_ci(diffs) if len(diffs) > 1 else (diffs[0], diffs[0])
    p = sign_flip_p(diffs)
    # A bootstrap over 2-4 seeds cannot span 0 when every difference has one sign; the permutation
    # test can never reach 0.05 there (its smallest p is 2 / 2^n), so both must agree.
    noise = len(diffs) < 2 or lo <= 0 <= hi or p >= ALPHA
    return {"n": len(diffs), "mean_diff": float(np.mean(diffs)), "ci95": [lo, hi], "p": p,
            "verdict": "within noise" if noise else ("A better" if lo > 0 else "B better")}


def collapsed(top_fractions: list[float]) -> bool:
    """Predictions fall on one class ≥ 90 % of the time (mean over seeds of the largest class fraction)."""
    v = [x for x in top_fractions if x is not None and not math.isnan(x)]
    return bool(v) and sum(v) / len(v) >= COLLAPSE
