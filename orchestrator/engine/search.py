"""Per-cell Bayesian search with Optuna's ask/tell, one study per cell, persisted beside the sweep.

    python -m orchestrator sweep --space smoke          # the search phase runs through this searcher

One Tune experiment serves every cell at once (so a cluster runs cells side by side), but each
cell has its own Optuna study, sampler, pruner and budget: a trial's result only ever informs its
own cell. Each Tune trial is exactly one study trial, which the pruning scheduler
(`orchestrator.engine.pruning`) reports epochs to; it ends COMPLETE, PRUNED or FAIL.

Resume replays, it does not reseed: the n-th proposal of a cell is drawn by a TPE sampler seeded
from (space seed, cell, n), over the study's finished trials. A trial the interrupted sweep had
started but not finished is told FAIL (marked `interrupted`, so it does not count in n) and its
values are proposed again first; the resumed sweep therefore proposes what an uninterrupted one
would have (exactly so when trials run one at a time; with several at once, the order in which
results arrive already varies between two uninterrupted runs).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search import Searcher

from orchestrator.engine.pruning import make_pruner
from trainers.contract import TrialSpec, dump

INTERRUPTED = "interrupted"
RETRIED = "retried_trials"  # a study's attribute: numbers of its failed trials a --resume ran again


def distribution(spec: dict):
    """A space's {kind: args} as an Optuna distribution."""
    kind, args = next(iter(spec.items()))
    if kind == "loguniform":
        return optuna.distributions.FloatDistribution(float(args[0]), float(args[1]), log=True)
    if kind == "uniform":
        return optuna.distributions.FloatDistribution(float(args[0]), float(args[1]))
    if kind == "int":
        return optuna.distributions.IntDistribution(int(args[0]), int(args[1]))
    return optuna.distributions.CategoricalDistribution(list(args))


def journal(path: Path) -> JournalStorage:
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def proposal_seed(seed: int, cell: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{cell}/{n}".encode()).digest()[:4], "little")


def open_study(cell: str, storage, pruner_spec: dict) -> optuna.Study:
    return optuna.create_study(study_name=cell, storage=storage, direction="maximize", load_if_exists=True,
                               pruner=make_pruner(pruner_spec))


def close_interrupted(study: optuna.Study) -> int:
    """Tell FAIL every trial a previous (killed) sweep left RUNNING and queue its values again."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING)):
        if t.state == TrialState.RUNNING:
            study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
            study.tell(t.number, state=TrialState.FAIL)
            _requeue(study, t.params)
            n += 1
    return n


def _requeue(study: optuna.Study, params: dict) -> None:
    """Queue `params` as the next proposal unless they already wait in the queue."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if all(t.system_attrs.get("fixed_params") != params for t in waiting):
        study.enqueue_trial(params)


def not_counted(study: optuna.Study) -> set[int]:
    """Numbers of the study's trials that do not count among the cell's proposals: those an
    interruption stopped and the failed ones a --resume ran again (their values were proposed anew)."""
    return set(study.user_attrs.get(RETRIED, [])) | {
        t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get(INTERRUPTED)}


def retry(study: optuna.Study, trial_key: str) -> bool:
    """Propose again first the values of the study's trial that ran `trial_key` and failed (--resume
    retries failed trials); it no longer counts in the cell's proposals. A finished trial cannot be
    changed, so the study keeps the list of retried ones. False when it is not there (or retried)."""
    skip = not_counted(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if t.user_attrs.get("trial_key") == trial_key and t.number not in skip:
            study.set_user_attr(RETRIED, sorted(set(study.user_attrs.get(RETRIED, [])) | {t.number}))
            _requeue(study, t.params)
            return True
    return False


class CellSearcher(Searcher):
    """Suggests trials for several cells, each from its own study, up to each cell's budget.

    `make_config(cell_id, params)` turns a proposal into the trial's full config. The first
    `startup` proposals of a cell are random; TPE models the finished trials after that (Optuna's
    default of 10 random trials would leave every shipped budget, 3 to 8, a random search)."""

    def __init__(self, spaces: dict[str, dict], budgets: dict[str, int], make_config: Callable[[str, dict], TrialSpec],
                 storage, seed: int, pruner_spec: dict, startup: int = 2, metric: str = "dev_accuracy",
                 fill: list[TrialSpec] = ()):
        super().__init__(metric=metric, mode="max")
        self._dists = {cell: {k: distribution(v) for k, v in space.items()} for cell, space in spaces.items()}
        self.studies = {cell: open_study(cell, storage, pruner_spec) for cell in spaces}
        self.interrupted = {cell: close_interrupted(study) for cell, study in self.studies.items()}
        self._seed, self._startup = seed, startup
        self._remaining = {cell: n for cell, n in budgets.items() if n > 0}
        self._order = list(self._remaining)
        self._trials: dict[str, tuple[str, optuna.Trial]] = {}
        self._make_config = make_config
        self.pruned: set[str] = set()  # Tune trial ids the pruning scheduler stopped
        self.fill = list(fill)  # ready trial configs handed out after the search trials

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are fixed at construction

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the studies live in the journal file and a resume rebuilds the budgets from records."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def optuna_trial(self, trial_id: str) -> tuple[optuna.Study, optuna.Trial] | None:
        if trial_id not in self._trials:
            return None
        cell, trial = self._trials[trial_id]
        return self.studies[cell], trial

    def _ask(self, cell: str) -> optuna.Trial:
        study = self.studies[cell]
        skip = not_counted(study)
        n = sum(1 for t in study.get_trials(deepcopy=False) if t.number not in skip)
        study.sampler = optuna.samplers.TPESampler(n_startup_trials=self._startup, seed=proposal_seed(self._seed, cell, n))
        return study.ask(self._dists[cell])

    def suggest(self, trial_id: str):
        if not any(self._remaining.values()):
            # cells with nothing to search (ICL) run their replicates in the slots the search's last trials leave idle
            return dump(self.fill.pop(0)) if self.fill else Searcher.FINISHED
        # round-robin over cells with budget left, so every cell progresses on a cluster
        for _ in range(len(self._order)):
            cell = self._order.pop(0)
            self._order.append(cell)
            if self._remaining[cell] > 0:
                trial = self._ask(cell)
                self._remaining[cell] -= 1
                self._trials[trial_id] = (cell, trial)
                spec = self._make_config(cell, dict(trial.params))
                trial.set_user_attr("trial_key", spec.trial_key)
                return dump(spec)  # Tune's trial config: Ray's edge
        return None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        cell, trial = self._trials.pop(trial_id)
        study = self.studies[cell]
        if trial_id in self.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif result and "record" in result and self.metric in result:
            study.tell(trial, float(result[self.metric]))
        elif error or (result and "record" in result):  # a failed method: its record has no dev accuracy
            study.tell(trial, state=TrialState.FAIL)
        else:  # stopped by an interruption before its final report: proposed again on resume
            trial.set_user_attr(INTERRUPTED, True)
            study.tell(trial, state=TrialState.FAIL)
            _requeue(study, dict(trial.params))


class ConfigList(Searcher):
    """Hands out a fixed list of trial configs in order (the replicate phase: nothing to search)."""

    def __init__(self, configs: list[TrialSpec]):
        super().__init__(metric="dev_accuracy", mode="max")
        self._configs = list(configs)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        return dump(self._configs.pop(0)) if self._configs else Searcher.FINISHED

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a resume lists again the replicates that have no record."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass
