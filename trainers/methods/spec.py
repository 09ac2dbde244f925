"""What each method is, in one place: a typed, frozen spec per method, read by every layer that needs
to know a method's traits (the config checks, the sweep's cells, the costs, the memory plan, the
reports). A leaf module: it imports nothing of the project, so anything may import it.

    python -c "from trainers.methods.spec import METHODS; print({m: s.trains for m, s in METHODS.items()})"

Adding a method is one module with a `run(cfg, report)` entry point and one `MethodSpec`: a shipped
method's entry stands in `METHODS` below; a researcher's own module (anywhere) calls `register(...)`
when it is imported and is named by the run config's `methods_file` (see `use_methods_file`), so every
process that reads the config (the driver, each Ray trial) imports it. A method's own config section
(its options, a frozen dataclass) is named in its spec and owned by its module; nothing else compares
method names.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable


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
    prefix_tokens: str = ""         # the dotted config key holding a trained key/value prefix's length


@dataclass(frozen=True)
class MethodSpec:
    name: str
    entry: str | Callable                        # "module:function", imported when the method runs (or the function)
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
    kv_prefix: bool = False                      # serves behind a trained key/value prefix (memory.prefix_tokens of them)
    section: tuple[str, Any] | None = None       # (name, "module:Class" or the class): the method's own config section

    @property
    def run(self) -> Callable:
        return _resolve(self.entry)

    def section_class(self) -> tuple[str, type] | None:
        """The method's config section, its class imported from the method's module."""
        return None if self.section is None else (self.section[0], _resolve(self.section[1]))

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
               memory=MemoryTraits(trains="peft", context_cache=True), defaults={"peft.kind": "lora"}, distils=True,
               section=("cd", "trainers.methods.cd_config:CDConfig")),
    MethodSpec("cartridge", "trainers.methods.cartridge:run", "CD into a trained key/value prefix of the frozen model",
               trains=True, adaptation_phases=("teacher_targets", *TRAINING),
               memory=MemoryTraits(trains="prefix", context_cache=True, prefix_tokens="cartridge.tokens"),
               defaults={"train.lr": 1e-3}, distils=True, kv_prefix=True, shardable=False,
               section=("cartridge", "trainers.methods.cartridge_config:CartridgeSection"),  # it reads cd's section too
               unsharded_why="its prefix lives in peft's prompt encoder, outside the decoder blocks fsdp shards"),
]}


SHIPPED = frozenset(METHODS)


class UnknownMethod(ValueError):
    """A method name the registry does not hold."""


class MethodsFileError(ValueError):
    """A methods file that cannot be imported, or whose registration is refused."""


def _resolve(target: "str | Callable | type"):
    if not isinstance(target, str):
        return target
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def register(method: MethodSpec) -> MethodSpec:
    """Add a method of one's own (called by its module when imported). Registering the same name again
    from the same module replaces it (a re-import); a shipped method's name is refused."""
    old = METHODS.get(method.name)
    if old is not None and (method.name in SHIPPED or getattr(old.run, "__module__", None) != getattr(method.run, "__module__", None)):
        raise MethodsFileError(f"method {method.name!r} is already registered; give yours another name")
    taken = {s.section[0] for s in METHODS.values() if s.section and s.name != method.name}
    if method.section and (method.section[0] in taken or method.section[0] in ("train", "peft")):
        raise MethodsFileError(f"config section {method.section[0]!r} belongs to another method; give yours another name")
    METHODS[method.name] = method
    return method


def use_methods_file(path: str | None) -> None:
    """Import a researcher's own methods module (a .py file calling `register`) in this process, once."""
    if not path:
        return
    file = Path(path).expanduser().resolve()
    name = "fewshot_methods_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    if name in sys.modules:
        return
    if not file.is_file() or file.suffix != ".py":
        raise MethodsFileError(f"methods_file {path}: no such Python file; give the path of a .py module that "
                               f"calls trainers.methods.spec.register(...)")
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, file))
    sys.modules[name] = module
    try:
        module.__spec__.loader.exec_module(module)
    except MethodsFileError:
        del sys.modules[name]
        raise
    except Exception as e:  # a researcher's module: say which and why in one line
        del sys.modules[name]
        raise MethodsFileError(f"methods_file {path} failed to import: {type(e).__name__}: {e}") from None


def get(name: str) -> MethodSpec:
    if name not in METHODS:
        raise UnknownMethod(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def parse_variant(variant: str) -> tuple[str, str]:
    """"pbft+lora" -> ("pbft", "lora"); "icl" -> ("icl", "none")."""
    method, _, peft = variant.partition("+")
    return method, peft or "none"
