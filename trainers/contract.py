"""What travels between the layers, typed: a sweep trial's spec, an epoch's report, the result record
of a trial (down to each evaluation set's examples) and a cell's statistics. JSON only at the edges: `load(Type, data)`
reads what any version of this code wrote (keys it does not know are kept, and written back where
they stood), `dump(obj)` writes it. A leaf: it imports nothing of the project.

    python -c "import json, sys; from trainers.contract import Record, load; \
r = load(Record, json.load(open(sys.argv[1]))); print(r.status, r.metrics.in_domain.accuracy)" \
results/acceptance/decided_rte_cpu/trials/02bebfdd02b8d119.json

Who writes what: the driver plans each trial as a `TrialSpec`, which Tune carries as the trial's
config (Ray's edge); a method's recipe ends in `trainers.records.build_record` (a `Record`); the sweep's
trial adds its timeline and sends the record to the driver as JSON (Ray's edge); the driver adds the
sweep's fields (`sweep` .. `trial_seconds`) and writes it (the disk's edge). The analysis loads records
and writes `CellStats` (summary.json); reports and figures read both by attribute.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any


def optional(default=None, factory=None):
    """A field left out of a new object's JSON while it holds nothing (None, {} or [])."""
    if factory is not None:
        return field(default_factory=factory, metadata={"omit": True})
    return field(default=default, metadata={"omit": True})


@dataclass
class Json:
    """What every contract type keeps beside its fields: the keys it was read with, in their order, and
    the values of keys it does not declare, so a record read and written again is unchanged."""
    rest: dict = field(default_factory=dict, kw_only=True, repr=False, compare=False)
    keys: tuple | None = field(default=None, kw_only=True, repr=False, compare=False)


_OWN = ("rest", "keys")


@functools.cache
def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls) if f.name not in _OWN}


def load(cls, data):
    """A contract object from its JSON form (None stays None)."""
    if data is None or not isinstance(data, dict):
        return data
    known = _fields(cls)
    values = {k: _value(known[k][0], v) for k, v in data.items() if k in known}
    return cls(**values, rest={k: v for k, v in data.items() if k not in known}, keys=tuple(data))


def _value(hint, value):
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _value(inner[0], value) if len(inner) == 1 else value
    if dataclasses.is_dataclass(hint):
        return load(hint, value)
    if origin is dict and len(args) == 2 and isinstance(value, dict):
        return {k: _value(args[1], v) for k, v in value.items()}
    if origin is list and args and isinstance(value, list):
        return [_value(args[0], v) for v in value]
    return value


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def dump(obj):
    """The JSON form: a read object's keys in the order it was read; a new one's fields in declaration
    order, less the optional ones holding nothing."""
    if isinstance(obj, Json):
        known = _fields(type(obj))
        order = list(obj.keys) if obj.keys is not None else list(known)
        order += [k for k in known if k not in order and getattr(obj, k) != _default(known[k][1])]
        order += [k for k in obj.rest if k not in order]
        out = {}
        for k in order:
            if k not in known:
                if k in obj.rest:
                    out[k] = dump(obj.rest[k])
                continue
            value = getattr(obj, k)
            if obj.keys is None or k not in obj.keys:
                if known[k][1].metadata.get("omit") and (value is None or value == {} or value == []):
                    continue
            out[k] = dump(value)
        return out
    if isinstance(obj, dict):
        return {k: dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [dump(v) for v in obj]
    return obj


# ---- a sweep trial ---------------------------------------------------------------------------------


@dataclass
class TrialResources(Json):
    """What one trial of a sweep reserves (orchestrator/planning/plan.py `resources`): its worker
    group's size, each worker's CPUs and GPUs, and whether a one-worker trial runs in its Tune trial's
    own process (`resources.in_process`)."""
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    in_process: bool = False

    def per_worker(self) -> dict[str, float]:
        """One worker's request to Ray."""
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}


@dataclass
class TrialSpec(Json):
    """One trial of a sweep as the driver plans it (orchestrator/engine/driver.py) and Tune carries it,
    as the trial's config: what it runs, and how the sweep knows it."""
    cell: str = ""                               # orchestrator.cells.Cell id
    phase: str = "search"                        # search, replicate
    run: str = ""                                # its RunConfig, packed (orchestrator.engine.trial.pack_run)
    searched: dict = field(default_factory=dict)   # the searched values ({} for a replicate of a searchless cell)
    trial_key: str = ""                          # orchestrator.planning.plan.trial_key: never run twice
    identity: dict | None = None                 # the content its paths point to
    resources: TrialResources = field(default_factory=TrialResources)  # what it reserves
    fixtures: dict | None = None                 # the smoke space's tiny model and data, rebuilt where missing
    sweep: str | None = None


# ---- a trial's result record ---------------------------------------------------------------------


