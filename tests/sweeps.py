"""What the sweep tests share: running the CLI, reading records, bounded polling (the Ray instance
they reach with --address is conftest.py's `cluster` fixture)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SMOKE_LR = "train.lr"
METRICS = {}  # the module's Ray instance exports Prometheus metrics on this port
RAY = shutil.which("ray", path=str(Path(sys.executable).parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_session(proc: subprocess.Popen) -> None:
    """End a `ray start --block` and everything it started (its own session): never `ray stop`, which
    would end every Ray instance on the machine, other tests' included."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
        proc.wait(timeout=60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def token_env(tmp_path) -> dict:
    """A token of the test's own, where `ray get-auth-token --generate` would put one: `ray start --head`
    with token auth refuses to start without one, and a fresh HOME (CI) has none until some local
    ray.init happens to write ~/.ray/auth_token."""
    path = tmp_path / "auth_token"
    path.write_text(os.urandom(32).hex())
    return {"RAY_AUTH_TOKEN_PATH": str(path)}


def sweep(results, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--results", str(results), *args],
                          capture_output=True, text=True, timeout=timeout)


def records(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*.json"))}


def poll(predicate, limit_s, what):
    """Wait for `predicate()` to hold, checking every 0.2 s, for at most `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {limit_s} s")


def search_lrs(recs):
    return sorted(round(r["searched"][SMOKE_LR], 12) for r in recs.values() if r["phase"] == "search")
