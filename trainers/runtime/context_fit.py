"""Fitting k demonstrations and every query into the model's window (`--context-fit`, `--max-context`).

    python -m trainers prompt --task rte --shots 32 --model PATH --data-dir ../shared/data --max-context 2048

OPT reads 2,048 positions and 32 RTE demonstrations take 2.3-2.8k tokens. The policies:

- `truncate` (default): the longest demonstration texts are shortened, never their labels and never
  a whole demonstration, until the k demonstrations plus the longest query to be scored fit. Every
  text field is capped at the same number of tokens, the largest cap that fits, so short texts
  stay whole and the longest lose most.
- `drop_queries`: demonstrations stay whole; a query that does not fit after them is not scored
  (counted as `n_dropped` in its set's metrics).
- `fail`: stop before any scoring, with the numbers.

The record's `resolved.context` counts demonstrations truncated and tokens cut.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from trainers.data.prompts import Prompt
from trainers.runtime.scoring import PromptIds
from trainers.data.tasks import Example

POLICIES = ("truncate", "drop_queries", "fail")


class ContextError(ValueError):
    """The demonstrations and queries cannot be made to fit under the chosen policy."""


@dataclass(frozen=True)
class Fit:
    demos: list[Example]     # as shown to the model (texts possibly shortened)
    prompt_ids: PromptIds
    facts: dict              # for the record


def _cut(tokenizer, text: str | None, cap: int) -> str | None:
    """`text` shortened to its first `cap` tokens (an exact prefix of the string where offsets exist)."""
    if text is None:
        return None
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # slow tokenizers have no offsets: decode the kept ids instead
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= cap else tokenizer.decode(ids[:cap])
    if len(enc["input_ids"]) <= cap:
        return text
    return text[:enc["offset_mapping"][cap - 1][1]] if cap > 0 else ""


def _capped(tokenizer, demos: list[Example], cap: int) -> list[Example]:
    return [dataclasses.replace(d, text1=_cut(tokenizer, d.text1, cap), text2=_cut(tokenizer, d.text2, cap)) for d in demos]


def _longest_field(tokenizer, demos: list[Example]) -> int:
    texts = [t for d in demos for t in (d.text1, d.text2) if t]
    return max((len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]), default=0)


def fit(tokenizer, prompt: Prompt, demos: list[Example], queries: list[Example], window: int, policy: str) -> Fit:
    """The demonstrations as the model will see them, for scoring `queries` within `window` tokens."""
    if policy not in POLICIES:
        raise ContextError(f"context_fit={policy!r} is not one of {', '.join(POLICIES)}")
    ids = PromptIds(tokenizer, prompt, demos)
    longest = max((len(q) for q in ids.queries(queries)), default=0)
    original = len(ids.context)
    facts = {"policy": policy, "window": window, "demonstrations": len(demos), "context_tokens": original,
             "longest_query_tokens": longest, "demos_truncated": 0, "tokens_cut": 0}
    if original + longest <= window or policy == "drop_queries" or not demos:
        return Fit(list(demos), ids, facts)
    if policy == "fail":
        raise ContextError(f"{len(demos)} demonstrations take {original} tokens and the longest query {longest}: "
                           f"{original + longest} > the window of {window}; use --context-fit truncate or "
                           "drop_queries, fewer shots, or a model with a longer window")

    def fits(cap: int) -> tuple[bool, PromptIds]:
        trial = PromptIds(tokenizer, prompt, _capped(tokenizer, demos, cap))
        return len(trial.context) + longest <= window, trial

    ok, best = fits(0)
    if not ok:
        raise ContextError(f"even with every demonstration text emptied, {len(demos)} demonstrations' pattern and "
                           f"labels ({len(best.context)} tokens) plus the longest query ({longest}) exceed the window "
                           f"of {window}; use fewer shots or --context-fit drop_queries")
    lo, hi, cap = 1, _longest_field(tokenizer, demos) - 1, 0  # the largest cap that fits, by bisection
    while lo <= hi:
        mid = (lo + hi) // 2
        ok, trial = fits(mid)
        if ok:
            cap, best, lo = mid, trial, mid + 1
        else:
            hi = mid - 1
    changed = sum(a != b for a, b in zip(demos, best.demos))
    longest = max((len(q) for q in best.queries(queries)), default=0)
    facts.update(context_tokens=len(best.context), longest_query_tokens=longest, demos_truncated=changed,
                 tokens_cut=original - len(best.context), text_cap_tokens=cap)
    return Fit(best.demos, best, facts)
