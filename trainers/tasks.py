"""Tasks as data: load a task's train pool, in-domain evaluation split and OOD sets.

    python -c "from trainers.tasks import load_task; print(load_task('rte', data_dir='../shared/data').summary())"

Definitions live in `trainers/data/tasks.yaml`. Data comes from the Hugging Face hub by default,
or from a local folder in the hub's schema (`--data-dir`, or `$FEWSHOT_DATA_DIR`), such as
`../shared/data`. Both sources end in the same list of `Example`s.
"""
from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import yaml

DATA_DIR_ENV = "FEWSHOT_DATA_DIR"
TASKS_FILE = Path(__file__).parent / "data" / "tasks.yaml"
EVAL_SUBSET_SEED = 1234  # the --eval-limit subset is the same for every run, whatever its seeds


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

    def classes_of(self, set_name: str) -> tuple[str, ...]:
        """Class names of the in-domain split or of an OOD set (HANS names its own classes)."""
        if set_name in self.ood:
            return tuple(task_definitions()["ood_sets"][set_name]["classes"])
        return self.classes

    def summary(self) -> str:
        ood = ", ".join(f"{k} {len(v)}" for k, v in self.ood.items()) or "none"
        return f"{self.name}: train pool {len(self.train)}, eval {len(self.eval)}, OOD {ood} (from {self.source})"


@functools.lru_cache(maxsize=1)
def task_definitions() -> dict:
    return yaml.safe_load(TASKS_FILE.read_text())


def task_names() -> list[str]:
    return sorted(task_definitions()["tasks"])


def ood_names() -> list[str]:
    return sorted(task_definitions()["ood_sets"])


def task_spec(name: str) -> dict:
    tasks = task_definitions()["tasks"]
    if name not in tasks:
        raise DataError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def resolve_data_dir(data_dir: str | None) -> str | None:
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


@functools.lru_cache(maxsize=16)
def _read_jsonl(path: str) -> tuple[dict, ...]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON Lines ({e.msg})") from None
    return tuple(rows)


def _read_hub(name: str, config: str | None, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"loading {name} from the hub needs the `datasets` package; or pass --data-dir") from None
    try:
        return datasets.load_dataset(name, config, split=split).to_list()
    except Exception as e:  # the hub raises many kinds; the user needs the name and the way out
        raise DataError(f"could not load {name}/{config or ''} [{split}] from the hub ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); pass --data-dir with a local copy") from None


def _rows(split: dict, data_dir: str | None, what: str) -> tuple[list[dict], str]:
    if data_dir:
        path = Path(data_dir) / split["local"]
        if not path.is_file():
            raise DataError(f"{path} not found: {what} expects {split['local']} under the data folder "
                            f"(the hub's schema, one JSON object per line; see ../shared/data/README.md)")
        return list(_read_jsonl(str(path))), str(path)
    if "hub" not in split:
        raise DataError(f"{what} has no hub source; pass --data-dir with {split['local']} inside")
    name, config, split_name = split["hub"]
    rows = _read_hub(name, config, split_name)
    if "hub_rows" in split:
        start, stop = split["hub_rows"]
        rows = rows[start:stop]
    return rows, f"hub:{name}/{config or ''}[{split_name}]"


def _examples(rows: list[dict], origin: str, spec: dict, group_column: str | None = None) -> list[Example]:
    columns = list(spec["text_columns"]) + ["label"] + ([group_column] if group_column else [])
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


def eval_subset(examples: list[Example], limit: int | None) -> list[Example]:
    """A fixed random subset (the same for every run) of at most `limit` examples, in original order."""
    if limit is None or len(examples) <= limit:
        return examples
    keep = sorted(random.Random(EVAL_SUBSET_SEED).sample(range(len(examples)), limit))
    return [examples[i] for i in keep]


def load_ood(name: str, data_dir: str | None, hans_heuristics: tuple[str, ...] = ("lexical_overlap",)) -> list[Example]:
    sets = task_definitions()["ood_sets"]
    if name not in sets:
        raise DataError(f"unknown OOD set {name!r}; valid: {', '.join(sorted(sets))}")
    spec = sets[name]
    rows, origin = _rows(spec["split"], resolve_data_dir(data_dir), f"OOD set {name}")
    group_column = spec.get("group_column")
    examples = _examples(rows, origin, spec, group_column)
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
        raise DataError(f"data folder {data_dir} does not exist (expected the hub's schema, as ../shared/data)")
    train_rows, train_origin = _rows(spec["train"], data_dir, f"task {name} (train)")
    eval_rows, eval_origin = _rows(spec["eval"], data_dir, f"task {name} (eval)")
    ood_sets = {o: load_ood(o, data_dir, hans_heuristics) for o in (spec["ood"] if ood is None else ood)}
    return TaskData(
        name=name, family=spec["family"], classes=tuple(spec["classes"]),
        default_pattern=spec["default_pattern"],
        train=_examples(train_rows, train_origin, spec),
        eval=_examples(eval_rows, eval_origin, spec),
        ood=ood_sets, source=data_dir or "hub",
    )
