"""Data-parallel training and sharded scoring on two CPU processes (gloo) match one process."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.config import TrainConfig
from trainers.runtime.distributed import shard, unshard
from trainers.runtime.training import train
from trainers.contract import EvalBlock


def make_problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    x, y = torch.randn(24, 4), torch.randint(0, 2, (24,))
    items = list(range(24))

    def loss_fn(batch):
        return torch.nn.functional.cross_entropy(model(x[batch]), y[batch])

    return model, items, loss_fn


CFG = TrainConfig(epochs=3, batch_size=8, grad_accum=2, warmup_ratio=0.0)


def worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, items, loss_fn = make_problem()
    outcome = train(model, items, loss_fn, lambda: EvalBlock(accuracy=0.0), CFG, lr=0.05, seed=0)
    gathered = unshard(shard(list(range(11))), 11)
    if rank == 0:
        torch.save({"params": [p.detach() for p in model.parameters()], "loss": outcome.history[-1].train_loss,
                    "gathered": gathered}, out)
    dist.destroy_process_group()


def test_two_ranks_train_like_one(tmp_path):
    model, items, loss_fn = make_problem()
    single = train(model, items, loss_fn, lambda: EvalBlock(accuracy=0.0), CFG, lr=0.05, seed=0)
    out = tmp_path / "rank0.pt"
    port = 29500 + os.getpid() % 1000
    mp.spawn(worker, args=(2, port, str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    for a, b in zip(model.parameters(), ddp["params"]):
        assert torch.allclose(a, b, atol=1e-5), "data-parallel update differs from the single-process update"
    assert ddp["loss"] == pytest.approx(single.history[-1].train_loss, abs=1e-5)
    assert ddp["gathered"] == list(range(11))  # sharded work comes back whole and in order
