"""Show the exact prompt a model reads, and check that the ids scored are the whole string's ids.

    python -m trainers prompt --task rte --shots 32 --data-seed 0 --model ~/.cache/fewshot-models/smollm2-135m \
        --data-dir ../shared/data --max-context 2048 --check-tokenization

Prints the first in-domain evaluation example's prompt as the model sees it (demonstrations as
`--context-fit` left them, separator, query) and its token count. `--check-tokenization` compares,
for the dev split and up to `--check-limit` examples of every evaluation set, the ids the scorer
uses (the cached demonstrations' ids, then the query's) with the tokenizer's ids of the whole
prompt string; exit 1 if any differ. Needs the tokenizer and the model's config, not its weights.
"""
from __future__ import annotations

from trainers.runtime import context_fit
from trainers.methods.common import prepare
from trainers.config import RunConfig
from trainers.runtime.evaluation import evaluation_sets
from trainers.methods.icl import scored_queries
from trainers.runtime.models import load_config, load_tokenizer, max_positions
from trainers.data.prompts import label_token_ids


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_tokenization(tok, ids, named_sets: list[tuple[str, list]], out=print) -> int:
    """How many prompts' scored ids differ from the whole string's; the first difference is shown."""
    checked = bad = 0
    for name, examples in named_sets:
        for ex, q in zip(examples, ids.queries(examples)):
            checked += 1
            scored, whole = ids.context + q, ids.whole(ex)
            if scored != whole:
                bad += 1
                if bad == 1:
                    at = _first_difference(scored, whole)
                    out(f"  first difference ({name}) at token {at}: scored "
                        f"{tok.convert_ids_to_tokens(scored[at:at + 4])} vs whole string {tok.convert_ids_to_tokens(whole[at:at + 4])}")
    out(f"tokenization check: {checked} prompts, {bad} whose scored ids differ from the whole string's"
        + (" (FAILED)" if bad else " (ok)"))
    return bad


def main(cfg: RunConfig, check: bool, check_limit: int = 200, out=print) -> int:
    prep = prepare(cfg)
    tok = load_tokenizer(cfg.model)
    label_token_ids(tok, prep.prompt)  # label words must be single tokens, as in a run
    own = max_positions(load_config(cfg.model))
    window = min(own, cfg.max_context) if cfg.max_context else own
    fitted = context_fit.fit(tok, prep.prompt, prep.draw.labelled, scored_queries(prep, cfg), window, cfg.context_fit)
    sets = evaluation_sets(prep, cfg)
    first = (sets["in_domain"][0] or prep.draw.dev)[0]
    ids = fitted.prompt_ids
    n_query = len(ids.queries([first])[0])
    rule = "─" * 72
    out(f"{rule}\n{prep.prompt.full(fitted.demos, first)}\n{rule}")
    f = fitted.facts
    out(f"{len(ids.context) + n_query} tokens: {len(ids.context)} for {len(fitted.demos)} demonstrations "
        f"(BOS included, if any) + {n_query} for the query; window {window} (model {own}); label "
        f"{prep.prompt.label_words[first.label]!r}; pattern {prep.prompt.name}")
    out(f"context fit ({f['policy']}): longest query {f['longest_query_tokens']} tokens, "
        f"{f['demos_truncated']} demonstrations truncated, {f['tokens_cut']} tokens cut")
    if not check:
        return 0
    named = [("dev", prep.draw.dev)] + [(name, examples[:check_limit]) for name, (examples, _) in sets.items()]
    return 1 if check_tokenization(tok, ids, named, out) else 0
