"""How a trial's worker group holds its model: a whole copy per rank (ddp) or a shard of it (fsdp).

    torchrun --nproc-per-node 2 -m trainers run --method pbft --parallel fsdp --model PATH ...
    python -m benchmarks.sharding          # ddp vs fsdp on 2 CPU workers: memory, step time, losses

ddp: every rank loads the model; `trainers/runtime/training.py` sums the gradients with one all-reduce
per step. fsdp (FSDP2): `fully_shard` on every decoder block, then on the root, over the worker
group's device mesh (CUDA with NCCL, or a CPU mesh with gloo): each rank keeps 1/world of every
parameter, gathers a block's weights only for its forward/backward, and FSDP reduce-scatters the
gradients. Mixed precision is FSDP's policy: parameters and optimizer state fp32 (sharded),
gathered in the compute dtype, gradients reduced in fp32 (FSDP averages them over ranks, so
`trainers/runtime/training.py` scales each rank's backward by the world size: the update is the batch's).

Loading without a full copy per rank: rank 0 reads the checkpoint (CPU), every other rank builds
the same module on the meta device (buffers real: rotary tables are computed, not stored), all
shard, then rank 0's weights are broadcast into the shards (`set_model_state_dict`). Adapters and
heads are added before sharding on every rank alike, so their rank-0 initialisation travels too.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from trainers.runtime.distributed import rank_and_world
from trainers.methods.spec import Parallel


@contextlib.contextmanager
def meta_parameters():
    """Modules built inside hold their parameters on the meta device (no memory); buffers stay real."""
    register = nn.Module.register_parameter

    def on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def builds_empty(parallel: str) -> bool:
    """Whether this rank builds the model empty (meta) and receives its weights from rank 0."""
    return Parallel.of(parallel).sharded and rank_and_world()[0] != 0


def blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder blocks: the longest ModuleList in the model (OPT's decoder.layers, Llama's layers, ...)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ValueError(f"{type(model).__name__} has no list of decoder blocks to shard")
    return list(max(lists, key=len))


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def _to_meta(model: nn.Module, storage: torch.dtype) -> None:
    """Every parameter onto the meta device in the storage dtype, in place (ties kept, buffers untouched)."""
    done: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in done:
                    done[id(p)] = nn.Parameter(p.detach().to("meta", dtype=storage), requires_grad=p.requires_grad)
                module._parameters[name] = done[id(p)]


def shard(model: nn.Module, device: torch.device, compute: torch.dtype, storage: torch.dtype,
          offload: bool = False) -> nn.Module:
    """fully_shard every block, then the root, in place; rank 0's weights become every rank's shards.
    `storage`: the sharded parameters' dtype (fp32 for training); `compute`: what the blocks run in."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if offload and device.type != "cuda":
        from trainers.config import ConfigError
        raise ConfigError("--offload keeps GPU shards in host memory; on CPU workers they are there already: drop --offload")
    rank, world = rank_and_world()
    full = model.state_dict() if rank == 0 else {}  # rank 0 read the checkpoint; the others built the shape
    _to_meta(model, storage)  # every rank alike: the shards are allocated as they are filled
    # An explicit mesh of the process group's device: without one, fully_shard moves a CPU/gloo model to CUDA.
    mesh = init_device_mesh(device.type, (world,))
    policy = (MixedPrecisionPolicy(param_dtype=compute, reduce_dtype=torch.float32) if compute != storage
              else MixedPrecisionPolicy())
    kwargs = {"mesh": mesh, "mp_policy": policy, "offload_policy": CPUOffloadPolicy() if offload else OffloadPolicy()}
    for block in blocks(model):
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    # Allocate the shards in place (loading with assign=True would swap parameter objects that FSDP
    # then swaps again at its first forward); buffers are kept: rotary tables are computed, not stored.
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.to_empty(device="cpu" if offload else device)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    with warnings.catch_warnings():  # torch 2.13 warns about its own deprecated default-device lookup here
        warnings.simplefilter("ignore", UserWarning)
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    del full
    return model


def reshard(model: nn.Module) -> None:
    """Free every gathered weight. FSDP leaves the root gathered after a forward (its backward would
    need it), and while gathered `model.parameters()` yields the full tensors, not the shards an
    optimizer must hold."""
    for module in model.modules():
        if is_sharded(module):
            module.reshard()


def load_device(parallel: str, device: str) -> str:
    """Where rank 0 reads the weights: host memory under fsdp (they move to the device shard by shard)."""
    return "cpu" if Parallel.of(parallel).sharded else device


def prepare(model: nn.Module, parallel: str, device: torch.device, compute: torch.dtype, storage: torch.dtype,
            offload: bool = False) -> nn.Module:
    """The model as the worker group holds it: unchanged (ddp), or sharded (fsdp)."""
    if not Parallel.of(parallel).sharded:
        return model
    return shard(model, device, compute, storage, offload)


def make_trainable(model: nn.Module, cfg, prec, device: torch.device, wrap=None) -> tuple[nn.Module, dict]:
    """The student every weight-training method makes from a loaded model, in the one order fsdp needs:
    adapters (LoRA, BitFit; none: all weights) -> `wrap` (a head beside the backbone) -> trainable
    weights fp32 -> gradient checkpointing -> shard. Adapters and heads exist before sharding so their
    rank-0 initialisation travels with the weights; fp32 first so the shards hold fp32 masters."""
    from trainers.runtime import adapters
    model, peft_facts = adapters.apply(model, cfg.peft)
    if wrap is not None:
        model = wrap(model)
    prec.keep_trainable_fp32(model)
    if cfg.train.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return prepare(model, cfg.parallel, device, prec.compute, torch.float32, cfg.offload), peft_facts


def full_state(model: nn.Module) -> dict:
    """Every parameter whole, on every rank (a sharded model is gathered): for tests and checks."""
    if not is_sharded(model):
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
