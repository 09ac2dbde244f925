"""Statistics over data seeds and evaluation examples: an interval per cell, and paired comparisons
between methods whose verdicts say when a difference is real, absent, or beyond this design.

    python -m orchestrator summarize results/quickstart      # summary.md/json carry these
    python -m benchmarks.stats_coverage                       # the rule's coverage, false verdicts and power, simulated

Two sources of noise move a few-shot result: the data seed (which examples were drawn, the training
seed derived from it) and the evaluation sample (which test examples were scored). A seed's mean
over its own examples already holds both: var(per-seed value) = σ²_seed + σ²_examples / m. So the
interval is the t-interval over the per-seed values (per-seed paired differences for a comparison),
which counts each noise once. Resampling examples again inside resampled seeds would count the
examples' noise twice (Davison & Hinkley 1997, §3.8): this module did that until 2026-12 and its
intervals were 1.1–1.4× too wide. Seeds can agree by chance more closely than their examples' noise
allows: below 6 seeds the interval is never narrower than that noise, from 6 on only where the seeds'
spread falls under its 2.5 % chance level (so the floor leaves coverage nominal).

The test is the sign-flip (permutation) test over paired seeds, exact up to 20 seeds (all 2ⁿ
patterns), Monte Carlo above (its standard error is stated). Its smallest p is 2/2ⁿ: below 6 seeds it
can never reach 0.05, and a comparison over fewer seeds is `inconclusive` whatever its size.
Verdicts: `a better` / `b better` (p < 0.05 and the interval excludes 0), `no detectable difference`
(with the smallest difference this rule detects at 80 % power, found by simulating the rule),
`inconclusive` (the design cannot reach significance, with the reason).
"""
from __future__ import annotations

import functools
import math

import numpy as np

# two-sided 95 % quantiles of Student's t by degrees of freedom 1..30 (no SciPy dependency)
T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
Z975 = 1.959964
COLLAPSE = 0.9  # a seed that answers one class at least this often on a set has collapsed there
ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 6  # the fewest paired seeds whose sign-flip p can fall below ALPHA (2 / 2^6 = 0.031)
EXACT_UP_TO = 20  # sign-flip patterns enumerated up to 2^20; Monte Carlo above
MONTE_CARLO = 200_000
VERDICTS = ("a better", "b better", "no detectable difference", "inconclusive")


def t95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t: the table to 30 df, a Cornish-Fisher expansion above
    (within 1e-4 of the exact value there)."""
    if df <= len(T95):
        return T95[max(1, df) - 1]
    z = Z975
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def min_p(n: int) -> float:
    """The smallest two-sided p an exact sign-flip test over n paired seeds can give."""
    return min(1.0, 2 / 2 ** n) if n else 1.0


def examples_variance(values: np.ndarray) -> float:
    """The variance of one seed's mean that its evaluation sample alone causes: var(x) / m."""
    v = np.asarray(values, dtype=float)
    return float(np.var(v, ddof=1) / len(v)) if len(v) > 1 else 0.0


def stratified_variance(values: np.ndarray, strata: np.ndarray) -> float:
    """The variance of one seed's mean over a subset stratified by `strata` (equal shares per label,
    `trainers.data.tasks.eval_subset`): the pooled variance within strata over m. What moves between
    strata (a method that answers one class gains on one label what it loses on the other) cannot
    move a stratified subset's mean."""
    v, g = np.asarray(values, dtype=float), np.asarray(strata)
    groups = [v[g == k] for k in np.unique(g)]
    df = len(v) - len(groups)
    if df < 1:
        return examples_variance(v)
    return float(sum(((x - x.mean()) ** 2).sum() for x in groups) / df / len(v))


def seed_noise(values: list[np.ndarray], strata: list[np.ndarray] | None, overlap: float) -> list[float]:
    """Each seed's examples' noise (the floor of the seeds' spread): within strata where each seed
    scored its own stratified subset (little shared: `overlap` × m < 1/2; every seed the same count
    per label, give or take the two an over-long input may drop) and the strata are known, else
    var(x) / m."""
    if strata is not None and values and overlap * len(values[0]) < 0.5:
        counts = np.array([np.bincount(np.asarray(g, dtype=int), minlength=2)[:2] for g in strata])
        if len(counts) and (counts.max(axis=0) - counts.min(axis=0)).max() <= 2:
            return [stratified_variance(v, g) for v, g in zip(values, strata)]
    return [examples_variance(v) for v in values]


