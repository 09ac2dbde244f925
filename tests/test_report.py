"""The report from hand-made records with known answers: costs per cell, break-even per data seed,
the sentences and their words ("best" only for a significant, uncollapsed win), every figure whose
axis exists, and a reason for each one skipped."""
import math

import pytest

from orchestrator import cli
from orchestrator.analysis.report import break_even_pairs, replicates, write_report
from orchestrator.analysis import results
from orchestrator.analysis.results import cell_stats, load_records
from orchestrator.analysis.table import trials
from trainers.contract import CellStats, Record, load


def write_record(folder, rec: dict):
    """A record as a trial writes it: the dict is its JSON form."""
    return results.write_record(folder, load(Record, rec))

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
                 "serving": {"ms_per_query": SERVE_MS[method] + seed, "peak_memory_mib": 800.0 + MODELS[model] / 1e6,
                             "memory_kind": "rss", "queries": 64, "batch_size": 8, "exclusive": True,
                             "cpu_ms_per_query": SERVE_MS[method]}}
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
                "in_domain": {"accuracy": acc, "pred_fraction": {"entailment": 0.5, "not_entailment": 0.5}, "n_scored": 100},
                "ood": {"hans": {"accuracy": 0.5, "n_scored": 100, "pred_fraction": {"entailment": top, "non_entailment": 1 - top},
                                 "breakdown": breakdown}}},
            "resources": resources if status == "completed" else {}, "history": history or [],
            "params": {"total": MODELS[model], "trainable": 0 if method == "icl" else 1000},
            "trial_seconds": 80.0 if status == "completed" else 40.0, "env": {"time": f"2026-01-01T00:00:0{seed}"}}


def write_sweep(tmp_path, seeds=3):
    for model in MODELS:
        for method in ACC:
            for seed in range(seeds):
                write_record(tmp_path, record(method, model, seed))
            if method != "icl":  # a completed and a pruned search trial: 150 s and 2 epochs of 10 s
                hist = [{"epoch": e, "dev_accuracy": 0.5 + 0.05 * e, "epoch_seconds": 10.0} for e in (1, 2, 3)]
                done = record(method, model, 0, "search", lr=1e-3, history=hist, key=f"{method}-{model}-s1")
                done["resources"]["adaptation_seconds"] = 150.0
                write_record(tmp_path, done)
                write_record(tmp_path, record(method, model, 0, "search", "pruned", lr=1e-2, history=hist[:2],
                                              key=f"{method}-{model}-s2"))
    return tmp_path


@pytest.fixture
def sweep_dir(tmp_path):
    return write_sweep(tmp_path)


def cells_of(folder):
    records = load_records(folder)
    return cell_stats(trials(records))


def test_a_cells_adaptation_cost_is_its_whole_search_plus_one_replicate_with_ray_apart(sweep_dir):
    cells = {c.cell: c for c in cells_of(sweep_dir)}
    cd = cells["rte/cd+lora/small/16shot"]
    assert cd.search_seconds == 170.0  # 150 s completed + the pruned trial's two 10 s epochs
    assert cd.adaptation_seconds == 270.0 and cd.serve_ms_per_query.mean == 21.0 and cd.serve_alone
    assert cd.ray_overhead_seconds == 4 * 20.0  # trial 80 s - method 60 s, for 3 replicates + 1 completed search
    assert cd.labelled_examples == 32 and cells["rte/icl/small/16shot"].labelled_examples == 16


def test_a_pruned_cd_trial_charges_its_teacher_targets(tmp_path):
    hist = [{"epoch": 1, "dev_accuracy": 0.5, "epoch_seconds": 10.0, "setup_seconds": 80.0},
            {"epoch": 2, "dev_accuracy": 0.5, "epoch_seconds": 10.0}]
    write_record(tmp_path, record("cd", "small", 0, "search", "pruned", lr=1e-2, history=hist, key="pruned-cd"))
    write_record(tmp_path, record("cd", "small", 0))
    cd = next(c for c in cells_of(tmp_path) if c.method == "cd")
    assert cd.search_seconds == 100.0


