"""Which parameters train: all of them, LoRA adapters (through `peft`), or biases only (BitFit).

    python -m trainers run --method pbft --peft lora --lora-r 8 ...   # or --peft bitfit / none

Only what the variant names trains (plus a new classification head, which the caller adds):
never the embeddings, which the reference's LoRA and BitFit runs trained by accident.

BitFit on architectures without biases (Llama, Gemma, ...): every linear layer of the decoder
that lacks a bias gets a zero-initialised trainable one, so the model's function is unchanged at
the start and BitFit has something to train. The output projection to the vocabulary (tied to
the embeddings in most models) is left alone.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from trainers.config import ConfigError, PeftConfig

# Attention query/value projections by architecture, for models that do not name them q_proj/v_proj.
LORA_TARGETS = {"gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "falcon": ["query_key_value"],
                "bloom": ["query_key_value"], "gptj": ["q_proj", "v_proj"]}


def default_lora_targets(model: nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    if {"q_proj", "v_proj"} <= names:  # OPT, Llama, Gemma, Mistral, Qwen, Phi ...
        return ["q_proj", "v_proj"]
    model_type = getattr(model.config, "model_type", "")
    if model_type in LORA_TARGETS:
        return LORA_TARGETS[model_type]
    raise ConfigError(f"no default LoRA targets for model type {model_type!r}; pass --lora-targets "
                      f"from its linear layers: {', '.join(sorted(names))}")


def _output_layers(model: nn.Module) -> set[int]:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {id(out)} if out is not None else set()


def add_zero_biases(model: nn.Module) -> int:
    """Give bias-free linear layers (not the vocabulary projection) a zero bias; returns how many."""
    skip, added = _output_layers(model), 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.bias is None and id(module) not in skip:
            module.bias = nn.Parameter(torch.zeros(module.out_features, dtype=module.weight.dtype,
                                                   device=module.weight.device))
            added += 1
    return added


def apply(model: nn.Module, cfg: PeftConfig) -> tuple[nn.Module, dict]:
    """Set `requires_grad` for the variant; returns the module to call and facts for the record."""
    if cfg.kind == "none":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, {}
    if cfg.kind == "bitfit":
        added = add_zero_biases(model)
        skip = _output_layers(model)
        for p in model.parameters():
            p.requires_grad_(False)
        for module in model.modules():
            if id(module) not in skip and isinstance(getattr(module, "bias", None), nn.Parameter):
                module.bias.requires_grad_(True)
        return model, {"zero_init_biases_added": added}
    from peft import LoraConfig, get_peft_model
    targets = list(cfg.lora_targets) if cfg.lora_targets else default_lora_targets(model)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, bias="none")
    try:
        with warnings.catch_warnings():  # peft calls a transformers property deprecated in 5.x
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, lora)
    except ValueError as e:
        raise ConfigError(f"LoRA could not adapt {targets}: {str(e).splitlines()[0]}") from None
    # The adapters are injected in place: calling the base model runs them, with the HF signature intact.
    return peft_model.get_base_model(), {"lora_targets": targets}
