"""The sweep on Ray, end to end: the `smoke` space run whole on a Ray instance this test module
starts (so the other sweeps here run beside a second Ray instance, the case that once hung), its
search, pruning, tables and report, a driver killed with SIGKILL and resumed, and a moved results
folder with a corrupt record. More faults: tests/test_sweep_faults.py. Nothing sleeps to
synchronise: the tests poll files and processes, each wait bounded."""
import json
import shutil
import signal
import subprocess
import sys

import pandas as pd
import pytest
from sweeps import SMOKE_LR, poll, records, search_lrs, sweep

from orchestrator.analysis.results import best_search_trials
from trainers.contract import Record, load

pytestmark = pytest.mark.sweep
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def smoke(cluster, tmp_path_factory):
    """The whole smoke sweep, uninterrupted, on the module's Ray instance."""
    results = tmp_path_factory.mktemp("sweeps")
    run = sweep(results, "--space", "smoke", "--address", cluster)
    return {"run": run, "folder": results / "smoke", "records": records(results / "smoke")}


def test_smoke_sweep_searches_prunes_and_replicates(smoke):
    assert smoke["run"].returncode == 0, smoke["run"].stderr[-3000:]
    recs = list(smoke["records"].values())
    cells = {r["cell"] for r in recs}
    assert len(cells) == 2
    search = [r for r in recs if r["phase"] == "search"]
    assert len(search) == 4 and all(r["cell"].startswith("rte/pbft+lora") for r in search)
    assert len({r["searched"][SMOKE_LR] for r in search}) == 4  # Optuna proposed four learning rates
    pruned = [r for r in search if r["status"] == "pruned"]
    assert pruned and all(len(r["history"]) < 4 for r in pruned)  # stopped before the last epoch
    reps = [r for r in recs if r["phase"] == "replicate"]
    assert sorted((r["cell"], r["data_seed"]) for r in reps) == sorted((c, s) for c in cells for s in (0, 1))
    best = best_search_trials([load(Record, r) for r in recs])["rte/pbft+lora/opt/8shot"]  # best final dev accuracy, ties to the steadier
    assert all(r["searched"] == best.searched for r in reps if r["cell"] == best.cell)
    pbft = {r["data_seed"]: r["seed"] for r in reps if r["cell"] == best.cell}
    assert len(set(pbft.values())) == 2  # each replicate trained from its own seed, derived from its data seed
    assert all(r["config"]["seed"] is None for r in recs)
    for r in reps:
        assert r["status"] == "completed" and r["metrics"]["in_domain"]["n_scored"] > 0 and "hans" in r["metrics"]["ood"]
        assert r["resources"]["peak_memory_mib"] > 0 and r["env"]["git_commit"] is not None
        assert r["config"]["final_eval"] is True and r["identity"]["model"].startswith("local:")


def test_pruned_trials_release_their_reservations(smoke, cluster):
    from ray.util import placement_group_table
    assert any(r["status"] == "pruned" for r in smoke["records"].values())
    states = [g["state"] for g in placement_group_table().values()]
    assert states and all(s == "REMOVED" for s in states), states


def test_optuna_study_holds_one_trial_per_tune_trial_in_its_true_state(smoke):
    import optuna

    from orchestrator.engine.search import journal
    study = optuna.load_study(study_name="rte/pbft+lora/opt/8shot", storage=journal(smoke["folder"] / "optuna.journal"))
    states = sorted(t.state.name for t in study.trials)
    recs = [r for r in smoke["records"].values() if r["phase"] == "search"]
    assert states == sorted({"completed": "COMPLETE", "pruned": "PRUNED"}[r["status"]] for r in recs)