def chance_agreement(df: int) -> float:
    """How closely seeds agree by chance at most 2.5 % of the time when only their examples' noise
    moves them: the 2.5 % quantile of χ²_df / df (Wilson–Hilferty)."""
    k = 2 / (9 * df)
    return max(0.0, 1 - k - Z975 * math.sqrt(k)) ** 3


def shared_examples(per_seed: list[np.ndarray], ids: list[list] | None) -> tuple[float, float]:
    """(σ²_b, ō): how much of the mean's variance the evaluation examples that seeds share add, which
    the seeds' own spread cannot show (a shared example's effect moves every seed alike). σ²_b, the
    variance of the examples' own effects, is the covariance of two seeds' values on the examples both
    scored (each seed centred on its mean), pooled over pairs of seeds; ō is the mean over pairs of
    |shared| / (m_i m_k): 1/m when every seed scored the same m examples, 0 when none were shared.
    The mean's variance is then s²_seeds / n + σ²_b ō (a crossed seeds × examples design)."""
    if ids is None or len(per_seed) < 2:
        return 0.0, 0.0
    index = [{k: j for j, k in enumerate(i)} for i in ids]
    cov_sum = weight = overlap = 0.0
    pairs = 0
    for i in range(len(per_seed)):
        for k in range(i + 1, len(per_seed)):
            shared = [key for key in index[i] if key in index[k]]
            pairs += 1
            overlap += len(shared) / (len(per_seed[i]) * len(per_seed[k]))
            if len(shared) >= 2:
                xi = per_seed[i][[index[i][key] for key in shared]] - per_seed[i].mean()
                xk = per_seed[k][[index[k][key] for key in shared]] - per_seed[k].mean()
                cov_sum += float(xi @ xk)
                weight += len(shared)
    return (max(0.0, cov_sum / weight) if weight else 0.0), overlap / pairs


def seeds_interval(observed: list[float], floors: list[float], bounds: tuple[float, float],
                   shared: float = 0.0) -> tuple[list[float], float]:
    """([lo, hi], standard error) of the mean of per-seed values: the t-interval over the seeds. Their
    variance cannot truly be below the examples' own (`floors`: each seed's examples_variance): below
    MIN_SEEDS it is floored there; from MIN_SEEDS on only where the seeds agree more closely than the
    examples' noise allows (2.5 % of the time by chance), so coverage stays nominal. `shared`: the
    variance the examples the seeds share add (`shared_examples`). One seed: the examples' noise
    alone (a normal interval)."""
    n, mean = len(observed), float(np.mean(observed))
    if n == 1:
        se, q = math.sqrt(floors[0]), Z975
    else:
        var, floor = float(np.var(observed, ddof=1)), float(np.mean(floors))
        var = max(var, floor if n < MIN_SEEDS else floor * chance_agreement(n - 1))
        se, q = math.sqrt(var / n + shared), t95(n - 1)
    return [max(bounds[0], mean - q * se), min(bounds[1], mean + q * se)], se


def bernoulli(accuracy: float, n: int) -> np.ndarray:
    """A seed's correctness vector when only its accuracy and size are known (its mean and binomial
    variance are all the statistics read)."""
    k = int(round(accuracy * n))
    return np.array([1.0] * k + [0.0] * (n - k))


def cell_interval(per_seed: dict[int, np.ndarray], ids: dict[int, list] | None = None,
                  strata: dict[int, np.ndarray] | None = None) -> dict | None:
    """{"mean", "std", "n", "ci95", "examples"} of a cell's accuracy over its seeds, both noises in the
    interval (`ids`: seed -> its examples' ids, when known: examples the seeds share add theirs;
    `strata`: seed -> its examples' labels, when known: a stratified subset's noise is within them)."""
    seeds = [s for s, v in sorted(per_seed.items()) if len(v)]
    values = [np.asarray(per_seed[s], dtype=float) for s in seeds]
    if not values:
        return None
    observed = [float(v.mean()) for v in values]
    n, mean = len(observed), float(np.mean(observed))
    b2, overlap = shared_examples(values, [ids[s] for s in seeds] if ids else None)
    floors = seed_noise(values, [strata[s] for s in seeds] if strata else None, overlap)
    ci, _ = seeds_interval(observed, floors, (0.0, 1.0), b2 * overlap)
    return {"mean": mean, "std": float(np.std(observed, ddof=1)) if n > 1 else 0.0, "n": n, "ci95": ci,
            "examples": int(sum(len(v) for v in values))}


