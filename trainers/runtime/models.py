"""Load any Hugging Face causal LM (OPT, Llama, Gemma, ...) by hub id or local folder.

    python -c "from trainers.runtime.models import load_causal_lm; m, t = load_causal_lm('facebook/opt-125m'); print(m.config)"

The device is the GPU when there is one; the dtype is bf16 on a GPU that supports it and fp32
otherwise (training keeps its trainable weights in fp32 whatever the dtype: `trainers/runtime/precision.py`). Remote code is never trusted. Tokenizers pad on the right: scoring reads each row's
own last real token, so right padding leaves every real token's position unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a model is loaded: naming a model (a space's check) needs none of it
    import torch


class ModelError(ValueError):
    """A model cannot be found or loaded; the message names it and the way out."""


def dtypes() -> dict:
    import torch
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> "torch.device":
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda asked for, but CUDA is not available here; use --device cpu or auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":  # the launcher (Ray Train, torchrun) has set this process's device
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def pick_dtype(name: str, device: "torch.device") -> "torch.dtype":
    import torch
    if name != "auto":
        return dtypes()[name]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def check_source(name: str) -> None:
    """A name that looks like a path must exist; anything else is taken for a hub id."""
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().exists():
        raise ModelError(f"model folder {name} does not exist; pass an existing folder or a hub id such as facebook/opt-125m")


def _resolve(name: str) -> str:
    check_source(name)
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def _revision(name: str) -> dict:
    """{"revision": commit} for a hub id the sweep pinned (FEWSHOT_HUB_REVISIONS), else nothing."""
    from trainers import settings
    commit = settings.get("FEWSHOT_HUB_REVISIONS").get(name)
    return {"revision": commit} if commit else {}


def load_tokenizer(name: str):
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(_resolve(name), trust_remote_code=False, **_revision(name))
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load the tokenizer of {name} ({str(e).splitlines()[0]}); "
                         f"pass a local folder or a reachable hub id") from None
    tok.padding_side = "right"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def _load(auto_cls, name: str, dtype: str, device: str, empty: bool = False):
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # per-tensor loading bars drown the run's own progress
    dev = pick_device(device)
    if empty:  # the shape alone: parameters on the meta device, to be filled from rank 0 (trainers/runtime/sharding.py)
        from trainers.runtime.sharding import meta_parameters
        with meta_parameters():
            return auto_cls.from_config(load_config(name), dtype=pick_dtype(dtype, dev), trust_remote_code=False).eval()
    kwargs = {"dtype": pick_dtype(dtype, dev), "trust_remote_code": False, **_revision(name)}
    if dev.type == "cuda":
        kwargs["device_map"] = {"": dev.index or 0}  # load straight onto the GPU, no CPU copy of the weights
    try:
        model = auto_cls.from_pretrained(_resolve(name), **kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model {name} ({str(e).splitlines()[0]}); "
                         f"pass a local folder or a reachable hub id") from None
    return model.to(dev).eval()


def load_causal_lm(name: str, dtype: str = "auto", device: str = "auto", empty: bool = False):
    """(model, tokenizer): the LM with its head, for ICL, PBFT and context distillation.
    `empty`: built from the config with its parameters on the meta device (no weights read)."""
    from transformers import AutoModelForCausalLM
    check_causal_lm(name, load_config(name))  # transformers would load a masked LM's encoder as a "causal" one
    return _load(AutoModelForCausalLM, name, dtype, device, empty), load_tokenizer(name)


def load_backbone(name: str, dtype: str = "auto", device: str = "auto", empty: bool = False):
    """(model, tokenizer): the decoder without its LM head, for a classification head on top."""
    from transformers import AutoModel
    return _load(AutoModel, name, dtype, device, empty), load_tokenizer(name)


def load_config(name: str):
    """The model's config alone (its shape and window), without its weights."""
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(_resolve(name), trust_remote_code=False, **_revision(name))
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load the config of {name} ({str(e).splitlines()[0]}); "
                         f"pass a local folder or a reachable hub id") from None


CAUSAL_HEADS = ("CausalLM", "LMHeadModel", "ConditionalGeneration")


def check_causal_lm(name: str, config) -> None:
    """Refuse a model that is not a causal (decoder-only) language model, by its config: its type must
    have a causal-LM class in transformers, and the architectures its config.json names (when it
    names any) must include one (BERT's type has a decoder variant; its checkpoints are masked LMs)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    archs = list(getattr(config, "architectures", None) or [])
    kind = getattr(config, "model_type", "?")
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (archs and not any(h in a for a in archs for h in CAUSAL_HEADS)):
        raise ModelError(f"{name} is not a causal language model (its config: model_type {kind!r}"
                         + (f", architectures {', '.join(archs)}" if archs else "") + "); this tool adapts decoder-only "
                         "LMs: give one such as facebook/opt-125m or a SmolLM2 / Llama folder")


def max_positions(model_or_config) -> int:
    """Longest sequence the model accepts (the tokenizer's model_max_length is often a placeholder)."""
    cfg = getattr(model_or_config, "config", model_or_config)
    cfg = getattr(cfg, "text_config", None) or cfg  # multimodal configs (Gemma 3) keep the LM's apart
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def context_window(model, max_context: int | None) -> int:
    """Tokens a prompt may take: the model's own window, or less with --max-context."""
    own = max_positions(model)
    return min(own, max_context) if max_context else own


def count_parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total}
