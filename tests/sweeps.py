"""What the sweep tests share: running the CLI, reading records, bounded polling (the Ray instance
they reach with --address is conftest.py's `cluster` fixture)."""
import json
import subprocess
import sys
import time

SMOKE_LR = "train.lr"
METRICS = {}  # the module's Ray instance exports Prometheus metrics on this port


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
