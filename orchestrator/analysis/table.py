"""The trials table: one typed row per record, which the analysis reads by attribute; a pandas frame
only at the disk's edge (trials.parquet, trials.csv) and the trackers'.

    python -m orchestrator summarize results/quickstart        # writes trials.{parquet,csv} from these rows

A row (`Trial`) is what ran (from the record's config), what it scored per evaluation set (`SetScore`),
and what it cost, with the record itself beside it: statistics that need per-example results read
`row.record`. Missing numbers are None (a pruned trial has no accuracy), never NaN.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from orchestrator.cells import Cell
from trainers.contract import Context, EvalBlock, Record, Serving

GROUP = ("task", "model", "shots")  # what methods are compared within: a task × model × shots

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class SetScore:
    """One trial on one evaluation set: accuracy over the label words and over the full vocabulary,
    how often it answered class 0, and its most frequent answer with that answer's share."""
    accuracy: float | None = None
    full_vocab: float | None = None
    pred_class0: float | None = None
    pred_top: float | None = None
    pred_top_class: str | None = None


@dataclass(frozen=True)
class Trial:
    """One record as the analysis reads it (a row of trials.csv)."""
    record: Record = field(repr=False)
    cell: str
    phase: str                   # search, replicate, or run (a single run's record)
    status: str
    trial_key: str | None
    task: str
    method: str
    peft: str
    model: str
    shots: int
    data_seed: int
    seed: int | None
    lr: float | None
    epochs_run: int
    dev_accuracy: float | None
    peak_memory_mib: float | None
    seconds: float | None          # the method's own phases
    trial_seconds: float | None    # the Ray trial around them
    n_dev: int | None
    adaptation_seconds: float | None
    serving: Serving
    trainable_params: int | None
    total_params: int | None
    error: str | None
    time: str | None
    n_dropped: int                 # queries left unscored: they did not fit the window
    demos_truncated: int | None
    tokens_cut: int | None
    sets: dict[str, SetScore]      # "in_domain" first, then the OOD sets
    teacher_in_domain_accuracy: float | None
    searched: dict
    model_params: int | None = None  # the model's size: its fewest parameters over a table (`with_model_params`)

    def score(self, name: str) -> SetScore:
        return self.sets.get(name) or SetScore()

    @property
    def ray_overhead_seconds(self) -> float | None:
        """Worker group start and stop, scheduling: the trial's seconds less the method's own."""
        if self.trial_seconds is None or self.seconds is None:
            return None
        return round(self.trial_seconds - self.seconds, 3)


def _sets(m) -> dict[str, SetScore]:
    out = {}
    for name, block in ([("in_domain", m.in_domain)] if m.in_domain else []) + list(m.ood.items()):
        f = block.pred_fraction
        out[name] = SetScore(block.accuracy, block.accuracy_full_vocab, next(iter(f.values())), max(f.values()),
                             max(f, key=f.get))
    return out


def trial(rec: Record) -> Trial:
    c, m, res = rec.config, rec.metrics, rec.resources
    context = rec.resolved.context or Context()
    return Trial(
        record=rec, cell=rec.cell or Cell.of_config(c).id, phase=rec.phase or "run", status=rec.status,
        trial_key=rec.trial_key,
        # what ran, as its config says (a record's own copies of these came later)
        task=c["task"], method=c["method"], peft=Cell.of_config(c).peft, model=c["model"], shots=c["shots"],
        data_seed=c["data_seed"], seed=rec.seed if rec.keys is None or "seed" in rec.keys else c.get("seed"),
        lr=rec.resolved.lr, epochs_run=len(rec.history),
        dev_accuracy=m.dev.accuracy if m.dev else (rec.history[-1].dev_accuracy if rec.history else None),
        peak_memory_mib=res.peak_memory_mib, seconds=res.total_seconds, trial_seconds=rec.trial_seconds,
        n_dev=c.get("n_dev"),
        # a pruned trial has no phases: its epochs' seconds (training and dev) and CD's teacher targets
        adaptation_seconds=(res.adaptation_seconds if res.adaptation_seconds is not None
                            else sum((h.epoch_seconds or 0) + (h.setup_seconds or 0) for h in rec.history)),
        serving=res.serving or Serving(), trainable_params=rec.params.trainable, total_params=rec.params.total,
        error=rec.error, time=rec.env.time,
        n_dropped=sum(int(b.n_dropped or 0) for b in [m.in_domain or EvalBlock(), *m.ood.values()]),
        demos_truncated=context.demos_truncated, tokens_cut=context.tokens_cut, sets=_sets(m),
        teacher_in_domain_accuracy=m.teacher.in_domain.accuracy if m.teacher and m.teacher.in_domain else None,
        searched=dict(rec.searched))


def trials(records: Iterable[Record]) -> list[Trial]:
    return [trial(r) for r in records]


