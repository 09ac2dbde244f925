"""The training loop shared by vanilla FT, pattern-based FT and the context-distillation student.

    python -m trainers run --method pbft --task rte --model PATH --lr 1e-5 --epochs 40 --batch-size 32

AdamW; linear warm-up over the first `warmup_ratio` of the steps, then constant (the reference
schedule), linear decay or cosine; gradient accumulation; clipping. After every epoch the dev
split is scored and `report(metrics)` is called. A non-finite loss stops training and the run is
marked `diverged`. With several data-parallel ranks each global batch is split across them and
the gradients are summed with one all-reduce per step (no wrapper around the model), so the
update equals the single-process one on the same global batch. Under mixed precision the forward
runs under autocast, the parameters stay fp32, and fp16 scales the loss (`trainers/runtime/precision.py`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from trainers.config import TrainConfig
from trainers.contract import Epoch, EvalBlock, Metrics, Record
from trainers.runtime.distributed import all_reduce, rank_and_world, say
from trainers.runtime.evaluation import evaluate_sets
from trainers.runtime.metering import SETUP_PHASE
from trainers.runtime.models import count_parameters
from trainers.runtime.precision import Precision
from trainers.records import build_record
from trainers.runtime.sharding import reshard


@dataclass
class TrainOutcome:
    status: str = "completed"  # or "diverged"
    history: list[Epoch] = field(default_factory=list)
    best_epoch: int = 0
    dev: EvalBlock | None = None  # dev metrics of the selected epoch (its weights are the final ones)
    steps: int = 0
    error: str | None = None


def lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    warmup = math.ceil(cfg.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 1 - progress) if cfg.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _sync_grads(params: list[torch.nn.Parameter]) -> None:
    if rank_and_world()[1] == 1 or any(isinstance(p, DTensor) for p in params):  # FSDP reduced them already
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def _chars(item) -> int:
    """An item's text length: micro-batches of similar lengths carry less padding (the step's
    gradient is the same sum over the batch whatever the grouping)."""
    return sum(len(getattr(item, f, None) or "") for f in ("text1", "text2"))


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's shuffled batches of item indices (public so that a benchmark can replay the order)."""
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _step(model_params: list, optimizer, scheduler, scaler, cfg: TrainConfig) -> None:
    """One optimiser step on the gradients the micro-batches left (summed across ranks first)."""
    _sync_grads(model_params)  # before unscaling: every rank then sees the same infs and skips the same steps
    if scaler:
        scaler.unscale_(optimizer)
    if cfg.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model_params, cfg.max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def _batch_loss(items: list, batch: list[int], loss_fn, cfg: TrainConfig, autocast, scaler, sharded: bool) -> float:
    """Forward and backward over this rank's share of a batch, in micro-batches; the batch mean loss
    summed over ranks. Sharded ranks gather weights in every forward, so they all run as many
    micro-batches as the largest share needs (an idle rank's extra one weighs 0)."""
    rank, world = rank_and_world()
    mine = batch[rank::world]
    if cfg.grad_accum > 1:  # similar lengths share a micro-batch
        mine = sorted(mine, key=lambda j: _chars(items[j]))
    largest = math.ceil(len(batch) / world)
    micro = max(1, math.ceil((largest if sharded else len(mine)) / cfg.grad_accum))
    chunks = [mine[i:i + micro] for i in range(0, len(mine), micro)]
    if sharded:
        chunks += [[]] * (math.ceil(largest / micro) - len(chunks))
    step_loss = torch.zeros(())
    for chunk in chunks:
        with autocast():
            if chunk:
                loss = loss_fn([items[j] for j in chunk]) * (len(chunk) / len(batch))  # summed over chunks and ranks: the batch mean
            else:
                loss = loss_fn([items[batch[0]]]) * 0.0
        scaled = loss * world if sharded else loss  # FSDP averages over ranks; the shares must sum
        (scaler.scale(scaled) if scaler else scaled).backward()
        step_loss += loss.detach().float().cpu()
    return all_reduce(float(step_loss), "sum")


