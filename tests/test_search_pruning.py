"""The per-cell searcher and the Optuna-pruner scheduler, driven directly (no Ray cluster)."""
from types import SimpleNamespace

import optuna
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from orchestrator.pruning import OptunaPrunerScheduler
from orchestrator.search import CellSearcher, journal


def test_cell_searcher_spends_each_cells_budget_and_persists_its_study(tmp_path):
    spaces = {"a": {"train.lr": {"loguniform": [1e-5, 1e-2]}}, "b": {"cd.temperature": {"choice": [1.0, 2.0]}}}
    path = tmp_path / "optuna.journal"
    searcher = CellSearcher(spaces, {"a": 2, "b": 1}, lambda cell, params: {"cell": cell, "searched": params}, path,
                            seeds={"a": 0, "b": 0})
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert sorted(c["cell"] for c in configs) == ["a", "a", "b"]
    assert searcher.suggest("t3") == Searcher.FINISHED
    for i, c in enumerate(configs):
        if c["cell"] == "a":
            assert 1e-5 <= c["searched"]["train.lr"] <= 1e-2
        searcher.on_trial_complete(f"t{i}", {"dev_accuracy": 0.5 + i / 10})
    study_a = optuna.load_study(study_name="a", storage=journal(path))
    study_b = optuna.load_study(study_name="b", storage=journal(path))
    assert len(study_a.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 2
    assert [t.params for t in study_b.trials] == [configs[[c["cell"] for c in configs].index("b")]["searched"]]


def trial(tid, cell):
    return SimpleNamespace(trial_id=tid, config={"cell": cell})


def test_pruner_stops_weak_trials_and_compares_only_within_a_cell():
    sched = OptunaPrunerScheduler({"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}, storage=None)
    good, weak, other = trial("good", "cell1"), trial("weak", "cell1"), trial("other", "cell2")
    for epoch in (1, 2):
        assert sched.on_trial_result(None, good, {"epoch": epoch, "dev_accuracy": 0.9}) == TrialScheduler.CONTINUE
    sched.on_trial_complete(None, good, {"epoch": 2, "dev_accuracy": 0.9})
    # another cell has no finished trial yet: nothing to compare with, so no pruning
    assert sched.on_trial_result(None, other, {"epoch": 1, "dev_accuracy": 0.1}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, weak, {"epoch": 1, "dev_accuracy": 0.5}) == TrialScheduler.STOP
    assert sched.pruned == {"weak"}
    # the final report (it carries the record) is never pruned
    assert sched.on_trial_result(None, trial("x", "cell1"), {"epoch": 1, "dev_accuracy": 0.0, "record": "{}"}) == TrialScheduler.CONTINUE


def test_successive_halving_pruner_is_available():
    sched = OptunaPrunerScheduler({"type": "successive_halving", "min_resource": 1, "reduction_factor": 2}, storage=None)
    results = [sched.on_trial_result(None, trial(f"t{i}", "c"), {"epoch": 1, "dev_accuracy": v})
               for i, v in enumerate([0.9, 0.8, 0.7, 0.2, 0.1])]
    assert TrialScheduler.STOP in results and results[0] == TrialScheduler.CONTINUE
