"""How true is the sweep's ETA? Each sweep runs in a fresh folder while every line it prints is
timed; at each third of its run the last ETA it showed is set against the time that really remained.

    python -m benchmarks.sweep.eta_accuracy                     # smoke and quickstart (offline: SmolLM2, ../shared/data)
    python -m benchmarks.sweep.eta_accuracy --sweeps smoke      # one

An ETA counts from the moment its line was printed: its error is |ETA − (end − that moment)| over
(end − that moment). The aim (issue 29): within 25 % after the first third. The first, planned ETA
(before any trial has finished) is shown against the whole run too. Writes results/bench/eta_accuracy.{md,json}.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import DEFAULT_DATA, DEFAULT_MODEL, ROOT, publish, table  # noqa: E402
from trainers.records import environment  # noqa: E402

ETA = re.compile(r"ETA ~?(?:(\d+)h(\d+)m|(\d+)m(\d+)s)")
SWEEPS = {"smoke": ["--space", "smoke"],
          "quickstart": ["--space", "quickstart", "--set", f"models=[{DEFAULT_MODEL}]", "--data-dir", DEFAULT_DATA]}


def seconds_of(match: re.Match) -> int:
    h, m1, m2, s = (int(g) if g else 0 for g in match.groups())
    return h * 3600 + m1 * 60 + m2 * 60 + s


def timed_run(args: list[str], results: Path, heartbeat_s: int) -> tuple[list[tuple[float, str]], float, int]:
    """((seconds since start, line) of everything printed, the run's wall seconds, its exit status)."""
    env = {**os.environ, "FEWSHOT_HEARTBEAT_S": str(heartbeat_s), "PYTHONUNBUFFERED": "1"}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", *args, "--results", str(results)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines = [(time.monotonic() - start, line.rstrip()) for line in proc.stdout]
    proc.wait()
    return lines, time.monotonic() - start, proc.returncode


def at_thirds(lines: list[tuple[float, str]], wall: float) -> list[dict]:
    """The last ETA shown before each third of the run, against the time that really remained then."""
    shown = [(t, seconds_of(m), line) for t, line in lines for m in [ETA.search(line)] if m]
    out = []
    for third in (1, 2):
        before = [s for s in shown if s[0] <= wall * third / 3]
        if not before:
            continue
        t, eta, line = before[-1]
        real = wall - t
        out.append({"third": third, "printed_at_s": round(t, 1), "eta_s": eta, "real_s": round(real, 1),
                    "error": round(abs(eta - real) / real, 3) if real > 0 else None, "line": line.strip()[:120]})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweeps", default="smoke,quickstart", help="comma-separated, of: " + ", ".join(SWEEPS))
    p.add_argument("--heartbeat", type=int, default=15, help="FEWSHOT_HEARTBEAT_S for the runs: more ETA lines (default 15)")
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"))
    ns = p.parse_args(argv)
    load, rows, record = os.getloadavg(), [], {}
    for name in ns.sweeps.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            lines, wall, code = timed_run(SWEEPS[name], Path(tmp), ns.heartbeat)
        first = next(((t, seconds_of(m)) for t, line in lines for m in [ETA.search(line)] if m), None)
        thirds = at_thirds(lines, wall)
        record[name] = {"wall_s": round(wall, 1), "exit": code, "first_eta": first, "thirds": thirds,
                        "eta_lines": [line for _, line in lines if ETA.search(line)]}
        rows.append([name, code, f"{wall:.0f}", f"{first[1]} ({100 * (first[1] - (wall - first[0])) / (wall - first[0]):+.0f} %)"
                     if first else "-"] + [f"{r['eta_s']} vs {r['real_s']:.0f} ({100 * r['error']:.0f} %)" for r in thirds])
        print(f"{name}: exit {code}, {wall:.0f} s; " + "; ".join(f"third {r['third']}: ETA {r['eta_s']} s against "
                                                                 f"{r['real_s']:.0f} s left" for r in thirds), flush=True)
    text = ("# The sweep's ETA against the time that really remained\n\n    python -m benchmarks.sweep.eta_accuracy\n\n"
            + table(["sweep", "exit", "wall s", "first (planned) ETA s vs all", "ETA at 1/3: shown vs real s (error)",
                     "ETA at 2/3: shown vs real s (error)"], rows)
            + f"\n\n- aim: within 25 % after the first third; heartbeat every {ns.heartbeat} s; one sweep at a time"
            f"\n- machine: 1-minute load {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    publish("eta_accuracy", Path(ns.out_dir), text, {"benchmark": "eta_accuracy", "args": vars(ns), "figures": record,
                                                     "env": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
