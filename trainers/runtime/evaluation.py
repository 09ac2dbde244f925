"""Metrics from predictions, and the in-domain + OOD evaluation every method ends with.

    python -m trainers run --method icl --task rte --model PATH --ood hans --eval-limit 200

For label-word scoring two accuracies are reported: restricted to the label words, and over the
full vocabulary (a top token that is not the gold label word counts wrong). Every metric block
carries the fraction of predictions per class, so a model predicting one class everywhere (≈ 0.5
on HANS) is visible, the numbers of examples scored and dropped, and every example's id,
correctness and predicted class (`examples`, compact: any statistic can be recomputed from the
record alone). Grouped sets (HANS) are broken down by group and label. After the evaluation, the
serving cost is measured on a sample of the in-domain set (`trainers/runtime/serving.py`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Callable

import torch

from trainers.contract import EvalBlock, Examples, GroupScore, Metrics
from trainers.runtime.distributed import say
from trainers.data.sampling import without_overlap
from trainers.runtime.scoring import ContextScorer, PromptIds, label_word_reduce
from trainers.data.tasks import Example, eval_subset


@dataclass
class Predictions:
    logprobs: torch.Tensor                 # (N, C) class log-probabilities (label words or head)
    labels: torch.Tensor                   # (N,)
    groups: list[str | None]
    full_vocab_correct: torch.Tensor | None = None  # (N,) bool; None for a classification head
    n_dropped: int = 0                     # too long for the model's context
    ids: list[str] | None = None           # each scored example's Example.uid()


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return round(float((pred == labels).float().mean()), 4) if len(labels) else float("nan")


def metrics(p: Predictions, classes: tuple[str, ...]) -> EvalBlock:
    n = len(p.labels)
    pred = p.logprobs.argmax(dim=1) if n else torch.zeros(0, dtype=torch.long)
    out = EvalBlock(accuracy=_accuracy(pred, p.labels))
    if p.full_vocab_correct is not None:
        out.accuracy_full_vocab = round(float(p.full_vocab_correct.float().mean()), 4) if n else float("nan")
    counts = torch.bincount(pred, minlength=len(classes)).tolist() if n else [0] * len(classes)
    out.pred_fraction = {c: round(k / n, 4) if n else float("nan") for c, k in zip(classes, counts)}
    out.n_scored, out.n_dropped = n, p.n_dropped
    if p.ids is not None:  # compact: one character per example
        full = p.full_vocab_correct
        out.examples = Examples(ids=list(p.ids), correct="".join("1" if c else "0" for c in (pred == p.labels).tolist()),
                                pred="".join(str(k) for k in pred.tolist()),
                                correct_full_vocab=None if full is None else "".join("1" if c else "0" for c in full.tolist()))
    if any(g is not None for g in p.groups):
        out.breakdown = {}
        for g in sorted({g for g in p.groups if g is not None}):
            for c, name in enumerate(classes):
                idx = torch.tensor([i for i, (gg, y) in enumerate(zip(p.groups, p.labels.tolist())) if gg == g and y == c])
                if len(idx):
                    out.breakdown[f"{g}/{name}"] = GroupScore(accuracy=_accuracy(pred[idx], p.labels[idx]), n=len(idx))
    return out


def dev_scores(meter, predict, prep) -> Callable[[], EvalBlock]:
    """What training selects its epoch by: the dev set's scores, timed in the meter's "dev" phase
    (inside "train", which it pauses)."""
    def score() -> dict:
        with meter.phase("dev"):
            return metrics(predict(prep.draw.dev, "dev"), prep.task.classes)
    return score


def label_word_predictions(scorer: ContextScorer, prompt_ids: PromptIds, label_ids: list[int],
                           examples: list[Example], desc: str = "scoring") -> Predictions:
    """Score the label words for each example after its prompt's demonstrations (or none)."""
    queries = prompt_ids.queries(examples)
    out, kept = scorer.run(prompt_ids.context, queries, label_word_reduce(label_ids), desc=desc)
    labels = torch.tensor([examples[i].label for i in kept], dtype=torch.long)
    ids = [examples[i].uid() for i in kept]
    if out is None:
        c = len(label_ids)
        return Predictions(torch.zeros((0, c)), labels, [], torch.zeros(0, dtype=torch.bool), len(examples), ids)
    logprobs, top = out[:, :-1], out[:, -1].long()
    gold_ids = torch.tensor(label_ids)[labels]
    return Predictions(logprobs, labels, [examples[i].group for i in kept], top == gold_ids, len(examples) - len(kept), ids)


def evaluation_sets(prep, cfg) -> dict[str, tuple[list[Example], int]]:
    """name -> (examples to score, how many were left out because they were shown): in-domain, then
    OOD; with --eval-limit (--ood-limit), the data seed's own stratified subset of each."""
    return {name: without_overlap(eval_subset(examples, cfg.limit_of(name), cfg.data_seed), prep.draw.labelled)
            for name, examples in [("in_domain", prep.task.eval), *prep.task.ood.items()]}


def evaluate_sets(predict: Callable[[list[Example], str], Predictions], prep, cfg, who: str = "", meter=None,
                  kv_bytes_per_query: int = 0) -> Metrics:
    """In-domain and every OOD set, each without the examples the method was shown, in the meter's
    "evaluate" phase. With a `meter`, the serving cost is then measured on the in-domain examples
    (`trainers.runtime.serving.measure`) and kept in the meter (`meter.serving`) for the record, with the
    key/value bytes each query attends to beside the query's own (ICL: its demonstrations'; a
    cartridge: its prefix's; weights-adapted models: none)."""
    out = {}
    sets = evaluation_sets(prep, cfg)
    for name, (examples, overlap) in sets.items():
        phase = contextlib.nullcontext() if meter is None else meter.phase("evaluate")
        start = time.perf_counter()
        with phase:
            m = metrics(predict(examples, name), prep.task.classes_of(name))
        m.n_excluded_shown = overlap
        dropped = f" ({m.n_dropped} too long, dropped)" if m.n_dropped else ""
        say(f"{who}{name}: accuracy {m.accuracy:.3f} on {m.n_scored} examples{dropped}, "
            f"{time.perf_counter() - start:.1f} s")
        out[name] = m
    if meter is not None:
        from trainers.runtime.serving import measure
        meter.serving = measure(predict, sets["in_domain"][0], meter, cfg.eval_batch_size, cfg.serve_queries,
                                cfg.serve_repeats)
        if meter.serving is not None:
            meter.serving = dataclasses.replace(meter.serving, kv_bytes_per_query=int(kv_bytes_per_query))
    return Metrics(in_domain=out.pop("in_domain"), ood=out)
