"""ICL scoring with and without the demonstrations' key/value prefix cache, side by side.

    python -m benchmarks.icl_prefix_cache                  # SmolLM2-135M, RTE, 16 shots, 48 queries, CPU
    python benchmarks/icl_prefix_cache.py --queries 16 --device cuda

The same validation queries (a fixed subset, as `--eval-limit` picks it) are scored after the same
16 demonstrations (the project's sampler, task default pattern) by `ContextScorer` with
`use_cache=True` and `use_cache=False`, through `label_word_predictions`, as ICL runs score them.
Each path is warmed up on one batch first; then the paths run alternately (cached, plain,
cached, plain for `--repeats 2`), each run in its own `Meter` phase, and the fastest run of each
path is kept, so that both meet the same machine conditions. Peak memory is per phase (see
benchmarks/common.py). Both paths score exactly the same tokens, so their label-word
predictions must agree and their log-probabilities differ only by floating-point rounding.
Writes results/bench/icl_prefix_cache.{json,md}.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository root importable, as `-m` from it does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks import common
from benchmarks.common import (alternate, fmt, load_model, parser, phase_rows, ratio, round_robin, run_config,
                               table)
from trainers.methods.common import prepare
from trainers.runtime.evaluation import label_word_predictions
from trainers.runtime.metering import Meter
from trainers.runtime.models import max_positions
from trainers.data.prompts import label_token_ids
from trainers.runtime.scoring import ContextScorer, PromptIds
from trainers.data.tasks import eval_subset

PATHS = ("cached", "plain")


def options():
    p = parser(__doc__, repeats=2)
    p.add_argument("--queries", type=int, default=48, help="validation queries scored (default: %(default)s)")
    p.add_argument("--shots", type=int, default=16, help="demonstrations in the context (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="queries per forward pass (default: %(default)s)")
    return p


def measure(args, device: torch.device) -> dict:
    prep = prepare(run_config(args, args.shots))
    model, tok = load_model(args)
    label_ids = label_token_ids(tok, prep.prompt)
    ids = PromptIds(tok, prep.prompt, prep.draw.labelled)
    examples = eval_subset(prep.task.eval, args.queries)
    limit = max_positions(model)
    scorers = {p: ContextScorer(model, tok, args.batch_size, use_cache=p == "cached", max_positions=limit) for p in PATHS}

    def score(path, subset):
        with torch.inference_mode():
            return label_word_predictions(scorers[path], ids, label_ids, subset, desc=path)

    for path in PATHS:  # first calls pay for kernel selection and allocator growth: keep them out of the timing
        score(path, examples[:args.batch_size])
    meter = Meter(device)
    figures, preds = alternate(meter, {p: (lambda p=p: score(p, examples)) for p in PATHS},
                             round_robin(PATHS, args.repeats))
    cached, plain = preds["cached"], preds["plain"]
    n = len(cached.labels)
    for path in PATHS:
        figures[path]["queries_per_s"] = ratio(n, figures[path]["seconds"])
    agree = int((cached.logprobs.argmax(1) == plain.logprobs.argmax(1)).sum()) if n else 0
    return {"context_tokens": len(ids.context), "queries_scored": n, "queries_dropped": cached.n_dropped,
            "batch_size": args.batch_size, **figures,
            "speedup_plain_over_cached": ratio(figures["plain"]["seconds"], figures["cached"]["seconds"]),
            "predictions_agree": agree, "predictions_agree_all": agree == n and plain.n_dropped == cached.n_dropped,
            "full_vocab_correct_agree": bool(torch.equal(cached.full_vocab_correct, plain.full_vocab_correct)),
            "max_abs_logprob_diff": float((cached.logprobs - plain.logprobs).abs().max()) if n else None}


def render(f: dict) -> str:
    c, p = f["cached"], f["plain"]
    rows = phase_rows(c, p)
    rows.insert(1, ["queries / s", c["queries_per_s"], p["queries_per_s"]])
    summary = [f"- context: {f['context_tokens']} tokens; queries scored: {f['queries_scored']} "
               f"(dropped: {f['queries_dropped']}); batch size {f['batch_size']}",
               f"- speed-up (plain time / cached time): {fmt(f['speedup_plain_over_cached'])}x",
               f"- label-restricted predictions agree: {f['predictions_agree']}/{f['queries_scored']}; "
               f"full-vocabulary correctness agrees: {f['full_vocab_correct_agree']}",
               f"- max |difference| of label-word log-probabilities: {fmt(f['max_abs_logprob_diff'])}"]
    return table(["figure", "cached", "plain"], rows) + "\n\n" + "\n".join(summary)


def title(args, device: torch.device) -> str:
    return (f"ICL prefix cache: {args.task}, {args.shots} shots, {args.queries} queries, "
            f"{Path(args.model).name} on {device.type}")


def main(argv: list[str] | None = None) -> dict:
    return common.main("icl_prefix_cache", argv, options, measure, render, title)


if __name__ == "__main__":
    main()
