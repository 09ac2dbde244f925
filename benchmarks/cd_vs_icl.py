"""Inference cost of a context-distilled student against ICL as the demonstrations grow.

    python -m benchmarks.cd_vs_icl                          # SmolLM2-135M, RTE, k = 0,4,16,32, 32 queries, CPU
    python benchmarks/cd_vs_icl.py --shots 0,16 --queries 16 --device cuda

For every k the same validation queries (a fixed subset, as `--eval-limit` picks it) are scored
three ways, through `label_word_predictions` as the project scores them: ICL after the k
demonstrations the project's sampler draws, with the prefix key/value cache and without it
(plain), and the CD student with no context at all. A CD student is the base model plus a LoRA
adapter, so its cost does not depend on k; here the adapter is freshly applied by
`trainers.adapters.apply(model, PeftConfig(kind='lora'))` and untrained (the weights change
nothing about the cost), and left unmerged, as the project evaluates it (merged it would cost
exactly the base model's zero-shot pass, a little less).

One copy of the weights serves all three: LoRA is injected once and switched off for the ICL
paths (peft's per-layer `enable_adapters(False)`, which runs the base layer alone), so the paths
can interleave on one model and every peak counts one set of weights. For each k, `--repeats`
times: CD, ICL cached, ICL plain, ICL cached, CD (the expensive plain path once, the cheap paths
on both sides of it); the fastest run of each path is kept. One warm-up batch per path runs
first; the shape-specific costs of a first pass at a new context length are left in, as a single
ICL run would pay them. Peak memory is per phase (see benchmarks/common.py).
Writes results/bench/cd_vs_icl.{json,md}.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable, as `-m` from it does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from peft.tuners.tuners_utils import BaseTunerLayer

from benchmarks import common
from benchmarks.common import alternate, fmt, load_model, parser, ratio, run_config, table
from trainers import adapters
from trainers.common import prepare
from trainers.config import PeftConfig
from trainers.evaluation import label_word_predictions
from trainers.metering import Meter
from trainers.models import max_positions
from trainers.prompts import label_token_ids
from trainers.scoring import ContextScorer, PromptIds
from trainers.tasks import eval_subset

PATHS = ("icl_cached", "icl_plain", "cd")
# The plain path costs the most by far: run it once per repeat, the cheap paths on both sides of it.
SANDWICH = ["cd", "icl_cached", "icl_plain", "icl_cached", "cd"]


def options():
    p = parser(__doc__, repeats=1)
    p.add_argument("--shots", default="0,4,16,32",
                   help="numbers of demonstrations, comma-separated (default: %(default)s)")
    p.add_argument("--queries", type=int, default=32, help="validation queries scored per k (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per forward pass (default: %(default)s)")
    return p


def set_adapters(model, enabled: bool) -> None:
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


def measure(args, device: torch.device) -> dict:
    shots = [int(k) for k in args.shots.split(",")]
    model, tok = load_model(args)
    model, facts = adapters.apply(model, PeftConfig(kind="lora"))
    base = prepare(run_config(args, 0))
    prompt, label_ids = base.prompt, label_token_ids(tok, base.prompt)
    examples = eval_subset(base.task.eval, args.queries)
    limit = max_positions(model)
    scorers = {p: ContextScorer(model, tok, args.batch_size, use_cache=p == "icl_cached", max_positions=limit)
               for p in PATHS}
    no_context = PromptIds(tok, prompt, [])

    def score(path, context, subset):
        set_adapters(model, path == "cd")
        with torch.inference_mode():
            return label_word_predictions(scorers[path], no_context if path == "cd" else context, label_ids,
                                          subset, desc=path)

    first = PromptIds(tok, prompt, prepare(run_config(args, shots[0])).draw.labelled)
    for path in PATHS:  # first calls pay for kernel selection and allocator growth: keep them out of the timing
        score(path, first, examples[:args.batch_size])
    meter, rows = Meter(device), []
    for k in shots:
        context = PromptIds(tok, prompt, prepare(run_config(args, k)).draw.labelled)
        runs = {p: (lambda p=p: score(p, context, examples)) for p in PATHS}
        figures, preds = alternate(meter, runs, SANDWICH * args.repeats, tag=f"k{k}/")
        rows.append(per_k(k, len(context.context), figures, preds))
    return {"queries": len(examples), "batch_size": args.batch_size, "max_positions": limit,
            "lora": {**facts, "trained": False, "merged": False}, "per_k": rows}


def per_k(k: int, context_tokens: int, figures: dict, preds: dict) -> dict:
    row = {"k": k, "context_tokens": context_tokens}
    for p in PATHS:
        n = len(preds[p].labels)
        row[p] = {**figures[p], "queries_scored": n, "queries_dropped": preds[p].n_dropped,
                  "ms_per_query": round(1000 * figures[p]["seconds"] / n, 3) if n else None,
                  "cpu_ms_per_query": round(1000 * figures[p]["cpu_seconds"] / n, 3) if n else None}
    for p in ("icl_cached", "icl_plain"):
        have = row[p]["ms_per_query"] is not None and row["cd"]["ms_per_query"] is not None
        row[f"time_ratio_{p}_over_cd"] = ratio(row[p]["ms_per_query"], row["cd"]["ms_per_query"]) if have else None
        row[f"memory_ratio_{p}_over_cd"] = ratio(row[p]["peak_mib"], row["cd"]["peak_mib"])
    return row


def render(f: dict) -> str:
    rows = f["per_k"]
    time = table(["k", "context tokens", "ICL cached ms/query", "ICL plain ms/query", "CD student ms/query",
                  "ICL cached / CD", "ICL plain / CD", "CPU ms/query cached / plain / CD"],
                 [[r["k"], r["context_tokens"], r["icl_cached"]["ms_per_query"], r["icl_plain"]["ms_per_query"],
                   r["cd"]["ms_per_query"], r["time_ratio_icl_cached_over_cd"], r["time_ratio_icl_plain_over_cd"],
                   " / ".join(fmt(r[p]["cpu_ms_per_query"]) for p in PATHS)] for r in rows])
    memory = table(["k", "ICL cached peak MiB", "ICL plain peak MiB", "CD student peak MiB", "ICL cached / CD",
                    "ICL plain / CD", "working MiB cached / plain / CD"],
                   [[r["k"], r["icl_cached"]["peak_mib"], r["icl_plain"]["peak_mib"], r["cd"]["peak_mib"],
                     r["memory_ratio_icl_cached_over_cd"], r["memory_ratio_icl_plain_over_cd"],
                     " / ".join(str(r[p]["working_mib"]) for p in PATHS)] for r in rows])
    dropped = [f"k={r['k']}: {r['icl_plain']['queries_dropped']}" for r in rows if r["icl_plain"]["queries_dropped"]]
    notes = [f"- {f['queries']} queries per k, batch {f['batch_size']}; CD student = base model + untrained, unmerged "
             f"LoRA on {', '.join(f['lora'].get('lora_targets', []))}, no context (its cost does not depend on k)",
             f"- queries dropped for exceeding {f['max_positions']} positions: {', '.join(dropped) or 'none'}"]
    return "Time per query\n\n" + time + "\n\nPeak memory (weights included)\n\n" + memory + "\n\n" + "\n".join(notes)


def title(args, device: torch.device) -> str:
    return f"CD student vs ICL inference cost: {args.task}, k = {args.shots}, {Path(args.model).name} on {device.type}"


def main(argv: list[str] | None = None) -> dict:
    return common.main("cd_vs_icl", argv, options, measure, render, title)


if __name__ == "__main__":
    main()
