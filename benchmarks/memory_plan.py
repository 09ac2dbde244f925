"""The memory plan's estimate against the measured peak, for every method x PEFT variant.

    python -m benchmarks.memory_plan                   # SmolLM2-135M on CPU, fp32, one process per run
    python -m benchmarks.memory_plan --methods pbft --peft none,lora

Each run is `python -m trainers run` in a fresh process (so one run's heap does not inflate the
next), with `MALLOC_MMAP_THRESHOLD_=65536` so freed blocks go back to the system and the resident
set follows live memory. Measured: the run's peak (`Meter`: the largest per-phase resident-set
high-water mark). Estimated: `trainers/runtime/memory_plan.py` from the model's config, as the record
stores it (`resources.memory_plan`). Aim: within +-25 %. Writes results/bench/memory_plan.{json,md}.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_DATA, DEFAULT_MODEL, ROOT, fmt, publish, table

from trainers.methods import spec  # noqa: E402
from trainers.contract import Record, load  # noqa: E402

VARIANTS = {name: list(m.peft) for name, m in spec.METHODS.items()}  # every registered method, cartridge included


def one_run(args, method: str, peft: str, out: Path) -> Record:
    cmd = [sys.executable, "-m", "trainers", "run", "--method", method, "--model", args.model, "--data-dir", args.data_dir,
           "--task", "rte", "--shots", str(args.shots), "--n-dev", "8", "--n-unlabeled", "16", "--eval-limit", "16",
           "--ood", "none", "--epochs", "1", "--batch-size", str(args.batch_size), "--dtype", "float32",
           "--device", "cpu", "--json", str(out)]
    if method != "icl":
        cmd += ["--peft", peft]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1", "FEWSHOT_QUIET": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{method}+{peft} failed:\n{done.stderr[-2000:]}")
    return load(Record, json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.expanduser(DEFAULT_MODEL))
    p.add_argument("--data-dir", default=DEFAULT_DATA)
    p.add_argument("--methods", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--peft", default="none,lora,bitfit")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"))
    ns = p.parse_args(argv)
    rows, runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for method in ns.methods.split(","):
            if method not in VARIANTS:
                p.error(f"unknown method {method!r}; valid: {', '.join(VARIANTS)}")
            for peft in [v for v in VARIANTS[method] if v in ns.peft.split(",")]:
                rec = one_run(ns, method, peft, Path(tmp) / f"{method}-{peft}.json")
                plan = rec.resources.memory_plan
                error = plan["estimated_peak_mib"] / plan["measured_peak_mib"] - 1
                runs.append({"method": method, "peft": peft, **plan, "relative_error": error})
                rows.append([f"{method}+{peft}", plan["estimated_peak_mib"], plan["measured_peak_mib"], f"{100 * error:+.0f} %",
                             " ".join(f"{k} {v:.0f}" for k, v in plan["parts_mib"].items())])
                print(rows[-1], flush=True)
    worst = max(abs(r["relative_error"]) for r in runs)
    text = (f"memory plan vs measured peak per worker, {Path(ns.model).name}, CPU fp32, batch {ns.batch_size}, "
            f"{ns.shots} shots\n\n" + table(["run", "estimated MiB", "measured MiB", "error", "estimated parts MiB"], rows)
            + f"\n\nlargest error: {fmt(100 * worst)} % (aim <= 25 %)")
    publish("memory_plan", Path(ns.out_dir), text, {"runs": runs, "largest_relative_error": worst, "model": ns.model})
    return 0


if __name__ == "__main__":
    sys.exit(main())
