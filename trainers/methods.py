"""The method registry and the checks every run passes before a model is loaded.

    python -c "from trainers.methods import METHODS; print(sorted(METHODS))"
"""
from __future__ import annotations

import os
from typing import Callable

from trainers import cd, ft, icl, pbft
from trainers.config import ConfigError, RunConfig, from_dict
from trainers.models import check_source
from trainers.prompts import get_prompt
from trainers.tasks import DataError, ood_names, resolve_data_dir, task_spec

METHODS: dict[str, Callable] = {
    "icl": icl.run,
    "ft": ft.run,
    "pbft": pbft.run,
    "cd": cd.run,
}

# Defaults that differ by method, applied where the caller set nothing.
METHOD_DEFAULTS: dict[str, dict] = {"cd": {"peft.kind": "lora"}}

TRAINED = {"ft", "pbft", "cd"}  # "icl" trains nothing


def get_method(name: str) -> Callable:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def resolve(overrides: dict) -> RunConfig:
    """A validated RunConfig from dotted-key overrides, with the method's own defaults filled in."""
    method = overrides.get("method", RunConfig.method)
    get_method(method)
    defaults = {k: v for k, v in METHOD_DEFAULTS.get(method, {}).items() if k not in overrides}
    cfg = RunConfig().replace(**{**defaults, **overrides})
    validate(cfg)
    return cfg


def validate(cfg: RunConfig) -> None:
    """Cheap checks that need no model: names exist, paths exist, the combination makes sense."""
    get_method(cfg.method)
    spec = task_spec(cfg.task)
    get_prompt(spec["family"], cfg.pattern or spec["default_pattern"])
    for name in cfg.ood or ():
        if name not in ood_names():
            raise DataError(f"unknown OOD set {name!r}; valid: {', '.join(ood_names())}, none")
    check_source(cfg.model)
    if cfg.cd.teacher_model:
        check_source(cfg.cd.teacher_model)
    data_dir = resolve_data_dir(cfg.data_dir)
    if data_dir and not os.path.isdir(data_dir):
        raise DataError(f"data folder {data_dir} does not exist (expected the hub's schema, as ../shared/data)")
    if cfg.method not in TRAINED and cfg.peft.kind != "none":
        raise ConfigError(f"{cfg.method} trains nothing: --peft {cfg.peft.kind} does not apply")


def run(cfg: RunConfig, report: Callable[[dict], None] | None = None) -> dict:
    """Run one configuration; `report(metrics)` is called once per epoch (ICL: once)."""
    validate(cfg)
    return get_method(cfg.method)(cfg, report)


__all__ = ["METHODS", "from_dict", "get_method", "resolve", "run", "validate"]
