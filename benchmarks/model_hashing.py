"""What a local model's identity costs: every byte of its config, tokenizer and weights hashed (once per
node; then from the cache, keyed by path, size and modification time), and what that projects to for
a large checkpoint.

    python -m benchmarks.model_hashing            # SmolLM2-135M and Gemma-3-270M where fetched; writes results/bench/model_hashing.{md,json}

Cold: an empty digest cache (a node's first trial); warm: the same folder again (every later trial).
The OPT-30b projection divides its fp16 checkpoint (30e9 parameters x 2 bytes) by the cold rate
measured here; a node's disk and CPU set the real figure (sha256 on one core, reads in 16 MiB blocks).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, publish, table  # noqa: E402
from trainers.records import environment  # noqa: E402

MODELS = ["~/.cache/fewshot-models/smollm2-135m", "~/.cache/fewshot-models/gemma3-270m"]
OPT_30B_BYTES = 30e9 * 2


def measure(folder: Path) -> dict:
    from orchestrator.planning import identity
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FEWSHOT_CACHE"] = str(Path(cache) / "data")  # an empty digest cache: a node's first trial
        start = time.perf_counter()
        ident = identity.model_identity(str(folder), None)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        assert identity.model_identity(str(folder), None) == ident
        warm = time.perf_counter() - start
    return {"model": folder.name, "bytes": size, "cold_s": round(cold, 3), "warm_s": round(warm, 4),
            "mb_per_s": round(size / 1e6 / cold, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"))
    ns = p.parse_args(argv)
    load = os.getloadavg()
    rows = [measure(Path(m).expanduser()) for m in ns.models.split(",") if Path(m).expanduser().is_dir()]
    if not rows:
        print("no model folder found; fetch one: python ../shared/models/fetch_models.py smollm2-135m", file=sys.stderr)
        return 1
    rate = min(r["mb_per_s"] for r in rows)
    text = ("# A local model's identity: every byte hashed\n\n    python -m benchmarks.model_hashing\n\n"
            + table(["model", "MB", "cold s (first trial on a node)", "warm s (cached)", "MB/s"],
                    [[r["model"], f"{r['bytes'] / 1e6:.0f}", r["cold_s"], r["warm_s"], r["mb_per_s"]] for r in rows])
            + f"\n\n- OPT-30b projected (60 GB fp16 at the slowest rate here, {rate:.0f} MB/s): "
            f"{OPT_30B_BYTES / 1e6 / rate / 60:.1f} min once per node, then milliseconds\n"
            f"- machine: 1-minute load {load[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end\n")
    publish("model_hashing", Path(ns.out_dir), text, {"benchmark": "model_hashing", "figures": rows,
                                                      "opt_30b_minutes": round(OPT_30B_BYTES / 1e6 / rate / 60, 2),
                                                      "env": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