@dataclass
class Examples(Json):
    """Every scored example of a set, one character each: any statistic can be recomputed from them."""
    ids: list[str] = field(default_factory=list)
    correct: str = ""                   # "1"/"0" per example
    pred: str = ""                      # the predicted class index per example
    correct_full_vocab: str | None = optional()


@dataclass
class GroupScore(Json):
    accuracy: float | None = None
    n: int = 0


@dataclass
class EvalBlock(Json):
    """One evaluation set's metrics (trainers/runtime/evaluation.py)."""
    accuracy: float | None = None
    accuracy_full_vocab: float | None = optional()
    pred_fraction: dict[str, float] = field(default_factory=dict)
    n_scored: int = 0
    n_dropped: int = 0
    examples: Examples | None = optional()
    breakdown: dict[str, GroupScore] | None = optional()   # "group/label" -> score, for a grouped set (HANS)
    n_excluded_shown: int | None = optional()


@dataclass
class Metrics(Json):
    teacher: Metrics | None = optional()   # a distilling method's teacher: the same blocks
    in_domain: EvalBlock | None = optional()
    ood: dict[str, EvalBlock] = optional(factory=dict)
    dev: EvalBlock | None = optional()

    def block(self, name: str) -> EvalBlock | None:
        """"in_domain", "dev" or an OOD set's name."""
        return self.in_domain if name == "in_domain" else self.dev if name == "dev" else self.ood.get(name)


@dataclass
class Epoch(Json):
    """One epoch's report (what the pruner reads, live) and its line of the record's history."""
    epoch: int = 1
    train_loss: float | None = optional()
    dev_accuracy: float | None = None
    lr: float | None = optional()
    epoch_seconds: float | None = optional()
    tokens_per_second: float | None = optional()
    setup_seconds: float | None = optional()   # a distilling method's teacher, on epoch 1 (a pruned trial's cost)


@dataclass
class Phase(Json):
    """One phase of a run as the meter saw it (trainers/runtime/metering.py): its seconds (less the
    phases nested in it), its peak memory, and when it ran (`wall`: [start, end] per entry)."""
    seconds: float = 0.0
    peak_rss_mib: float | None = optional()
    cuda_max_allocated_mib: float | None = optional()
    cuda_max_reserved_mib: float | None = optional()
    peak_rss_scope: str | None = optional()    # phase: the kernel's high-water mark was reset for it
    wall: list[list[float]] = field(default_factory=list)
    nvml_process_peak_mib: float | None = optional()  # NVML's view, CUDA context included; None: not seen
    nvml_error: str | None = optional()

    @property
    def peak_mib(self) -> float | None:
        """The peak phases are compared by: CUDA's allocation on a GPU, else the resident set."""
        return self.cuda_max_allocated_mib if self.cuda_max_allocated_mib is not None else self.peak_rss_mib


@dataclass
class Serving(Json):
    """What one query costs the adapted model (trainers/runtime/serving.py)."""
    ms_per_query: float | None = None          # median of the timed passes
    ms_per_query_runs: list[float] = optional(factory=list)
    spread_ms: list[float] = optional(factory=list)
    cpu_ms_per_query: float | None = optional()
    queries: int | None = optional()
    repeats: int | None = optional()
    batch_size: int | None = optional()
    waited_seconds: float | None = optional()
    exclusive: bool | None = optional()        # alone on its node/device (a sweep's gate)
    start: float | None = optional()
    end: float | None = optional()
    node: str | None = optional()
    device: str | None = optional()
    kv_bytes_per_query: int | None = optional()  # key/value bytes each query attends to (ICL: its context)
    peak_memory_mib: float | None = optional()
    memory_kind: str | None = optional()


@dataclass
class Resources(Json):
    phases: dict[str, Phase] = optional(factory=dict)
    total_seconds: float | None = optional()
    peak_memory_mib: float | None = optional()
    peak_memory_kind: str | None = optional()
    adaptation_seconds: float | None = optional()
    dev_seconds_uncharged: float | None = optional()
    serving: Serving | None = optional()
    memory_plan: dict | None = optional()
    timeline: dict | None = optional()         # when the trial, its worker and its method started and ended
    ranks: int | None = optional()


@dataclass
class Context(Json):
    """How the demonstrations fit the window (trainers/runtime/context_fit.py)."""
    policy: str | None = optional()
    window: int | None = optional()
    demonstrations: int | None = optional()
    context_tokens: int | None = optional()
    demos_truncated: int | None = optional()
    tokens_cut: int | None = optional()


@dataclass
class Resolved(Json):
    """What the run resolved its defaults to; a method's own facts beside these are kept as they are."""
    lr: float | None = optional()
    train_tokens: int | None = optional()
    context_tokens: int | None = optional()
    context: Context | None = optional()


@dataclass
class Params(Json):
    trainable: int | None = optional()
    total: int | None = optional()


@dataclass
class Env(Json):
    versions: dict[str, str | None] = field(default_factory=dict)
    git_commit: str | None = None
    host: str | None = None
    time: str | None = None


