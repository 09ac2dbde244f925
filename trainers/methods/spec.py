"""What each method is, in one place: a typed, frozen spec per method, read by every layer that needs
to know a method's traits (the config checks, the sweep's cells, the costs, the memory plan, the
reports). A leaf module: it imports nothing of the project, so anything may import it.

    python -c "from trainers.methods.spec import METHODS; print({m: s.trains for m, s in METHODS.items()})"

Adding a method is one module in `trainers/methods/` with a `run(cfg, report)` entry point and one entry
here; nothing else compares method names.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable


class Parallel(str, Enum):
    """How a worker group holds the model: a whole copy per rank (ddp) or a shard of every block (fsdp)."""
    DDP = "ddp"
    FSDP = "fsdp"

    @classmethod
    def of(cls, value: "str | Parallel") -> "Parallel":
        return value if isinstance(value, cls) else cls(value)

    @property
    def sharded(self) -> bool:
        return self is Parallel.FSDP


PEFT_KINDS = ("none", "lora", "bitfit")


@dataclass(frozen=True)
class MemoryTraits:
    """What the memory plan (`trainers/runtime/memory_plan.py`) needs to know of a method."""
    trains: str = "none"            # "none", "peft" (the method's PEFT variant decides), or "prefix" (a KV prefix)
    head: bool = False              # a new classification head beside the backbone
    context_cache: bool = False     # holds the demonstrations' key/value cache (ICL, a CD teacher)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    entry: str                                   # "module:function", imported when the method runs
    summary: str
    trains: bool                                 # adapts weights (searched, with an adaptation cost)
    peft: tuple[str, ...] = ("none",)            # the PEFT variants it accepts
    label_words: bool = True                     # scores label words (False: a classification head)
    adaptation_phases: tuple[str, ...] = ()      # metered phases that adapt the model (its cost)
    memory: MemoryTraits = field(default_factory=MemoryTraits)
    defaults: dict = field(default_factory=dict)  # config values that differ by method, where the caller set none
    shardable: bool = True                       # runs under parallel: fsdp
    unsharded_why: str = ""                      # why not, when it does not
    distils: bool = False                        # learns from a teacher with the demonstrations (n_unlabeled inputs)
    kv_prefix: bool = False                      # serves behind a trained key/value prefix (cartridge.tokens of them)

    @property
    def run(self) -> Callable:
        module, name = self.entry.split(":")
        return getattr(importlib.import_module(module), name)

    def variant(self, peft: str) -> str:
        """The cell's name for this method with a PEFT variant: "pbft+lora", "icl"."""
        return self.name if peft == "none" or not self.trains else f"{self.name}+{peft}"


TRAINING = ("train", "dev")
METHODS: dict[str, MethodSpec] = {s.name: s for s in [
    MethodSpec("icl", "trainers.methods.icl:run", "k demonstrations in the prompt; nothing trains", trains=False,
               memory=MemoryTraits(context_cache=True)),
    MethodSpec("ft", "trainers.methods.ft:run", "a new classification head on the last token, backbone full/LoRA/BitFit",
               trains=True, peft=PEFT_KINDS, label_words=False, adaptation_phases=TRAINING,
               memory=MemoryTraits(trains="peft", head=True)),
    MethodSpec("pbft", "trainers.methods.pbft:run", "the LM head's label words, backbone full/LoRA/BitFit", trains=True,
               peft=PEFT_KINDS, adaptation_phases=TRAINING, memory=MemoryTraits(trains="peft")),
    MethodSpec("cd", "trainers.methods.cd:run", "a student without the demonstrations matches the teacher that has them",
               trains=True, peft=PEFT_KINDS, adaptation_phases=("teacher_targets", *TRAINING),
               memory=MemoryTraits(trains="peft", context_cache=True), defaults={"peft.kind": "lora"}, distils=True),
    MethodSpec("cartridge", "trainers.methods.cartridge:run", "CD into a trained key/value prefix of the frozen model",
               trains=True, adaptation_phases=("teacher_targets", *TRAINING),
               memory=MemoryTraits(trains="prefix", context_cache=True), defaults={"train.lr": 1e-3}, distils=True,
               kv_prefix=True, shardable=False,
               unsharded_why="its prefix lives in peft's prompt encoder, outside the decoder blocks fsdp shards"),
]}


class UnknownMethod(ValueError):
    """A method name the registry does not hold."""


def get(name: str) -> MethodSpec:
    if name not in METHODS:
        raise UnknownMethod(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def parse_variant(variant: str) -> tuple[str, str]:
    """"pbft+lora" -> ("pbft", "lora"); "icl" -> ("icl", "none")."""
    method, _, peft = variant.partition("+")
    return method, peft or "none"
