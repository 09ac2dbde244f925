"""`resources: auto`: per cell, the fewest GPUs per trial that hold it, from the memory plan.

    python -m orchestrator sweep --space ft_vs_icl --set 'models=[facebook/opt-30b]' --set resources=auto --dry-run

For each cell the plan (`trainers/runtime/memory_plan.py`, from the model's config only) estimates the
peak per worker. The choice, in order: half a GPU (two trials share it) when the estimate fits in
half the usable memory, one GPU, one GPU with gradient checkpointing, then fsdp over 2, 4, 8, 16
GPUs (each with and without checkpointing) up to `max_gpus_per_trial` (16). Usable memory is
`gpu_memory_gb` less a margin for the CUDA context and allocator fragmentation. A cell that fits nowhere is refused
before Ray starts, with its numbers. Without GPUs (and without `gpu_memory_gb`) the same rule runs
on CPU workers against the host's memory.
"""
from __future__ import annotations

import os

from orchestrator.space import Space, SpaceError
from trainers.methods import spec
from trainers.methods.spec import Parallel

MARGIN = 0.9  # of the device's memory, kept usable
CONTEXT_GIB = 1.0  # CUDA context, NCCL buffers, allocator slack: outside torch's peak allocation
GIB = 2 ** 30


class PlacementError(SpaceError):
    """A cell's estimated memory exceeds what any allowed placement offers."""


def device_budget(space: Space, local_gpus: int) -> tuple[str, float]:
    """('cuda' or 'cpu', usable GiB per worker) for this sweep."""
    gb = space.resources.get("gpu_memory_gb")
    if gb:
        return "cuda", float(gb) * MARGIN - CONTEXT_GIB
    if local_gpus:
        import torch
        total = torch.cuda.get_device_properties(0).total_memory / GIB
        return "cuda", total * MARGIN - CONTEXT_GIB
    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    return "cpu", host * MARGIN


def _estimate(cfg, device: str, parallel: str, workers: int, checkpointing: bool) -> float:
    from trainers.runtime.memory_plan import for_config
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    return for_config(cfg, device, dtype, workers, parallel, checkpointing)["peak_mib"] / 1024


def _options(cfg, fixed: str | None, limit: int):
    """(workers, parallel, gradient checkpointing) from the cheapest placement up: fewer GPUs first,
    and on the same GPUs recomputing activations before giving up."""
    method = spec.get(cfg.method)
    can_ckpt = method.trains and not method.kv_prefix  # peft's trained prefix does not combine with it
    ckpt = [False, True] if can_ckpt and not cfg.train.grad_checkpointing else [cfg.train.grad_checkpointing]
    if fixed != Parallel.FSDP:
        yield from ((1, Parallel.of(fixed or "ddp").value, c) for c in ckpt)
    workers = 2
    while workers <= limit and fixed != Parallel.DDP and method.shardable:
        yield from ((workers, Parallel.FSDP.value, c) for c in ckpt)
        workers *= 2


def choose(space: Space, cell, cfg, local_gpus: int) -> dict:
    """{workers, gpus_per_worker, cpus_per_worker, parallel, grad_checkpointing, estimate_gib, budget_gib}
    for the cell, or PlacementError with the numbers."""
    from trainers.runtime.models import ModelError
    device, budget = device_budget(space, local_gpus)
    limit = int(space.resources.get("max_gpus_per_trial") or 16)
    gpu = 1 if device == "cuda" else 0
    tried = []
    try:
        for workers, parallel, ckpt in _options(cfg, space.fixed.get("parallel"), limit):
            need = _estimate(cfg, device, parallel, workers, ckpt)
            tried.append(f"{workers} x {need:.1f} GiB ({parallel}{', checkpointing' if ckpt else ''})")
            if need <= budget:
                shared = workers == 1 and gpu and need <= budget / 2  # two such trials share a GPU
                return {"workers": workers, "gpus_per_worker": 0.5 if shared else gpu,
                        "cpus_per_worker": space.resources["cpus_per_worker"], "parallel": parallel,
                        "grad_checkpointing": ckpt, "estimate_gib": round(need, 2), "budget_gib": round(budget, 2)}
    except ModelError as e:
        raise PlacementError(f"resources: auto needs {cfg.model}'s config: {e}") from None
    where = f"{budget:.1f} GiB usable per {'GPU' if device == 'cuda' else 'worker (host memory)'}"
    raise PlacementError(f"{cell.id} fits nowhere: {'; '.join(tried)}; {where}, at most {limit} per trial. Way out: "
                         f"more or larger GPUs (resources.gpu_memory_gb, resources.max_gpus_per_trial), LoRA or "
                         f"BitFit, or a smaller train.batch_size or train.max_length")
