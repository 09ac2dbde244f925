"""Search spaces: declarative YAML sweeps, validated on load, with dotted `key=value` overrides.

    python -m orchestrator sweep --space cd_vs_icl --dry-run --set shots=[16] --set budget=4

A space names tasks (with their OOD sets), methods with their PEFT variants, models, shots and
data seeds; per method the hyperparameters to search (`{loguniform: [lo, hi]}`, `{uniform: ...}`,
`{int: ...}`, `{choice: [...]}`) or fix (a plain value); settings shared by every trial
(`fixed`); the trial budget per cell; the pruner; and the resources per trial. Unknown keys and
wrong types are errors naming the file, the key and what is allowed. No Ray in here.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainers import settings
from trainers.config import ConfigError, did_you_mean, from_dict, use_methods_file, valid_keys
from trainers.runtime.models import ModelError, check_source
from trainers.methods.spec import METHODS, Parallel
from trainers.data.tasks import DataError, ood_names, task_definitions, task_names, use_tasks_file

PARALLEL_NAMES = tuple(p.value for p in Parallel)

SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
PRUNERS = ("median", "successive_halving", "none")
# The search's data seed, held out from the replicates: a replicate on the seed the search chose its
# configuration on would repeat the winner, judged on its own dev split (optimistic for trained methods).
HELD_OUT_TUNING_SEED = 1000
TOP_KEYS = {
    "name": "sweep name (default: the file name)", "description": "one line shown by `spaces`",
    "tasks": "task names, or task -> {ood: [...], hans_heuristics: [...]}", "methods": "method -> list of PEFT variants",
    "models": "hub ids or local folders", "shots": "list of few-shot sizes", "data_seeds": "replicates",
    "tuning_data_seed": "data seed of the search phase (default 1000, held out from the replicates; a replicate's "
                        "seed is allowed, and the report says so)", "seed": "seed of the search's sampler (training seeds derive from the data seeds; fixed.seed fixes them)",
    "search": "method (or method+peft) -> {config key: distribution or fixed value}", "fixed": "config key -> value, for every trial",
    "budget": "search trials per cell", "pruner": "{type: median|successive_halving|none, ...}",
    "resources": "{workers, cpus_per_worker, gpus_per_worker, by_model_size, in_process}, or auto (or {auto: true, "
                 "gpu_memory_gb, max_gpus_per_trial}): the fewest GPUs per trial the memory plan allows; in_process: true "
                 "runs one-worker trials inside their Tune trial, without a Ray Train worker group (~20 s less a trial)", "max_concurrent_trials": "int or null",
    "max_failures": "retries of a crashed worker group",
    "max_start_failures": "retries of a worker group that did not start (Ray Train's controller failure limit)",
    "worker_start_timeout_s": "seconds a trial's worker group may wait for its resources before that counts as a failure",
    "stall_timeout_s": "seconds the sweep may wait with trials pending and none running (a lost node, a cluster too "
                       "small) before it ends, exit 1, --resume continues (default 600)",
    "fixtures": "synthetic: write a tiny model and data first",
    "data_dir": "local data folder in the hub's schema", "metric": "dev metric searched and pruned on",
    "tasks_file": "a YAML file of your own tasks and OOD sets (trainers/data/user_tasks.py), usable in tasks: beside the "
                  "shipped ones; relative to the working folder",
    "methods_file": "a Python file of your own methods, each registered with its config section "
                    "(trainers/methods/spec.py: register), usable in methods: beside the shipped ones; relative to the working folder",
}
PRUNER_KEYS = {"median": {"n_startup_trials", "n_warmup_steps"}, "successive_halving": {"min_resource", "reduction_factor"}, "none": set()}
RESOURCE_KEYS = {"workers", "cpus_per_worker", "gpus_per_worker", "by_model_size", "auto", "gpu_memory_gb", "max_gpus_per_trial",
                 "in_process"}
RULE_KEYS = {"max_params", "workers", "cpus_per_worker", "gpus_per_worker", "parallel"}


class SpaceError(ValueError):
    """An invalid search space; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Space:
    name: str
    description: str
    path: str
    tasks: dict[str, dict]
    methods: dict[str, list[str]]
    models: list[str]
    shots: list[int]
    data_seeds: list[int]
    tuning_data_seed: int
    seed: int
    search: dict[str, dict[str, Any]]
    fixed: dict[str, Any]
    budget: int
    pruner: dict
    resources: dict
    max_concurrent_trials: int | None
    max_failures: int
    fixtures: str | None
    data_dir: str | None
    max_start_failures: int = 1
    worker_start_timeout_s: float = 120.0
    stall_timeout_s: float = 600.0
    tasks_file: str | None = None
    methods_file: str | None = None
    metric: str = "dev_accuracy"
    raw: dict = field(default_factory=dict, compare=False)
    allow_cpu: bool = field(default=False, compare=False)  # --allow-cpu: GPUs asked of a CPU-only cluster become CPUs
    identity: dict = field(default_factory=dict, compare=False)  # content of models and data splits (preflight)
    placement: dict = field(default_factory=dict, compare=False)  # resources: auto -> cell id -> choice (placement.resolve)
    lengths: dict = field(default_factory=dict, compare=False)  # task -> eval set sizes, tokens per example (preflight)


