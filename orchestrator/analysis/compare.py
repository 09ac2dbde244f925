"""From records to evidence: each replicate's per-example correctness, per-cell intervals and paired
comparisons between the methods of a task × model × shots, with their verdicts.

    python -m orchestrator summarize results/quickstart      # summary.md/json; the lines end the terminal summary

A record carries, per evaluation set, every scored example's id and whether it was right
(`metrics.<set>.examples`). Two methods of one data seed scored the same examples (the seed's own
evaluation subset, less what that seed's draw showed them), so a comparison reads both on the same
examples, aligned by id. Records written before per-example results existed give each seed's
accuracy and size only: the seed is then resampled as a 0/1 vector with that many right answers,
and a comparison assumes the two methods' errors independent on it. The statistics themselves
are in `orchestrator/analysis/stats.py`.
"""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from orchestrator.cells import Cell, variant_of
from orchestrator.analysis.stats import bernoulli, cell_interval, collapsed, paired
from orchestrator.analysis.table import Trial, by_seed, completed_replicates, group, newest_per_seed, ood_names, values
from trainers.contract import Comparison, EvalBlock, Record, load

def correctness(rec: Record, name: str, full_vocab: bool = False) -> tuple[list[str] | None, np.ndarray]:
    """(example ids or None, 0/1 vector) of one record on one set; rebuilt from accuracy and size
    when the record predates per-example results."""
    block = rec.metrics.block(name) or EvalBlock()
    ex = block.examples
    correct = (ex.correct_full_vocab if full_vocab else ex.correct) if ex else None
    if correct is not None:
        correct = (np.frombuffer(correct.encode(), dtype=np.uint8) - ord("0")).astype(float)
        return (ex.ids if len(ex.ids or []) == len(correct) else None), correct
    acc = block.accuracy_full_vocab if full_vocab else block.accuracy
    if acc is None or acc != acc:
        return None, np.zeros(0)
    n = int(block.n_scored or 0)
    # a record without its size: the seed's accuracy alone, so only the seeds' spread is left to resample
    return None, bernoulli(float(acc), n) if n else np.array([float(acc)])


def labels(rec: Record, name: str, keys: list[tuple[str, int]] | None) -> np.ndarray | None:
    """The gold labels (class indices) of one record's examples on one set, in `keys`' order, where
    the record tells them: a two-class set's label is the prediction when right, the other class when
    wrong (None for more classes, or records without per-example predictions)."""
    block = rec.metrics.block(name) or EvalBlock()
    ex = block.examples
    if keys is None or len(block.pred_fraction or {}) != 2 or not ex or not ex.pred or not ex.ids:
        return None
    pred = np.frombuffer(ex.pred.encode(), dtype=np.uint8) - ord("0")
    correct = np.frombuffer(ex.correct.encode(), dtype=np.uint8) - ord("0")
    gold = dict(zip(_keys(ex.ids), np.where(correct == 1, pred, 1 - pred)))
    return np.array([gold[k] for k in keys]) if all(k in gold for k in keys) else None


def strata_of(recs: dict, name: str, ids: dict | None) -> dict | None:
    """seed -> its examples' labels (`labels`, in `ids`' order), where every seed's record tells them."""
    got = {s: labels(recs[s], name, k) for s, k in ids.items()} if ids else {}
    return got if got and all(g is not None for g in got.values()) else None


def _keys(ids: list[str]) -> list[tuple[str, int]]:
    seen: Counter = Counter()
    out = []
    for i in ids:
        out.append((i, seen[i]))
        seen[i] += 1
    return out