def columns(t: Trial) -> dict:
    """The row as trials.csv's columns, in their order (unchanged since the table was a DataFrame)."""
    s = t.serving
    row = {"cell": t.cell, "phase": t.phase, "status": t.status, "trial_key": t.trial_key, "task": t.task,
           "method": t.method, "peft": t.peft, "model": t.model, "shots": t.shots, "data_seed": t.data_seed,
           "seed": t.seed, "lr": t.lr, "epochs_run": t.epochs_run, "dev_accuracy": t.dev_accuracy,
           "in_domain_accuracy": t.score("in_domain").accuracy,
           "in_domain_accuracy_full_vocab": t.score("in_domain").full_vocab,
           "peak_memory_mib": t.peak_memory_mib, "seconds": t.seconds, "trial_seconds": t.trial_seconds,
           "n_dev": t.n_dev, "adaptation_seconds": t.adaptation_seconds, "serve_ms_per_query": s.ms_per_query,
           "serve_cpu_ms_per_query": s.cpu_ms_per_query, "serve_exclusive": s.exclusive,
           "serve_peak_mib": s.peak_memory_mib, "serve_kv_bytes_per_query": s.kv_bytes_per_query,
           "trainable_params": t.trainable_params, "total_params": t.total_params, "error": t.error, "time": t.time,
           "n_dropped": t.n_dropped, "demos_truncated": t.demos_truncated, "tokens_cut": t.tokens_cut}
    for name, score in t.sets.items():
        if name != "in_domain":
            row[f"{name}_accuracy"], row[f"{name}_full_vocab"] = score.accuracy, score.full_vocab
        row[f"{name}_pred_class0"], row[f"{name}_pred_top"] = score.pred_class0, score.pred_top
        row[f"{name}_pred_top_class"] = score.pred_top_class
    if t.teacher_in_domain_accuracy is not None:
        row["teacher_in_domain_accuracy"] = t.teacher_in_domain_accuracy
    row.update({f"param:{k}": v for k, v in t.searched.items()})
    if t.ray_overhead_seconds is not None:
        row["ray_overhead_seconds"] = t.ray_overhead_seconds
    return row


def to_frame(rows: list[Trial]) -> "pd.DataFrame":
    """The table for trials.parquet / trials.csv (pandas is imported here only: a dry run reads rows without it)."""
    import pandas as pd
    return pd.DataFrame([columns(t) for t in rows])


# ---- reading the rows ------------------------------------------------------------------------------


def present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def values(rows: Iterable[Trial], get: Callable[[Trial], object]) -> list[float]:
    """The rows' non-missing values of one quantity, in row order, as floats."""
    return [float(v) for v in map(get, rows) if present(v)]


def total(rows: Iterable[Trial], get: Callable[[Trial], object]) -> float:
    """The sum of one quantity over the rows, a missing value counted 0 (summed as numpy sums, so a
    rebuilt table's totals round as they always did)."""
    return float(np.sum(np.array([float(v) if present(v) else 0.0 for v in map(get, rows)], dtype=float)))


def group(rows: Iterable[Trial], key: Callable[[Trial], object]) -> dict:
    """The rows by key, keys sorted, each group in row order."""
    out: dict = {}
    for t in rows:
        out.setdefault(key(t), []).append(t)
    return dict(sorted(out.items()))


def unique(items: Iterable) -> list:
    """Distinct items in the order they first appear."""
    return list(dict.fromkeys(items))


def ood_names(rows: Iterable[Trial]) -> list[str]:
    """The OOD sets the rows carry accuracies for ("hans", "paws_qqp", ...)."""
    return sorted({name for t in rows for name in t.sets} - {"in_domain"})


def completed_replicates(rows: Iterable[Trial]) -> list[Trial]:
    return [t for t in rows if t.phase != "search" and t.status == "completed"]


def newest_per_seed(rows: list[Trial]) -> list[Trial]:
    """One replicate per data seed: a moved folder or a rerun can leave two; the newest counts (in time
    order, undated ones first)."""
    ordered = sorted(rows, key=lambda t: (t.time is not None, t.time or ""))
    last = {t.data_seed: i for i, t in enumerate(ordered)}
    return [t for i, t in enumerate(ordered) if last[t.data_seed] == i]


def by_seed(rows: list[Trial]) -> dict[int, Trial]:
    """The newest replicate of each data seed, by seed."""
    return {int(t.data_seed): t for t in newest_per_seed(rows)}


def with_model_params(rows: list[Trial]) -> list[Trial]:
    """Each row with its model's size: the fewest parameters any row of that model reports (LoRA
    adapters and heads add some)."""
    fewest = {m: min((t.total_params for t in g if present(t.total_params)), default=None)
              for m, g in group(rows, lambda t: t.model).items()}
    return [dataclasses.replace(t, model_params=fewest[t.model]) for t in rows]
