"""The GPU path in minutes, with nothing but torch, transformers and peft: no Ray, no datasets, no hub.

    python -m benchmarks.gpu_check                          # on a GPU machine: OPT-125m and OPT-1.3b shapes
    python -m benchmarks.gpu_check --tiny --device cpu      # the same code on tiny shapes (the tests run this)

Models are randomly initialised from OPT-125m and OPT-1.3b configs (written out below, so no hub
is needed) and fed synthetic token ids; the project's own code does the work:

1. precision: one AdamW step at lr 1e-5 of full fine-tuning (OPT-125m shape) through the project's
   training loop in fp32, in bf16 autocast with fp32 master weights, and with bf16 weights updated
   directly; the fraction of weights that moved (`benchmarks.precision.one_step`).
2. memory: CUDA's peak allocation against NVML's per-process figure (found by the device's UUID)
   for one training step; both non-zero and within 10x of each other (NVML adds the CUDA context).
3. prefix cache: ICL scoring of queries after 16 and 32 demonstrations, the demonstrations'
   key/value cache against the plain path (OPT-1.3b shape, compute dtype), and the CD student
   (LoRA adapters, the query alone) per query.
4. fine-tuning throughput: tokens/s and model FLOP utilisation of full fine-tuning (OPT-1.3b shape,
   bf16 autocast) through the project's training loop.
5. fsdp on one device: full fine-tuning of the OPT-1.3b shape whole and under FSDP2 (a process group
   of one; `trainers/runtime/sharding.py`): the same loss, and each one's measured peak against the memory
   plan's estimate (`trainers/runtime/memory_plan.py`).

Writes results/bench/gpu_check.{json,md}.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):  # run as a file: make the repository root importable, as `-m` from it does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks.common import _release, fmt, publish, ratio, table
from benchmarks.precision import one_step
from trainers.runtime import adapters
from trainers.config import PeftConfig, TrainConfig
from trainers.runtime.metering import Meter
from trainers.runtime.models import pick_dtype
from trainers.runtime.precision import Precision
from trainers.contract import EvalBlock, dump
from trainers.records import environment
from trainers.runtime.scoring import ContextScorer, answer_logits, collate, label_word_reduce
from trainers.runtime.training import train

ROOT = Path(__file__).resolve().parents[1]
# OPT's published shapes (facebook/opt-125m, facebook/opt-1.3b config.json): hidden, layers, heads, FFN.
SHAPES = {"opt-125m": (768, 12, 12, 3072), "opt-1.3b": (2048, 24, 32, 8192), "tiny": (64, 2, 4, 128)}
# Dense bf16 tensor-core peaks (FLOP/s) for model FLOP utilisation; a card not listed gets none.
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("A100", 312e12),
             ("L40S", 362e12), ("A10G", 125e12), ("L4", 121e12)]
LABELS = [5, 6]  # two token ids standing in for label words
DEMO_TOKENS, QUERY_TOKENS = 60, 40  # 32 demonstrations + a query fit OPT's 2,048 positions


def build(shape: str, device: torch.device, dtype: torch.dtype, vocab: int):
    from transformers import OPTConfig, OPTForCausalLM
    hidden, layers, heads, ffn = SHAPES[shape]
    cfg = OPTConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                    ffn_dim=ffn, max_position_embeddings=2048, word_embed_proj_dim=hidden, dropout=0.0,
                    attention_dropout=0.0, pad_token_id=1, bos_token_id=2, eos_token_id=2)
    torch.manual_seed(0)
    with device:  # initialise in place on the GPU: no CPU copy of the weights
        model = OPTForCausalLM(cfg)
    return model.to(dtype).eval()


def synthetic(n: int, length: int, vocab: int, seed: int) -> list[SimpleNamespace]:
    g = torch.Generator().manual_seed(seed)
    return [SimpleNamespace(ids=torch.randint(10, vocab, (length,), generator=g).tolist(), label=i % 2) for i in range(n)]


def label_loss(model, device):
    index = torch.tensor(LABELS, device=device)

    def loss_fn(batch):
        ids, mask, last = collate([b.ids for b in batch], 1, device)
        logits = answer_logits(model, ids, mask, last)[:, index].float()
        return F.cross_entropy(logits, torch.tensor([b.label for b in batch], device=device))

    return loss_fn


def check_precision(a, device: torch.device) -> dict:
    out, items = {}, synthetic(8, 128, a.vocab, seed=1)
    for name, weights, compute in [("fp32", torch.float32, torch.float32), ("bf16_autocast", torch.float32, torch.bfloat16),
                                   ("bf16_weights", torch.bfloat16, torch.float32)]:
        model = build(a.small, device, weights, a.vocab).train()
        out[name] = one_step(model, items, label_loss(model, device), Precision(device, compute), 1e-5)
        out[name].pop("update")
        del model
    out["changed_ratio_bf16_autocast_over_fp32"] = ratio(out["bf16_autocast"]["changed_fraction"], out["fp32"]["changed_fraction"])
    out["pass"] = (out["changed_ratio_bf16_autocast_over_fp32"] or 0) >= 0.9
    return out


def check_memory(a, device: torch.device) -> dict:
    model = build(a.small, device, torch.float32, a.vocab).train()
    meter, items = Meter(device), synthetic(8, 256, a.vocab, seed=2)
    with meter.phase("step"):
        one_step(model, items, label_loss(model, device), Precision(device, torch.bfloat16), 1e-5)
    p = meter.phases["step"]
    cuda, nvml = p.cuda_max_allocated_mib, p.nvml_process_peak_mib
    same_order = bool(cuda and nvml and 0.1 <= nvml / cuda <= 10)
    return {"phase": dump(p), "cuda_max_allocated_mib": cuda, "nvml_process_peak_mib": nvml, "pass": same_order,
            "note": None if device.type == "cuda" else "CPU: no CUDA or NVML figures"}


def per_query_ms(scorer, context: list[int], queries: list[list[int]], reduce) -> float:
    scorer.run(context, queries[:scorer.batch_size], reduce)  # warm-up: kernel selection, allocator growth
    if scorer.device.type == "cuda":
        torch.cuda.synchronize(scorer.device)
    start = time.perf_counter()
    scorer.run(context, queries, reduce)
    if scorer.device.type == "cuda":
        torch.cuda.synchronize(scorer.device)
    return round((time.perf_counter() - start) * 1000 / len(queries), 3)


def check_prefix_cache(a, device: torch.device) -> dict:
    dtype = pick_dtype("auto", device)
    autocast = Precision(device, dtype).autocast  # as the methods score: the student mixes fp32 LoRA and bf16 weights
    model = build(a.large, device, dtype, a.vocab)
    tok, reduce = SimpleNamespace(pad_token_id=1), label_word_reduce(LABELS)
    queries = [q.ids for q in synthetic(a.queries, QUERY_TOKENS, a.vocab, seed=3)]
    rows = []
    for k in (16, 32):
        context = [2] + [t for d in synthetic(k, DEMO_TOKENS, a.vocab, seed=4 + k) for t in d.ids]
        times = {path: per_query_ms(ContextScorer(model, tok, 8, path == "cached", 2048, autocast), context, queries, reduce)
                 for path in ("cached", "plain")}
        rows.append({"k": k, "context_tokens": len(context), "icl_cached_ms": times["cached"], "icl_plain_ms": times["plain"],
                     "speedup": ratio(times["plain"], times["cached"])})
    model, _ = adapters.apply(model, PeftConfig(kind="lora"))  # the CD student: LoRA on, no demonstrations
    student = per_query_ms(ContextScorer(model, tok, 8, False, 2048, autocast), [2], queries, reduce)
    for row in rows:
        row["cd_student_ms"], row["icl_cached_over_student"] = student, ratio(row["icl_cached_ms"], student)
    return {"dtype": str(dtype).replace("torch.", ""), "queries": len(queries), "per_k": rows,
            "pass": all((r["speedup"] or 0) > 1 for r in rows)}


def check_throughput(a, device: torch.device) -> dict:
    model = build(a.large, device, torch.float32, a.vocab).train()  # full fine-tuning: fp32 master weights
    prec = Precision(device, pick_dtype("auto", device))
    params = sum(p.numel() for p in model.parameters())
    batch, length = a.batch, a.seq_len
    loss_fn, cfg = label_loss(model, device), TrainConfig(epochs=1, batch_size=batch, warmup_ratio=0.0)
    train(model, synthetic(batch, length, a.vocab, seed=5), loss_fn, lambda: EvalBlock(accuracy=0.0), cfg, 1e-5, 0,
          precision=prec)  # warm-up step
    items = synthetic(batch * a.steps, length, a.vocab, seed=6)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    train(model, items, loss_fn, lambda: EvalBlock(accuracy=0.0), cfg, 1e-5, 0, precision=prec)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    tokens_per_s = batch * a.steps * length / seconds
    hidden, layers = SHAPES[a.large][0], SHAPES[a.large][1]
    flops_per_token = 6 * params + 12 * layers * hidden * length  # weights' matmuls + attention, forward and backward
    peak = next((f for name, f in PEAK_BF16 if device.type == "cuda" and name in torch.cuda.get_device_name(device)), None)
    return {"parameters": params, "batch": batch, "seq_len": length, "steps": a.steps, "seconds": round(seconds, 3),
            "tokens_per_s": round(tokens_per_s, 1), "model_tflops_per_s": round(flops_per_token * tokens_per_s / 1e12, 2),
            "peak_bf16_tflops": peak and peak / 1e12,
            "mfu": round(flops_per_token * tokens_per_s / peak, 4) if peak else None, "precision": prec.name}


def _fsdp_group(device: torch.device):
    """A one-process group (NCCL on a GPU, gloo on a CPU): fsdp on one device, as a worker group of one."""
    import torch.distributed as dist
    if not dist.is_initialized():
        port = 29000 + os.getpid() % 1000
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=0, world_size=1)
    return dist


def check_fsdp(a, device: torch.device) -> dict:
    """Full fine-tuning of the large shape, whole (ddp) and sharded by FSDP2 (one GPU): the same losses,
    and each one's measured peak against the memory plan's estimate."""
    from transformers import OPTConfig
    from trainers.runtime import sharding
    from trainers.runtime.memory_plan import estimate, shape_from_config
    dist, prec = _fsdp_group(device), Precision(device, pick_dtype("auto", device))
    hidden, layers, heads, ffn = SHAPES[a.large]
    shape = shape_from_config(OPTConfig(vocab_size=a.vocab, hidden_size=hidden, num_hidden_layers=layers,
                                        num_attention_heads=heads, ffn_dim=ffn, word_embed_proj_dim=hidden))
    out, items = {}, synthetic(a.batch * 3, a.seq_len, a.vocab, seed=7)
    cfg = TrainConfig(epochs=1, batch_size=a.batch, warmup_ratio=0.0, selection="last")
    for mode in ("ddp", "fsdp"):
        meter = Meter(device)
        with meter.phase("train", trim=True):
            model = build(a.large, device, torch.float32, a.vocab).train()
            model = sharding.prepare(model, mode, device, prec.compute, torch.float32)
            losses = []
            train(model, items, label_loss(model, device), lambda: EvalBlock(accuracy=0.0), cfg, 1e-5, 0, precision=prec,
                  report=lambda e: losses.append(e.train_loss))
        measured = meter.phases["train"].peak_mib
        planned = estimate(shape, "pbft", "none", mode, 1, prec.name, a.batch, 1, a.seq_len, 0, device=device.type)
        out[mode] = {"loss": losses[-1], "measured_mib": measured, "estimated_mib": planned["peak_mib"],
                     "plan_error": round(planned["peak_mib"] / measured - 1, 3)}
        del model
        _release(device)
    dist.destroy_process_group()
    out["loss_difference"] = abs(out["ddp"]["loss"] - out["fsdp"]["loss"])
    out["pass"] = out["loss_difference"] <= 1e-3 * abs(out["ddp"]["loss"])
    return out


def render(f: dict) -> str:
    p, m, c, t = f["precision"], f["memory"], f["prefix_cache"], f["throughput"]
    lines = [f"- precision (one step, lr 1e-5, {f['small']} shape): weights changed fp32 {p['fp32']['changed_fraction']}, "
             f"bf16 autocast {p['bf16_autocast']['changed_fraction']}, bf16 weights {p['bf16_weights']['changed_fraction']}; "
             f"changed-weights ratio bf16/fp32: {fmt(p['changed_ratio_bf16_autocast_over_fp32'])} "
             f"({'ok' if p['pass'] else 'FAILED'})",
             f"- memory of one training step: CUDA peak {m['cuda_max_allocated_mib']} MiB, NVML process peak "
             f"{m['nvml_process_peak_mib']} MiB ({'same order' if m['pass'] else m['note'] or 'NOT the same order'})",
             f"- fine-tuning throughput ({f['large']} shape, full, compute {t['precision']}, batch {t['batch']} x {t['seq_len']}): "
             f"{t['tokens_per_s']:.0f} tokens/s, {t['model_tflops_per_s']} model TFLOP/s, MFU {fmt(t['mfu'])}"]
    rows = [[r["k"], r["context_tokens"], r["icl_cached_ms"], r["icl_plain_ms"], r["speedup"], r["cd_student_ms"],
             r["icl_cached_over_student"]] for r in c["per_k"]]
    head = ["k", "context tokens", "ICL cached ms/query", "ICL plain ms/query", "cache speed-up", "CD student ms/query",
            "ICL cached / student"]
    z = f["fsdp"]
    lines.append(f"- fsdp on one device ({f['large']} shape, full fine-tuning, one epoch of 3 steps): loss ddp "
                 f"{z['ddp']['loss']:.6f}, fsdp {z['fsdp']['loss']:.6f} ({'same' if z['pass'] else 'DIFFERENT'}); "
                 f"peak MiB measured / planned: ddp {z['ddp']['measured_mib']:.0f} / {z['ddp']['estimated_mib']:.0f}, "
                 f"fsdp {z['fsdp']['measured_mib']:.0f} / {z['fsdp']['estimated_mib']:.0f}")
    return "\n".join(lines) + f"\n\nICL vs CD student per query ({f['large']} shape, {c['dtype']}, {c['queries']} queries):\n\n" + \
        table(head, rows) + "\n"


def options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    p.add_argument("--tiny", action="store_true", help="tiny shapes in place of OPT-125m and OPT-1.3b (seconds on a CPU)")
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"), help="(default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    a = options().parse_args(argv)
    device = torch.device(a.device)
    sizes = dict(small="tiny", large="tiny", vocab=512, queries=16, batch=4, seq_len=64, steps=2) if a.tiny else \
        dict(small="opt-125m", large="opt-1.3b", vocab=50272, queries=64, batch=8, seq_len=256, steps=10)
    for k, v in sizes.items():
        setattr(a, k, v)
    started = time.perf_counter()
    figures = {"small": a.small, "large": a.large, "precision": check_precision(a, device),
               "memory": check_memory(a, device), "prefix_cache": check_prefix_cache(a, device),
               "throughput": check_throughput(a, device), "fsdp": check_fsdp(a, device)}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    env = {**environment(), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    text = (f"# GPU check: {a.small} / {a.large} shapes on {env['gpu'] or device.type}\n\n    python -m benchmarks.gpu_check "
            f"{' '.join(argv)}\n\n{render(figures)}\n- {figures['seconds']:.0f} s in all\n")
    publish("gpu_check", Path(a.out_dir), text, {"benchmark": "gpu_check", "args": vars(a), "figures": figures, "env": env})
    return figures


if __name__ == "__main__":
    main()
