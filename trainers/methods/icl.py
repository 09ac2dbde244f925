"""In-context learning: k demonstrations + the query, label words scored at the answer position.

    python -m trainers run --method icl --task rte --model ~/.cache/fewshot-models/smollm2-135m \
        --data-dir ../shared/data --shots 16 --data-seed 0 --eval-limit 200 --ood hans

The demonstrations are the same for every query of a run, so their key/value cache is computed
once and the queries are scored against it in batches (`--no-prefix-cache` scores each query
with the whole context instead; both score the same tokens, those of the whole prompt string).
When the demonstrations and the longest query exceed the window, `--context-fit` decides
(`trainers/runtime/context_fit.py`). Nothing is trained.
"""
from __future__ import annotations

from trainers.runtime import context_fit, precision, sharding
from trainers.methods.common import prepare
from trainers.config import RunConfig
from trainers.runtime.evaluation import evaluate_sets, evaluation_sets, label_word_predictions, metrics
from trainers.runtime.memory_plan import kv_bytes
from trainers.runtime.metering import Meter
from trainers.runtime.models import context_window, count_parameters, load_causal_lm, pick_device
from trainers.data.prompts import label_token_ids
from trainers.contract import Epoch, Metrics
from trainers.records import build_record
from trainers.runtime.scoring import ContextScorer


def scored_queries(prep, cfg: RunConfig) -> list:
    """Every example a run scores after the demonstrations: the dev split and the evaluation sets."""
    sets = evaluation_sets(prep, cfg) if cfg.final_eval else {}
    return list(prep.draw.dev) + [ex for examples, _ in sets.values() for ex in examples]


def run(cfg: RunConfig, report=None) -> dict:
    meter = Meter(pick_device(cfg.device))
    with meter.phase("load"):
        prep = prepare(cfg)
        prec = precision.resolve(cfg.dtype, meter.device)
        model, tok = load_causal_lm(cfg.model, cfg.dtype, sharding.load_device(cfg.parallel, cfg.device),
                                    empty=sharding.builds_empty(cfg.parallel))
        model = sharding.prepare(model, cfg.parallel, meter.device, prec.compute, prec.compute, cfg.offload)
        label_ids = label_token_ids(tok, prep.prompt)
        window = context_window(model, cfg.max_context)
        fitted = context_fit.fit(tok, prep.prompt, prep.draw.labelled, scored_queries(prep, cfg), window, cfg.context_fit)
    scorer = ContextScorer(model, tok, cfg.eval_batch_size, cfg.prefix_cache, window, prec.autocast)

    def predict(examples, name):
        return label_word_predictions(scorer, fitted.prompt_ids, label_ids, examples, desc=f"icl {name}")

    with meter.phase("evaluate"):  # ICL selects nothing: its dev score only informs the sweep's pruner
        dev = metrics(predict(prep.draw.dev, "dev"), prep.task.classes)
    if report:
        report(Epoch(epoch=1, dev_accuracy=dev.accuracy))
    results = (evaluate_sets(predict, prep, cfg, meter=meter,
                             kv_bytes_per_query=kv_bytes(model, len(fitted.prompt_ids.context)))
               if cfg.final_eval else Metrics())
    results.dev = dev
    resolved = prep.resolved(cfg, context_tokens=len(fitted.prompt_ids.context), context=fitted.facts,
                             precision=precision.facts(model, prec, trained=False))
    return build_record(cfg, "completed", resolved=resolved, metrics=results,
                        resources=meter.resources(), params={**count_parameters(model), "trainable": 0})
