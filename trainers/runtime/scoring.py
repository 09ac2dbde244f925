"""Batched scoring of the next token at the answer position, after an optional fixed context.

    python -m benchmarks.icl_prefix_cache          # cached vs plain scoring, side by side

The ids scored are those of the whole prompt string (`PromptIds`): the demonstrations' ids, then
each query's ids as they continue that string (separator included), in the cached and the plain
path alike, so both score exactly the same tokens. In the cached path the context's key/value
cache is computed once and every batch of queries attends to it, shared by the rows rather than
copied per row; in the plain path every query carries the whole context. Rows are right-padded,
and the logits are taken at each row's own last real token (`logits_to_keep` with per-row
positions), so the full-vocabulary projection runs for one position per query, never for the
whole sequence. A trained model's forward passes run under its precision's autocast.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import sys
from typing import Callable

import torch
from transformers.cache_utils import Cache, DynamicLayer

from trainers import settings
from trainers.runtime.distributed import rank_and_world, shard, unshard
from trainers.data.prompts import Prompt
from trainers.runtime.sharding import is_sharded, reshard
from trainers.data.tasks import Example

PREFILL_CHUNK = 1024  # context tokens encoded per forward pass


class TokenizationError(ValueError):
    """The query's ids cannot continue the demonstrations' ids as the whole prompt string would."""


class PromptIds:
    """Token ids of prompts read as one string: the demonstrations' part, then each query's part.

    `context` is the tokenization of the demonstrations alone (with the tokenizer's BOS, if it adds
    one); a query's ids are the rest of the whole string's ids. They are found by tokenizing the
    last demonstration (the anchor) followed by the query's part and removing the anchor's ids: the
    separator then tokenizes as it does between demonstrations ("\n\n" as one string, a query's
    leading space attached to its first word). If a tokenizer merges across the anchor's end, that
    query falls back to the whole string; if even the whole string does not start with the
    context's ids, the prefix cannot be shared and the error says so.
    """

    def __init__(self, tokenizer, prompt: Prompt, demos: list[Example]):
        self.tokenizer, self.prompt, self.demos = tokenizer, prompt, list(demos)
        self.context: list[int] = tokenizer(prompt.context(self.demos), add_special_tokens=True)["input_ids"]
        self._anchor = prompt.demonstration(self.demos[-1]) if self.demos else ""

    def whole(self, ex: Example) -> list[int]:
        """The tokenizer's ids of the whole prompt string (what `--check-tokenization` compares with)."""
        return self.tokenizer(self.prompt.full(self.demos, ex), add_special_tokens=True)["input_ids"]

    def queries(self, examples: list[Example]) -> list[list[int]]:
        texts = [self.prompt.query(ex, bool(self.demos)) for ex in examples]
        if not texts:
            return []
        anchor = self.tokenizer(self._anchor, add_special_tokens=False)["input_ids"] if self._anchor else []
        joined = self.tokenizer([self._anchor + t for t in texts], add_special_tokens=False)["input_ids"]
        out = []
        for ex, ids in zip(examples, joined):
            if ids[:len(anchor)] == anchor:
                out.append(ids[len(anchor):])
                continue
            whole = self.whole(ex)
            if whole[:len(self.context)] != self.context:
                raise TokenizationError(
                    f"pattern {self.prompt.name!r}: this tokenizer merges the demonstrations' last token with the "
                    "query's, so the demonstrations cannot be cached as one prefix; choose another --pattern")
            out.append(whole[len(self.context):])
        return out

    def training_inputs(self, examples: list[Example], max_length: int) -> list[list[int]]:
        """Context + query ids per example, the query cut from the left so that the answer position survives."""
        keep = max(1, max_length - len(self.context))
        return [self.context + q[-keep:] for q in self.queries(examples)]


