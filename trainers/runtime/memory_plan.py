"""Per-worker memory of a run, estimated from the model's config alone (never its weights).

    python -m benchmarks.memory_plan      # the estimate against the measured peak, every method x PEFT variant
    python -c "from trainers.runtime.memory_plan import shape_of, estimate; print(estimate(shape_of('facebook/opt-30b'), method='ft', peft='none', parallel='fsdp', workers=4))"

Parts, in bytes per worker:
- weights: inference (ICL, the CD teacher of another model) in the compute dtype; training keeps
  trainable weights fp32 (master copies) and frozen ones in the compute dtype; under fsdp every
  weight is an fp32 shard (1/workers) plus the blocks gathered in the compute dtype at a time (two:
  the one running and the one prefetched) and the root (embeddings, final norm) gathered whole.
- trainable: gradients (fp32) + AdamW's two moments (fp32) = 12 bytes per trainable parameter,
  sharded under fsdp.
- activations: training keeps, per decoder layer and micro-batch row, about tokens x hidden x 27
  bytes in 16-bit, twice that in fp32; with gradient checkpointing only each layer's input plus one
  layer's full set. 27 is measured (SmolLM2-135M, CPU, fp32, 8 rows of 206 tokens: 1,477 MiB over
  30 layers); Korthikanti et al. (2022) count 34 + 5 x heads x tokens / hidden, which includes
  dropout masks and the attention matrix that SDPA attention without dropout does not keep.
  The longest training input sets the length (every row of its batch is padded to it).
- prefix (cartridge): p trained key/value positions per layer, fp32 with their AdamW state; the
  frozen model stays in the compute dtype. The queries' activations are counted as for any student
  (attending to p more positions adds a score row per position, small beside them: not counted).
- kv_cache: ICL and the CD teacher keep the k demonstrations' keys and values for every layer
  (2 x layers x kv_heads x head_dim x context tokens), and each batch attends to them.
- optimizer step (GPU): AdamW's foreach step holds one more fp32 copy of the trainable (shard) while
  it runs, after the activations are freed; the larger of the two counts.
- loading (fsdp on CPU workers): rank 0 holds the whole checkpoint beside its shard while it
  broadcasts; the peak is the larger of that and the run's. (On GPUs the checkpoint is in host memory.)
- runtime: what the process holds beside the model (the CPU interpreter with torch and
  transformers loaded; 0 on a GPU, whose measured peak is the allocator's).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from trainers.methods import spec
from trainers.methods.spec import Parallel

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CPU_RUNTIME_MIB = 420  # measured here: python -c "import torch, transformers, peft" then a tokenizer and a task loaded
ACT_PER_TOKEN = 27  # activation bytes per token, hidden unit and layer in 16-bit (see above)
ADAMW_STATE = 12  # fp32 gradient + two fp32 moments, per trainable parameter
MIB = 2 ** 20
UNGATED = {"opt", "gpt2", "gpt_neox", "gptj", "bloom", "falcon", "gpt_bigcode"}  # two-matrix MLPs


@dataclass(frozen=True)
class Shape:
    params: int
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int
    positions: int
    root_params: int  # outside the decoder blocks: embeddings, final norm, an untied output head


def _get(cfg, *names, default=None):
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


def shape_from_config(cfg) -> Shape:
    """The numbers the plan needs, from a transformers config (text part of a multimodal one)."""
    cfg = getattr(cfg, "text_config", None) or cfg
    hidden = _get(cfg, "hidden_size", "n_embd", "d_model")
    layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    heads = _get(cfg, "num_attention_heads", "n_head")
    kv_heads = _get(cfg, "num_key_value_heads", default=heads)
    head_dim = _get(cfg, "head_dim", default=hidden // heads)
    vocab = _get(cfg, "vocab_size")
    inter = _get(cfg, "intermediate_size", "ffn_dim", "n_inner", default=4 * hidden)
    positions = _get(cfg, "max_position_embeddings", "n_positions", default=2048)
    proj = _get(cfg, "word_embed_proj_dim", default=hidden)
    gated = 2 if getattr(cfg, "model_type", "") in UNGATED else 3  # Llama-style MLPs have gate, up and down
    attn = hidden * head_dim * (heads * 2 + kv_heads * 2)
    block = attn + gated * hidden * inter + 4 * hidden
    embed = vocab * proj + (positions * hidden if getattr(cfg, "model_type", "") in ("opt", "gpt2") else 0)
    tied = getattr(cfg, "tie_word_embeddings", True)
    root = embed + (0 if tied else vocab * proj) + 2 * hidden + (2 * proj * hidden if proj != hidden else 0)
    return Shape(layers * block + root, layers, hidden, heads, kv_heads, head_dim, vocab, inter, positions, root)


@functools.lru_cache(maxsize=64)
def shape_of(model: str) -> Shape:
    """The model's shape from its config.json (a local folder, or the hub's, cached by transformers)."""
    from trainers.runtime.models import load_config
    return shape_from_config(load_config(model))


def kv_bytes_per_token(shape: Shape, dtype_bytes: int) -> int:
    """Key and value bytes one context token holds across the layers: what a query attends to per token."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes


