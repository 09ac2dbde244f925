"""The report from hand-made records with known answers: costs per cell, break-even, the three
sentences, every figure whose axis exists, and a reason for each one skipped."""
import math

import pytest

from orchestrator import cli
from orchestrator.report import break_even_pairs, write_report
from orchestrator.results import cell_stats, load_records, trials_table, write_record

MODELS = {"small": 100_000_000, "large": 300_000_000}
ACC = {"icl": 0.55, "cd": 0.60, "pbft": 0.70}       # in-domain, plus 0.01 * seed
SERVE_MS = {"icl": 100.0, "cd": 20.0, "pbft": 20.0}
ADAPT = {"icl": 0.0, "cd": 100.0, "pbft": 50.0}     # one replicate's adaptation seconds


def record(method, model, seed, phase="replicate", status="completed", lr=None, history=None, key=None):
    variant = method if method == "icl" else f"{method}+lora"
    phases = {"load": {"seconds": 5.0, "peak_rss_mib": 500.0}}
    if status == "completed":
        phases["serve"] = {"seconds": SERVE_MS[method] * 64 / 1000, "peak_rss_mib": 800.0}
    resources = {"phases": phases, "total_seconds": 60.0, "peak_memory_mib": 900.0, "adaptation_seconds": ADAPT[method],
                 "serving": {"ms_per_query": SERVE_MS[method], "peak_memory_mib": 800.0 + MODELS[model] / 1e6,
                             "memory_kind": "rss", "queries": 64, "batch_size": 8}}
    acc = ACC[method] + 0.01 * seed + (0.05 if model == "large" else 0)
    top = 1.0 if method == "pbft" else 0.6  # pbft answers one class on HANS
    breakdown = {f"{h}/{y}": {"accuracy": (1.0 if y == "entailment" else 0.0) if method == "pbft" else 0.6, "n": 8}
                 for h in ("lexical_overlap", "subsequence") for y in ("entailment", "non_entailment")}
    return {"phase": phase, "status": status, "trial_key": key or f"{method}-{model}-{seed}-{phase}",
            "cell": f"rte/{variant}/{model}/16shot", "sweep": "handmade", "data_seed": seed, "seed": 1000 + seed,
            "config": {"task": "rte", "method": method, "peft": {"kind": "none" if method == "icl" else "lora"},
                       "model": model, "shots": 16, "data_seed": seed, "n_dev": 16},
            "resolved": {"lr": lr}, "searched": {"train.lr": lr} if lr else {},
            "metrics": {} if status != "completed" else {
                "dev": {"accuracy": 0.5},
                "in_domain": {"accuracy": acc, "pred_fraction": {"entailment": 0.5, "not_entailment": 0.5}, "n_scored": 64},
                "ood": {"hans": {"accuracy": 0.5, "pred_fraction": {"entailment": top, "non_entailment": 1 - top},
                                 "breakdown": breakdown}}},
            "resources": resources if status == "completed" else {}, "history": history or [],
            "params": {"total": MODELS[model], "trainable": 0 if method == "icl" else 1000},
            "trial_seconds": 80.0 if status == "completed" else 40.0, "env": {"time": f"2026-01-01T00:00:0{seed}"}}


@pytest.fixture
def sweep_dir(tmp_path):
    for model in MODELS:
        for method in ACC:
            for seed in range(3):
                write_record(tmp_path, record(method, model, seed))
            if method != "icl":  # a completed and a pruned search trial: 150 s and 2 epochs of 10 s
                hist = [{"epoch": e, "dev_accuracy": 0.5 + 0.05 * e, "epoch_seconds": 10.0} for e in (1, 2, 3)]
                done = record(method, model, 0, "search", lr=1e-3, history=hist, key=f"{method}-{model}-s1")
                done["resources"]["adaptation_seconds"] = 150.0
                write_record(tmp_path, done)
                write_record(tmp_path, record(method, model, 0, "search", "pruned", lr=1e-2, history=hist[:2],
                                              key=f"{method}-{model}-s2"))
    return tmp_path


def test_a_cells_adaptation_cost_is_its_whole_search_plus_one_replicate_with_ray_apart(sweep_dir):
    cells = {c["cell"]: c for c in cell_stats(trials_table(load_records(sweep_dir)))}
    cd = cells["rte/cd+lora/small/16shot"]
    assert cd["search_seconds"] == 170.0  # 150 s completed + the pruned trial's two 10 s epochs
    assert cd["adaptation_seconds"] == 270.0 and cd["serve_ms_per_query"]["mean"] == 20.0
    assert cd["ray_overhead_seconds"] == 4 * 20.0  # trial 80 s - method 60 s, for 3 replicates + 1 completed search
    assert cd["labelled_examples"] == 32 and cells["rte/icl/small/16shot"]["labelled_examples"] == 16


def test_break_even_is_adaptation_over_the_per_query_saving(sweep_dir):
    pairs = {p["cell"]: p for p in break_even_pairs(cell_stats(trials_table(load_records(sweep_dir))))}
    # cd: 270 s to adapt, saves 80 ms a query against ICL -> 3,375 queries
    assert pairs["rte/cd+lora/small/16shot"]["break_even_queries"] == math.ceil(270 / 0.08)
    assert pairs["rte/pbft+lora/large/16shot"]["break_even_queries"] == math.ceil((50 + 170) / 0.08)
    assert len(pairs) == 4  # two trained methods x two models, each against its own ICL


def test_report_opens_with_three_sentences_and_draws_every_figure_whose_axis_exists(sweep_dir):
    path = write_report(sweep_dir)
    text = path.read_text()
    first = text.split("\n\n")[1]
    assert "on rte, small, 16 shots pbft+lora is best in domain (0.710), ahead of cd+lora by +0.100" in first
    assert "(within noise)" in first  # three seeds: p can be no smaller than 0.25
    assert "cd+lora serves a query in 20 ms against 100 ms for icl (5.0× cheaper)" in first
    assert "cd+lora on rte, small, 16 shots pays back its 270 s of adaptation after 3,375 queries" in first
    names = {p.name for p in path.parent.iterdir()}
    for fig in ("accuracy_vs_size_rte_16shots", "id_vs_ood_rte_hans", "cost_accuracy", "break_even",
                "hans_breakdown", "search"):
        assert {f"{fig}.png", f"{fig}.svg"} <= names, fig
        assert f"({fig}.png)" in text
    assert "### Accuracy vs shots\n\nskipped: one shot count per task in this sweep" in text
    assert not any(n.startswith("accuracy_vs_shots") for n in names)
    assert "COLLAPSED on hans" in text and "ICL uses none" in text


def test_report_is_a_pure_function_of_the_records(sweep_dir):
    before = sorted(p.name for p in (sweep_dir / "trials").iterdir())
    first = write_report(sweep_dir).read_text()
    assert write_report(sweep_dir).read_text() == first
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == before


def test_report_command_refuses_a_folder_without_records(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no result records" in err[0]
