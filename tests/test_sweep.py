"""The sweep on a local Ray instance: the `smoke` space end to end, interrupted and resumed, and a
configuration whose method raises. Slow (Ray starts a worker group per trial): a few minutes."""
import json
import subprocess
import sys

import pandas as pd
import pytest

pytestmark = pytest.mark.sweep


def sweep(results, *args):
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--results", str(results), *args],
                          capture_output=True, text=True, timeout=1500)


def records(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*.json"))}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke sweep, stopped after 3 trials (as an interrupted sweep), then resumed to the end."""
    results = tmp_path_factory.mktemp("sweeps")
    first = sweep(results, "--space", "smoke", "--max-trials", "3")
    folder = results / "smoke"
    before = {name: (folder / "trials" / name).read_text() for name in records(folder)}
    second = sweep(results, "--space", "smoke", "--resume")
    return {"first": first, "second": second, "folder": folder, "before": before, "after": records(folder)}


def test_interrupted_sweep_stops_with_its_finished_trials_recorded(smoke):
    first = smoke["first"]
    assert first.returncode == 130, first.stderr[-2000:]
    assert "--resume" in first.stderr and len(smoke["before"]) == 3
    assert "Ray dashboard: http" in first.stdout


def test_resume_finishes_without_rerunning_finished_trials(smoke):
    second = smoke["second"]
    assert second.returncode == 0, second.stderr[-2000:]
    for name, text in smoke["before"].items():  # untouched: not run again
        assert (smoke["folder"] / "trials" / name).read_text() == text
    ran_again = [line for line in second.stdout.splitlines() if line.startswith("[")]
    assert len(ran_again) == len(smoke["after"]) - len(smoke["before"]) == 5


def test_smoke_sweep_searches_prunes_and_replicates(smoke):
    recs = list(smoke["after"].values())
    cells = {r["cell"] for r in recs}
    assert len(cells) >= 2
    search = [r for r in recs if r["phase"] == "search"]
    assert len(search) == 4 and all(r["cell"].startswith("rte/pbft+lora") for r in search)
    assert len({r["searched"]["train.lr"] for r in search}) == 4  # Optuna proposed four learning rates
    assert any(r["status"] == "pruned" for r in search), [r["status"] for r in search]
    pruned = [r for r in search if r["status"] == "pruned"]
    assert all(len(r["history"]) < 4 for r in pruned)  # stopped before the last epoch
    reps = [r for r in recs if r["phase"] == "replicate"]
    assert sorted((r["cell"], r["data_seed"]) for r in reps) == sorted((c, s) for c in cells for s in (0, 1))
    best = max((r for r in search if r["status"] == "completed"), key=lambda r: r["metrics"]["dev"]["accuracy"])
    assert all(r["searched"] == best["searched"] for r in reps if r["cell"] == best["cell"])
    for r in reps:
        assert r["status"] == "completed" and r["metrics"]["in_domain"]["n_scored"] > 0 and "hans" in r["metrics"]["ood"]
        assert r["resources"]["peak_memory_mib"] > 0 and r["env"]["git_commit"] is not None
        assert r["config"]["final_eval"] is True and r["trial_key"]


def test_smoke_sweep_writes_tables_and_summary(smoke):
    folder = smoke["folder"]
    table = pd.read_parquet(folder / "trials.parquet")
    assert len(table) == len(smoke["after"]) and (folder / "trials.csv").exists()
    summary = (folder / "summary.md").read_text()
    assert "rte/pbft+lora" in summary and "rte/icl" in summary and "± " in summary
    assert "| cell |" in smoke["second"].stdout  # printed at the end too
    assert (folder / "space.yaml").exists() and (folder / "optuna.journal").exists() and (folder / "ray").is_dir()


def test_a_configuration_that_raises_gives_a_failed_record_and_the_sweep_goes_on(tmp_path):
    r = sweep(tmp_path, "--space", "smoke", "--set", "methods={icl: [none]}", "--set", "search={}", "--set", "shots=[8, 5000]",
              "--set", "data_seeds=[0]", "--name", "failing")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = {rec["shots"]: rec for rec in records(tmp_path / "failing").values()}
    assert recs[8]["status"] == "completed"
    assert recs[5000]["status"] == "failed" and "SamplingError" in recs[5000]["error"]
    assert "fewer than" in recs[5000]["error"]


def test_a_sweep_is_not_overwritten_without_resume(tmp_path):
    (tmp_path / "smoke").mkdir()
    (tmp_path / "smoke" / "space.yaml").write_text("raw: {}\n")
    r = sweep(tmp_path, "--space", "smoke")
    assert r.returncode == 2 and "already holds a sweep; pass --resume" in r.stderr


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="two workers need two CPUs")
def test_two_worker_trials_train_data_parallel_and_shard_evaluation(tmp_path):
    r = sweep(tmp_path, "--space", "smoke", "--set", "methods={pbft: [lora]}", "--set", "budget=1",
              "--set", "data_seeds=[0]", "--set", "fixed.train.epochs=2", "--set", "resources.workers=2",
              "--name", "two_workers")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = list(records(tmp_path / "two_workers").values())
    assert len(recs) == 2 and all(rec["status"] == "completed" for rec in recs)
    assert all(rec["resources"]["ranks"] == 2 for rec in recs)
    replicate = next(rec for rec in recs if rec["phase"] == "replicate")
    assert replicate["metrics"]["in_domain"]["n_scored"] == 40  # every example scored once across the two shards