def _flipped_sums(d: np.ndarray) -> np.ndarray:
    """|Σ ± d_i| over all 2ⁿ sign patterns (n ≤ EXACT_UP_TO; 8 MiB at 20)."""
    sums = np.zeros(1)
    for x in d:
        sums = np.concatenate((sums + x, sums - x))
    return np.abs(sums)


def sign_flip(diffs: list[float], seed: int = 0) -> tuple[float, float]:
    """(two-sided p of the mean paired difference under random signs, its Monte Carlo standard error:
    0 when every pattern was enumerated, up to EXACT_UP_TO seeds)."""
    d = np.asarray(diffs, dtype=float)
    observed = abs(d.sum()) - 1e-9 * max(1.0, float(np.abs(d).sum()))  # ties count as extreme
    if len(d) <= EXACT_UP_TO:
        return float((_flipped_sums(d) >= observed).mean()), 0.0
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, MONTE_CARLO, 20_000):
        signs = rng.choice((1.0, -1.0), size=(min(20_000, MONTE_CARLO - start), len(d)))
        hits += int((np.abs(signs @ d) >= observed).sum())
    p = (hits + 1) / (MONTE_CARLO + 1)  # the observed pattern counts once: never 0
    return p, math.sqrt(p * (1 - p) / MONTE_CARLO)


def sign_flip_p(diffs: list[float]) -> float:
    return sign_flip(diffs)[0]


@functools.lru_cache(maxsize=128)
def standard_detectable(n: int, power: float = POWER, sweeps: int = 4000, seed: int = 0) -> float | None:
    """The smallest true difference, in units of one seed's standard deviation, that this module's
    rule (sign-flip p < ALPHA and the t-interval excluding 0, the right side named) calls with the
    given power over n seeds: found by simulating the rule on normal per-seed differences (the rule is
    scale-free, so one number per n serves every spread). None below MIN_SEEDS: no power at all."""
    if n < MIN_SEEDS:
        return None
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((sweeps, n))
    if n <= 12:
        signs = np.array(np.meshgrid(*[[1.0, -1.0]] * n)).reshape(n, -1).T
    else:  # a shared random sample of patterns: p's error ≈ 0.005 near 0.05, enough to plan by
        signs = np.vstack([np.ones(n), rng.choice((1.0, -1.0), size=(2047, n))])
    q = t95(n - 1)

    def power_at(effect: float) -> float:
        d = z + effect
        mean, sd = d.mean(axis=1), d.std(axis=1, ddof=1)
        t_ok = mean - q * sd / math.sqrt(n) > 0
        hits = 0
        for block in range(0, sweeps, 256):
            dd = d[block:block + 256]
            obs = np.abs(dd.sum(axis=1)) - 1e-9
            p = (np.abs(dd @ signs.T) >= obs[:, None]).mean(axis=1)
            hits += int(((p < ALPHA) & t_ok[block:block + 256]).sum())
        return hits / sweeps

    normal = (q + 0.8416) / math.sqrt(n)  # the t-test's own answer: the rule needs at least this, at most ~1.3x at 6 seeds
    lo, hi = 0.9 * normal, 1.6 * normal
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if power_at(mid) >= power else (mid, hi)
    return hi


def rule_power(n: int, effect: float, sweeps: int = 4000, seed: int = 1) -> float:
    """The rule's power at a true difference of `effect` seed standard deviations over n seeds (simulated)."""
    if n < MIN_SEEDS:
        return 0.0
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(sweeps):
        d = rng.standard_normal(n) + effect
        sd = d.std(ddof=1)
        hits += d.mean() - t95(n - 1) * sd / math.sqrt(n) > 0 and sign_flip_p(d) < ALPHA
    return hits / sweeps