def train(model: torch.nn.Module, items: list, loss_fn: Callable[[list], torch.Tensor], dev_fn: Callable[[], EvalBlock],
          cfg: TrainConfig, lr: float, seed: int, report: Callable[[Epoch], None] | None = None,
          precision: Precision | None = None, tokens: int | None = None) -> TrainOutcome:
    """Train the parameters of `model` that require grad on `items`; `loss_fn(batch)` is a batch mean.
    `tokens`: the items' input tokens, for each epoch's training tokens per second."""
    reshard(model)  # after inference passes (CD's teacher) the root may still hold its gathered weights
    params = [p for p in model.parameters() if p.requires_grad]
    sharded = any(isinstance(p, DTensor) for p in params)
    autocast = precision.autocast if precision else contextlib.nullcontext
    scaler = precision.grad_scaler() if precision else None
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(items) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps_per_epoch * cfg.epochs))
    generator = torch.Generator().manual_seed(seed)
    outcome, best_acc, best_state = TrainOutcome(), -math.inf, None
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        start, losses = time.perf_counter(), []
        for batch in epoch_batches(len(items), cfg.batch_size, generator):
            total = _batch_loss(items, batch, loss_fn, cfg, autocast, scaler, sharded)
            if not math.isfinite(total):
                optimizer.zero_grad(set_to_none=True)
                outcome.status, outcome.error = "diverged", f"non-finite loss ({total}) at epoch {epoch}, step {outcome.steps + 1}"
                say(f"epoch {epoch}/{cfg.epochs}: diverged, {outcome.error}")
                break
            _step(params, optimizer, scheduler, scaler, cfg)
            outcome.steps += 1
            losses.append(total)
        if outcome.status == "diverged":
            break
        trained = time.perf_counter() - start
        model.eval()
        dev = dev_fn()
        entry = Epoch(epoch=epoch, train_loss=round(sum(losses) / len(losses), 6), dev_accuracy=dev.accuracy,
                      lr=scheduler.get_last_lr()[0], epoch_seconds=round(time.perf_counter() - start, 3),
                      tokens_per_second=round(tokens / max(trained, 1e-9), 1) if tokens else None)
        outcome.history.append(entry)
        say(f"epoch {epoch}/{cfg.epochs}: train loss {entry.train_loss:.4f}, dev accuracy {dev.accuracy:.3f}, "
            f"{entry.epoch_seconds:.1f} s")
        if report:
            report(dataclasses.replace(entry))
        if cfg.selection == "last":
            outcome.dev = dev
        elif dev.accuracy > best_acc:
            best_acc, outcome.best_epoch, outcome.dev = dev.accuracy, epoch, dev
            best_state = {id(p): p.detach().clone() for p in params}
    _restore(outcome, params, best_state, cfg)
    model.eval()
    return outcome


def _restore(outcome: TrainOutcome, params: list, best_state: dict | None, cfg: TrainConfig) -> None:
    """Leave the model on the selected epoch's weights (the last, or the best on dev)."""
    if cfg.selection == "last" or best_state is None:
        outcome.best_epoch = len(outcome.history)
        return
    with torch.no_grad():
        for p in params:
            p.copy_(best_state[id(p)])


def reporting_setup(report, meter):
    """The report a distilling method trains with: a trial the pruner stops has only its reports, so its
    teacher's cost (the meter's SETUP_PHASE) rides on epoch 1's as `setup_seconds` (what the analysis
    adds to a trial's adaptation time)."""
    if report is None:
        return None
    setup = meter.phases[SETUP_PHASE].seconds
    return lambda entry: report(dataclasses.replace(entry, setup_seconds=setup) if entry.epoch == 1 else entry)


def finish(cfg, prep, meter, model, outcome: TrainOutcome, predict, *, resolved: dict, teacher: Metrics | None = None,
           extra: dict | None = None, diagnostics: Callable[[], dict] | None = None, kv_bytes_per_query: int = 0) -> Record:
    """The end every trained method shares: a completed run's selected weights scored on the evaluation
    sets (with `final_eval`), its dev scores those of the selected epoch, then `diagnostics()` (with
    `final_eval`, in the meter's "diagnostics" phase) and the record (a distilling method's `teacher`
    metrics beside its own)."""
    metrics, extra = Metrics(teacher=teacher), {"steps": outcome.steps, "selected_epoch": outcome.best_epoch, **(extra or {})}
    if outcome.status == "completed":
        if cfg.final_eval:
            metrics = evaluate_sets(predict, prep, cfg, meter=meter, kv_bytes_per_query=kv_bytes_per_query)
            metrics.teacher = teacher
        metrics.dev = outcome.dev  # the selected epoch's: the same weights, scored once
        if cfg.final_eval and diagnostics is not None:
            with meter.phase("diagnostics"):
                extra.update(diagnostics())
    return build_record(cfg, outcome.status, resolved=prep.resolved(cfg, **resolved), metrics=metrics,
                        resources=meter.resources(), params=count_parameters(model), history=outcome.history,
                        extra=extra, error=outcome.error)
