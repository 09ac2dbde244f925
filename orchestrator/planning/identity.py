"""Trials see what the plan saw, or fail saying so: the worker-side half of preflight.

    python -m orchestrator sweep --space smoke --address auto     # every worker checks before it runs

Preflight, on the driver's machine, fingerprints every data split and model a sweep uses (a local
model by every byte of its config, tokenizer and weights, hashed once per node and cached by path,
size and modification time; a hub model by its resolved commit); the trial keys hash those identities. A worker on another node may read another copy at the same path (or
none): before the method runs, `check` fingerprints the splits and the model this worker would load
and fails the trial, naming the node and both fingerprints, when they differ from the plan's.
`ensure_fixtures` first writes the synthetic fixtures of the `smoke` space where the worker is, when
its node does not see the driver's (they are deterministic, so the fingerprints still agree).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import socket
from pathlib import Path

from trainers.config import RunConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "added_tokens.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CHUNK = 16 << 20


def _cache_file() -> Path:
    from trainers.data.sources import cache_dir
    return cache_dir().parent / "file_hashes.json"


def file_digest(path: Path) -> str:
    """sha256 of every byte of a file, computed once per node: cached by its real path, size and
    modification time (a 60 GB checkpoint is read once, not per trial; a file rewritten in place is
    read again)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    known[key] = h.hexdigest()
    try:
        from trainers.records import write_json_atomic
        write_json_atomic(cache, known)  # another process writing beside it loses at most a cached digest
    except OSError:
        pass
    return known[key]


def model_identity(name: str, config) -> str:
    """A hub id with the commit it resolved to, or a local folder's content: every byte of its config,
    tokenizer and weight files (by name and digest)."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return f"hub:{name}@{getattr(config, '_commit_hash', None) or 'unresolved'}"
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.name == "config.json" or f.name in TOKENIZER_FILES or f.suffix in WEIGHT_SUFFIXES:
            h.update(f"{f.name}\0{file_digest(f)}\0".encode())
    return f"local:{h.hexdigest()[:24]}"


class IdentityError(RuntimeError):
    """This worker would read other data or another model than the plan checked."""


def _node() -> str:
    import ray
    if not ray.is_initialized():  # outside Ray (asking Ray for its context would start it): the host is enough
        return socket.gethostname()
    return f"{socket.gethostname()} (Ray node {ray.get_runtime_context().get_node_id()[:12]})"


def ensure_fixtures(fixtures: dict | None) -> None:
    """`fixtures`: {"models": [[folder, kind], ...], "data": folder}; each written here when this node lacks it."""
    if not fixtures:
        return
    from trainers.data import synthetic
    for folder, kind in fixtures.get("models") or []:
        _once(Path(folder), lambda f, k=kind: synthetic.make_model(f, k), "config.json")
    if fixtures.get("data"):
        _once(Path(fixtures["data"]), synthetic.write_data, "glue")


def _once(folder: Path, write, marker: str) -> None:
    """Write `folder` unless it is there already; one writer per node at a time (a lock beside it)."""
    if (folder / marker).exists():
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / marker).exists():
            write(folder)


def check(cfg: RunConfig, expected: dict | None) -> None:
    """Raise IdentityError when this worker's data splits or model differ from the plan's identities
    (`expected`: the trial's identity, as `plan.trial_identity` made it)."""
    if not expected:
        return
    from trainers.runtime.models import load_config
    from trainers.data.tasks import load_task, use_tasks_file
    use_tasks_file(cfg.tasks_file)  # a user's tasks, known in this worker before its data are checked
    planned = expected.get("data") or {}
    if planned:
        task = load_task(cfg.task, cfg.data_dir, cfg.ood, cfg.hans_heuristics)
        here = dict(task.fingerprints)
        differ = sorted(k for k in set(planned) | set(here) if planned.get(k) != here.get(k))
        if differ:
            k = differ[0]
            raise IdentityError(f"data differ from the plan's on {_node()}: {k} has fingerprint {here.get(k)} here, "
                                f"{planned.get(k)} in the plan ({len(differ)} split(s) differ); give every node the same "
                                f"copy (--data-dir on shared storage, or FEWSHOT_DATA_DIR pointing at identical copies)")
    for field, name in cfg.model_paths().items():
        want = expected.get(field)
        if not name or not want or want == name:  # no identity known for it: nothing to compare
            continue
        got = model_identity(name, load_config(name))
        if got != want:
            raise IdentityError(f"{field} {name} differs from the plan's on {_node()}: {got} here, {want} in the plan; "
                                f"put the same model at that path on every node (or use a hub id)")
