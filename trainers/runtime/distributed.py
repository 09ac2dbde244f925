"""Data-parallel helpers on plain `torch.distributed`; every one is a no-op in a single process.

    python -c "from trainers.runtime.distributed import rank_and_world; print(rank_and_world())"

The sweep's worker groups (Ray Train) set up the process group; the methods only ask for their
rank and shard their work, so the same code runs alone, under torchrun, or under Ray.
"""
from __future__ import annotations

import sys

import torch
import torch._dynamo  # noqa: F401  imported before any process group: AdamW imports it lazily, and with torch
# 2.13 importing it after a gloo group exists makes the process abort at exit ("terminate called ...") ~1 run in 10
import torch.distributed as dist

from trainers import settings


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_and_world()[0] == 0


def say(message: str) -> None:
    """One progress line on stderr from the main rank, on any terminal (FEWSHOT_QUIET=1 silences it).
    Inside a sweep these lines land in the trial's Ray log, not on the sweep's terminal."""
    if is_main() and not settings.get("FEWSHOT_QUIET"):
        print(message, file=sys.stderr, flush=True)


def shard(items: list) -> list:
    """This rank's share, strided so that shards differ in size by at most one item."""
    rank, world = rank_and_world()
    return items[rank::world]


def unshard(local: list, total: int) -> list:
    """Reassemble the strided shards of every rank into the original order (all ranks get all)."""
    rank, world = rank_and_world()
    if world == 1:
        return local
    parts = [None] * world
    dist.all_gather_object(parts, local)
    out = [None] * total
    for r, part in enumerate(parts):
        out[r::world] = part
    return out


def all_reduce(value: float, op: str = "max") -> float:
    rank, world = rank_and_world()
    if world == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op={"max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}[op])
    return float(t.item())