def test_break_even_is_per_data_seed_adaptation_over_that_seeds_saving(sweep_dir):
    records = load_records(sweep_dir)
    rows = trials(records)
    pairs = {p.cell: p for p in break_even_pairs(cell_stats(rows), replicates(rows))}
    # cd: 170 s of search + 100 s of its replicate; seed s serves at 20 + s ms against ICL's 100 + s: 80 ms saved
    cd = pairs["rte/cd+lora/small/16shot"]
    assert cd.per_seed == {0: math.ceil(270 / 0.08), 1: math.ceil(270 / 0.08), 2: math.ceil(270 / 0.08)}
    assert cd.range == (3375, 3375) and cd.never == 0
    assert pairs["rte/pbft+lora/large/16shot"].range == (math.ceil((50 + 170) / 0.08),) * 2
    assert len(pairs) == 4  # two trained methods x two models, each against its own ICL


def test_report_opens_with_sentences_that_never_call_noise_best(sweep_dir):
    path = write_report(sweep_dir)
    text = path.read_text()
    first = text.split("\n\n")[1]
    assert ("on rte, small, 16 shots, pbft+lora (COLLAPSED on hans in 3 of 3 seeds) has the highest mean in domain, 0.710"
            in first and "over cd+lora: inconclusive (3 seeds: p ≥ 0.25)" in first)
    assert " is best in domain" not in first  # three seeds can never reach a verdict
    # cd and pbft serve at the same 20 + seed ms: no measurable difference; ICL is 80 ms dearer on every seed
    assert ("on rte, small, 16 shots, no measurable serving difference between cd+lora (21 ms) and pbft+lora "
            "(COLLAPSED on hans in 3 of 3 seeds) (21 ms, +0.0 [+0.0, +0.0] ms over 3 seeds)") in first
    assert "cd+lora serves measurably cheaper than icl (101 ms, +80.0 [+80.0, +80.0] ms over 3 seeds)" in first
    assert "cd+lora on rte, small, 16 shots pays back its 270 s of adaptation after 3,375 queries" in first
    assert "Note: the search ran on data seed 0, which is also a replicate" in text
    names = {p.name for p in path.parent.iterdir()}
    for fig in ("accuracy_vs_size_rte_16shots", "id_vs_ood_rte_hans", "cost_accuracy_rte", "break_even",
                "hans_breakdown", "search"):
        assert {f"{fig}.png", f"{fig}.svg"} <= names, fig
        assert f"({fig}.png)" in text
    assert "### Accuracy vs shots\n\nskipped: one shot count per task in this sweep" in text
    assert not any(n.startswith("accuracy_vs_shots") for n in names)
    assert "COLLAPSED on hans" in text and "ICL uses none" in text


def test_best_is_said_only_of_a_significant_uncollapsed_win(tmp_path):
    write_sweep(tmp_path, seeds=7)
    first = write_report(tmp_path).read_text().split("\n\n")[1]
    # pbft leads by 0.10 on every one of 7 seeds (p = 2/128), but it collapsed on HANS: still not "best"
    assert "pbft+lora (COLLAPSED on hans in 7 of 7 seeds) has the highest mean in domain" in first
    assert "pbft+lora better (p 0.0156)" in first
    assert " is best in domain" not in first


def test_one_collapsed_seed_of_three_flags_the_cell_and_it_is_never_best(tmp_path):
    for seed in range(7):
        for method in ("icl", "pbft"):
            rec = record(method, "small", seed)
            rec["metrics"]["ood"]["hans"]["pred_fraction"] = {"entailment": 0.5, "non_entailment": 0.5}
            if method == "pbft" and seed == 1:  # one seed of pbft answers "entailment" to 95 % of in-domain queries
                rec["metrics"]["in_domain"]["pred_fraction"] = {"entailment": 0.95, "not_entailment": 0.05}
            write_record(tmp_path, rec)
    pbft = next(c for c in cells_of(tmp_path) if c.method == "pbft")
    assert pbft.collapsed == ["in_domain"] and pbft.collapse["in_domain"].seeds == 1
    assert pbft.collapse["in_domain"].of == 7 and pbft.collapse["in_domain"].shares[1] == 0.95
    first = write_report(tmp_path).read_text().split("\n\n")[1]
    # pbft leads on every seed (p = 2/128) but one seed collapsed: the highest mean, flagged, never "best"
    assert "pbft+lora (COLLAPSED in domain in 1 of 7 seeds) has the highest mean in domain" in first
    assert " is best in domain" not in first


