"""When is a difference real: the two-level bootstrap against a simulation, the four verdicts, the
smallest detectable difference by hand, collapse flags, and summaries recomputed from per-example
records alone."""
import json
import math

import numpy as np
import pytest

from orchestrator.results import write_record, write_tables
from orchestrator.stats import (bernoulli, cell_interval, collapsed, detectable, min_p, paired, planned_detectable,
                                sign_flip_p, t95, two_level)


def simulate(rng, n_seeds, m, delta, seed_sd=0.04, base=0.65):
    """One sweep's per-example correctness for two methods: each seed moves both methods' accuracy
    by its own draw and their gap by seed noise; examples are Bernoulli on top."""
    a, b = {}, {}
    for s in range(n_seeds):
        shift = rng.normal(0, 0.05)
        gap = delta + rng.normal(0, seed_sd)
        pb = min(max(base + shift, 0.05), 0.95)
        pa = min(max(pb + gap, 0.05), 0.95)
        a[s], b[s] = (rng.random(m) < pa).astype(float), (rng.random(m) < pb).astype(float)
    return a, b


def test_the_two_level_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = [lo <= 0.05 <= hi for lo, hi in (paired(*simulate(rng, 10, 100, 0.05))["ci95"] for _ in range(120))]
    assert 0.88 <= np.mean(covered) <= 1.0, np.mean(covered)


def test_the_interval_holds_the_examples_noise_even_when_the_seeds_agree():
    # three seeds with the very same accuracy: a bootstrap over seeds alone would be one point
    per_seed = {s: bernoulli(0.6, 64) for s in range(3)}
    st = cell_interval(per_seed)
    half = (st["ci95"][1] - st["ci95"][0]) / 2
    binomial = 1.96 * math.sqrt(0.6 * 0.4 / (3 * 64))  # the pooled examples' own noise
    assert st["std"] == 0 and st["mean"] == pytest.approx(0.6, abs=0.01) and half >= 0.8 * binomial
    boot = two_level([bernoulli(0.5, 40)])  # one seed: the examples alone
    assert boot.std() == pytest.approx(math.sqrt(0.25 / 40), rel=0.1)


def test_the_interval_is_never_narrower_than_the_t_interval_over_seeds():
    a = {s: bernoulli(0.6 + 0.05 * s, 1000) for s in range(3)}
    b = {s: bernoulli(0.55 + 0.05 * s - 0.03 * (s == 1), 1000) for s in range(3)}
    r = paired(a, b)
    diffs = [0.05, 0.08, 0.05]
    half = t95(2) * np.std(diffs, ddof=1) / math.sqrt(3)
    assert r["ci95"][0] <= np.mean(diffs) - half + 1e-9 and r["ci95"][1] >= np.mean(diffs) + half - 1e-9


def test_five_seeds_are_inconclusive_whatever_the_size_of_the_difference():
    a = {s: bernoulli(0.9, 200) for s in range(5)}
    b = {s: bernoulli(0.5, 200) for s in range(5)}
    r = paired(a, b)
    assert r["verdict"] == "inconclusive" and r["reason"] == "5 seeds: p ≥ 0.0625" and r["p"] == pytest.approx(0.0625)
    assert paired({0: a[0]}, {0: b[0]})["reason"] == "1 seed: no test across seeds"
    assert min_p(5) == 0.0625 and min_p(6) == 0.03125


def test_a_consistent_difference_over_eight_seeds_is_called_for_the_right_side():
    a = {s: bernoulli(0.7 + 0.01 * s, 200) for s in range(8)}
    b = {s: bernoulli(0.6 + 0.01 * s, 200) for s in range(8)}
    assert paired(a, b)["verdict"] == "a better" and paired(b, a)["verdict"] == "b better"
    assert paired(a, b)["p"] == pytest.approx(2 / 2 ** 8)


def test_no_detectable_difference_says_what_the_design_could_have_detected():
    rng = np.random.default_rng(3)
    a = {s: (rng.random(100) < 0.6).astype(float) for s in range(8)}
    b = {s: (rng.random(100) < 0.6).astype(float) for s in range(8)}
    r = paired(a, b)
    assert r["verdict"] == "no detectable difference"
    assert r["detectable"] > abs(r["mean_diff"]) and f"{r['detectable']:.3f}" in r["reason"]
    diffs = [float((a[s] - b[s]).mean()) for s in range(8)]
    se = max(np.std(diffs, ddof=1) / math.sqrt(8), 0.0)
    assert r["detectable"] >= detectable(8, se) - 1e-9  # never below what the seeds' own spread gives


