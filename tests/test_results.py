"""Derived tables: the best search trial per cell, and Markdown for cells that lack a column."""
import pandas as pd

from orchestrator.results import best_search_trials, to_markdown


def search(cell, final, history, status="completed"):
    return {"phase": "search", "status": status, "cell": cell, "metrics": {"dev": {"accuracy": final}},
            "history": [{"dev_accuracy": a} for a in history]}


def test_best_search_trial_breaks_ties_on_mean_dev_accuracy_and_ignores_pruned_trials():
    records = [search("a", 0.5, [0.1, 0.5]), search("a", 0.5, [0.4, 0.5]), search("a", 0.9, [0.9], status="pruned"),
               search("b", 0.7, [0.7]), {"phase": "replicate", "status": "completed", "cell": "b"}]
    best = best_search_trials(records)
    assert best["a"]["history"][0]["dev_accuracy"] == 0.4
    assert best["b"]["metrics"]["dev"]["accuracy"] == 0.7


def test_markdown_shows_a_dash_where_a_cell_lacks_a_column():
    text = to_markdown(pd.DataFrame([{"cell": "cd", "teacher in-domain acc": "0.55"}, {"cell": "icl"}]))
    assert text.splitlines()[-1] == "| icl | - |"
    assert "nan" not in text
