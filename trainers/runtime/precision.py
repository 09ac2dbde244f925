"""Mixed precision: which dtype each part of a run holds its weights in, and what runs under autocast.

    python -m benchmarks.precision          # one AdamW step in fp32 vs bf16-autocast: do the weights move alike?

`--dtype` names the compute precision (auto: bf16 on a GPU that supports it, else fp32).
Inference-only models (ICL, the CD teacher) hold their weights in it. Training never updates
low-precision weights: an AdamW step of lr 1e-5 is below bf16's resolution for most weights, so
trainable parameters are fp32 master weights, frozen ones may stay in the compute dtype (LoRA,
BitFit), and forward/backward run under `torch.autocast` in the compute dtype; fp16 adds a
gradient scaler against underflow. The record says what each part used (`facts`).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from trainers.runtime.models import pick_dtype

_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    compute: torch.dtype

    @property
    def name(self) -> str:
        return _NAMES[self.compute]

    @property
    def mixed(self) -> bool:
        return self.compute != torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """Forward passes of a model whose weights may mix fp32 (trainable) and the compute dtype (frozen)."""
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute)

    def grad_scaler(self):
        """Loss scaling for fp16 (bf16 has fp32's exponent range and needs none)."""
        return torch.amp.GradScaler(self.device.type) if self.compute == torch.float16 else None

    def training_load_dtype(self, all_trainable: bool) -> str:
        """Load full fine-tuning in fp32 (every weight is a master weight); PEFT in the compute dtype."""
        return "float32" if all_trainable or not self.mixed else self.name

    def keep_trainable_fp32(self, model: torch.nn.Module) -> None:
        """Trainable parameters become fp32 master weights (a no-op where they already are)."""
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()


def resolve(name: str, device: torch.device) -> Precision:
    return Precision(device, pick_dtype(name, device))


def _dtypes(params) -> str | None:
    names = sorted({_NAMES.get(p.dtype, str(p.dtype)) for p in params})
    return "+".join(names) if names else None


def facts(model: torch.nn.Module, precision: Precision, trained: bool) -> dict:
    """What the record says about precision, read off the model's parameters."""
    params = list(model.parameters())
    if not trained:
        return {"compute": precision.name, "weights": _dtypes(params), "autocast": precision.mixed}
    return {"compute": precision.name, "autocast": precision.mixed,
            "trainable_weights": _dtypes([p for p in params if p.requires_grad]),
            "frozen_weights": _dtypes([p for p in params if not p.requires_grad]),
            "grad_scaler": precision.compute == torch.float16}