def space_path(name_or_path: str) -> Path:
    p = Path(name_or_path).expanduser()
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise SpaceError(f"search space file {p} does not exist")
        return p
    candidate = SPACES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise SpaceError(f"unknown search space {name_or_path!r}{did_you_mean(name_or_path, available_spaces())}; available: {', '.join(available_spaces())} (or a path to a .yaml)")
    return candidate


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def _set_path(d: dict, parts: list[str], value: Any) -> None:
    """Set a dotted path; inside `fixed` and `search.<method>` the rest of the path is one config key."""
    if parts[0] == "fixed" and len(parts) > 1:
        d.setdefault("fixed", {})[".".join(parts[1:])] = value
        return
    if parts[0] == "search" and len(parts) > 2:
        d.setdefault("search", {}).setdefault(parts[1], {})[".".join(parts[2:])] = value
        return
    if parts[0] == "resources" and len(parts) > 1 and d.get("resources") == "auto":
        d["resources"] = {"auto": True}  # --set resources=auto --set resources.gpu_memory_gb=80
    for i, part in enumerate(parts[:-1]):
        d = d.setdefault(part, {})
        if not isinstance(d, dict):
            raise SpaceError(f"--set {'.'.join(parts)}: {'.'.join(parts[:i + 1])} is not a mapping")
    d[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SpaceError(f"--set {item!r}: expected key=value (for example --set shots=[16] or --set fixed.train.epochs=5)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise SpaceError(f"--set {item!r}: the value is not valid YAML ({e.problem})") from None
        _set_path(raw, key.split("."), value)
    return raw


class _Checker:
    def __init__(self, path: str):
        self.path = path

    def fail(self, key: str, message: str):
        raise SpaceError(f"{self.path}: {key}: {message}")

    def list_of(self, key: str, value, kind, allow_empty=False) -> list:
        if not isinstance(value, list) or not (value or allow_empty) or not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            self.fail(key, f"expected a non-empty list of {kind.__name__}, got {value!r}")
        return value

    def number(self, key: str, value, minimum=0, integer=False, allow_none=False):
        if value is None and allow_none:
            return None
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if not ok or isinstance(value, bool) or value < minimum:
            self.fail(key, f"expected {'an integer' if integer else 'a number'} >= {minimum}, got {value!r}")
        return value


def _tasks(c: _Checker, value) -> dict[str, dict]:
    if isinstance(value, list):
        value = {t: {} for t in c.list_of("tasks", value, str)}
    if not isinstance(value, dict) or not value:
        c.fail("tasks", "expected a list of task names or a mapping task -> {ood: [...]}")
    out = {}
    for task, opts in value.items():
        if task not in task_names():
            c.fail(f"tasks.{task}", f"unknown task{did_you_mean(task, task_names())}; allowed: {', '.join(task_names())}")
        opts = opts or {}
        unknown = set(opts) - {"ood", "hans_heuristics"}
        if unknown:
            c.fail(f"tasks.{task}", f"unknown key(s) {sorted(unknown)}{did_you_mean(min(unknown), ('ood', 'hans_heuristics'))}; allowed: ood, hans_heuristics")
        for o in opts.get("ood") or []:
            if o not in ood_names():
                c.fail(f"tasks.{task}.ood", f"unknown OOD set {o!r}{did_you_mean(o, ood_names())}; allowed: {', '.join(ood_names())}")
        groups = task_definitions()["ood_sets"]["hans"]["groups"]
        for h in opts.get("hans_heuristics") or []:
            if h not in (*groups, "all"):
                c.fail(f"tasks.{task}.hans_heuristics", f"unknown HANS heuristic {h!r}{did_you_mean(h, groups)}; allowed: {', '.join(groups)}, all")
        out[task] = opts
    return out


def _methods(c: _Checker, value) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        c.fail("methods", f"expected a mapping method -> [PEFT variants]; methods: {', '.join(sorted(METHODS))}")
    for method, variants in value.items():
        if method not in METHODS:
            c.fail(f"methods.{method}", f"unknown method{did_you_mean(method, METHODS)}; allowed: {', '.join(sorted(METHODS))}")
        variants = c.list_of(f"methods.{method}", variants, str)
        for v in variants:
            allowed = METHODS[method].peft
            if v not in allowed:
                c.fail(f"methods.{method}", f"unknown PEFT variant {v!r}{did_you_mean(v, allowed)}; allowed: {', '.join(allowed)}")
    return value


def _param(c: _Checker, key: str, spec):
    """A search distribution {kind: args}, or a plain fixed value."""
    if not isinstance(spec, dict):
        return spec
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        c.fail(key, f"expected one of {{{', '.join(DISTRIBUTIONS)}: ...}} or a plain value, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            c.fail(key, "choice needs a non-empty list")
        return spec
    if isinstance(args, list):
        args = [_number(a) for a in args]  # YAML reads 1e-4 (no dot) as text
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
        c.fail(key, f"{kind} needs [low, high], got {args!r}")
    low, high = args
    if not low < high or (kind == "loguniform" and low <= 0) or (kind == "int" and not all(isinstance(a, int) for a in args)):
        c.fail(key, f"{kind} needs low < high{' and low > 0' if kind == 'loguniform' else ''}{' as integers' if kind == 'int' else ''}, got {args!r}")
    return {kind: args}


def _bounds(spec) -> list:
    """The values a search entry can take at its extremes (choice: all of them)."""
    if not isinstance(spec, dict):
        return [spec]
    kind, args = next(iter(spec.items()))
    return list(args)


def _number(value):
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _search(c: _Checker, value, methods: dict) -> dict:
    value = value or {}
    if not isinstance(value, dict):
        c.fail("search", "expected a mapping method -> {config key: distribution}")
    keys = set(valid_keys())
    variants = {f"{m}+{p}" for m, ps in methods.items() for p in ps}
    for method, params in value.items():
        if method not in methods and method not in variants:
            c.fail(f"search.{method}", f"not a method or method+peft of this space; allowed: {', '.join(sorted(set(methods) | variants))}")
        if not isinstance(params, dict):
            c.fail(f"search.{method}", "expected a mapping config key -> distribution or value")
        for key, spec in params.items():
            if key not in keys:
                c.fail(f"search.{method}.{key}", f"unknown config key{did_you_mean(key, keys)}; allowed: {', '.join(sorted(keys))}")
            params[key] = _param(c, f"search.{method}.{key}", spec)
            for bound in _bounds(params[key]):
                try:
                    from_dict({}).replace(**{key: bound})  # a fixed value, or a range's ends, must be valid
                except ConfigError as e:
                    c.fail(f"search.{method}.{key}", str(e))
    return value


def _resources(c: _Checker, value) -> dict:
    if value == "auto":
        value = {"auto": True}
    if value is not None and not isinstance(value, dict):
        c.fail("resources", f"expected a mapping or auto, got {value!r}")
    value = dict(value or {})
    unknown = set(value) - RESOURCE_KEYS
    if unknown:
        c.fail("resources", f"unknown key(s) {sorted(unknown)}{did_you_mean(min(unknown), RESOURCE_KEYS)}; allowed: {', '.join(sorted(RESOURCE_KEYS))}")
    out = {"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": None, "by_model_size": [], "auto": False,
           "gpu_memory_gb": None, "max_gpus_per_trial": 16, "in_process": False}
    out.update(value)
    for flag in ("auto", "in_process"):
        if not isinstance(out[flag], bool):
            c.fail(f"resources.{flag}", f"expected true or false, got {out[flag]!r}")
    c.number("resources.gpu_memory_gb", out["gpu_memory_gb"], 1, allow_none=True)
    c.number("resources.max_gpus_per_trial", out["max_gpus_per_trial"], 1, integer=True)
    for i, rule in enumerate(out["by_model_size"] or []):
        if not isinstance(rule, dict) or set(rule) - RULE_KEYS:
            c.fail(f"resources.by_model_size[{i}]", f"expected a mapping with keys from {', '.join(sorted(RULE_KEYS))}")
    for rule in [out, *(out["by_model_size"] or [])]:
        workers = c.number("resources.workers", rule.get("workers", out["workers"]), 1, integer=True)
        gpus = c.number("resources.gpus_per_worker", rule.get("gpus_per_worker", out["gpus_per_worker"]), 0, allow_none=True) or 0
        c.number("resources.cpus_per_worker", rule.get("cpus_per_worker", out["cpus_per_worker"]), 0)
        if rule.get("parallel", "ddp") not in PARALLEL_NAMES:
            c.fail("resources.by_model_size", f"parallel: expected {' or '.join(PARALLEL_NAMES)}, got {rule['parallel']!r}")
        if 0 < gpus < 1 and workers > 1:
            c.fail("resources", "fractional GPUs work with one worker per trial only (several ranks on one GPU fail in NCCL)")
    return out


def _pruner(c: _Checker, value) -> dict:
    value = dict(value or {"type": "none"})
    kind = value.pop("type", None)
    if kind not in PRUNERS:
        c.fail("pruner.type", f"expected one of {', '.join(PRUNERS)}, got {kind!r}")
    unknown = set(value) - PRUNER_KEYS[kind]
    if unknown:
        c.fail("pruner", f"unknown key(s) {sorted(unknown)} for {kind}{did_you_mean(min(unknown), PRUNER_KEYS[kind])}; allowed: {', '.join(sorted(PRUNER_KEYS[kind])) or 'none'}")
    for k, v in value.items():
        c.number(f"pruner.{k}", v, 0, integer=k != "reduction_factor")
    return {"type": kind, **value}


def _fixed(c: _Checker, value) -> dict:
    value = value or {}
    if not isinstance(value, dict):
        c.fail("fixed", "expected a mapping config key -> value")
    try:
        from_dict({}).replace(**value)  # types and ranges checked by the trainers' own config
    except ConfigError as e:
        c.fail("fixed", str(e))
    return value


def validate(raw: dict, path: str) -> Space:
    c = _Checker(path)
    if not isinstance(raw, dict):
        c.fail("(top)", "expected a mapping")
    unknown = set(raw) - set(TOP_KEYS)
    if unknown:
        c.fail(sorted(unknown)[0], f"unknown key{did_you_mean(sorted(unknown)[0], TOP_KEYS)}; allowed: {', '.join(TOP_KEYS)}")
    for required in ("description", "tasks", "methods", "models", "shots", "data_seeds"):
        if required not in raw:
            c.fail(required, f"missing ({TOP_KEYS[required]})")
    tasks_file = None
    if raw.get("tasks_file"):
        tasks_file = str(Path(str(raw["tasks_file"])).expanduser().resolve())
        try:  # its tasks join the shipped ones before the task names are checked
            use_tasks_file(tasks_file)
        except DataError as e:
            c.fail("tasks_file", str(e))
    methods_file = None
    if raw.get("methods_file"):
        methods_file = str(Path(str(raw["methods_file"])).expanduser().resolve())
        try:  # its methods join the shipped ones before the method names and their keys are checked
            use_methods_file(methods_file)
        except ConfigError as e:
            c.fail("methods_file", str(e))
    methods = _methods(c, raw["methods"])
    data_seeds = c.list_of("data_seeds", raw["data_seeds"], int)
    shots = c.list_of("shots", raw["shots"], int)
    for k in shots:
        c.number("shots", k, 0, integer=True)
    held_out = HELD_OUT_TUNING_SEED if HELD_OUT_TUNING_SEED not in data_seeds else max(data_seeds) + 1
    tuning = c.number("tuning_data_seed", raw.get("tuning_data_seed", held_out), integer=True)
    models = c.list_of("models", raw["models"], str)
    if raw.get("fixtures") not in (None, "synthetic"):
        c.fail("fixtures", f"expected synthetic or null, got {raw['fixtures']!r}")
    for m in models:
        if raw.get("fixtures") == "synthetic":
            if m not in ("synthetic:opt", "synthetic:llama"):
                c.fail("models", f"with fixtures: synthetic, models are synthetic:opt or synthetic:llama, got {m!r}")
            continue
        try:
            check_source(m)
        except ModelError as e:
            c.fail("models", str(e) + _fetch_hint(m))
    if raw.get("metric", "dev_accuracy") != "dev_accuracy":
        c.fail("metric", "only dev_accuracy is supported")
    return Space(
        name=str(raw.get("name") or Path(path).stem), description=str(raw["description"]), path=path,
        tasks=_tasks(c, raw["tasks"]), methods=methods, models=models,
        shots=shots, data_seeds=data_seeds, tuning_data_seed=tuning,
        seed=c.number("seed", raw.get("seed", 0), integer=True), search=_search(c, raw.get("search"), methods),
        fixed=_fixed(c, raw.get("fixed")), budget=c.number("budget", raw.get("budget", 8), 1, integer=True),
        pruner=_pruner(c, raw.get("pruner")), resources=_resources(c, raw.get("resources")),
        max_concurrent_trials=c.number("max_concurrent_trials", raw.get("max_concurrent_trials"), 1, integer=True, allow_none=True),
        max_failures=c.number("max_failures", raw.get("max_failures", 1), 0, integer=True),
        max_start_failures=c.number("max_start_failures", raw.get("max_start_failures", 1), 0, integer=True),
        worker_start_timeout_s=float(c.number("worker_start_timeout_s", raw.get("worker_start_timeout_s", 120), 1)),
        stall_timeout_s=float(c.number("stall_timeout_s", raw.get("stall_timeout_s", 600), 1)),
        fixtures=raw.get("fixtures"), data_dir=raw.get("data_dir"), raw=raw, tasks_file=tasks_file,
        methods_file=methods_file,
    )


def _fetch_hint(model: str) -> str:
    """A missing folder where the offline model fetcher puts its models: say how to fetch it."""
    folder = Path(model).expanduser()
    fetcher = SPACES_DIR.parent.parent / "shared" / "models" / "fetch_models.py"
    home = Path(settings.get("FEWSHOT_MODEL_DIR")).expanduser()
    if folder.parent != home or not fetcher.is_file():
        return ""
    return f"; fetch it with: {sys.executable} -m pip install -q 'gguf>=0.10' && {sys.executable} {fetcher} {folder.name}"


def load_space(name_or_path: str, overrides: list[str] = (), data_dir: str | None = None) -> Space:
    path = space_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpaceError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]}); "
                         f"fix that line") from None
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not UTF-8 text (byte {e.start}); save the space file as UTF-8") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: a search space is a YAML mapping (tasks:, methods:, models:, ...), not a "
                         f"{type(raw).__name__}; see search_spaces/quickstart.yaml")
    raw = apply_overrides(raw, list(overrides))
    if data_dir and raw.get("fixtures") == "synthetic":
        raise SpaceError(f"{path}: fixtures: synthetic writes its own model and data, so --data-dir would be ignored; "
                         "drop --data-dir, or use a space without fixtures (e.g. quickstart)")
    if data_dir:
        raw["data_dir"] = data_dir
    space = validate(raw, str(path))
    # Trials run in Ray worker processes with another working directory: local paths become absolute.
    return dataclasses.replace(space, data_dir=_absolute(space.data_dir), models=[_absolute(m) for m in space.models])


def _absolute(path: str | None) -> str | None:
    """The absolute form of a local path that exists; anything else (a hub id, None) unchanged."""
    if not path or not Path(path).expanduser().exists():
        return path
    return str(Path(path).expanduser().resolve())
