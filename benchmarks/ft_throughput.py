"""Fine-tuning throughput: the project's training loop against a bare PyTorch loop, side by side.

    python -m benchmarks.ft_throughput                     # SmolLM2-135M + LoRA, 32 RTE examples, CPU
    python benchmarks/ft_throughput.py --peft none --device cuda

Both loops train the same model from the same starting weights on the same examples, in the same
batches in the same order (the project's own seeded shuffle), with the same loss: pattern-based
fine-tuning's label-word cross-entropy at the answer position (`trainers.methods.pbft.label_word_loss`). The project loop is `trainers.runtime.training.train` with a dev function that returns
at once, so evaluation is not timed; the bare loop is AdamW with forward, backward, step and
nothing else. Warm-up ratio and clipping are off (`TrainConfig(warmup_ratio=0, max_grad_norm=0)`)
so the two compute the same update and their final trainable parameters can be compared.

One forward/backward warm-up step (not applied) comes first; then the loops run alternately
(project, bare, project, bare for `--repeats 2`), each from the restored starting weights with a
fresh optimizer, each in its own `Meter` phase, and each loop's fastest run is kept.
Writes results/bench/ft_throughput.{json,md}.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable, as `-m` from it does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common
from benchmarks.common import (alternate, fmt, load_model, parser, phase_rows, ratio, round_robin, run_config,
                               table)
from trainers.runtime import adapters
from trainers.methods.common import prepare
from trainers.config import PeftConfig, TrainConfig
from trainers.contract import EvalBlock
from trainers.runtime.metering import Meter
from trainers.runtime.models import count_parameters
from trainers.methods.pbft import label_word_loss
from trainers.data.prompts import label_token_ids
from trainers.runtime.training import epoch_batches, train

LOOPS = ("project", "bare")


def options():
    p = parser(__doc__, repeats=2)
    p.add_argument("--peft", default="lora", choices=("none", "lora", "bitfit"),
                   help="which parameters train (default: %(default)s, to keep memory small)")
    p.add_argument("--examples", type=int, default=32, help="training examples (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size, no accumulation (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2, help="(default: %(default)s)")
    p.add_argument("--lr", type=float, default=None, help="default: the project's for the PEFT variant")
    p.add_argument("--max-length", type=int, default=256, help="(default: %(default)s)")
    return p


def bare_loop(model, items: list, loss_fn, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        # the project's shuffle, so both loops see the very same batches in the same order
        for batch in epoch_batches(len(items), batch_size, generator):
            loss_fn([items[j] for j in batch]).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    model.eval()


def measure(args, device: torch.device) -> dict:
    prep = prepare(run_config(args, args.examples))
    model, tok = load_model(args)
    model, _ = adapters.apply(model, PeftConfig(kind=args.peft))
    items = prep.draw.labelled
    loss_fn = label_word_loss(model, tok, prep.prompt, label_token_ids(tok, prep.prompt), items, args.max_length)
    lr = args.lr or PeftConfig(kind=args.peft).default_lr()
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, warmup_ratio=0.0, max_grad_norm=0.0,
                      max_length=args.max_length, weight_decay=0.0, schedule="constant", selection="last")
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]

    def restore(_name):
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        torch.manual_seed(args.seed)

    # Each run returns a copy of its final trainable parameters: inside the timed phase, but the
    # same copy for both loops (with --peft none, a held copy raises the other loop's peak, not its working memory).
    def project():
        status = train(model, items, loss_fn, lambda: EvalBlock(accuracy=0.0), cfg, lr, args.seed).status
        return status, [p.detach().clone() for p in params]

    def bare():
        bare_loop(model, items, loss_fn, args.epochs, args.batch_size, lr, args.seed)
        return "completed", [p.detach().clone() for p in params]

    model.train()
    loss_fn(items[:args.batch_size]).backward()  # warm-up: allocator growth and kernel choice, not applied
    model.zero_grad(set_to_none=True)
    figures, last = alternate(Meter(device), {"project": project, "bare": bare}, round_robin(LOOPS, args.repeats),
                              before=restore)
    steps = args.epochs * -(-len(items) // args.batch_size)
    for name in LOOPS:
        figures[name]["examples_per_s"] = ratio(args.epochs * len(items), figures[name]["seconds"])
        figures[name]["steps_per_s"] = ratio(steps, figures[name]["seconds"])
    (status, project_params), (_, bare_params) = last["project"], last["bare"]
    diff = max(float((a - b).abs().max()) for a, b in zip(project_params, bare_params))
    moved = max(float((a - s).abs().max()) for a, s in zip(bare_params, start))
    return {"project_loop_status": status, "peft": args.peft, "lr": lr, "examples": len(items),
            "batch_size": args.batch_size, "epochs": args.epochs, "steps": steps,
            "trainable_parameters": count_parameters(model)["trainable"], **figures,
            "time_ratio_project_over_bare": ratio(figures["project"]["seconds"], figures["bare"]["seconds"]),
            "max_abs_param_diff_project_vs_bare": diff, "max_abs_param_change_from_start": moved}


def render(f: dict) -> str:
    p, b = f["project"], f["bare"]
    rows = phase_rows(p, b)
    rows[1:1] = [["examples / s", p["examples_per_s"], b["examples_per_s"]],
                 ["steps / s", p["steps_per_s"], b["steps_per_s"]]]
    summary = [f"- {f['examples']} examples, batch {f['batch_size']}, {f['epochs']} epochs = {f['steps']} steps; "
               f"peft {f['peft']} ({f['trainable_parameters']:,} trainable parameters), lr {f['lr']:g}",
               f"- time ratio project / bare: {fmt(f['time_ratio_project_over_bare'])}x (aim: within 1.15x)",
               f"- final trainable parameters, max |project - bare|: {fmt(f['max_abs_param_diff_project_vs_bare'])} "
               f"(largest change from the start: {fmt(f['max_abs_param_change_from_start'])})"]
    return table(["figure", "project loop", "bare loop"], rows) + "\n\n" + "\n".join(summary)


def title(args, device: torch.device) -> str:
    return (f"Fine-tuning loop throughput: {args.task}, {args.examples} examples, peft {args.peft}, "
            f"{Path(args.model).name} on {device.type}")


def main(argv: list[str] | None = None) -> dict:
    return common.main("ft_throughput", argv, options, measure, render, title)


if __name__ == "__main__":
    main()
