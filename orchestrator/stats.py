"""Statistics over data seeds and evaluation examples: an interval per cell, and paired comparisons
between methods whose verdicts say when a difference is real, absent, or beyond this design.

    python -m orchestrator summarize results/quickstart      # summary.md/json carry these

Two sources of noise move a few-shot result: the data seed (which examples were drawn, the training
seed derived from it) and the evaluation sample (which test examples were scored). Intervals hold
both: a two-level bootstrap resamples the data seeds, then, within each drawn seed, its evaluation
examples (a paired comparison reads both methods on the same resampled examples of the same seed).
With the per-example correctness a record carries, the examples are resampled exactly; for older
records without it, each seed's accuracy gets binomial noise of its own size. With few seeds a
percentile bootstrap over seeds understates their spread (over 2–3 seeds it is their min–max), so
an interval is never narrower than the t-interval over the per-seed values: the reported interval
spans both.

The test is the exact sign-flip (permutation) test over paired seeds. It needs no assumption about
the shape of the differences, and it is exact, but its smallest p is 2/2ⁿ: below 6 seeds it can
never reach 0.05, and a comparison over fewer seeds is `inconclusive` whatever its size. Verdicts:
`a better` / `b better` (p < 0.05 and the interval excludes 0), `no detectable difference` (with the
smallest difference this design could have detected at 80 % power), `inconclusive` (the design
cannot reach significance, with the reason).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

# two-sided 95 % quantiles of Student's t by degrees of freedom (no SciPy dependency for 30 numbers)
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
Z80 = 0.8416  # one-sided quantile for 80 % power
COLLAPSE = 0.9  # a set answered with one class at least this often is flagged "collapsed"
BOOTSTRAP = 4_000
ALPHA = 0.05
MIN_SEEDS = 6  # the fewest paired seeds whose sign-flip p can fall below ALPHA (2 / 2^6 = 0.031)
VERDICTS = ("a better", "b better", "no detectable difference", "inconclusive")


def t95(df: int) -> float:
    return T95[df - 1] if df <= len(T95) else 1.96


def min_p(n: int) -> float:
    """The smallest two-sided p an exact sign-flip test over n paired seeds can give."""
    return min(1.0, 2 / 2 ** n) if n else 1.0


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _resampled_means(values: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` bootstrap means of `values` (few distinct values: multinomial counts, not index draws)."""
    uniq, freq = np.unique(values, return_counts=True)
    draws = rng.multinomial(len(values), freq / freq.sum(), size=count)
    return draws @ uniq / len(values)


def two_level(per_seed: list[np.ndarray], rounds: int = BOOTSTRAP, seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of the mean over seeds of each seed's mean: the seeds resampled with
    replacement, then each drawn seed's examples resampled with replacement."""
    rng = _rng(seed)
    n = len(per_seed)
    pick = rng.integers(0, n, size=(rounds, n))
    means = np.empty((rounds, n))
    for s, values in enumerate(per_seed):
        chosen = pick == s
        if chosen.any():
            means[chosen] = _resampled_means(np.asarray(values, dtype=float), int(chosen.sum()), rng)
    return means.mean(axis=1)


def _hull(boot: np.ndarray, observed: list[float], bounds: tuple[float, float]) -> list[float]:
    """The percentile interval of the two-level bootstrap, widened to the t-interval over the
    per-seed values where that is wider (with few seeds the bootstrap understates their spread),
    within `bounds` (an accuracy lies in [0, 1], a difference of two in [-1, 1])."""
    lo, hi = float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))
    n = len(observed)
    if n > 1:
        mean, sd = float(np.mean(observed)), float(np.std(observed, ddof=1))
        half = t95(n - 1) * sd / math.sqrt(n)
        lo, hi = min(lo, mean - half), max(hi, mean + half)
    return [max(bounds[0], lo), min(bounds[1], hi)]


def bernoulli(accuracy: float, n: int) -> np.ndarray:
    """A seed's correctness vector when only its accuracy and size are known (the bootstrap of a
    0/1 vector depends on its counts alone)."""
    k = int(round(accuracy * n))
    return np.array([1.0] * k + [0.0] * (n - k))


