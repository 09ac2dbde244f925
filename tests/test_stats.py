"""When is a difference noise: per-cell intervals, paired differences over shared seeds, collapse."""
import json

import pytest

from orchestrator.results import write_record, write_tables
from orchestrator.stats import collapsed, mean_ci, paired, sign_flip_p


def test_a_cells_interval_is_a_t_interval_over_its_seeds():
    ci = mean_ci([0.6, 0.8])
    assert ci["mean"] == pytest.approx(0.7) and ci["std"] == pytest.approx(0.141421, abs=1e-6) and ci["n"] == 2
    assert ci["ci95"] == pytest.approx([0.7 - 1.2706, 0.7 + 1.2706], abs=1e-4)  # t(1) = 12.706
    assert mean_ci([0.5])["ci95"] is None and mean_ci([]) is None


def test_sign_flip_p_is_exact_for_few_seeds():
    assert sign_flip_p([0.1] * 5) == pytest.approx(2 / 32)  # only all-plus and all-minus are as extreme
    assert sign_flip_p([0.1, -0.1]) == 1.0


def test_paired_difference_uses_shared_seeds_and_says_within_noise_when_the_interval_spans_zero():
    a = {s: 0.6 + 0.01 * s for s in range(6)}
    steady = paired(a, {**{s: v - 0.1 for s, v in a.items()}, 9: 0.9})  # seed 9 has no partner
    assert steady["n"] == 6 and steady["mean_diff"] == pytest.approx(0.1) and steady["verdict"] == "A better"
    assert steady["ci95"] == pytest.approx([0.1, 0.1]) and steady["p"] == pytest.approx(2 / 64)
    few = paired({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.65})  # one sign, but 2 seeds: p = 0.5
    assert few["ci95"][0] > 0 and few["p"] == 0.5 and few["verdict"] == "within noise"
    noisy = paired({0: 0.6, 1: 0.5, 2: 0.8}, {0: 0.5, 1: 0.55, 2: 0.6})
    assert noisy["ci95"][0] < 0 < noisy["ci95"][1] and noisy["verdict"] == "within noise"
    assert paired({0: 0.5}, {1: 0.5}) is None


def test_collapse_is_ninety_percent_on_one_class():
    assert collapsed([0.95, 0.92]) and not collapsed([0.95, 0.6]) and not collapsed([])


def rec(method, seed, acc, hans_top, key):
    return {"phase": "replicate", "status": "completed", "trial_key": key, "cell": f"rte/{method}/m/8shot",
            "config": {"task": "rte", "method": method, "peft": {"kind": "none"}, "model": "m", "shots": 8,
                       "data_seed": seed, "seed": 0},
            "metrics": {"in_domain": {"accuracy": acc, "pred_fraction": {"a": 0.5, "b": 0.5}},
                        "ood": {"hans": {"accuracy": 0.5, "pred_fraction": {"a": hans_top, "b": 1 - hans_top}}}},
            "env": {"time": "2026-01-01T00:00:00"}}


def test_summary_carries_intervals_comparisons_and_collapse_flags(tmp_path):
    for seed, (a, b) in enumerate([(0.7, 0.6), (0.8, 0.7), (0.75, 0.65), (0.7, 0.6), (0.8, 0.7), (0.75, 0.65)]):
        write_record(tmp_path, rec("icl", seed, a, 0.98, f"i{seed}"))
        write_record(tmp_path, rec("pbft", seed, b, 0.6, f"p{seed}"))
    table, summary, _, _ = write_tables(tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    icl = next(c for c in saved["cells"] if c["method"] == "icl")
    assert icl["collapsed"] == ["hans"] and len(icl["in_domain_accuracy"]["ci95"]) == 2
    assert summary.set_index("cell").loc["rte/icl/m/8shot", "flags"] == "COLLAPSED on hans"
    comp = next(c for c in saved["comparisons"] if c["set"] == "in_domain")
    assert (comp["a"], comp["b"], comp["n"]) == ("rte/icl/m/8shot", "rte/pbft/m/8shot", 6)
    assert comp["mean_diff"] == pytest.approx(0.1) and comp["verdict"] == "A better"
    hans = next(c for c in saved["comparisons"] if c["set"] == "hans")
    assert hans["mean_diff"] == pytest.approx(0.0) and hans["verdict"] == "within noise" and hans["collapsed"] == ["icl"]
    text = (tmp_path / "summary.md").read_text()
    assert "## Paired differences" in text and "- icl − pbft (rte, m, 8shot) on in_domain: +0.100" in text and "(icl collapsed on hans)" in text
