"""Result records: one per run with the resolved config, metrics, resources, package versions and the
git commit (typed in trainers/contract.py), written as JSON atomically.

    python -m trainers run --method icl --task rte --model PATH --json out.json && cat out.json
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from trainers import settings
from trainers.contract import Env, Epoch, Metrics, Params, Record, Resolved, Resources, load

SCHEMA_VERSION = 1
PACKAGES = ("torch", "transformers", "peft", "datasets", "ray", "optuna", "pandas", "nvidia-ml-py")
COMMIT_ENV = "FEWSHOT_GIT_COMMIT"  # set by the sweep driver, whose workers may run without a .git


def package_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """HEAD of the checkout this code runs from, with '-dirty' when `git` says it has uncommitted
    changes. Read from the .git folder itself when `git` cannot answer: a copy shipped by `ray job
    submit --working-dir .` or `ray up`'s rsync has the files but no empty folders (`.git/refs` of a
    clone whose refs are packed), and a node may have no git at all; such a commit carries no dirty flag."""
    if settings.get(COMMIT_ENV):
        return settings.get(COMMIT_ENV)
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return commit_from_files(here)


def commit_from_files(start: Path) -> str | None:
    """The commit HEAD names, from the first .git above `start` (a folder, or a worktree's `gitdir:`
    file), following one symbolic ref through loose refs, then packed-refs."""
    git = next((d / ".git" for d in (start, *start.parents) if (d / ".git").exists()), None)
    try:
        if git is not None and git.is_file():
            git = (git.parent / git.read_text().split("gitdir:", 1)[1].strip()).resolve()
        if git is None or not (git / "HEAD").is_file():
            return None
        common = (git / (git / "commondir").read_text().strip()).resolve() if (git / "commondir").is_file() else git
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head or None
        ref = head.split(":", 1)[1].strip()
        for folder in (git, common):
            if (folder / ref).is_file():
                return (folder / ref).read_text().strip() or None
        packed = common / "packed-refs"
        for line in packed.read_text().splitlines() if packed.is_file() else []:
            parts = line.split()
            if len(parts) == 2 and parts[1] == ref:
                return parts[0]
    except (OSError, UnicodeDecodeError, IndexError):
        return None
    return None


def environment() -> dict:
    return {"versions": package_versions(), "git_commit": git_commit(), "host": socket.gethostname(),
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves half a record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file 0600; a shared results folder needs what the umask allows
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=_jsonable)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())  # the rename below must never publish a record still in the page cache
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems (NFS mounts among them) refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def build_record(cfg, status: str, *, resolved: dict, metrics: dict | None = None, resources: Resources | None = None,
                 params: dict | None = None, history: list | None = None, extra: dict | None = None,
                 error: str | None = None) -> Record:
    """The one result record of a run (trainers/contract.py); statuses: completed, diverged, failed
    (pruned: the sweep's). `resources` (the meter's: `Meter.resources()`) gains the run's costs
    (trainers.runtime.metering.costs): adaptation seconds, serving cost, and the memory plan's estimate
    beside the peak this worker measured. The method's own dicts become the contract's types here."""
    if resources is not None:
        from trainers.runtime.memory_plan import for_run
        from trainers.runtime.metering import costs
        dev_selects = not cfg.final_eval or cfg.train.selection == "best"  # a search's dev passes rank and prune
        resources = dataclasses.replace(costs(resources, dev_selects),
                                        memory_plan=for_run(cfg, resources.peak_memory_mib, resolved))
    return bare_record(cfg, status, resolved=resolved, metrics=metrics, resources=resources, params=params,
                       history=history, extra=extra, error=error)


def bare_record(cfg, status: str, *, resolved: dict | None = None, metrics=None, resources: Resources | dict | None = None,
                params: dict | None = None, history: list | None = None, extra: dict | None = None,
                error: str | None = None) -> Record:
    """A record as it is given, with no costs worked out: what the sweep's driver writes for a trial
    that ended without a record of its own (pruned: its epochs' reports; failed: Ray's error)."""
    return Record(
        schema=SCHEMA_VERSION, status=status, method=cfg.method, task=cfg.task, model=cfg.model, shots=cfg.shots,
        data_seed=cfg.data_seed, seed=cfg.training_seed(), config=cfg.to_dict(), resolved=load(Resolved, resolved or {}),
        metrics=load(Metrics, metrics or {}), history=[load(Epoch, h) for h in history or []],
        params=load(Params, params or {}), resources=load(Resources, resources or {}), extra=extra or {}, error=error,
        env=load(Env, environment()))
