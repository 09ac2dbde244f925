"""Inference cost of context distilled into weights (a LoRA student) or into a cache (a cartridge)
against ICL as the demonstrations grow.

    python -m benchmarks.cd_vs_icl                          # SmolLM2-135M, RTE, k = 16,64,96, 32 queries, CPU
    python benchmarks/cd_vs_icl.py --shots 0,16 --queries 16 --device cuda --cartridge-tokens 32,128

For every k the same validation queries (a fixed subset, as `--eval-limit` picks it) are scored
through `label_word_predictions` as the project scores them: ICL after the k demonstrations the
project's sampler draws, with the prefix key/value cache and without it (plain; `--no-plain` skips
it, at thousands of context tokens it takes minutes per pass on a CPU), the CD student with no
context at all, and a cartridge of p tokens per `--cartridge-tokens` (peft's CartridgeConfig, made
by `trainers.methods.cartridge.make_student` from the first p tokens of the largest k's demonstrations;
untrained: its values change nothing about the cost, which does not depend on k). Each row also
gives the key/value bytes a query attends to beside its own tokens (ICL: the context's; a
cartridge: p tokens'; the LoRA student: none), from the model's shape (a sliding-window layer
holds only its window: `trainers.runtime.memory_plan.kv_positions`). A CD student is the base model plus a LoRA
adapter, so its cost does not depend on k; here the adapter is freshly applied by
`trainers.runtime.adapters.apply(model, PeftConfig(kind='lora'))` and untrained (the weights change
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
from benchmarks.common import alternate, load_model, parser, ratio, run_config, table
from trainers.runtime import adapters
from trainers.methods import cartridge
from trainers.methods.common import prepare
from trainers.config import PeftConfig
from trainers.runtime.evaluation import label_word_predictions
from trainers.runtime.memory_plan import kv_bytes
from trainers.runtime.metering import Meter
from trainers.runtime.models import max_positions
from trainers.data.prompts import label_token_ids
from trainers.runtime.scoring import ContextScorer, PromptIds
from trainers.data.tasks import eval_subset

# The plain path costs the most by far: run it once per repeat, the cheap paths on both sides of it.
SANDWICH = ["cd", "icl_cached", "icl_plain", "icl_cached", "cd"]


def paths(args) -> list[str]:
    carts = [f"cartridge_p{p}" for p in cartridge_tokens(args)]
    base = ["icl_cached", "cd"] if args.no_plain else ["icl_cached", "icl_plain", "cd"]
    return base + carts


def cartridge_tokens(args) -> list[int]:
    return [int(p) for p in args.cartridge_tokens.split(",") if p]


def order(args) -> list[str]:
    sandwich = [s for s in SANDWICH if s in paths(args)]
    carts = [p for p in paths(args) if p.startswith("cartridge")]
    return (sandwich[:2] + carts + sandwich[2:] + carts[::-1]) * args.repeats


def options():
    p = parser(__doc__, repeats=1)
    p.add_argument("--shots", default="16,64,96",
                   help="numbers of demonstrations, comma-separated (default: %(default)s)")
    p.add_argument("--queries", type=int, default=32, help="validation queries scored per k (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per forward pass (default: %(default)s)")
    p.add_argument("--cartridge-tokens", default="32,128", help="cartridge prefix lengths p, comma-separated "
                   "('' for none; default: %(default)s)")
    p.add_argument("--no-plain", action="store_true", help="skip ICL without the prefix cache")
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
    contexts = {k: PromptIds(tok, prompt, prepare(run_config(args, k)).draw.labelled) for k in shots}
    longest = contexts[max(shots)].context
    set_adapters(model, False)  # the cartridges wrap the base model (LoRA off), as a cartridge student has it
    carts = {f"cartridge_p{p}": cartridge.make_student(model, longest, p, frozen=1) for p in cartridge_tokens(args)}
    models = {p: carts.get(p, model) for p in paths(args)}
    scorers = {p: ContextScorer(models[p], tok, args.batch_size, use_cache=p == "icl_cached",
                                max_positions=limit - int(p.removeprefix("cartridge_p")) if p in carts else limit)
               for p in paths(args)}
    no_context = PromptIds(tok, prompt, [])

    def score(path, context, subset):
        set_adapters(model, path == "cd")
        prompt_ids = (no_context if path == "cd" else cartridge.BehindPrefix(context) if path in carts else context)
        with torch.inference_mode():
            return label_word_predictions(scorers[path], prompt_ids, label_ids, subset, desc=path)

    for path in paths(args):  # first calls pay for kernel selection and allocator growth: keep them out of the timing
        score(path, contexts[shots[0]], examples[:args.batch_size])
    meter, rows = Meter(device), []
    for k in shots:
        context = contexts[k]
        runs = {p: (lambda p=p: score(p, context, examples)) for p in paths(args)}
        figures, preds = alternate(meter, runs, order(args), tag=f"k{k}/")
        kv = {"icl_cached": len(context.context), "icl_plain": len(context.context), "cd": 0,
              **{p: int(p.removeprefix("cartridge_p")) for p in carts}}
        rows.append(per_k(k, len(context.context), figures, preds, {p: kv_bytes(model, n) for p, n in kv.items()}, paths(args)))
    return {"queries": len(examples), "batch_size": args.batch_size, "max_positions": limit,
            "kv_bytes_per_token": kv_bytes(model, 1), "lora": {**facts, "trained": False, "merged": False},
            "cartridges": {p: {"trained": False, "initialised_from": f"first p tokens of the {max(shots)}-shot context"}
                           for p in carts}, "per_k": rows}


def per_k(k: int, context_tokens: int, figures: dict, preds: dict, kv: dict, names: list[str]) -> dict:
    row = {"k": k, "context_tokens": context_tokens}
    for p in names:
        n = len(preds[p].labels)
        row[p] = {**figures[p], "queries_scored": n, "queries_dropped": preds[p].n_dropped, "kv_bytes_per_query": kv[p],
                  "ms_per_query": round(1000 * figures[p]["seconds"] / n, 3) if n else None,
                  "cpu_ms_per_query": round(1000 * figures[p]["cpu_seconds"] / n, 3) if n else None}
    for p in names:
        if p == "cd":
            continue
        have = row[p]["ms_per_query"] is not None and row["cd"]["ms_per_query"] is not None
        row[f"time_ratio_{p}_over_cd"] = ratio(row[p]["ms_per_query"], row["cd"]["ms_per_query"]) if have else None
        row[f"memory_ratio_{p}_over_cd"] = ratio(row[p]["peak_mib"], row["cd"]["peak_mib"])
    return row


def render(f: dict) -> str:
    rows = f["per_k"]
    names = [p for p in rows[0] if isinstance(rows[0][p], dict)]
    others = [p for p in names if p != "cd"]
    time = table(["k", "context tokens", *[f"{p} ms/query" for p in names], *[f"{p} / cd" for p in others]],
                 [[r["k"], r["context_tokens"], *[r[p]["ms_per_query"] for p in names],
                   *[r[f"time_ratio_{p}_over_cd"] for p in others]] for r in rows])
    kv = table(["k", *[f"{p} KV MiB/query" for p in names]],
               [[r["k"], *[round(r[p]["kv_bytes_per_query"] / 2 ** 20, 2) for p in names]] for r in rows])
    memory = table(["k", *[f"{p} peak MiB" for p in names], *[f"{p} / cd" for p in others]],
                   [[r["k"], *[r[p]["peak_mib"] for p in names], *[r[f"memory_ratio_{p}_over_cd"] for p in others]]
                    for r in rows])
    dropped = [f"k={r['k']} {p}: {r[p]['queries_dropped']}" for r in rows for p in names if r[p]["queries_dropped"]]
    notes = [f"- {f['queries']} queries per k, batch {f['batch_size']}; cd = base model + untrained, unmerged "
             f"LoRA on {', '.join(f['lora'].get('lora_targets', []))}, no context (its cost does not depend on k); "
             f"cartridge_pN = the base model behind an N-token trained-KV prefix (untrained here; its cost does not "
             f"depend on k)",
             f"- key/value bytes per context token in every layer: {f['kv_bytes_per_token']:,} (a sliding-window layer keeps only its window)",
             f"- queries dropped for exceeding {f['max_positions']} positions: {', '.join(dropped) or 'none'}"]
    return ("Time per query\n\n" + time + "\n\nKey/value bytes a query attends to beside its own tokens\n\n" + kv
            + "\n\nPeak memory (weights included)\n\n" + memory + "\n\n" + "\n".join(notes))


def title(args, device: torch.device) -> str:
    return (f"ICL vs CD into weights (LoRA) vs into a cache (cartridge), inference cost: {args.task}, k = {args.shots}, "
            f"{Path(args.model).name} on {device.type}")


def main(argv: list[str] | None = None) -> dict:
    return common.main("cd_vs_icl", argv, options, measure, render, title)


if __name__ == "__main__":
    main()