@dataclass
class Record(Json):
    """The one record of a run (`trainers.records.build_record`), and what a sweep adds (sweep ..)."""
    schema: int = 1
    status: str = "completed"               # completed, diverged, failed; the sweep's pruned
    method: str = ""
    task: str = ""
    model: str = ""
    shots: int = 0
    data_seed: int = 0
    seed: int | None = None
    config: dict = field(default_factory=dict)   # RunConfig.to_dict(): from_dict gives the typed form
    resolved: Resolved = field(default_factory=Resolved)
    metrics: Metrics = field(default_factory=Metrics)
    history: list[Epoch] = field(default_factory=list)
    params: Params = field(default_factory=Params)
    resources: Resources = field(default_factory=Resources)
    extra: dict = field(default_factory=dict)    # a method's own facts: steps, selected_epoch, a traceback
    error: str | None = None
    env: Env = field(default_factory=Env)
    sweep: str | None = optional()
    cell: str | None = optional()                # orchestrator.cells.Cell id
    phase: str | None = optional()               # search, replicate
    trial_key: str | None = optional()
    identity: dict | None = optional()
    tune_trial_id: str | None = optional()
    searched: dict = optional(factory=dict)
    trial_resources: TrialResources | None = optional()
    trial_seconds: float | None = optional()


# ---- a cell's statistics (summary.json) -------------------------------------------------------------


@dataclass
class Stat(Json):
    """A quantity over a cell's seeds: its mean, their spread, and a 95 % interval (an accuracy's holds
    the examples' noise too, over `examples` scored; None for a single seed)."""
    mean: float = 0.0
    std: float = 0.0
    n: int = 0
    ci95: list[float] | None = None
    examples: int | None = optional()


@dataclass
class Collapse(Json):
    """Where a cell's seeds answered one class ≥ 90 % of the time on a set."""
    seeds: int = 0
    of: int = 0
    shares: dict = field(default_factory=dict)    # data seed -> its top class's share
    classes: dict = field(default_factory=dict)   # data seed -> that class


@dataclass
class Retried(Json):
    trials: int = 0                               # failed trials a --resume ran again
    now: dict[str, int] = field(default_factory=dict)   # how they ended this time


@dataclass
class CellStats(Json):
    """One cell's numbers over its replicates (orchestrator.analysis.results.cell_stats)."""
    cell: str = ""
    task: str = ""
    method: str = ""
    peft: str = "none"
    model: str = ""
    shots: int = 0
    seeds: int = 0
    in_domain_accuracy: Stat | None = None
    in_domain_accuracy_full_vocab: Stat | None = None
    ood_accuracy: dict[str, Stat | None] = field(default_factory=dict)
    ood_accuracy_full_vocab: dict[str, Stat | None] = field(default_factory=dict)
    pred_class0: dict[str, Stat | None] = field(default_factory=dict)
    collapsed: list[str] = field(default_factory=list)
    collapse: dict[str, Collapse] = field(default_factory=dict)
    teacher_in_domain_accuracy: Stat | None = None
    dropped_queries: int = 0
    demos_truncated: Stat | None = None
    tokens_cut: Stat | None = None
    peak_memory_mib: Stat | None = None
    seconds: Stat | None = None
    search_seconds: float = 0.0
    replicate_adaptation_seconds: Stat | None = None
    adaptation_seconds: float = 0.0
    serve_ms_per_query: Stat | None = None
    serve_peak_mib: Stat | None = None
    serve_cpu_ms_per_query: Stat | None = None
    serve_kv_bytes_per_query: Stat | None = None
    serve_alone: bool = False
    trial_seconds: float | None = None
    ray_overhead_seconds: float = 0.0
    labelled_examples: int = 0
    trainable_params: int | None = None
    lr: list[float] = field(default_factory=list)
    search_trials: int = 0
    pruned: int = 0
    failed: int = 0
    diverged: int = 0
    retried: Retried = field(default_factory=Retried)

    def accuracy(self, name: str, full_vocab: bool = False) -> Stat | None:
        """"in_domain" or an OOD set's accuracy."""
        if name == "in_domain":
            return self.in_domain_accuracy_full_vocab if full_vocab else self.in_domain_accuracy
        return (self.ood_accuracy_full_vocab if full_vocab else self.ood_accuracy).get(name)


@dataclass
class Comparison(Json):
    """A − B of two cells of one task × model × shots on one set, over the data seeds both completed
    (orchestrator.analysis.stats.paired), with its verdict."""
    a: str = ""
    b: str = ""
    set: str = "in_domain"
    n: int = 0
    mean_diff: float = 0.0
    ci95: list[float] = field(default_factory=list)
    se: float | None = optional()
    p: float | None = optional()
    seeds: list[int] = optional(factory=list)
    examples: int = 0
    detectable: float | None = optional()
    shared_examples_sd: float | None = optional()
    verdict: str = "inconclusive"
    reason: str = ""
    collapsed: list[str] = field(default_factory=list)