def test_equal_serving_costs_name_no_cheapest_and_no_break_even(tmp_path):
    for seed in range(3):
        for method in ("icl", "cd"):
            rec = record(method, "small", seed)
            # both serve at 50 ms give or take a seed's noise, in opposite directions: no measurable saving
            rec["resources"]["serving"]["ms_per_query"] = 50.0 + (seed - 1) * (3 if method == "icl" else -3)
            write_record(tmp_path, rec)
    records = load_records(tmp_path)
    rows = trials(records)
    pair = break_even_pairs(cell_stats(rows), replicates(rows))[0]
    assert pair.range is None and not pair.saving.measurable
    first = write_report(tmp_path).read_text().split("\n\n")[1]
    assert "no measurable serving difference between" in first and "has the lowest serving cost" not in first
    assert "cd+lora on rte, small, 16 shots: no measurable payback" in first and "pays back" not in first


def test_report_is_a_pure_function_of_the_records(sweep_dir):
    before = sorted(p.name for p in (sweep_dir / "trials").iterdir())
    first = write_report(sweep_dir).read_text()
    assert write_report(sweep_dir).read_text() == first
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == before


def test_report_command_refuses_a_folder_without_records(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no result records" in err[0]


def test_cost_vs_shots_draws_ms_and_kv_bytes_per_method_or_says_why_not(tmp_path):
    from orchestrator.analysis import cost_figures, figures
    cells = [load(CellStats, {"cell": f"rte/{v}/m/{k}shot", "task": "rte", "model": "/models/m", "shots": k, "seeds": 3,
                              "serve_ms_per_query": {"mean": ms * k, "std": 1.0, "n": 3, "ci95": (ms * k - 1, ms * k + 1)},
                              "serve_kv_bytes_per_query": {"mean": kv * k, "std": 0.0, "n": 3, "ci95": None}})
             for v, ms, kv in [("icl", 1.0, 2 ** 20), ("cartridge", 0.1, 0), ("cd+lora", 0.1, 0)] for k in (16, 64)]
    written = cost_figures.cost_vs_shots(cells, tmp_path)
    assert sorted(p.name for p in written) == ["cost_vs_shots_rte_m.png", "cost_vs_shots_rte_m.svg"]
    svg = (tmp_path / "cost_vs_shots_rte_m.svg").read_text()
    assert all(v in svg for v in ("icl", "cartridge", "cd+lora")) and "KV MiB attended per query" in svg
    with pytest.raises(figures.Skip, match="one shot count"):
        cost_figures.cost_vs_shots([c for c in cells if c.shots == 16], tmp_path)


def test_a_pareto_front_is_drawn_per_task_never_across_tasks(tmp_path):
    from orchestrator.analysis import cost_figures
    st = lambda m: {"mean": m, "std": 0.0, "n": 3, "ci95": (m - 0.01, m + 0.01)}  # noqa: E731
    cells = [load(CellStats, {"cell": f"{t}/{v}/m/16shot", "task": t, "model": "m", "shots": 16, "collapsed": [],
                              "serve_alone": True, "in_domain_accuracy": {**st(acc), "examples": 192},
                              "serve_ms_per_query": st(ms), "serve_peak_mib": st(900.0)})
             for t, shift in (("rte", 0.0), ("cola", 0.2)) for v, acc, ms in (("icl", 0.5 + shift, 100.0), ("cd+lora", 0.55 + shift, 20.0))]
    names = sorted(p.name for p in cost_figures.cost_accuracy(cells, tmp_path))
    assert names == ["cost_accuracy_cola.png", "cost_accuracy_cola.svg", "cost_accuracy_rte.png", "cost_accuracy_rte.svg"]
    svg = (tmp_path / "cost_accuracy_rte.svg").read_text()
    assert "Pareto front (rte)" in svg and "cola" not in svg