def kv_positions(cfg, tokens: int) -> list[int]:
    """Per layer, the context positions its key/value cache keeps (and a query attends to) after
    `tokens` of context: all of them, except in a sliding-window layer (five of Gemma 3's six), whose
    cache keeps only the last `sliding_window - 1`, as transformers' caches do."""
    cfg = getattr(cfg, "text_config", None) or cfg
    layers = shape_from_config(cfg).layers
    types = getattr(cfg, "layer_types", None) or ["full_attention"] * layers
    window = getattr(cfg, "sliding_window", None)
    return [min(tokens, window - 1) if t == "sliding_attention" and window else tokens for t in types]


def kv_bytes(model, tokens: int) -> int:
    """The key/value bytes of `tokens` context positions of a loaded model, in its compute dtype."""
    base = getattr(model, "get_base_model", lambda: model)()
    shape = shape_from_config(base.config)
    return sum(kv_positions(base.config, tokens)) * kv_bytes_per_token(shape, base.dtype.itemsize) // shape.layers


def trainable_params(shape: Shape, method: str, peft: str, lora_r: int = 8, classes: int = 2,
                     prefix_tokens: int = 0) -> int:
    traits = spec.get(method).memory
    if traits.trains == "none":
        return 0
    if traits.trains == "prefix":  # a key and a value per layer and prefix token
        return prefix_tokens * 2 * shape.layers * shape.kv_heads * shape.head_dim
    head = shape.hidden * classes + classes if traits.head else 0
    if peft == "lora":  # q and v projections: r x (in + out) each
        q_out, v_out = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
        return shape.layers * lora_r * (2 * shape.hidden + q_out + v_out) + head
    if peft == "bitfit":  # a bias on every linear layer of the blocks
        return shape.layers * (shape.heads * shape.head_dim + 2 * shape.kv_heads * shape.head_dim
                               + 2 * shape.hidden + 2 * shape.intermediate) + head
    return shape.params + head


def _activations(shape: Shape, rows: int, tokens: int, compute_bytes: int, checkpointing: bool) -> float:
    per_layer = rows * tokens * shape.hidden * ACT_PER_TOKEN * compute_bytes / 2
    if checkpointing:
        return shape.layers * rows * tokens * shape.hidden * compute_bytes + per_layer
    return shape.layers * per_layer


def _kv_cache(shape: Shape, context: int, rows: int, query: int, compute_bytes: int) -> float:
    """The demonstrations' keys/values for every layer, and one layer's prefix + batch states at a time."""
    per_token = 2 * shape.kv_heads * shape.head_dim * compute_bytes
    scores = rows * shape.heads * query * (context + query) * 4  # attention probabilities of one layer, fp32 softmax
    return shape.layers * context * per_token + rows * (context + query) * per_token + scores