def test_smoke_sweep_writes_tables_and_summary(smoke):
    folder = smoke["folder"]
    table = pd.read_parquet(folder / "trials.parquet")
    assert len(table) == len(smoke["records"]) and (folder / "trials.csv").exists()
    summary = (folder / "summary.md").read_text()
    assert "rte/pbft+lora" in summary and "rte/icl" in summary and "± " in summary
    assert summary.startswith("# smoke · rte (OOD: hans) · opt · icl, pbft+lora · 8 shots · 2 data seeds\n")
    out = smoke["run"].stdout
    assert "\nsmoke · rte (OOD: hans)" in out and "| cell |" not in out  # the terminal gets a table, not Markdown
    assert "[8/8]" in out  # the progress total counted what ran
    assert all(len(line) <= 100 for line in out.splitlines() if line.startswith("["))
    saved = json.loads((folder / "summary.json").read_text())
    assert all(isinstance(c["in_domain_accuracy"]["mean"], float) and c["in_domain_accuracy"]["n"] == 2 for c in saved["cells"])


def test_smoke_sweep_ends_with_a_report_of_every_figure_its_axes_allow(smoke):
    report = smoke["folder"] / "report"
    assert f"report:  {report / 'report.md'}" in smoke["run"].stdout
    text = (report / "report.md").read_text()
    for fig in ("id_vs_ood_rte_hans", "cost_accuracy_rte", "break_even", "hans_breakdown", "search"):
        assert (report / f"{fig}.png").stat().st_size > 0 and (report / f"{fig}.svg").exists(), fig
    assert "### Accuracy vs model size\n\nskipped: one model size per task in this sweep" in text
    assert "### Accuracy vs shots\n\nskipped: one shot count per task in this sweep" in text
    assert "pbft+lora on rte, opt, 8 shots" in text.split("\n\n")[1]  # the break-even sentence names the cell


def test_killed_driver_resumes_without_rerunning_and_proposes_the_same_trials(smoke, cluster, tmp_path):
    # on the module's Ray instance: Ray ends a dead driver's trials itself, and no second instance starts
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--results", str(tmp_path), "--space", "smoke",
                             "--address", cluster, "--set", "data_seeds=[0]"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    folder = tmp_path / "smoke"
    try:
        first = poll(lambda: sorted((folder / "trials").glob("*.json")), 600, "a first record")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    before = {p.name: p.read_text() for p in (folder / "trials").glob("*.json")}
    assert first and before
    resumed = sweep(tmp_path, "--space", "smoke", "--address", cluster, "--set", "data_seeds=[0]", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "was locked by a sweep that is gone" in resumed.stderr and "taking the lock over" in resumed.stderr
    after = records(folder)
    for name, text in before.items():  # untouched: not run again
        assert (folder / "trials" / name).read_text() == text
    ran = [ln for ln in resumed.stdout.splitlines() if ln.startswith("[")]
    assert len(ran) == len(after) - len(before) == 6 - len(before)
    assert search_lrs(after) == search_lrs(smoke["records"])  # the same four proposals as uninterrupted


def test_moved_results_folder_with_a_corrupt_record_reruns_only_that_trial(smoke, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(smoke["folder"], moved / "smoke", ignore=shutil.ignore_patterns("ray"))
    name, rec = next((n, r) for n, r in smoke["records"].items() if r["phase"] == "replicate")
    (moved / "smoke" / "trials" / name).write_text(json.dumps(rec)[:200])  # a truncated write
    summarize = subprocess.run([sys.executable, "-m", "orchestrator", "summarize", str(moved / "smoke")],
                               capture_output=True, text=True, timeout=120)
    # a reading command names the record and skips it; it moves nothing
    assert summarize.returncode == 0 and name in summarize.stderr and "skipped" in summarize.stderr
    assert (moved / "smoke" / "trials" / name).exists() and not (moved / "smoke" / "trials" / "corrupt").exists()
    r = sweep(moved, "--space", "smoke", "--resume")  # the sweep sets it aside and runs its trial again
    assert r.returncode == 0, r.stderr[-3000:]
    assert (moved / "smoke" / "trials" / "corrupt" / name).exists() and "set aside" in r.stderr
    ran = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(ran) == 1 and f" s{rec['data_seed']} " in ran[0]
    assert json.loads((moved / "smoke" / "trials" / name).read_text())["trial_key"] == rec["trial_key"]