def aligned(ra: Record, rb: Record, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Both records' correctness on the examples both scored, in one order. Without ids, two vectors
    with each record's own number right and errors independent (the two marginals kept exactly)."""
    a, b, _ = aligned_ids(ra, rb, name)
    return a, b


def aligned_ids(ra: Record, rb: Record, name: str) -> tuple[np.ndarray, np.ndarray, list | None]:
    """`aligned`, with the ids of the examples in that order (None for records without them)."""
    ids_a, ca = correctness(ra, name)
    ids_b, cb = correctness(rb, name)
    if not len(ca) or not len(cb):
        return np.zeros(0), np.zeros(0), None
    if ids_a is not None and ids_b is not None:
        index_b = {k: i for i, k in enumerate(_keys(ids_b))}
        pairs = [(i, index_b[k]) for i, k in enumerate(_keys(ids_a)) if k in index_b]
        keys = _keys(ids_a)
        return (np.array([ca[i] for i, _ in pairs], dtype=float), np.array([cb[j] for _, j in pairs], dtype=float),
                [keys[i] for i, _ in pairs])
    m = min(len(ca), len(cb))
    ka, kb = int(round(ca.mean() * m)), int(round(cb.mean() * m))
    both = int(round(ka * kb / m))
    a = [1.0] * both + [1.0] * (ka - both) + [0.0] * (kb - both) + [0.0] * (m - ka - kb + both)
    b = [1.0] * both + [0.0] * (ka - both) + [1.0] * (kb - both) + [0.0] * (m - ka - kb + both)
    return np.array(a), np.array(b), None


def cell_accuracy(reps: list[Trial], name: str, full_vocab: bool = False) -> dict | None:
    """A cell's accuracy on one set over its replicates (one per data seed): mean, std over seeds, and
    an interval with both the seeds' and the examples' noise."""
    got = {int(t.data_seed): correctness(t.record, name, full_vocab) for t in reps}
    got = {s: (ids, v) for s, (ids, v) in got.items() if len(v)}
    ids = {s: _keys(i) for s, (i, _) in got.items()} if all(i is not None for i, _ in got.values()) else None
    rows = {int(t.data_seed): t.record for t in reps}
    return cell_interval({s: v for s, (_, v) in got.items()}, ids, strata_of(rows, name, ids))


def comparisons(rows: list[Trial]) -> list[Comparison]:
    """Every pair of cells of the same task × model × shots, on each evaluation set: A − B over the
    data seeds both completed, read on the examples both scored."""
    out = []
    sets = ["in_domain", *ood_names(rows)]
    for group_rows in group(completed_replicates(rows), lambda t: (t.task, t.model, t.shots)).values():
        cells = group(group_rows, lambda t: t.cell)
        for a, b in itertools.combinations(cells, 2):
            ra, rb = newest_per_seed(cells[a]), by_seed(cells[b])
            for name in sets:
                pairs = {int(t.data_seed): aligned_ids(t.record, rb[int(t.data_seed)].record, name)
                         for t in ra if int(t.data_seed) in rb}
                ids = {s: p[2] for s, p in pairs.items()} if all(p[2] is not None for p in pairs.values()) else None
                result = paired({s: p[0] for s, p in pairs.items()}, {s: p[1] for s, p in pairs.items()}, ids,
                                strata_of({int(t.data_seed): t.record for t in ra}, name, ids))
                if result:
                    fell = [variant_of(c) for c, r in ((a, ra), (b, rb.values()))
                            if collapsed(values(r, lambda t: t.score(name).pred_top))]
                    out.append(load(Comparison, {"a": a, "b": b, "set": name, **result, "collapsed": fell}))
    return out


def verdict_words(c: Comparison) -> str:
    """The verdict with the methods' names in place of a / b."""
    a, b = variant_of(c.a), variant_of(c.b)
    return {"a better": f"{a} better", "b better": f"{b} better"}.get(c.verdict, c.verdict)


def comparison_lines(comps: list[Comparison]) -> list[str]:
    """'icl − pbft+lora (rte, smollm2-135m, 16shot) on hans: -0.110 [-0.210, +0.010] over 3 seeds, 192
    examples: inconclusive (3 seeds: p ≥ 0.25)'."""
    lines = []
    for c in comps:
        cell = Cell.parse(c.a)
        task, a, where, b = cell.task, cell.variant, [cell.model_tag, f"{cell.shots}shot"], variant_of(c.b)
        fell = f"; COLLAPSED on {c.set}: {' and '.join(c.collapsed)}" if c.collapsed else ""
        lines.append(f"{a} − {b} ({', '.join([task, *where])}) on {c.set}: {c.mean_diff:+.3f} "
                     f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}] over {c.n} seed{'s' if c.n != 1 else ''}, "
                     f"{c.examples} examples: {verdict_words(c)} ({c.reason}){fell}")
    return lines
