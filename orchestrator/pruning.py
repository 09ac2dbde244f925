"""Pruning with Optuna's pruners, driven from a Tune scheduler (OptunaSearch alone never prunes).

    python -m orchestrator sweep --space smoke          # pruner: {type: median, ...} in the space

Each Tune trial gets a twin trial in its cell's pruning study (persisted beside the sweep); every
per-epoch dev accuracy is reported to the twin, and when Optuna's pruner (median or successive
halving) says prune, the Tune trial is stopped. A trial is only ever compared with trials of its
own cell, because each cell has its own study.
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
    def __init__(self, spec: dict, storage, metric: str = "dev_accuracy"):
        super().__init__()
        self._spec, self._storage, self._metric = spec, storage, metric
        self._studies: dict[str, optuna.Study] = {}
        self._twins: dict[str, optuna.Trial] = {}
        self.pruned: set[str] = set()

    def _study(self, cell: str) -> optuna.Study:
        if cell not in self._studies:
            self._studies[cell] = optuna.create_study(study_name=f"{cell}#pruning", storage=self._storage,
                                                      pruner=make_pruner(self._spec), direction="maximize",
                                                      load_if_exists=True)
        return self._studies[cell]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._metric not in result or "record" in result:
            return TrialScheduler.CONTINUE  # the final report carries the record; nothing left to prune
        study = self._study(trial.config["cell"])
        twin = self._twins.setdefault(trial.trial_id, study.ask())
        twin.report(float(result[self._metric]), step=int(result["epoch"]))
        if twin.should_prune():
            study.tell(twin, state=optuna.trial.TrialState.PRUNED)
            self._twins.pop(trial.trial_id)
            self.pruned.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        twin = self._twins.pop(trial.trial_id, None)
        if twin is not None and result and self._metric in result:
            self._study(trial.config["cell"]).tell(twin, float(result[self._metric]))
        elif twin is not None:
            self._study(trial.config["cell"]).tell(twin, state=optuna.trial.TrialState.FAIL)

    def on_trial_error(self, tune_controller, trial) -> None:
        twin = self._twins.pop(trial.trial_id, None)
        if twin is not None:
            self._study(trial.config["cell"]).tell(twin, state=optuna.trial.TrialState.FAIL)
