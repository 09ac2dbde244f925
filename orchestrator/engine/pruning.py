"""Pruning with Optuna's pruners, driven from a Tune scheduler (Tune's own Optuna searcher never prunes).

    python -m orchestrator sweep --space smoke          # pruner: {type: median, ...} in the space

Every per-epoch dev accuracy of a search trial is reported to that trial's own Optuna trial (the
one the searcher asked for it, in its cell's study, which carries the pruner); when Optuna's
pruner (median or successive halving) says prune, the Tune trial is stopped and the searcher
tells the study PRUNED. A trial is only ever compared with trials of its own cell.
"""
from __future__ import annotations

import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def make_pruner(spec: dict) -> optuna.pruners.BasePruner:
    opts = {k: v for k, v in spec.items() if k != "type"}
    if spec["type"] == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=opts.get("n_startup_trials", 2),
                                           n_warmup_steps=opts.get("n_warmup_steps", 1))
    if spec["type"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=opts.get("min_resource", 1),
                                                      reduction_factor=opts.get("reduction_factor", 3))
    return optuna.pruners.NopPruner()


class OptunaPrunerScheduler(FIFOScheduler):
    """`searcher` is the sweep's CellSearcher: it owns the Optuna trial of every Tune trial."""

    def __init__(self, searcher, metric: str = "dev_accuracy"):
        super().__init__()
        self._searcher, self._metric = searcher, metric

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._metric not in result or "record" in result:
            return TrialScheduler.CONTINUE  # the final report carries the record; nothing left to prune
        owned = self._searcher.optuna_trial(trial.trial_id)
        if owned is None:
            return TrialScheduler.CONTINUE
        _, ot = owned
        ot.report(float(result[self._metric]), step=int(result["epoch"]))
        if ot.should_prune():
            self._searcher.pruned.add(trial.trial_id)  # the searcher tells the study PRUNED when Tune completes it
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE
