"""Write every split of the chosen tasks and their OOD sets as a local data folder, with a manifest.

    python -m trainers data export --to /shared/fewshot-data                 # on a connected machine: from the sources
    python -m trainers data export --from ../shared/data --to /tmp/data --tasks rte,mnli

The layout is the one `--data-dir` reads (the hub's schema as JSON Lines, as `../shared/data`):
a cluster exports once onto shared storage and every trial reads it, instead of each worker
reaching the hub. `manifest.json` lists, per split, its rows, label counts, where it came from
and its content fingerprint: the same hash a run records for each split it used
(`resolved.data_fingerprints`), so two runs can be checked to have seen the same data.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

from trainers.records import write_json_atomic
from trainers.data.tasks import DataError, read_split, split_columns, task_definitions, task_spec

MANIFEST = "manifest.json"


def splits_of(tasks: list[str]) -> dict[str, tuple[dict, dict, str]]:
    """local path -> (split definition, the spec whose columns it carries, a name for messages); shared splits once."""
    defs, out = task_definitions(), {}
    for name in tasks:
        spec = task_spec(name)
        for part in ("train", "eval"):
            out.setdefault(spec[part]["local"], (spec[part], spec, f"task {name} ({part})"))
        for ood in spec["ood"]:
            o = defs["ood_sets"][ood]
            out.setdefault(o["split"]["local"], (o["split"], o, f"OOD set {ood}"))
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(to: str | Path, from_dir: str | None = None, tasks: list[str] | None = None, log=print) -> dict:
    """Write the splits and `manifest.json` under `to`; returns the manifest."""
    to = Path(to)
    tasks = tasks or sorted(task_definitions()["tasks"])
    if from_dir:
        if not Path(from_dir).is_dir():
            raise DataError(f"--from {from_dir} is not a folder")
        if Path(from_dir).resolve() == to.resolve():
            raise DataError("--from and --to are the same folder; export into another one")
    manifest = {"tasks_version": task_definitions()["version"], "tasks": tasks, "from": from_dir or "sources",
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "splits": {}}
    for local, (split, spec, what) in splits_of(tasks).items():
        rows, origin, fp = read_split(split, spec, from_dir, what)
        _write_jsonl(to / local, rows)
        labels = Counter(row.get("label") for row in rows)
        manifest["splits"][local] = {"rows": len(rows), "labels": {str(k): labels[k] for k in sorted(labels, key=str)},
                                     "fingerprint": fp, "fingerprint_columns": split_columns(spec), "origin": origin}
        log(f"{local:<42} {len(rows):>7,} rows  labels {dict(manifest['splits'][local]['labels'])}  {fp}  from {origin}")
    write_json_atomic(to / MANIFEST, manifest)
    log(f"manifest: {to / MANIFEST}; use it with --data-dir {to}")
    return manifest