def test_the_planned_detectable_difference_by_hand():
    # 10 seeds, 64 examples, seed spread 0.05, accuracy 0.6:
    # sd = sqrt(0.05^2 + 2 * 0.6 * 0.4 / 64) = sqrt(0.0025 + 0.0075) = 0.1; (2.262 + 0.8416) * 0.1 / sqrt(10)
    assert planned_detectable(10, 0.05, 0.6, 64) == pytest.approx((2.262 + 0.8416) * 0.1 / math.sqrt(10), rel=1e-6)
    assert planned_detectable(10, 0.05, 0.6, 64) == pytest.approx(0.0981, abs=1e-4)


def test_sign_flip_is_exact_for_few_seeds():
    assert sign_flip_p([0.1, 0.1, 0.1]) == pytest.approx(0.25)
    assert sign_flip_p([0.1, -0.1]) == 1.0


def test_collapse_is_a_mean_top_class_fraction_of_at_least_0_9():
    assert collapsed([0.95, 0.92]) and not collapsed([0.95, 0.6]) and not collapsed([])


def rec(method, seed, correct: str, hans: str, hans_top, key, ids=None):
    block = lambda c, top, name: {  # noqa: E731
        "accuracy": c.count("1") / len(c), "n_scored": len(c), "pred_fraction": {"a": top, "b": 1 - top},
        "examples": {"ids": (ids if name == "x" else None) or [f"{name}{seed}-{i}" for i in range(len(c))], "correct": c,
                     "pred": "0" * len(c)}}
    return {"phase": "replicate", "status": "completed", "trial_key": key, "cell": f"rte/{method}/m/8shot",
            "config": {"task": "rte", "method": method, "peft": {"kind": "none"}, "model": "m", "shots": 8,
                       "data_seed": seed, "seed": 0},
            "metrics": {"in_domain": block(correct, 0.5, "x"), "ood": {"hans": block(hans, hans_top, "h")}},
            "env": {"time": "2026-01-01T00:00:00"}}


def test_summaries_are_recomputed_from_per_example_records_with_verdicts_everywhere(tmp_path):
    for seed in range(6):  # icl right on 8 of 10, pbft on 7 of the same 10 examples; HANS identical
        write_record(tmp_path, rec("icl", seed, "1111111100", "1010", 0.98, f"i{seed}"))
        write_record(tmp_path, rec("pbft", seed, "1111111000", "1010", 0.6, f"p{seed}"))
    table, summary, _, comps = write_tables(tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    icl = next(c for c in saved["cells"] if c["method"] == "icl")
    assert icl["collapsed"] == ["hans"] and icl["in_domain_accuracy"]["mean"] == pytest.approx(0.8)
    lo, hi = icl["in_domain_accuracy"]["ci95"]
    assert lo < 0.8 < hi  # every seed scored 0.8: the examples' noise alone keeps the interval open
    assert summary.set_index("cell").loc["rte/icl/m/8shot", "flags"] == "COLLAPSED on hans"
    comp = next(c for c in saved["comparisons"] if c["set"] == "in_domain")
    assert (comp["a"], comp["b"], comp["n"], comp["examples"]) == ("rte/icl/m/8shot", "rte/pbft/m/8shot", 6, 60)
    assert comp["mean_diff"] == pytest.approx(0.1) and comp["verdict"] in ("a better", "no detectable difference")
    hans = next(c for c in saved["comparisons"] if c["set"] == "hans")
    assert hans["mean_diff"] == 0 and hans["verdict"] == "no detectable difference" and hans["collapsed"] == ["icl"]
    text = (tmp_path / "summary.md").read_text()
    assert "- icl − pbft (rte, m, 8shot) on in_domain: +0.100" in text and "COLLAPSED on hans: icl" in text
    assert all(c["verdict"] in ("a better", "b better", "no detectable difference", "inconclusive") for c in comps)


def test_methods_are_compared_on_the_examples_both_scored(tmp_path):
    # pbft dropped one example (too long for its context): the comparison reads the other nine
    ids = [f"e{i}" for i in range(10)]
    for seed in range(6):
        write_record(tmp_path, rec("icl", seed, "1111111110", "10", 0.5, f"i{seed}", ids=ids))
        write_record(tmp_path, rec("pbft", seed, "111111111", "10", 0.5, f"p{seed}", ids=ids[1:]))
    _, _, _, comps = write_tables(tmp_path)
    comp = next(c for c in comps if c["set"] == "in_domain")
    assert comp["examples"] == 6 * 9 and comp["mean_diff"] == pytest.approx(-1 / 9)
