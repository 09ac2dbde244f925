"""Typed, frozen, validated configuration for one run: one dataclass per concern.

    python -m trainers run --help        # every field below is a flag, with its help text

`RunConfig` holds what to run (method, task, model, data); `TrainConfig` the optimisation
recipe; `PeftConfig` which parameters train. A method's own options are its config section, a frozen
dataclass named by its spec (`CDConfig` in trainers/methods/cd_config.py), read as `cfg.cd`.
Each validates itself on construction and raises `ConfigError` with a one-line message, so a
bad value is caught before a model is loaded. `to_dict` / `from_dict` round-trip the nested
form that result records and search spaces use (`train.lr`, `peft.kind`, ...).
"""
from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from trainers.methods.spec import Parallel


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


def did_you_mean(name: str, options) -> str:
    """ (did you mean 'train.epochs'?)" for a near miss among `options`, else ""."""
    import difflib
    near = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.75)
    return f" (did you mean {near[0]!r}?)" if near else ""


def option(text: str, cli: str | None = None, choices: tuple | None = None, kind: str | None = None) -> dict:
    """A config field's metadata: its help text, its CLI flag when not the field's name, its choices, and
    `kind="model"` for a field naming a model to load (hub id or folder: checked, and keyed by content)."""
    return {"help": text, "cli": cli, "choices": choices, "kind": kind}


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def check_positive(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def validate_choices(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        choices = f.metadata.get("choices")
        if choices:
            check_choice(f.metadata.get("cli") or f.name, getattr(cfg, f.name), choices)


@dataclass(frozen=True)
class TrainConfig:
    lr: float | None = field(default=None, metadata=option(
        "peak learning rate; default by PEFT variant as in the reference: 1e-5 full, 1e-4 BitFit, 2e-4 LoRA"))
    epochs: int = field(default=40, metadata=option("training epochs (reference: 40)"))
    batch_size: int = field(default=32, metadata=option("effective batch size (reference: 32)"))
    grad_accum: int = field(default=1, metadata=option("gradient accumulation steps; micro-batch = batch_size / grad_accum"))
    warmup_ratio: float = field(default=0.1, metadata=option("fraction of steps with linear warm-up"))
    schedule: str = field(default="constant", metadata=option(
        "learning-rate schedule after warm-up", choices=("constant", "linear", "cosine")))
    weight_decay: float = field(default=0.0, metadata=option("AdamW weight decay (reference: 0)"))
    max_grad_norm: float = field(default=1.0, metadata=option("gradient clipping norm; 0 disables"))
    max_length: int = field(default=256, metadata=option("longest training input in tokens (reference: 256); longer ones are truncated from the left"))
    grad_checkpointing: bool = field(default=False, metadata=option("recompute activations in backward to save memory (large models)"))
    selection: str = field(default="last", metadata=option(
        "which epoch's weights are evaluated at the end", choices=("last", "best")))

    def __post_init__(self):
        validate_choices(self)
        if self.lr is not None:
            check_positive("lr", self.lr)
        check_positive("epochs", self.epochs)
        check_positive("batch_size", self.batch_size)
        check_positive("grad_accum", self.grad_accum)
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_positive("max_grad_norm", self.max_grad_norm, allow_zero=True)
        check_positive("max_length", self.max_length)


LORA_DEFAULT_LR, BITFIT_DEFAULT_LR, FULL_DEFAULT_LR = 2e-4, 1e-4, 1e-5


@dataclass(frozen=True)
class PeftConfig:
    kind: str = field(default="none", metadata=option(
        "which parameters train: all (none), LoRA adapters, or biases only (BitFit)",
        cli="peft", choices=("none", "lora", "bitfit")))
    lora_r: int = field(default=8, metadata=option("LoRA rank"))
    lora_alpha: float = field(default=16.0, metadata=option("LoRA scaling alpha"))
    lora_dropout: float = field(default=0.0, metadata=option("LoRA dropout"))
    lora_targets: tuple[str, ...] | None = field(default=None, metadata=option(
        "module names LoRA adapts (comma-separated); default: the attention q and v projections of the architecture"))

    def __post_init__(self):
        validate_choices(self)
        check_positive("lora_r", self.lora_r)
        check_positive("lora_alpha", self.lora_alpha)
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")

    def default_lr(self) -> float:
        return {"none": FULL_DEFAULT_LR, "lora": LORA_DEFAULT_LR, "bitfit": BITFIT_DEFAULT_LR}[self.kind]


@dataclass(frozen=True)
class RunConfig:
    method: str = field(default="icl", metadata=option("adaptation method (see trainers/methods/spec.py)"))
    task: str = field(default="rte", metadata=option("task name (see trainers/data/tasks.yaml)"))
    model: str = field(default="facebook/opt-125m", metadata=option("Hugging Face hub id or local folder of a causal LM"))
    shots: int = field(default=16, metadata=option("labelled examples: ICL demonstrations or the fine-tuning set (class-balanced)"))
    data_seed: int = field(default=0, metadata=option("seed of the few-shot draw (kept apart from --seed)"))
    seed: int | None = field(default=None, metadata=option(
        "seed of initialisation and data order; default: derived from --data-seed, so each replicate has its own"))
    pattern: str | None = field(default=None, metadata=option("prompt pattern (see trainers/data/prompts.yaml); default: the task's"))
    ood: tuple[str, ...] | None = field(default=None, metadata=option(
        "out-of-domain sets to evaluate (comma-separated, or 'none'); default: the task's"))
    hans_heuristics: tuple[str, ...] = field(default=("lexical_overlap",), metadata=option(
        "HANS heuristics to evaluate (comma-separated or 'all')"))
    data_dir: str | None = field(default=None, metadata=option(
        "local folder in the hub's schema (as ../shared/data); default: $FEWSHOT_DATA_DIR, else the hub"))
    methods_file: str | None = field(default=None, metadata=option(
        "a Python file of your own methods, each registered with its config section: see trainers/methods/spec.py"))
    tasks_file: str | None = field(default=None, metadata=option(
        "a YAML file of your own tasks (and OOD sets), beside the shipped ones: see trainers/data/user_tasks.py"))
    eval_limit: int | None = field(default=None, metadata=option("score at most N examples of each evaluation set (a fixed random subset)"))
    ood_limit: int | None = field(default=None, metadata=option(
        "score at most N examples of each OOD set (the data seed's stratified subset); default: eval_limit"))
    n_dev: int = field(default=32, metadata=option("size of the labelled dev split used for model selection and pruning"))
    n_unlabeled: int = field(default=64, metadata=option("unlabelled inputs drawn for context distillation"))
    eval_batch_size: int = field(default=8, metadata=option("queries scored per forward pass"))
    serve_queries: int = field(default=32, metadata=option(
        "in-domain queries timed for the serving cost (after a warm-up batch, serve_repeats times)"))
    serve_repeats: int = field(default=3, metadata=option("timed passes over the serving sample; the median counts"))
    prefix_cache: bool = field(default=True, metadata=option("score ICL queries against a key/value cache of the demonstrations"))
    final_eval: bool = field(default=True, metadata=option(
        "evaluate the in-domain and OOD sets at the end (the sweep's search trials judge on the dev split only)"))
    context_fit: str = field(default="truncate", metadata=option(
        "when k demonstrations + a query exceed the window: shorten the longest demonstration texts (truncate), "
        "skip queries that do not fit (drop_queries), or stop (fail)", choices=("truncate", "drop_queries", "fail")))
    max_context: int | None = field(default=None, metadata=option(
        "cap the context window below the model's own, in tokens (e.g. 2048 to reproduce OPT's window)"))
    dtype: str = field(default="auto", metadata=option(
        "compute precision: inference weights are held in it; training keeps trainable weights fp32 and runs under "
        "autocast in it (float16 adds loss scaling); auto: bf16 on a GPU that supports it, else fp32",
        choices=("auto", "float32", "bfloat16", "float16")))
    device: str = field(default="auto", metadata=option("device; auto: CUDA when available", choices=("auto", "cpu", "cuda")))
    parallel: str = field(default="ddp", metadata=option(
        "how a worker group holds the model: a whole copy per rank, gradients summed (ddp), or a shard of every "
        "decoder block per rank (fsdp: FSDP2, for models one device cannot hold)", choices=tuple(p.value for p in Parallel)))
    offload: bool = field(default=False, metadata=option(
        "fsdp only: keep the sharded parameters and optimizer state in CPU memory between uses"))
    train: TrainConfig = field(default_factory=TrainConfig)
    peft: PeftConfig = field(default_factory=PeftConfig)
    sections: tuple[tuple[str, Any], ...] = field(default_factory=lambda: default_sections(), metadata=option(
        "the methods' own config sections, by name (cd, cartridge, ...): read as cfg.cd, written as cd.temperature"))

    def __getattr__(self, name: str):
        """A method's config section by its name: cfg.cd, cfg.cartridge."""
        for section, value in self.__dict__.get("sections", ()):
            if section == name:
                return value
        raise AttributeError(f"RunConfig has no field or section {name!r}")

    def value(self, dotted: str):
        """The value of a dotted config key: "cartridge.tokens", "train.lr", "shots"."""
        section, _, name = dotted.rpartition(".")
        return getattr(getattr(self, section) if section else self, name)

    def model_paths(self) -> dict[str, str | None]:
        """Every model the run loads, by field name: `model`, then the sections' model fields (cd's teacher_model)."""
        return {"model": self.model, **{key.rpartition(".")[2]: self.value(key) for key in model_fields()
                                        if key.partition(".")[0] in dict(self.sections)}}

    def training_seed(self) -> int:
        """--seed, or one derived from the data seed (recorded as the run's `seed`)."""
        if self.seed is not None:
            return self.seed
        digest = hashlib.sha256(f"training seed for data seed {self.data_seed}".encode()).digest()
        return int.from_bytes(digest[:4], "little")

    def __post_init__(self):
        validate_choices(self)
        check_positive("shots", self.shots, allow_zero=True)
        check_positive("n_dev", self.n_dev, allow_zero=True)
        check_positive("n_unlabeled", self.n_unlabeled, allow_zero=True)
        check_positive("eval_batch_size", self.eval_batch_size)
        check_positive("serve_queries", self.serve_queries)
        check_positive("serve_repeats", self.serve_repeats)
        if self.eval_limit is not None:
            check_positive("eval_limit", self.eval_limit)
        if self.ood_limit is not None:
            check_positive("ood_limit", self.ood_limit)
        if self.max_context is not None:
            check_positive("max_context", self.max_context)
        if self.sharded and self.dtype == "float16":
            raise ConfigError("--parallel fsdp runs in float32 or bfloat16 (fp16's loss scaling is not wired through "
                              "FSDP here); use --dtype bfloat16")
        if self.offload and not self.sharded:
            raise ConfigError("--offload applies to --parallel fsdp only (ddp keeps a whole copy on every device)")

    def limit_of(self, set_name: str) -> int | None:
        """At most how many examples of one evaluation set are scored ("in_domain", or an OOD set's name)."""
        return self.eval_limit if set_name == "in_domain" or self.ood_limit is None else self.ood_limit

    def lr(self) -> float:
        return self.train.lr if self.train.lr is not None else self.peft.default_lr()

    @property
    def sharded(self) -> bool:
        """Every rank holds a shard of the model (--parallel fsdp), not a whole copy."""
        return Parallel.of(self.parallel).sharded

    def to_dict(self) -> dict:
        """The nested form records and search spaces use: each section under its own name."""
        out = dataclasses.asdict(self)
        out.update(out.pop("sections"))
        return out

    def replace(self, **changes) -> "RunConfig":
        """A copy with dotted-key changes applied: replace(**{"train.lr": 1e-4, "shots": 32})."""
        return from_dict(_set_dotted(self.to_dict(), changes))


BASE_SECTIONS = {"train": TrainConfig, "peft": PeftConfig}  # every method's; a method's own is in its spec


def method_sections() -> dict[str, type]:
    """The registered methods' config sections (trainers/methods/spec.py), in registration order."""
    from trainers.methods import spec
    return dict(s.section_class() for s in spec.METHODS.values() if s.section is not None)


def sections() -> dict[str, type]:
    return {**BASE_SECTIONS, **method_sections()}


def model_fields() -> list[str]:
    """The dotted keys of the methods' section fields that name a model to load (`option(kind="model")`)."""
    return [f"{name}.{f.name}" for name, cls in method_sections().items() for f in dataclasses.fields(cls)
            if f.metadata.get("kind") == "model"]


def default_sections() -> tuple[tuple[str, Any], ...]:
    return tuple((name, cls()) for name, cls in method_sections().items())


def _set_dotted(d: dict, changes: dict) -> dict:
    known = sections()
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        target = d.get(section, {}) if section else d
        if section and section not in known or name not in target:
            raise ConfigError(f"unknown config key {key!r}{did_you_mean(key, valid_keys())}; valid keys: {', '.join(valid_keys())}")
        target[name] = value
    return d


def valid_keys() -> list[str]:
    keys = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("train", "peft", "sections")]
    for section, cls in sections().items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _convert(name: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field's type hint, converting what YAML and the CLI leave as text."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{name} must be a list of names, got {value!r}")
        return tuple(i.strip() for i in items if i.strip())
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        try:
            if not isinstance(value, bool):
                return float(value)
        except (TypeError, ValueError):
            pass
    elif hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"{name} must be of type {getattr(hint, '__name__', hint)}, got {value!r}")


def _coerce(cls, d: dict, nested: dict | None = None):
    names = {f.name: f for f in dataclasses.fields(cls) if f.name != "sections"}
    unknown = set(d) - set(names) - set(nested or ())
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {sorted(unknown)}{did_you_mean(min(unknown), names)}; "
                          f"valid: {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: v if k in BASE_SECTIONS or k in (nested or ()) else _convert(k, v, hints[k]) for k, v in d.items()})


def use_methods_file(path: str | None) -> None:
    """A researcher's own methods (and their sections) join the shipped ones in this process."""
    from trainers.methods import spec
    try:
        spec.use_methods_file(path)
    except spec.MethodsFileError as e:
        raise ConfigError(str(e)) from None


def from_dict(d: dict) -> RunConfig:
    """Build a RunConfig from the nested dict form (as written in result records); a config naming a
    `methods_file` imports it first, so its methods' sections are known."""
    d = dict(d)
    use_methods_file(d.get("methods_file"))
    base = {name: _coerce(cls, d.pop(name, {}) or {}) for name, cls in BASE_SECTIONS.items()}
    own = method_sections()
    parsed = tuple((name, _coerce(cls, d.pop(name, {}) or {})) for name, cls in own.items())
    return _coerce(RunConfig, {**d, **base, "sections": parsed}, nested=("sections",))