def detectable(n: int, seed_sd: float, shared: float = 0.0) -> float | None:
    """Smallest true difference the rule detects with 80 % power over n seeds whose per-seed
    difference has standard deviation `seed_sd` (None: below MIN_SEEDS it detects nothing). `shared`:
    the variance shared evaluation examples add to the mean, which no number of seeds averages away;
    the rule's interval holds it, so the detectable difference grows by it (in the interval's units)."""
    unit = standard_detectable(n)
    if unit is None:
        return None
    se_seeds = seed_sd / math.sqrt(n)
    return unit * math.sqrt(n) * math.sqrt(se_seeds ** 2 + shared)


def paired(a: dict[int, np.ndarray], b: dict[int, np.ndarray], ids: dict[int, list] | None = None,
           strata: dict[int, np.ndarray] | None = None) -> dict | None:
    """A − B over the data seeds both have. `a`, `b`: seed -> aligned 0/1 correctness vectors (the same
    examples in the same order for both methods of a seed); `ids`: seed -> those examples' ids, when
    known (examples the seeds share add their own variance, which the seeds' spread cannot show);
    `strata`: seed -> those examples' labels, when known (a stratified subset's noise is within them).
    Mean difference, t-interval over the per-seed differences, sign-flip p, the verdict with its
    reason, and the smallest difference the design could detect at 80 % power."""
    seeds = sorted(s for s in set(a) & set(b) if len(a[s]) and len(a[s]) == len(b[s]))
    if not seeds:
        return None
    per_seed = [np.asarray(a[s], dtype=float) - np.asarray(b[s], dtype=float) for s in seeds]
    observed = [float(d.mean()) for d in per_seed]
    n, mean = len(seeds), float(np.mean(observed))
    b2, overlap = shared_examples(per_seed, [ids[s] for s in seeds] if ids else None)
    floors = seed_noise(per_seed, [strata[s] for s in seeds] if strata else None, overlap)
    (lo, hi), se = seeds_interval(observed, floors, (-1.0, 1.0), b2 * overlap)
    p, p_error = sign_flip(observed)
    # the design's power: the seeds' observed spread, never below what the examples alone give
    spread = math.sqrt(max(float(np.var(observed, ddof=1)) if n > 1 else 0.0, float(np.mean(floors))))
    size = detectable(n, spread, b2 * overlap)
    out = {"n": n, "mean_diff": mean, "ci95": [lo, hi], "se": se, "p": p, "seeds": seeds,
           "examples": int(sum(len(d) for d in per_seed)), "detectable": size,
           "shared_examples_sd": math.sqrt(b2 * overlap)}
    if n < MIN_SEEDS:
        reason = f"{n} seed{'s' if n > 1 else ''}: p ≥ {min_p(n):.4g}" if n > 1 else "1 seed: no test across seeds"
        return {**out, "verdict": "inconclusive", "reason": reason}
    p_text = f"p {p:.3g}" + (f" (Monte Carlo over {MONTE_CARLO:,} sign patterns, ± {p_error:.1g})" if n > EXACT_UP_TO else "")
    if p < ALPHA and (lo > 0 or hi < 0):
        return {**out, "verdict": "a better" if mean > 0 else "b better", "reason": p_text}
    held = (f" (the examples the seeds share hold ±{1.96 * math.sqrt(b2 * overlap):.3f} of the interval whatever the "
            f"seeds)" if b2 * overlap > 0 else "")
    return {**out, "verdict": "no detectable difference",
            "reason": f"{p_text}; this design detects differences of {size:.3f} or more{held}"}


def collapsed_seeds(top_fractions: list[float]) -> tuple[int, int]:
    """(seeds that answered one class ≥ 90 % of the time, seeds with a prediction) on one set."""
    v = [x for x in top_fractions if x is not None and not math.isnan(x)]
    return sum(x >= COLLAPSE for x in v), len(v)


def collapsed(top_fractions: list[float]) -> bool:
    """Any seed's predictions fall on one class ≥ 90 % of the time: a mean over seeds would hide it."""
    return collapsed_seeds(top_fractions)[0] > 0


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