def collate(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and the index of each row's last real token."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    last = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
    return ids.to(device), mask.to(device), last.to(device)


@functools.lru_cache(maxsize=None)
def _cache_kwarg(forward_cls) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache`; accept either release."""
    return "cache" if "cache" in inspect.signature(forward_cls.forward).parameters else "past_key_values"


def forward_with_cache(model, past=None, **kwargs):
    """model(**kwargs) with a key/value cache passed in (or None) and returned."""
    name = _cache_kwarg(type(model))
    out = model(**{name: past}, **kwargs)
    return out, getattr(out, name, None)


def answer_logits(model, ids: torch.Tensor, mask: torch.Tensor, last: torch.Tensor, past=None) -> torch.Tensor:
    """Logits (B, V) at each row's last real token; `past` is a cache already expanded to B rows."""
    if past is not None:
        prefix = past.get_seq_length()
        mask = torch.cat([mask.new_ones((mask.shape[0], prefix)), mask], dim=1)
    out, _ = forward_with_cache(model, past, input_ids=ids, attention_mask=mask, use_cache=past is not None,
                                logits_to_keep=last[:, None])
    return out.logits[:, 0, :]


def progress(iterable, total: int, desc: str):
    """A progress bar on an interactive terminal (or with FEWSHOT_PROGRESS=1); silent in logs."""
    show = settings.get("FEWSHOT_PROGRESS")
    show = sys.stderr.isatty() if show is None else show
    if not show:
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, file=sys.stderr)


class ContextScorer:
    """Runs queries after one fixed context and reduces each batch's answer logits.

    `reduce(logits (B, V)) -> tensor (B, ...)` keeps only what the caller needs (label-word
    log-probabilities, the top token, teacher distributions), so nothing vocabulary-sized piles up.
    """

    def __init__(self, model, tokenizer, batch_size: int = 8, use_cache: bool = True, max_positions: int = 2048,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.model, self.tokenizer, self.autocast = model, tokenizer, autocast
        self.batch_size, self.use_cache, self.max_positions = batch_size, use_cache, max_positions
        self.device = next(model.parameters()).device
        self.sharded = is_sharded(model)
        self.pad_id = tokenizer.pad_token_id
        self._kept = None  # (context ids, their key/value cache): the demonstrations are encoded once per scorer

    def run(self, context_ids: list[int], queries: list[list[int]],
            reduce: Callable[[torch.Tensor], torch.Tensor], desc: str = "scoring") -> tuple[torch.Tensor | None, list[int]]:
        """(stacked reductions of the kept queries in input order, indices of the kept queries).

        Queries that do not fit the model's context after the demonstrations are dropped and
        left out of the returned indices; the caller reports how many. Across data-parallel
        ranks the queries are sharded and the results gathered, so every rank gets all of them.
        """
        kept = [i for i, q in enumerate(queries) if len(context_ids) + len(q) <= self.max_positions]
        mine = shard(kept)
        extra = 0
        if self.sharded and kept:  # every rank gathers weights in each forward: all run as many batches
            extra = -(-len(kept) // rank_and_world()[1]) - len(mine)
        # FSDP keeps its all-gather buffers across calls: made in inference mode they could not serve training
        no_grad = torch.no_grad() if self.sharded else torch.inference_mode()
        with no_grad, self.autocast():  # a trained model may mix fp32 trainable and bf16 frozen weights
            local = self._run_local(context_ids, [queries[i] for i in mine + kept[:1] * extra], reduce, desc)
        if self.sharded:
            reshard(self.model)  # the root's gathered weights are not kept between calls
        rows = unshard(local[:len(local) - extra], len(kept)) if kept else []
        return (torch.stack(rows) if rows else None), kept

    def _run_local(self, context_ids, queries, reduce, desc) -> list[torch.Tensor]:
        if not queries:
            return []
        cached = self.use_cache and len(context_ids) > 0
        prefix = self._prefix_cache(context_ids) if cached else None
        if cached:  # kept for the next call with the same demonstrations (serving's timed passes)
            self._kept = (tuple(context_ids), prefix)
        order = sorted(range(len(queries)), key=lambda i: len(queries[i]))  # similar lengths share a batch
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        results: list[torch.Tensor | None] = [None] * len(queries)
        for batch in progress(batches, len(batches), desc):
            seqs = [queries[i] if cached else context_ids + queries[i] for i in batch]
            ids, mask, last = collate(seqs, self.pad_id, self.device)
            past = batch_cache(prefix, len(batch)) if cached else None
            reduced = reduce(answer_logits(self.model, ids, mask, last, past).float()).cpu()
            for row, i in enumerate(batch):
                results[i] = reduced[row]
        return results

    def _prefix_cache(self, context_ids: list[int]):
        if self._kept is not None and self._kept[0] == tuple(context_ids):
            return self._kept[1]
        return prefill(self.model, context_ids, self.device)


def prefill(model, context_ids: list[int], device, chunk: int = PREFILL_CHUNK):
    """The key/value cache of `context_ids`, encoded `chunk` tokens at a time: a many-shot context
    (thousands of tokens) never holds a whole context x context attention matrix, only chunk x context."""
    ids = torch.tensor([context_ids], dtype=torch.long, device=device)
    cache = None
    for start in range(0, ids.shape[1], chunk):
        piece = ids[:, start:start + chunk]
        mask = torch.ones((1, start + piece.shape[1]), dtype=torch.long, device=device)
        _, cache = forward_with_cache(model, cache, input_ids=piece, attention_mask=mask, use_cache=True,
                                      logits_to_keep=1)
    return cache


class _SharedPrefixLayer(DynamicLayer):
    """One layer's prefix keys/values, shared by every row of a batch and never grown.

    Each forward gets prefix + the batch's new states for its attention, built then and dropped
    after the layer: no layer keeps a batch-sized copy of the prefix, so the cached path's
    memory does not grow with batch x layers x prefix length.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, batch: int):
        super().__init__()
        self.keys, self.values, self.batch = keys, values, batch
        self.device, self.is_initialized = keys.device, True

    def update(self, key_states, value_states, *args, **kwargs):
        shape = (self.batch, *self.keys.shape[1:])
        return (torch.cat([self.keys.expand(shape), key_states], dim=-2),
                torch.cat([self.values.expand(shape), value_states], dim=-2))


def batch_cache(prefix: Cache, batch: int) -> Cache:
    """The prefix cache for a batch of `batch` queries, the prefix itself left untouched."""
    if all(type(layer) is DynamicLayer for layer in prefix.layers):
        return Cache(layers=[_SharedPrefixLayer(layer.keys, layer.values, batch) for layer in prefix.layers])
    past = copy.deepcopy(prefix)  # sliding-window and other layer kinds: the cache's own copy
    past.batch_repeat_interleave(batch)
    return past


def label_word_reduce(label_ids: list[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per query: the label words' log-probabilities over the full vocabulary, then the top token."""
    index = torch.tensor(label_ids)

    def reduce(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=-1)
        top = logits.argmax(dim=-1, keepdim=True).to(logp.dtype)
        return torch.cat([logp[:, index.to(logp.device)], top], dim=1)

    return reduce