def cell_interval(per_seed: dict[int, np.ndarray]) -> dict | None:
    """{"mean", "std", "n", "ci95", "examples"} of a cell's accuracy over its seeds, both noises in the interval."""
    values = [np.asarray(v, dtype=float) for _, v in sorted(per_seed.items()) if len(v)]
    if not values:
        return None
    observed = [float(v.mean()) for v in values]
    n, mean = len(observed), float(np.mean(observed))
    std = float(np.std(observed, ddof=1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n, "ci95": _hull(two_level(values), observed, (0.0, 1.0)),
            "examples": int(sum(len(v) for v in values))}


def sign_flip_p(diffs: list[float], rounds: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of the mean paired difference under random signs (exact for n ≤ 16)."""
    d = np.asarray(diffs, dtype=float)
    observed = abs(d.mean())
    if len(d) <= 16:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
    else:
        signs = _rng(seed).choice((1.0, -1.0), size=(rounds, len(d)))
    flipped = np.abs((signs * d).mean(axis=1))
    return float((flipped >= observed - 1e-12).mean())


def detectable(n: int, se: float) -> float:
    """Smallest true difference a paired design with standard error `se` (of the mean over n seeds)
    detects with 80 % power at two-sided 5 %: (t_{0.975, n-1} + z_{0.8}) * se."""
    return (t95(max(1, n - 1)) + Z80) * se


def planned_detectable(n: int, seed_sd: float, accuracy: float, examples: int) -> float:
    """The same before running: per-seed differences spread by `seed_sd` across draws plus each
    seed's own evaluation noise for two methods scored on `examples` examples (independent errors:
    2 p (1 - p) / m), over n seeds."""
    per_seed = math.sqrt(seed_sd ** 2 + 2 * accuracy * (1 - accuracy) / examples)
    return detectable(n, per_seed / math.sqrt(n))


def paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> dict | None:
    """A − B over the data seeds both have. `a`, `b`: seed -> per-example differences' sources, given
    as aligned 0/1 correctness vectors (the same examples in the same order for both methods of a seed).
    Mean difference, interval (two-level bootstrap, never narrower than the t-interval), exact
    sign-flip p, the verdict with its reason, and the smallest difference the design could detect."""
    seeds = sorted(s for s in set(a) & set(b) if len(a[s]) and len(a[s]) == len(b[s]))
    if not seeds:
        return None
    per_seed = [np.asarray(a[s], dtype=float) - np.asarray(b[s], dtype=float) for s in seeds]
    observed = [float(d.mean()) for d in per_seed]
    n, mean = len(seeds), float(np.mean(observed))
    boot = two_level(per_seed)
    lo, hi = _hull(boot, observed, (-1.0, 1.0))
    p = sign_flip_p(observed)
    se = max(float(boot.std()), float(np.std(observed, ddof=1)) / math.sqrt(n) if n > 1 else 0.0)
    out = {"n": n, "mean_diff": mean, "ci95": [lo, hi], "p": p, "seeds": seeds,
           "examples": int(sum(len(d) for d in per_seed)), "detectable": detectable(n, se)}
    if n < MIN_SEEDS:
        reason = f"{n} seed{'s' if n > 1 else ''}: p ≥ {min_p(n):.4g}" if n > 1 else "1 seed: no test across seeds"
        return {**out, "verdict": "inconclusive", "reason": reason}
    if p < ALPHA and (lo > 0 or hi < 0):
        return {**out, "verdict": "a better" if mean > 0 else "b better", "reason": f"p {p:.3g}"}
    return {**out, "verdict": "no detectable difference",
            "reason": f"p {p:.2f}; this design detects differences of {out['detectable']:.3f} or more"}


def collapsed(top_fractions: list[float]) -> bool:
    """Predictions fall on one class ≥ 90 % of the time (mean over seeds of the largest class fraction)."""
    v = [x for x in top_fractions if x is not None and not math.isnan(x)]
    return bool(v) and sum(v) / len(v) >= COLLAPSE


def mean_ci(values: list[float]) -> dict | None:
    """{"mean", "std", "n", "ci95"} of a quantity with no examples behind it (memory, seconds): a
    t-interval over the seeds (None for a single value)."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return None
    n, mean = len(v), sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else 0.0
    half = t95(n - 1) * std / math.sqrt(n) if n > 1 else None
    return {"mean": mean, "std": std, "n": n, "ci95": [mean - half, mean + half] if half is not None else None}
