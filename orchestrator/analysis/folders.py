"""A sweep's results folder: its name, its lock, whether it is free, and what goes in first.

    python -m orchestrator sweep --space smoke --name try1      # results/try1/, held by a lock while it runs

Order: `sweep_folder` checks the name (one path component), `SweepLock` is taken before anything
is written (a second driver on the same folder is refused, naming the holder; a lock whose holder
is gone is taken over, saying so), `check_folder` decides free / resume / refuse, and
`create_folder` writes the fixtures and `space.yaml` after preflight. A sweep refused before
`create_folder` leaves no folder behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

import yaml

from orchestrator.analysis import results
from orchestrator.space import Space, SpaceError
from trainers.data import synthetic

# keys that change no finished trial's identity: a resume may change them
RESUMABLE_KEYS = {"resources", "max_concurrent_trials", "max_failures", "max_start_failures", "worker_start_timeout_s",
                  "stall_timeout_s"}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
MAX_NAME = 100  # leaves room under the file system's 255 bytes for Ray's own folder names inside
LOCK = ".sweep.lock"


def sweep_folder(results_root: Path, name: str) -> Path:
    """results_root/name, refused unless `name` is one plain path component of sane length."""
    if len(name) > MAX_NAME:
        raise SpaceError(f"--name is {len(name)} characters long; use at most {MAX_NAME}")
    if not NAME.fullmatch(name):
        raise SpaceError(f"--name {name!r} must be one folder name (letters, digits, '.', '_', '+', '-'; no '/' or "
                         f"leading '.'), e.g. --name cd_vs_icl_try2")
    return (Path(results_root).expanduser() / name).resolve()


class SweepLock:
    """One driver per sweep folder. The lock is a POSIX advisory lock (flock) on `.sweep.lock`,
    which the kernel releases when its holder dies, however it dies; the file says who holds it
    (host, PID, start time), so a refusal can name the holder and a take-over the one it replaces.
    Folders it had to create are removed again on release when nothing else was written in them."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir, self.path = sweep_dir, sweep_dir / LOCK
        self.created: list[Path] = []
        self._fd: int | None = None
        self.took_over: dict | None = None

    def acquire(self) -> "SweepLock":
        missing = [p for p in [self.sweep_dir, *self.sweep_dir.parents] if not p.exists()]
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.created = missing  # innermost first
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                self._remove_created()
                raise SpaceError(f"{self.sweep_dir} is in use by another sweep ({_who(holder)}); wait for it to "
                                 f"finish, stop it, or use --name NAME for a new folder") from None
            if self.path.exists() and os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                break
            os.close(fd)  # the file was removed while we waited for it: lock the new one
        previous = _read(fd)
        if previous:  # the lock was free but its file names a holder: that driver died without releasing it
            self.took_over = previous
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                  "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                                  "command": " ".join(sys.argv)}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: nobody holds it
        if [p.name for p in self.sweep_dir.iterdir()] == [LOCK]:  # nothing written: leave no folder behind
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self.created:  # innermost first; one that holds anything stays
            with contextlib.suppress(OSError):
                folder.rmdir()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _read(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return {"unreadable": True}


def _who(holder: dict | None) -> str:
    if not holder or holder.get("unreadable"):
        return "holder unknown"
    return f"PID {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"


def took_over_line(lock: SweepLock) -> str | None:
    if not lock.took_over:
        return None
    return (f"note: {lock.sweep_dir} was locked by a sweep that is gone ({_who(lock.took_over)}); "
            f"taking the lock over")


def check_folder(space: Space, sweep_dir: Path, resume: bool) -> None:
    """Reads only: is this folder free for a new sweep, or the same sweep to resume?"""
    existing = next(p for p in [sweep_dir, *sweep_dir.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise SpaceError(f"cannot write the sweep folder {sweep_dir}: {existing} is "
                         f"{'not a folder' if not existing.is_dir() else 'not writable'}; pass --results with a writable folder")
    saved = sweep_dir / "space.yaml"
    has_records = bool(list(results.records_dir(sweep_dir).glob("*.json")))
    if saved.exists() and not resume and has_records:
        from orchestrator import commands
        raise SpaceError(f"{sweep_dir} already holds a sweep with finished trials; continue it with "
                         f"{commands.resume(sweep_dir, space.path)}, or pass --name NAME to start another beside it")
    if resume and not saved.exists():
        raise SpaceError(f"nothing to resume in {sweep_dir}; run without --resume to start")
    if resume:
        old = yaml.safe_load(saved.read_text())["raw"]
        before, now = _leaves(old), _leaves(space.raw)
        differ = sorted(k for k in set(before) | set(now)
                        if before.get(k) != now.get(k) and k.split(".")[0] not in RESUMABLE_KEYS)
        if differ:
            raise SpaceError(f"{saved} was made with other values of {', '.join(differ)}; resume with the same space and "
                             f"--set overrides (only {', '.join(sorted(RESUMABLE_KEYS))} may change), or use --name")


def _leaves(doc: dict, prefix: str = "") -> dict:
    """{"fixed.train.epochs": 4, ...}: a resume refusal names the very keys that differ."""
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fixtures(space: Space, root: Path) -> Space:
    """The synthetic fixtures of the `smoke` space: a tiny random model and data, written under `root`."""
    if space.fixtures != "synthetic":
        return space
    models = [str(synthetic.make_model(root / m.split(":", 1)[1], m.split(":", 1)[1])) for m in space.models]
    return dataclasses.replace(space, models=models, data_dir=str(synthetic.write_data(root / "data")))


@contextlib.contextmanager
def staged(space: Space, sweep_dir: Path, resume: bool):
    """The space as preflight sees it: a resumed smoke sweep's own fixtures, a new one's in a temporary folder."""
    if space.fixtures != "synthetic" or resume:
        yield _fixtures(space, sweep_dir / "fixtures")
        return
    with tempfile.TemporaryDirectory(prefix="fewshot-preflight-") as tmp:
        yield _fixtures(space, Path(tmp))


def create_folder(space: Space, checked: Space, sweep_dir: Path) -> Space:
    """After preflight: the sweep folder, its fixtures and space.yaml. Identities are by content, so
    fixtures written again at their final place keep the identities preflight computed."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    final = checked
    if space.fixtures == "synthetic":
        fx = _fixtures(space, sweep_dir / "fixtures")
        moved = dict(zip(checked.models, fx.models))
        models = {moved.get(k, k): v for k, v in checked.identity["models"].items()}
        final = dataclasses.replace(checked, models=fx.models, data_dir=fx.data_dir,
                                    identity={**checked.identity, "models": models})
    saved = sweep_dir / "space.yaml"
    if not saved.exists() or not list(results.records_dir(sweep_dir).glob("*.json")):
        resolved = dataclasses.asdict(final) | {"raw": None}
        saved.write_text(yaml.safe_dump({"raw": final.raw, "resolved": resolved}, sort_keys=False))
    return final


def set_aside_failed(sweep_dir: Path) -> list:
    """--resume retries what failed: each failed record moves to trials/retried/<key>.<n>.json (kept,
    so the summary can say what was retried and how it ended) and its trial runs again. Completed
    and pruned trials never re-run."""
    out = []
    folder = results.records_dir(sweep_dir)
    for rec in results.load_records(sweep_dir):
        if rec.status != "failed" or not rec.trial_key:
            continue
        dest = folder / results.RETRIED
        dest.mkdir(exist_ok=True)
        n = len(list(dest.glob(f"{rec.trial_key}.*.json")))
        os.replace(folder / f"{rec.trial_key}.json", dest / f"{rec.trial_key}.{n}.json")
        out.append(rec)
    return out
