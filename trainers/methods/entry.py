"""The method registry's checks and entry: every run passes `validate` before a model is loaded.

    python -c "from trainers.methods.entry import METHODS; print(sorted(METHODS))"

What each method is (its entry point, whether it trains, the PEFT variants it accepts, ...) lives in
`trainers/methods/spec.py`; this module only applies it to a configuration.
"""
from __future__ import annotations

import os
from typing import Callable

from trainers.methods import spec
from trainers.config import ConfigError, RunConfig, from_dict, use_methods_file
from trainers.runtime.models import check_source
from trainers.data.prompts import get_prompt
from trainers.methods.spec import METHODS
from trainers.data.tasks import DataError, missing_data_dir, ood_names, resolve_data_dir, task_spec, use_tasks_file


def get_method(name: str) -> Callable:
    try:
        return spec.get(name).run
    except spec.UnknownMethod as e:
        raise ConfigError(str(e)) from None


def resolve(overrides: dict) -> RunConfig:
    """A validated RunConfig from dotted-key overrides, with the method's own defaults filled in."""
    method = overrides.get("method", RunConfig.method)
    use_methods_file(overrides.get("methods_file"))  # a method of one's own is known before its defaults are read
    try:
        defaults = {k: v for k, v in spec.get(method).defaults.items() if k not in overrides}
    except spec.UnknownMethod as e:
        raise ConfigError(str(e)) from None
    cfg = RunConfig().replace(**{**defaults, **overrides})
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cheap checks that need no model: names exist, paths exist, the combination makes sense."""
    try:
        method = spec.get(cfg.method)
    except spec.UnknownMethod as e:
        raise ConfigError(str(e)) from None
    use_tasks_file(cfg.tasks_file)  # a user's own tasks join the shipped ones in this process
    task = task_spec(cfg.task)
    get_prompt(task["family"], cfg.pattern or task["default_pattern"])
    for name in cfg.ood or ():
        if name not in ood_names():
            raise DataError(f"unknown OOD set {name!r}; valid: {', '.join(ood_names())}, none")
    for model in cfg.model_paths().values():  # the student's, and any a method's section names (a teacher)
        if model:
            check_source(model)
    data_dir = resolve_data_dir(cfg.data_dir)
    if data_dir and not os.path.isdir(data_dir):
        raise DataError(missing_data_dir(data_dir))
    if cfg.peft.kind not in method.peft:
        raise ConfigError(f"{cfg.method} accepts --peft {' or '.join(method.peft)}, not {cfg.peft.kind}"
                          + (" (it trains nothing)" if not method.trains else ""))
    if cfg.sharded and not method.shardable:
        raise ConfigError(f"{cfg.method} does not run under --parallel fsdp ({method.unsharded_why}); use "
                          f"--parallel ddp, which gives each worker the whole model")
    if method.kv_prefix and cfg.train.grad_checkpointing:
        raise ConfigError(f"{cfg.method} trains a key/value prefix, which gradient checkpointing does not support "
                          f"(peft); drop --grad-checkpointing")


def run(cfg: RunConfig, report: Callable[[dict], None] | None = None) -> dict:
    """Run one configuration; `report(metrics)` is called once per epoch (ICL: once)."""
    validate(cfg)
    return get_method(cfg.method)(cfg, report)


__all__ = ["METHODS", "from_dict", "get_method", "resolve", "run", "validate"]
