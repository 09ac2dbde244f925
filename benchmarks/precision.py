"""Mixed precision that trains: one AdamW step at lr 1e-5, how many trained weights moved?

    python -m benchmarks.precision                       # SmolLM2-135M, full PBFT on 8 RTE examples, CPU
    python -m benchmarks.precision --device cuda

Three runs of the project's training loop (`trainers.runtime.training.train`, one optimiser step of
full pattern-based fine-tuning, warm-up off so the step is taken at lr 1e-5), each from freshly
loaded weights:

- `fp32`: fp32 weights, no autocast (the reference);
- `bf16_autocast`: the project's recipe: fp32 master weights, forward/backward under bf16 autocast;
- `bf16_weights`: bf16 weights updated directly (what `--dtype auto` did on GPUs before), for contrast.

For each: the fraction of trained weight elements that changed, and the cosine between its update
and the fp32 update. Prints `changed-weights ratio bf16/fp32: X` (aim >= 0.9) and writes
results/bench/precision.{json,md}.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable, as `-m` from it does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common
from benchmarks.common import fmt, parser, ratio, run_config, table
from trainers.methods.common import prepare
from trainers.config import TrainConfig
from trainers.contract import EvalBlock
from trainers.runtime.models import load_causal_lm
from trainers.methods.pbft import label_word_loss
from trainers.runtime.precision import Precision
from trainers.data.prompts import label_token_ids
from trainers.runtime.training import train

VARIANTS = {"fp32": ("float32", torch.float32), "bf16_autocast": ("float32", torch.bfloat16),
            "bf16_weights": ("bfloat16", torch.float32)}  # name -> (weights loaded in, compute precision)


def one_step(model, items: list, loss_fn, precision: Precision, lr: float) -> dict:
    """One optimiser step of the project's loop on `items` (one batch); what it did to the trained weights."""
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().float().clone() for p in params]
    cfg = TrainConfig(epochs=1, batch_size=len(items), warmup_ratio=0.0)
    start = time.perf_counter()
    outcome = train(model, items, loss_fn, lambda: EvalBlock(accuracy=0.0), cfg, lr, seed=0, precision=precision)
    if precision.device.type == "cuda":
        torch.cuda.synchronize(precision.device)
    seconds = time.perf_counter() - start
    deltas = [p.detach().float() - b for p, b in zip(params, before)]
    changed = sum(int((d != 0).sum()) for d in deltas)
    total = sum(d.numel() for d in deltas)
    return {"status": outcome.status, "changed_fraction": round(changed / total, 4), "trained_weights": total,
            "loss": outcome.history[0].train_loss if outcome.history else None, "seconds": round(seconds, 3),
            "update": torch.cat([d.flatten() for d in deltas])}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 4)


def options():
    p = parser(__doc__, repeats=1)
    p.add_argument("--examples", type=int, default=8, help="training examples, one batch (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-5, help="(default: %(default)s, the reference's full fine-tuning rate)")
    return p


def measure(args, device: torch.device) -> dict:
    prep = prepare(run_config(args, args.examples))
    items, out = prep.draw.labelled, {}
    for name, (load_dtype, compute) in VARIANTS.items():
        torch.manual_seed(args.seed)
        model, tok = load_causal_lm(args.model, load_dtype, args.device)
        for p in model.parameters():
            p.requires_grad_(True)
        loss_fn = label_word_loss(model, tok, prep.prompt, label_token_ids(tok, prep.prompt), items, 256)
        out[name] = one_step(model, items, loss_fn, Precision(device, compute), args.lr)
        del model
    reference = out["fp32"].pop("update")
    for name in ("bf16_autocast", "bf16_weights"):
        out[name]["update_cosine_vs_fp32"] = cosine(out[name].pop("update"), reference)
    return {"examples": len(items), "lr": args.lr, **out,
            "changed_ratio_bf16_autocast_over_fp32": ratio(out["bf16_autocast"]["changed_fraction"], out["fp32"]["changed_fraction"]),
            "changed_ratio_bf16_weights_over_fp32": ratio(out["bf16_weights"]["changed_fraction"], out["fp32"]["changed_fraction"])}


def render(f: dict) -> str:
    rows = [[name, f[name]["changed_fraction"], f[name].get("update_cosine_vs_fp32", 1.0), f[name]["loss"], f[name]["seconds"]]
            for name in VARIANTS]
    return (table(["run", "trained weights changed", "update cosine vs fp32", "loss", "seconds"], rows) +
            f"\n\n- one AdamW step at lr {f['lr']:g} on {f['examples']} examples, {f['fp32']['trained_weights']:,} trained weights"
            f"\n- changed-weights ratio bf16/fp32: {fmt(f['changed_ratio_bf16_autocast_over_fp32'])} (bf16 autocast, fp32 master"
            f" weights; aim >= 0.9); bf16 weights updated directly: {fmt(f['changed_ratio_bf16_weights_over_fp32'])}\n")


def title(args, device: torch.device) -> str:
    return f"Mixed precision: one full-PBFT step, {Path(args.model).name} on {device.type}"


def main(argv: list[str] | None = None) -> dict:
    return common.main("precision", argv, options, measure, render, title)


if __name__ == "__main__":
    main()
