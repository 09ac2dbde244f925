"""ddp against fsdp on two CPU workers (gloo): per-worker peak memory, step time and the losses.

    python -m benchmarks.sharding                 # full PBFT of SmolLM2-135M, fp32, 5 AdamW steps
    python -m benchmarks.sharding --peft lora --steps 3

Each mode runs in its own pair of fresh processes. Both train the same model from the same
weights on the same batches (8 examples per step, 4 per rank) with PBFT's loss
(`trainers.methods.pbft.label_word_loss`) through the project's own step (`trainers.runtime.training`): ddp holds
a whole copy per rank and all-reduces the gradients, fsdp holds half of every parameter, gradient
and AdamW moment per rank (`trainers.runtime.sharding`). Memory per worker is `Meter`'s peak resident
set of the training phase (the heap trimmed first, `MALLOC_MMAP_THRESHOLD_=65536` so freed blocks
go back to the system); load is reported apart (fsdp's rank 0 reads the checkpoint, rank 1 does
not). Writes results/bench/sharding.{json,md}.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from benchmarks.common import DEFAULT_DATA, DEFAULT_MODEL, ROOT, fmt, publish, table


def worker(rank: int, world: int, port: int, mode: str, args: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), FEWSHOT_QUIET="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from trainers.runtime import adapters, sharding
    from trainers.methods.common import prepare
    from trainers.config import RunConfig, TrainConfig
    from trainers.runtime.metering import Meter
    from trainers.runtime.models import load_causal_lm
    from trainers.methods.pbft import label_word_loss
    from trainers.data.prompts import label_token_ids
    from trainers.runtime.training import _batch_loss, _step

    cfg = RunConfig(method="pbft", model=args["model"], data_dir=args["data_dir"], shots=args["shots"], n_dev=0,
                    dtype="float32", device="cpu", parallel=mode).replace(**{"peft.kind": args["peft"]})
    meter = Meter(torch.device("cpu"))
    with meter.phase("load", trim=True):
        prep = prepare(cfg)
        torch.manual_seed(0)
        model, tok = load_causal_lm(cfg.model, "float32", "cpu", empty=sharding.builds_empty(mode))
        model, _ = adapters.apply(model, cfg.peft)
        model = sharding.prepare(model, mode, torch.device("cpu"), torch.float32, torch.float32)
    items = prep.draw.labelled
    loss_fn = label_word_loss(model, tok, prep.prompt, label_token_ids(tok, prep.prompt), items, 256)
    tcfg = TrainConfig(batch_size=8, warmup_ratio=0.0, max_grad_norm=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    sharded = mode == "fsdp"
    losses, seconds = [], []
    model.train()
    with meter.phase("train", trim=True):
        for step in range(args["steps"]):
            batch = [(step * 8 + i) % len(items) for i in range(8)]
            start = time.perf_counter()
            losses.append(_batch_loss(items, batch, loss_fn, tcfg, contextlib.nullcontext, None, sharded))
            _step(params, optimizer, scheduler, None, tcfg)
            seconds.append(time.perf_counter() - start)
    mine = {"rank": rank, "load_peak_mib": meter.phases["load"].peak_rss_mib,
            "train_peak_mib": meter.phases["train"].peak_rss_mib, "losses": losses, "step_seconds": seconds}
    gathered = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


def run_mode(mode: str, args: dict, tmp: Path) -> list[dict]:
    out = tmp / f"{mode}.pt"
    port = 29900 + os.getpid() % 50 + (0 if mode == "ddp" else 50)
    mp.spawn(worker, args=(2, port, mode, args, str(out)), nprocs=2, join=True)
    return torch.load(out, weights_only=False)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--data-dir", default=DEFAULT_DATA)
    p.add_argument("--peft", default="none", choices=("none", "lora", "bitfit"))
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"))
    ns = p.parse_args(argv)
    args = {"model": str(Path(ns.model).expanduser()), "data_dir": ns.data_dir, "peft": ns.peft, "shots": ns.shots,
            "steps": ns.steps, "lr": ns.lr}
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")  # read by the workers' C library at start
    with tempfile.TemporaryDirectory() as tmp:
        runs = {mode: run_mode(mode, args, Path(tmp)) for mode in ("ddp", "fsdp")}
    worst = {m: {k: max(r[k] for r in runs[m]) for k in ("load_peak_mib", "train_peak_mib")} for m in runs}
    step = {m: sorted(sum((r["step_seconds"] for r in runs[m]), []))[len(runs[m][0]["step_seconds"])] for m in runs}
    diff = max(abs(a - b) for a, b in zip(runs["ddp"][0]["losses"], runs["fsdp"][0]["losses"]))
    rows = [[f"{m} rank {r['rank']}", r["load_peak_mib"], r["train_peak_mib"], sum(r["step_seconds"]) / len(r["step_seconds"]),
             " ".join(f"{x:.6f}" for x in r["losses"])] for m in runs for r in runs[m]]
    text = table(["worker", "load peak MiB", "train peak MiB", "s/step", "losses"], rows) + "\n\n" + "\n".join([
        f"train peak per worker, fsdp / ddp: {fmt(worst['fsdp']['train_peak_mib'] / worst['ddp']['train_peak_mib'])} "
        f"(aim <= 0.65)",
        f"median step time, fsdp / ddp: {fmt(step['fsdp'] / step['ddp'])}",
        f"largest loss difference over {ns.steps} steps: {diff:.2e} (aim <= 1e-4)"])
    publish("sharding", Path(ns.out_dir), f"ddp vs fsdp, {Path(args['model']).name}, pbft+{ns.peft}, 2 CPU workers (gloo), fp32\n\n{text}",
            {"args": args, "runs": runs, "ratio_train_peak": worst["fsdp"]["train_peak_mib"] / worst["ddp"]["train_peak_mib"],
             "ratio_step_seconds": step["fsdp"] / step["ddp"], "max_loss_difference": diff})
    return 0


if __name__ == "__main__":
    sys.exit(main())
