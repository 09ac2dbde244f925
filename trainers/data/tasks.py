"""Tasks as data: load a task's train pool, in-domain evaluation split and OOD sets.

    python -c "from trainers.data.tasks import load_task; print(load_task('rte', data_dir='../shared/data').summary())"

Definitions live in `trainers/data/tasks.yaml`. Data comes from a local folder in the hub's schema
(`--data-dir`, or `$FEWSHOT_DATA_DIR`), such as `../shared/data` or what `python -m trainers data
export` wrote; without one, from each split's sources in turn (the hub, the original releases;
`trainers/data/sources.py`). Every path ends in the same list of `Example`s, and every split loaded
gets a content fingerprint that the result record carries.
"""
from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trainers import settings
from trainers.data import sources, user_tasks

DATA_DIR_ENV = "FEWSHOT_DATA_DIR"
TASKS_FILE = Path(__file__).parent / "tasks.yaml"
EVAL_SUBSET_SEED = 1234  # + the data seed: each data seed's --eval-limit subset, the same for every method


class DataError(ValueError):
    """Task data is missing or malformed; the message names the path and the expected layout."""


@dataclass(frozen=True)
class Example:
    text1: str
    text2: str | None
    label: int
    group: str | None = None  # e.g. the HANS heuristic

    def key(self) -> tuple:
        return (self.text1, self.text2)

    def uid(self) -> str:
        """A short content id, the same wherever the example is loaded from (per-example results)."""
        text = f"{self.text1}\x1f{self.text2 or ''}\x1f{self.group or ''}"
        return hashlib.sha1(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TaskData:
    name: str
    family: str
    classes: tuple[str, ...]
    default_pattern: str
    train: list[Example]
    eval: list[Example]
    ood: dict[str, list[Example]]
    source: str
    fingerprints: dict[str, str] = field(default_factory=dict)  # split (its local path) -> content hash

    def classes_of(self, set_name: str) -> tuple[str, ...]:
        """Class names of the in-domain split or of an OOD set (HANS names its own classes)."""
        if set_name in self.ood:
            return tuple(task_definitions()["ood_sets"][set_name]["classes"])
        return self.classes

    def summary(self) -> str:
        ood = ", ".join(f"{k} {len(v)}" for k, v in self.ood.items()) or "none"
        return f"{self.name}: train pool {len(self.train)}, eval {len(self.eval)}, OOD {ood} (from {self.source})"


@functools.lru_cache(maxsize=1)
def _shipped() -> dict:
    defs = yaml.safe_load(TASKS_FILE.read_text())
    splits = [(f"tasks.{t}.{k}", spec[k]) for t, spec in defs["tasks"].items() for k in ("train", "eval")]
    splits += [(f"ood_sets.{o}.split", spec["split"]) for o, spec in defs["ood_sets"].items()]
    for where, split in splits:
        for i, source in enumerate(split.get("sources") or []):
            sources.check(source, f"{TASKS_FILE.name}: {where}.sources[{i}]")
    return defs


def task_definitions() -> dict:
    """The shipped task definitions and those of any tasks file registered in this process."""
    defs = _shipped()
    extra = user_tasks.registered()
    if not extra:
        return defs
    merged = {**defs, "tasks": dict(defs["tasks"]), "ood_sets": dict(defs["ood_sets"])}
    for more in extra:
        merged["tasks"].update(more["tasks"])
        merged["ood_sets"].update(more["ood_sets"])
    return merged


def use_tasks_file(path: str | None) -> None:
    """Register a user's tasks file (trainers/data/user_tasks.py) in this process; a bad one is a DataError."""
    if path:
        try:
            user_tasks.register(path, _shipped())
        except user_tasks.UserTaskError as e:
            raise DataError(str(e)) from None


def split_key(split: dict) -> str:
    """A split's name in fingerprints: its path under a data folder, or (a user's split) its source."""
    return split.get("local") or sources.describe(split["sources"][0])


def task_names() -> list[str]:
    return sorted(task_definitions()["tasks"])


def ood_names() -> list[str]:
    return sorted(task_definitions()["ood_sets"])


def task_spec(name: str) -> dict:
    tasks = task_definitions()["tasks"]
    if name not in tasks:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def missing_data_dir(data_dir: str) -> str:
    """Why a --data-dir is not a data folder, in words."""
    what = "is a file, not a folder" if Path(data_dir).expanduser().is_file() else "does not exist"
    return f"data folder {data_dir} {what} (expected a folder in the hub's schema, as ../shared/data)"


def resolve_data_dir(data_dir: str | None) -> str | None:
    return data_dir or settings.get(DATA_DIR_ENV) or None


def split_columns(spec: dict) -> list[str]:
    """The columns a task or OOD set reads from each row: its texts, the label, the group (HANS heuristic)."""
    return list(spec["text_columns"]) + ["label"] + ([spec["group_column"]] if spec.get("group_column") else [])


@functools.lru_cache(maxsize=16)
def _read_local(path: str, columns: tuple[str, ...]) -> tuple[tuple[dict, ...], str]:
    try:
        rows = sources.read_file(path, "jsonl")
    except sources.SourceError as e:
        raise DataError(str(e)) from None
    return tuple(rows), sources.fingerprint(rows, list(columns))


def read_split(split: dict, spec: dict, data_dir: str | None, what: str) -> tuple[list[dict], str, str]:
    """(rows, where they came from, content fingerprint): the data folder if given, else the sources in turn."""
    columns = tuple(split_columns(spec))
    if data_dir and split.get("local"):  # a user's split always comes from its own source
        path = Path(data_dir) / split["local"]
        if not path.is_file():
            raise DataError(f"{path} not found: {what} expects {split['local']} under the data folder "
                            f"(the hub's schema, one JSON object per line; see ../shared/data/README.md, or write one "
                            f"with `python -m trainers data export`)")
        rows, fp = _read_local(str(path), columns)
        return list(rows), str(path), fp
    hint = (f"pass --data-dir with {split['local']} inside (`python -m trainers data export --to DIR` on a connected "
            f"machine writes that layout)" if split.get("local") else "check the source in your tasks file")
    try:
        rows, origin = sources.read_first(split.get("sources") or [], what, hint)
    except sources.SourceError as e:
        raise DataError(str(e)) from None
    return rows, origin, sources.fingerprint(rows, list(columns))


def _examples(rows: list[dict], origin: str, spec: dict) -> list[Example]:
    columns, group_column = split_columns(spec), spec.get("group_column")
    label_map = {int(k): v for k, v in spec.get("label_map", {}).items()} or {i: i for i in range(len(spec["classes"]))}
    out = []
    for i, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise DataError(f"{origin}: row {i} lacks column(s) {missing}; expected columns {columns}")
        if row["label"] not in label_map:
            continue  # e.g. MNLI neutral in the binary task, or -1 on unlabelled test splits
        text2 = row[spec["text_columns"][1]] if len(spec["text_columns"]) > 1 else None
        group = row[group_column] if group_column else None
        out.append(Example(row[spec["text_columns"][0]], text2, label_map[row["label"]], group))
    return out


def eval_subset(examples: list[Example], limit: int | None, seed: int = 0) -> list[Example]:
    """A random subset of at most `limit` examples drawn by `seed` (the run's data seed: every
    method of a data seed scores the same examples, each data seed its own, so replicates carry the
    evaluation sample's noise too), in original order, stratified: equal numbers per label (and per
    HANS heuristic) as far as each stratum has them, so a model that answers one class everywhere
    scores exactly 1 / classes."""
    if limit is None or len(examples) <= limit:
        return examples
    strata: dict[tuple, list[int]] = {}
    for i, ex in enumerate(examples):
        strata.setdefault((ex.group or "", ex.label), []).append(i)
    quota, left = {k: 0 for k in strata}, limit
    open_ = sorted(strata)
    while left and open_:  # water-filling: equal shares, a short stratum's remainder to the others
        share = max(1, left // len(open_))
        for k in list(open_):
            take = min(share, len(strata[k]) - quota[k], left)
            quota[k], left = quota[k] + take, left - take
            if quota[k] == len(strata[k]):
                open_.remove(k)
            if not left:
                break
    rng = random.Random(EVAL_SUBSET_SEED + seed)
    keep = sorted(i for k in sorted(strata) for i in rng.sample(strata[k], quota[k]))
    return [examples[i] for i in keep]


def load_ood(name: str, data_dir: str | None, hans_heuristics: tuple[str, ...] = ("lexical_overlap",),
             fingerprints: dict | None = None) -> list[Example]:
    """An OOD set's examples (HANS: the chosen heuristics); its split's fingerprint goes into `fingerprints`."""
    sets = task_definitions()["ood_sets"]
    if name not in sets:
        raise DataError(f"unknown OOD set {name!r}; valid: {', '.join(sorted(sets))}")
    spec = sets[name]
    rows, origin, fp = read_split(spec["split"], spec, resolve_data_dir(data_dir), f"OOD set {name}")
    if fingerprints is not None:
        fingerprints[split_key(spec["split"])] = fp
    examples = _examples(rows, origin, spec)
    if "groups" in spec:
        wanted = spec["groups"] if tuple(hans_heuristics) == ("all",) else list(hans_heuristics)
        unknown = set(wanted) - set(spec["groups"])
        if unknown:
            raise DataError(f"unknown {name} heuristic(s) {sorted(unknown)}; valid: {', '.join(spec['groups'])}, all")
        examples = [e for e in examples if e.group in wanted]
    return examples


def load_task(name: str, data_dir: str | None = None, ood: tuple[str, ...] | None = None,
              hans_heuristics: tuple[str, ...] = ("lexical_overlap",)) -> TaskData:
    """Load a task's train pool, in-domain eval split and OOD sets (default: the task's own)."""
    spec = task_spec(name)
    data_dir = resolve_data_dir(data_dir)
    if data_dir and not Path(data_dir).is_dir():
        raise DataError(missing_data_dir(data_dir))
    train_rows, train_origin, train_fp = read_split(spec["train"], spec, data_dir, f"task {name} (train)")
    eval_rows, eval_origin, eval_fp = read_split(spec["eval"], spec, data_dir, f"task {name} (eval)")
    fingerprints = {split_key(spec["train"]): train_fp, split_key(spec["eval"]): eval_fp}
    ood_sets = {o: load_ood(o, data_dir, hans_heuristics, fingerprints) for o in (spec["ood"] if ood is None else ood)}
    train, evaluation = _examples(train_rows, train_origin, spec), _examples(eval_rows, eval_origin, spec)
    if spec.get("user"):
        _check_user_splits(name, spec, train, evaluation, train_origin, eval_origin)
    return TaskData(
        name=name, family=spec["family"], classes=tuple(spec["classes"]),
        default_pattern=spec["default_pattern"], train=train, eval=evaluation,
        ood=ood_sets, source=data_dir or "sources", fingerprints=fingerprints,
    )


def _check_user_splits(name: str, spec: dict, train: list, evaluation: list, train_origin: str, eval_origin: str) -> None:
    """A user's task: no empty split, and every class present in training (a class no row has is a
    class list that does not match the labels)."""
    for split, origin in ((train, train_origin), (evaluation, eval_origin)):
        if not split:
            raise DataError(f"task {name}: {origin} has no rows")
    seen = {e.label for e in train}
    missing = [c for i, c in enumerate(spec["classes"]) if i not in seen]
    if missing:
        raise DataError(f"task {name}: no training row of class(es) {missing} in {train_origin}; the classes "
                        f"{spec['classes']} do not match the labels found")
