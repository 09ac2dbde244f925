"""Per-cell Bayesian search: one seeded OptunaSearch (TPE) per cell, its study persisted on disk.

    python -m orchestrator sweep --space smoke          # the search phase runs through this searcher

One Tune experiment serves every cell at once (so a cluster runs cells side by side), but each
cell has its own Optuna study, sampler and budget: a trial's result only ever informs its own
cell. On resume the studies are reloaded from the journal file and the budget counts the trials
already recorded, so nothing finished is searched again.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch


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


class CellSearcher(Searcher):
    """Suggests trials for several cells, each from its own OptunaSearch, up to each cell's budget.

    `make_config(cell_id, params)` turns a suggestion into the trial's full config. A resumed
    sweep passes each cell a sampler seed moved on by the trials it already has: a sampler
    restarted on its old seed would propose the finished trials' values again.
    """

    def __init__(self, spaces: dict[str, dict], budgets: dict[str, int], make_config: Callable[[str, dict], dict],
                 journal_path: Path, seeds: dict[str, int], metric: str = "dev_accuracy"):
        super().__init__(metric=metric, mode="max")
        storage = journal(journal_path)
        self._subs = {cell: OptunaSearch(space={k: distribution(v) for k, v in space.items()}, metric=metric, mode="max",
                                         sampler=optuna.samplers.TPESampler(seed=seeds[cell]), study_name=cell,
                                         storage=storage)
                      for cell, space in spaces.items()}
        self._remaining = {cell: n for cell, n in budgets.items() if n > 0}
        self._order = list(self._remaining)
        self._owner: dict[str, str] = {}
        self._make_config = make_config

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode are fixed at construction

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the studies live in the journal file and a resume rebuilds the budgets from records."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def suggest(self, trial_id: str):
        if not any(self._remaining.values()):
            return Searcher.FINISHED
        # round-robin over cells with budget left, so every cell progresses on a cluster
        for _ in range(len(self._order)):
            cell = self._order.pop(0)
            self._order.append(cell)
            if self._remaining[cell] > 0:
                params = self._subs[cell].suggest(trial_id)
                if params is None:
                    continue
                self._remaining[cell] -= 1
                self._owner[trial_id] = cell
                return self._make_config(cell, params)
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._owner and self.metric in result:  # a failed trial's last report has none
            self._subs[self._owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self._owner.pop(trial_id, None)
        if cell is not None:
            if result is not None and self.metric not in result:
                error = True  # e.g. a method that failed before its first epoch
            self._subs[cell].on_trial_complete(trial_id, result=result, error=error)


class ConfigList(Searcher):
    """Hands out a fixed list of trial configs in order (the replicate phase: nothing to search)."""

    def __init__(self, configs: list[dict]):
        super().__init__(metric="dev_accuracy", mode="max")
        self._configs = list(configs)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        return self._configs.pop(0) if self._configs else Searcher.FINISHED

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a resume lists again the replicates that have no record."""

    def restore(self, checkpoint_path: str) -> None:
        """See `save`."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass
