"""The per-cell searcher and the Optuna-pruner scheduler, driven directly (no Ray cluster): budgets,
one study trial per Tune trial in its true state, and a resume that proposes what an
uninterrupted search would."""
import math
from types import SimpleNamespace

import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from orchestrator.engine.pruning import OptunaPrunerScheduler
from orchestrator.engine.search import CellSearcher, journal
from trainers.contract import TrialSpec

LR = {"a": {"train.lr": {"loguniform": [1e-5, 1e-2]}}}
NO_PRUNING = {"type": "none"}


def searcher(path, budgets, spaces=LR, pruner=NO_PRUNING):
    return CellSearcher(spaces, budgets, lambda cell, params: TrialSpec(cell=cell, searched=params, trial_key=str(params)),
                        journal(path), seed=0, pruner_spec=pruner, startup=2)


def final(value):
    return {"dev_accuracy": value, "record": "{}", "epoch": 1}


def score(params):
    return 1 - abs(math.log10(params["train.lr"]) + 3.5) / 3


def test_cell_searcher_spends_each_cells_budget_and_persists_its_study(tmp_path):
    spaces = {**LR, "b": {"cd.temperature": {"choice": [1.0, 2.0]}}}
    s = searcher(tmp_path / "j", {"a": 2, "b": 1}, spaces)
    configs = [s.suggest(f"t{i}") for i in range(3)]
    assert sorted(c["cell"] for c in configs) == ["a", "a", "b"]
    assert s.suggest("t3") == Searcher.FINISHED
    for i, c in enumerate(configs):
        s.on_trial_complete(f"t{i}", final(0.5 + i / 10))
    study_a = optuna.load_study(study_name="a", storage=journal(tmp_path / "j"))
    assert [t.state for t in study_a.trials] == [TrialState.COMPLETE] * 2
    assert all(1e-5 <= t.params["train.lr"] <= 1e-2 for t in study_a.trials)


def drive(s, n, prefix):
    """Run n trials one at a time, each scored as it completes; their proposals in order."""
    proposed = []
    for i in range(n):
        c = s.suggest(f"{prefix}{i}")
        proposed.append(c["searched"])
        s.on_trial_complete(f"{prefix}{i}", final(score(c["searched"])))
    return proposed


def test_a_resumed_search_proposes_what_an_uninterrupted_one_would(tmp_path):
    uninterrupted = drive(searcher(tmp_path / "whole", {"a": 5}), 5, "u")
    first = searcher(tmp_path / "cut", {"a": 5})
    seen = drive(first, 2, "f")
    seen.append(first.suggest("f2")["searched"])  # in flight when the driver is killed: never told
    resumed = searcher(tmp_path / "cut", {"a": 3})  # 2 trials recorded, 3 left
    assert resumed.interrupted == {"a": 1}
    seen += drive(resumed, 3, "r")
    assert seen[:3] + seen[4:] == uninterrupted and seen[3] == seen[2]  # the interrupted trial's values, again
    states = [t.state for t in resumed.studies["a"].trials]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 5


def test_a_trial_stopped_by_an_interrupt_is_failed_and_queued_again(tmp_path):
    s = searcher(tmp_path / "j", {"a": 2})
    c = s.suggest("t0")
    s.on_trial_complete("t0", {"dev_accuracy": 0.7, "epoch": 2})  # Ctrl-C: an epoch report, no final record
    study = s.studies["a"]
    assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["interrupted"]
    assert s.suggest("t1")["searched"] == c["searched"]


def trial(tid, cell="a"):
    return SimpleNamespace(trial_id=tid, config={"cell": cell})


def test_pruner_stops_weak_trials_and_compares_only_within_a_cell(tmp_path):
    spaces = {**LR, "b": LR["a"]}
    s = searcher(tmp_path / "j", {"a": 3, "b": 1}, spaces, {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0})
    sched = OptunaPrunerScheduler(s)
    ids = {}
    for tid in ("good", "other", "weak"):
        ids[tid] = s.suggest(tid)["cell"]
    assert ids == {"good": "a", "other": "b", "weak": "a"}
    for epoch in (1, 2):
        assert sched.on_trial_result(None, trial("good"), {"epoch": epoch, "dev_accuracy": 0.9}) == TrialScheduler.CONTINUE
    s.on_trial_complete("good", final(0.9))
    # another cell has no finished trial yet: nothing to compare with, so no pruning
    assert sched.on_trial_result(None, trial("other", "b"), {"epoch": 1, "dev_accuracy": 0.1}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trial("weak"), {"epoch": 1, "dev_accuracy": 0.5}) == TrialScheduler.STOP
    assert s.pruned == {"weak"}
    s.on_trial_complete("weak", {"epoch": 1, "dev_accuracy": 0.5})
    # one study trial per Tune trial, however many epochs were reported, each in its true state
    assert [t.state for t in s.studies["a"].trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert [t.state for t in s.studies["b"].trials] == [TrialState.RUNNING]
    # the final report (it carries the record) is never pruned
    assert sched.on_trial_result(None, trial("other", "b"), {"epoch": 1, "dev_accuracy": 0.0, "record": "{}"}) == TrialScheduler.CONTINUE


def test_a_failed_trial_is_told_fail(tmp_path):
    s = searcher(tmp_path / "j", {"a": 1})
    s.suggest("t0")
    s.on_trial_complete("t0", {"epoch": 1, "record": "{}"})  # a failed method: a record without dev accuracy
    assert [t.state for t in s.studies["a"].trials] == [TrialState.FAIL]
    assert not s.studies["a"].trials[0].user_attrs.get("interrupted")


def test_successive_halving_pruner_is_available(tmp_path):
    s = searcher(tmp_path / "j", {"a": 5}, pruner={"type": "successive_halving", "min_resource": 1, "reduction_factor": 2})
    sched = OptunaPrunerScheduler(s)
    decisions = []
    for i, v in enumerate([0.9, 0.8, 0.7, 0.2, 0.1]):
        s.suggest(f"t{i}")
        decisions.append(sched.on_trial_result(None, trial(f"t{i}"), {"epoch": 1, "dev_accuracy": v}))
    assert TrialScheduler.STOP in decisions and decisions[0] == TrialScheduler.CONTINUE


def test_a_failed_search_trial_is_retried_once_and_its_study_stays_consistent(tmp_path):
    from orchestrator.engine.search import not_counted, open_study, retry
    s = searcher(tmp_path / "j", {"a": 2})
    first = s.suggest("t0")
    s.on_trial_complete("t0", error=True)  # the method failed: told FAIL, finished
    study = open_study("a", journal(tmp_path / "j"), NO_PRUNING)
    assert retry(study, first["trial_key"])  # used to raise UpdateFinishedTrialError on the finished trial
    assert not retry(study, first["trial_key"])  # retried once: its values are queued once
    assert not_counted(study) == {0}
    resumed = searcher(tmp_path / "j", {"a": 2})
    again = resumed.suggest("t1")
    assert again["searched"] == first["searched"]  # proposed again first, as proposal 0 of the cell
    resumed.on_trial_complete("t1", final(0.7))
    states = [t.state for t in optuna.load_study(study_name="a", storage=journal(tmp_path / "j")).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]  # the retried trial's result counts once
