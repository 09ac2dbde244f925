"""Your own classification task, from a file of your own: no edit of the installed package.

    python -m trainers run --method icl --task reviews --tasks-file my_tasks.yaml --model PATH --shots 8
    python -m orchestrator sweep --space quickstart --set tasks_file=my_tasks.yaml --set 'tasks={reviews: {}}'

A tasks file (YAML) names tasks and, optionally, OOD sets; paths in it are relative to the file:

    tasks:
      reviews:
        classes: [negative, positive]          # class i is label i, or the label column holds these names
        text_columns: [text]                   # one or two columns
        label_column: stars_label              # default: label
        train: {path: reviews/train.csv}       # csv, jsonl, parquet or tsv by suffix (or format:); or {hub: ID, split: S}
        eval: {path: reviews/test.jsonl}
        pattern: {template: "{text1}\\nThe review is", label_words: [" bad", " good"]}
        ood: [reviews_shifted]                 # optional: OOD sets of this file or the shipped ones
    ood_sets:
      reviews_shifted: {classes: [negative, positive], text_columns: [text], split: {path: shifted.csv}}

Each is checked exactly like the shipped tasks (`trainers/data/tasks.yaml`): unknown keys and names
that clash with a shipped task are refused when the file loads; an unknown column, an empty split,
a label that is not one of the classes (or a class no training row has) and a label word that is not
one token are refused before any training (one line, exit 2). Records carry the task's definition
(`resolved.task_definition`) and its splits' fingerprints like any other.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

TASK_KEYS = {"classes", "text_columns", "label_column", "train", "eval", "pattern", "ood", "family", "default_pattern"}
OOD_KEYS = {"classes", "text_columns", "label_column", "split"}
PATTERN_KEYS = {"template", "before_label", "label_words", "separator"}
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".tsv": "tsv"}
_REGISTERED: dict[str, dict] = {}  # resolved path of a tasks file -> its definitions (internal schema)


class UserTaskError(ValueError):
    """A tasks file that cannot be used; the message names the file, the task and the key."""


def _source(split, where: str, folder: Path, columns: list[str], label_column: str, classes: list[str]) -> dict:
    if not isinstance(split, dict):
        raise UserTaskError(f"{where}: give a source, e.g. {{path: train.csv}} or {{hub: ID, split: train}}")
    src = dict(split)
    if "path" in src:
        path = Path(src["path"]).expanduser()
        src["path"] = str(path if path.is_absolute() else (folder / path).resolve())
        src.setdefault("format", SUFFIXES.get(path.suffix.lower()))
    elif "url" in src and "format" not in src:
        src["format"] = SUFFIXES.get(Path(src["url"].split("?")[0]).suffix.lower())
    src.setdefault("columns", {**{c: c for c in columns}, "label": label_column})
    # a label column that holds the class names: each name maps to its index (digits stay as they are)
    src.setdefault("labels", {**{name: i for i, name in enumerate(classes)}, **{str(i): i for i in range(len(classes))}})
    from trainers.data import sources
    try:
        sources.check(src, where)
    except sources.SourceError as e:
        raise UserTaskError(str(e)) from None
    return {"sources": [src], "user": True}


def _common(spec: dict, where: str) -> tuple[list[str], list[str], str]:
    classes, columns = spec.get("classes"), spec.get("text_columns")
    if not isinstance(classes, list) or len(classes) < 2 or len(set(map(str, classes))) != len(classes):
        raise UserTaskError(f"{where}.classes: give two or more distinct class names, e.g. [negative, positive]")
    if not isinstance(columns, list) or not 1 <= len(columns) <= 2:
        raise UserTaskError(f"{where}.text_columns: give one or two column names, e.g. [text] or [premise, hypothesis]")
    return [str(c) for c in classes], [str(c) for c in columns], str(spec.get("label_column") or "label")


def _pattern(value, where: str, n_classes: int) -> dict:
    if not isinstance(value, dict) or not {"template", "label_words"} <= set(value):
        raise UserTaskError(f"{where}: give {{template: '...{{text1}}...', label_words: [' word', ...]}}")
    unknown = set(value) - PATTERN_KEYS
    if unknown:
        raise UserTaskError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {', '.join(sorted(PATTERN_KEYS))}")
    if len(value["label_words"]) != n_classes:
        raise UserTaskError(f"{where}.label_words: {len(value['label_words'])} words for {n_classes} classes")
    return {"version": 1, "template": value["template"], "before_label": value.get("before_label", ""),
            "label_words": list(value["label_words"]), "separator": value.get("separator", "\n\n")}


def load(path: str | Path, shipped: dict) -> dict:
    """{"tasks": ..., "ood_sets": ..., "patterns": ...} of a tasks file, in the shipped schema, checked."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserTaskError(f"tasks file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise UserTaskError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML") from None
    if not isinstance(raw, dict) or set(raw) - {"tasks", "ood_sets"} or not isinstance(raw.get("tasks"), dict):
        raise UserTaskError(f"{path}: a tasks file holds tasks: {{name: ...}} and, optionally, ood_sets: {{name: ...}}")
    folder, out = path.parent, {"tasks": {}, "ood_sets": {}, "patterns": {}}
    for name, spec in (raw.get("ood_sets") or {}).items():
        where = f"{path.name}: ood_sets.{name}"
        if name in shipped["ood_sets"] or not isinstance(spec, dict) or set(spec) - OOD_KEYS:
            raise UserTaskError(f"{where}: " + ("the name of a shipped OOD set; choose another" if name in shipped["ood_sets"]
                                                else f"valid keys: {', '.join(sorted(OOD_KEYS))}"))
        classes, columns, label = _common(spec, where)
        out["ood_sets"][name] = {"classes": classes, "text_columns": columns, "user": True,
                                 "split": _source(spec.get("split"), f"{where}.split", folder, columns, label, classes)}
    for name, spec in raw["tasks"].items():
        where = f"{path.name}: tasks.{name}"
        if name in shipped["tasks"]:
            raise UserTaskError(f"{where}: the name of a shipped task; choose another")
        if not isinstance(spec, dict) or set(spec) - TASK_KEYS:
            raise UserTaskError(f"{where}: unknown key(s) {sorted(set(spec or {}) - TASK_KEYS)}; valid: {', '.join(sorted(TASK_KEYS))}")
        classes, columns, label = _common(spec, where)
        task = {"classes": classes, "text_columns": columns, "user": True, "definition": spec,
                "train": _source(spec.get("train"), f"{where}.train", folder, columns, label, classes),
                "eval": _source(spec.get("eval"), f"{where}.eval", folder, columns, label, classes),
                "ood": list(spec.get("ood") or [])}
        if "pattern" in spec:
            task["family"], task["default_pattern"] = f"user:{name}", "user"
            out["patterns"][task["family"]] = {"user": _pattern(spec["pattern"], f"{where}.pattern", len(classes))}
        elif spec.get("family") and spec.get("default_pattern"):
            task["family"], task["default_pattern"] = spec["family"], spec["default_pattern"]
        else:
            raise UserTaskError(f"{where}: give a pattern ({{template, label_words}}), or the family and default_pattern "
                                f"of a shipped one (trainers/data/prompts.yaml)")
        unknown = [o for o in task["ood"] if o not in out["ood_sets"] and o not in shipped["ood_sets"]]
        if unknown:
            raise UserTaskError(f"{where}.ood: unknown OOD set(s) {unknown}; defined: "
                                f"{', '.join(sorted([*out['ood_sets'], *shipped['ood_sets']]))}")
        out["tasks"][name] = task
    return out


def register(path: str | Path, shipped: dict) -> None:
    """Make a tasks file's tasks, OOD sets and patterns known to this process (once per file)."""
    key = str(Path(path).expanduser().resolve())
    if key not in _REGISTERED:
        _REGISTERED[key] = load(key, shipped)


def registered() -> list[dict]:
    return list(_REGISTERED.values())


def fingerprint(task: dict, patterns: dict, ood_sets: dict) -> str:
    """A user task's definition, hashed without its files' paths (their content is fingerprinted apart):
    it stands in the trial key for the tasks file, so a moved file keeps its keys."""
    def strip(split: dict) -> dict:
        return {"sources": [{k: v for k, v in src.items() if k not in ("path", "url")} for src in split["sources"]]}
    body = {"task": {k: (strip(v) if k in ("train", "eval") else v) for k, v in task.items() if k != "definition"},
            "pattern": patterns.get(task["family"]),
            "ood": {o: {**ood_sets[o], "split": strip(ood_sets[o]["split"])} for o in task.get("ood") or [] if o in ood_sets}}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]