def estimate(shape: Shape, method: str, peft: str = "none", parallel: str = "ddp", workers: int = 1,
             dtype: str = "bfloat16", batch_size: int = 8, grad_accum: int = 1, max_length: int = 256,
             shots: int = 16, demo_tokens: int = 80, eval_batch_size: int = 8, checkpointing: bool = False,
             device: str = "cuda", tokens: int | None = None, context_tokens: int | None = None,
             prefix_tokens: int = 0) -> dict:
    """Bytes per worker by part, and their sum (`peak`), for one run of `method`. `tokens`: the longest
    training input (default `max_length`, the worst case); `context_tokens`: the demonstrations'
    length (default `shots` x `demo_tokens`, within the window); `prefix_tokens`: a cartridge's p."""
    cb = BYTES[dtype]
    traits = spec.get(method).memory
    trainable = trainable_params(shape, method, peft, prefix_tokens=prefix_tokens)
    train, sharded = traits.trains != "none", Parallel.of(parallel).sharded
    if sharded and not spec.get(method).shardable:
        raise ValueError(f"{method} does not run under fsdp: {spec.get(method).unsharded_why}")
    block = (shape.params - shape.root_params) / shape.layers
    if sharded:
        storage = 4 if train else cb
        weights = shape.params * storage / workers + (2 * block + shape.root_params) * cb
        state = trainable * ADAMW_STATE / workers
    else:  # trainable weights fp32 (full training: all of them), frozen ones in the compute dtype
        frozen = (shape.params if traits.trains in ("none", "prefix") else 0 if peft == "none"
                  else shape.params - trainable)
        weights = trainable * 4 + frozen * cb
        state = trainable * ADAMW_STATE
    length = min(tokens or max_length, max_length)
    context = context_tokens or min(shots * demo_tokens, shape.positions - max_length)
    kv = _kv_cache(shape, context, eval_batch_size, length, cb) if traits.context_cache and context else 0.0
    acts = 0.0
    if train:
        rows = max(1, math.ceil(math.ceil(batch_size / workers) / grad_accum))
        # On a GPU, AdamW's foreach step holds one more fp32 copy of what it updates (the denominators);
        # activations are freed by then. On a CPU it steps one tensor at a time.
        step = 4 * trainable / (workers if sharded else 1) if device == "cuda" else 0.0
        acts = max(_activations(shape, rows, length, cb, checkpointing), step)
    logits = max(rows if train else 0, eval_batch_size) * shape.vocab * 4 * 3  # one position per row: logits, softmax, grad
    runtime = CPU_RUNTIME_MIB * MIB if device == "cpu" else 0
    # Training and the teacher's pass do not overlap: the peak is the larger of the two phases.
    parts = {"weights": weights, "trainable_state": state, "activations": max(acts, kv), "logits": logits,
             "runtime": runtime}
    peak = sum(parts.values())
    if sharded and device == "cpu":  # rank 0 holds the whole checkpoint beside its shard while loading
        peak = max(peak, runtime + shape.params * (cb if not train or peft != "none" else 4) + weights)
    return {"parts_mib": {k: round(v / MIB, 1) for k, v in parts.items()},
            "peak_mib": round(peak / MIB, 1), "trainable_params": trainable}


def for_config(cfg, device: str, dtype: str, workers: int, parallel: str | None = None,
               checkpointing: bool | None = None, resolved: dict | None = None) -> dict:
    """`estimate` for a RunConfig (a run, or a sweep cell being placed); `resolved`: what a finished
    run met (its longest training input, its demonstrations' tokens), else the worst case."""
    resolved = resolved or {}
    context = resolved.get("context_tokens") or (resolved.get("context") or {}).get("context_tokens")
    return estimate(shape_of(cfg.model), cfg.method, cfg.peft.kind, parallel or cfg.parallel, workers, dtype,
                    cfg.train.batch_size, cfg.train.grad_accum, cfg.train.max_length, cfg.shots,
                    eval_batch_size=cfg.eval_batch_size, device=device,
                    checkpointing=cfg.train.grad_checkpointing if checkpointing is None else checkpointing,
                    tokens=resolved.get("train_tokens"), context_tokens=context,
                    prefix_tokens=cfg.value(spec.get(cfg.method).memory.prefix_tokens) if spec.get(cfg.method).kv_prefix else 0)


def for_run(cfg, measured_mib: float | None, resolved: dict | None = None) -> dict | None:
    """The plan of a run's own configuration, with the lengths it met, beside its measured peak: the
    record's `memory_plan`. None when the model's config cannot be read (a failed load says why elsewhere)."""
    from trainers.runtime.distributed import rank_and_world
    from trainers.runtime.models import ModelError, pick_device, pick_dtype
    try:
        device = pick_device(cfg.device)
        dtype = str(pick_dtype(cfg.dtype, device)).removeprefix("torch.")
        plan = for_config(cfg, device.type, dtype, rank_and_world()[1], resolved=resolved)
    except (ModelError, OSError, ValueError):
        return None
    return {"estimated_peak_mib": plan["peak_mib"], "measured_peak_mib": measured_mib, "parts_mib": plan["parts_mib"]}
