"""Derived tables: the best search trial per cell, and Markdown for cells that lack a column."""
import json

import pandas as pd

from orchestrator.analysis import results
from orchestrator.analysis.results import best_search_trials, to_markdown, to_text
from trainers.contract import Record, load


def write_record(folder, rec: dict):
    """A record as a trial writes it: the dict is its JSON form."""
    return results.write_record(folder, load(Record, rec))


def search(cell, final, history, status="completed"):
    return {"phase": "search", "status": status, "cell": cell, "metrics": {"dev": {"accuracy": final}},
            "history": [{"dev_accuracy": a} for a in history]}


def test_best_search_trial_breaks_ties_on_mean_dev_accuracy_and_ignores_pruned_trials():
    records = [search("a", 0.5, [0.1, 0.5]), search("a", 0.5, [0.4, 0.5]), search("a", 0.9, [0.9], status="pruned"),
               search("b", 0.7, [0.7]), {"phase": "replicate", "status": "completed", "cell": "b"}]
    best = best_search_trials([load(Record, r) for r in records])
    assert best["a"].history[0].dev_accuracy == 0.4
    assert best["b"].metrics.dev.accuracy == 0.7


def test_markdown_shows_a_dash_where_a_cell_lacks_a_column():
    text = to_markdown(pd.DataFrame([{"cell": "cd", "teacher in-domain acc": "0.55"}, {"cell": "icl"}]))
    assert text.splitlines()[-1] == "| icl | - |"
    assert "nan" not in text


def test_the_terminal_summary_fits_its_width_and_names_the_columns_it_leaves_out():
    df = pd.DataFrame([{"cell": "rte/pbft+lora/smollm2-135m/16shot", "seeds": 2, "in-domain acc": "0.580 ± 0.014",
                        "hans acc": "0.540 ± 0.000", "peak MiB": "2305 ± 3", "notes": "x" * 60}])
    text = to_text(df, width=80)
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines) and "|" not in text
    assert lines[0].split()[:3] == ["cell", "seeds", "in-domain"] and "0.580 ± 0.014" in lines[1]
    assert lines[-1] == "(not shown at this width: notes; all in summary.md)"
    assert "notes" in to_text(df, width=200).splitlines()[0]
    partial = pd.DataFrame([{"cell": "cd", "teacher in-domain acc": "0.55"}, {"cell": "icl"}])  # NaN where a cell lacks it
    assert to_text(partial, width=100).splitlines()[-1].split() == ["icl", "-"]


def replicate(seed, acc, time, key):
    return {"phase": "replicate", "status": "completed", "cell": "rte/icl/m/8shot", "trial_key": key,
            "config": {"task": "rte", "method": "icl", "peft": {"kind": "none"}, "model": "m", "shots": 8,
                       "data_seed": seed, "seed": 0},
            "metrics": {"in_domain": {"accuracy": acc, "pred_fraction": {"a": 0.5, "b": 0.5}}}, "env": {"time": time}}


def test_summary_keeps_the_newest_record_per_cell_and_data_seed_and_says_so(tmp_path):
    from orchestrator.analysis.results import write_tables
    for rec in [replicate(0, 0.6, "2026-01-01T00:00:00", "old"), replicate(0, 0.8, "2026-01-02T00:00:00", "new"),
                replicate(1, 0.7, "2026-01-01T00:00:00", "one")]:
        write_record(tmp_path, rec)
    table, summary, title, _ = write_tables(tmp_path)
    row = summary.iloc[0]
    # 0.8 and 0.7; the older 0.6 dropped; these records lack their sizes: the interval is the t-interval over seeds
    assert row["seeds"] == 2 and row["in-domain acc"] == "0.750 [0.115, 1.000]"
    # summary.json: numbers, not "mean ± std" strings; the title says what ran, and summary.md keeps it
    saved = json.loads((tmp_path / "summary.json").read_text())
    cell = saved["cells"][0]
    assert cell["in_domain_accuracy"]["n"] == 2 and abs(cell["in_domain_accuracy"]["mean"] - 0.75) < 1e-9
    assert abs(cell["in_domain_accuracy"]["std"] - 0.0707107) < 1e-6 and cell["seeds"] == 2
    assert saved["title"] == title == "rte · m · icl · 8 shots · 2 data seeds"
    assert (tmp_path / "summary.md").read_text().startswith(f"# {title}\n")
    assert "note: rte/icl/m/8shot has 2 completed records for data seed 0; the newest is used" in (tmp_path / "summary.md").read_text()


def test_a_corrupt_record_is_named_set_aside_and_the_rest_load(tmp_path, capsys):
    import os
    from orchestrator.analysis.results import load_records
    write_record(tmp_path, replicate(0, 0.6, "2026-01-01T00:00:00", "good"))
    path = write_record(tmp_path, replicate(1, 0.6, "2026-01-01T00:00:00", "cut"))
    path.write_text(path.read_text()[:50])
    # a reading command names and skips it, and moves nothing
    assert [r.trial_key for r in load_records(tmp_path)] == ["good"]
    err = capsys.readouterr().err
    assert str(path) in err and "does not parse" in err and "skipped" in err and path.exists()
    from orchestrator import cli
    assert cli.main(["summarize", str(tmp_path)]) == 0 and path.exists() and not (tmp_path / "trials" / "corrupt").exists()
    # a sweep starting in the folder sets it aside, so its trial runs again
    assert [r.trial_key for r in load_records(tmp_path, set_aside=True)] == ["good"]
    assert "runs again on --resume" in capsys.readouterr().err
    assert not path.exists() and (tmp_path / "trials" / "corrupt" / "cut.json").exists()
    # records are written readable by whoever the umask allows (mkstemp alone would give 0600)
    mask = os.umask(0o022)
    os.umask(mask)
    assert oct((tmp_path / "trials" / "good.json").stat().st_mode & 0o777) == oct(0o666 & ~mask)
