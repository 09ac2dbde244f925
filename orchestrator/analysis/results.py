"""Tables and summaries derived from the one-JSON-per-trial records, never appended by hand.

    python -m orchestrator summarize results/quickstart        # rebuild trials.{parquet,csv}, summary.md

Works on any folder of records, including those written by `python -m trainers run --json`. A
cell's summary reports the replicate trials (mean ± std over data seeds) and counts the pruned
and failed trials of the whole cell.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import textwrap
from pathlib import Path
from collections import Counter

import pandas as pd

from orchestrator.cells import variant_of
from orchestrator.analysis.compare import cell_accuracy, comparison_lines, comparisons
from orchestrator.analysis.stats import collapsed_seeds, mean_ci
from orchestrator.analysis.table import (Trial, completed_replicates, group, newest_per_seed, ood_names, present, to_frame,
                                         total, trials, unique, values)
from trainers.methods import spec
from trainers.contract import CellStats, Collapse, Record, Retried, Stat, dump, load
from trainers.records import write_json_atomic

RECORDS = "trials"
CORRUPT = "corrupt"  # under trials/: records that did not parse
RETRIED = "retried"  # under trials/: failed records a --resume set aside to run their trials again


def records_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / RECORDS


def write_record(sweep_dir: Path, record: Record) -> Path:
    """The record as JSON under trials/ (the disk's edge), named by its trial key."""
    path = records_dir(sweep_dir) / f"{record.trial_key}.json"
    write_json_atomic(path, dump(record))
    return path


def retried(sweep_dir: Path) -> list[Record]:
    """The failed records earlier resumes set aside (oldest first per trial)."""
    folder = records_dir(sweep_dir) / RETRIED
    return [load(Record, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def load_records(folder: Path, set_aside: bool = False) -> list[Record]:
    """Every record of a sweep (or a folder of single-run records). One that does not parse (a
    truncated write, a hand edit) is named on stderr and skipped; with `set_aside` (a sweep starting
    or resuming: the only writer of its folder) it is moved to `trials/corrupt/`, so that trial runs
    again. Reading commands (summarize, report) leave the folder as they found it."""
    folder = Path(folder)
    sub = records_dir(folder)
    paths = sorted((sub if sub.is_dir() else folder).glob("*.json"))
    out = []
    for p in paths:
        try:
            rec = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            _set_aside(p, f"does not parse ({e})", set_aside)
            continue
        if isinstance(rec, dict) and "status" in rec and "config" in rec:
            out.append(load(Record, rec))
        elif sub.is_dir():  # inside trials/ every file is a record
            _set_aside(p, "is not a result record (no status or config)", set_aside)
    _use_methods_files(out)
    return out


def _use_methods_files(records: list[Record]) -> None:
    """Records of a researcher's own method name the file that registers it: import it, so the method's
    traits are known here; one that no longer imports is named once."""
    for path in sorted({r.config.get("methods_file") for r in records} - {None}):
        try:
            spec.use_methods_file(path)
        except spec.MethodsFileError as e:
            print(f"warning: {e}; its methods' records are read without their traits", file=sys.stderr)


def _set_aside(path: Path, why: str, move: bool) -> None:
    where = path
    if move:
        where = path.parent / CORRUPT / path.name
        where.parent.mkdir(exist_ok=True)
        os.replace(path, where)
    print(f"warning: record {path} {why}; {'set aside as ' + str(where) + ', its trial runs again on --resume' if move else 'skipped'}",
          file=sys.stderr)


def best_search_trials(records: list[Record]) -> dict[str, Record]:
    """Per cell, the completed search trial with the best final dev accuracy.

    Ties are common on a small dev split: the steadier trial (higher mean dev accuracy over its
    epochs) wins them."""
    best: dict[str, tuple] = {}
    for r in records:
        if r.phase != "search" or r.status != "completed":
            continue
        history = [h.dev_accuracy for h in r.history] or [0.0]
        key = (r.metrics.dev.accuracy, sum(history) / len(history))
        if r.cell not in best or key > best[r.cell][0]:
            best[r.cell] = (key, r)
    return {cell: rec for cell, (_, rec) in best.items()}


def stats(values: list[float]) -> Stat | None:
    """Mean, std, n and ci95 over the values (a t-interval over seeds), or None when there are none."""
    return load(Stat, mean_ci(values))


def mean_std(st: Stat | None, digits: int = 3) -> str:
    """A cell statistic as "mean ± std" ("-" when the cell has none)."""
    return "-" if not st else f"{st.mean:.{digits}f} ± {st.std:.{digits}f}"


def duplicate_notes(rows: list[Trial]) -> list[str]:
    """A line per (cell, data seed) with more than one completed replicate record."""
    counts = group(completed_replicates(rows), lambda t: (t.cell, t.data_seed))
    return [f"note: {cell} has {len(g)} completed records for data seed {seed}; the newest is used"
            for (cell, seed), g in counts.items() if len(g) > 1]


def _retried(cell: str, rows: list[Trial], retried: list[Record]) -> Retried:
    keys = {r.trial_key for r in retried if r.cell == cell}
    now = Counter(t.status for t in rows if t.trial_key in keys).most_common()
    return Retried(trials=len(keys), now=dict(now))


def cell_stats(rows: list[Trial], retried: list[Record] | None = None) -> list[CellStats]:
    """Per cell, numbers only (summary.json): every accuracy with an interval over seeds and
    examples (`compare.cell_accuracy`); mean, std and t-interval over the replicates of prediction
    fractions, memory and time; the cell's trial counts."""
    ood = ood_names(rows)
    cells = group(rows, lambda t: t.cell)
    firsts = [cells[c][0] for c in unique(t.cell for t in rows)]  # in the order cells first appear: ties keep it
    out = []
    for first in sorted(firsts, key=lambda t: (t.task, t.method, t.peft, t.model, t.shots)):
        cell, mine = first.cell, cells[first.cell]
        reps = newest_per_seed(completed_replicates(mine))
        truncated = any(t.demos_truncated for t in reps)
        accuracy = lambda name, full=False: load(Stat, cell_accuracy(reps, name, full_vocab=full))  # noqa: E731
        fell = _collapse(reps, ["in_domain", *ood])
        trainable = values(reps, lambda t: t.trainable_params)
        out.append(CellStats(
            cell=cell, task=first.task, method=first.method, peft=first.peft, model=first.model,
            shots=int(first.shots), seeds=len(reps),
            in_domain_accuracy=accuracy("in_domain"), in_domain_accuracy_full_vocab=accuracy("in_domain", True),
            ood_accuracy={name: accuracy(name) for name in ood},
            ood_accuracy_full_vocab={name: accuracy(name, True) for name in ood},
            # a model answering one class everywhere scores ~0.5 on HANS: how often it says class 0
            pred_class0={name: stats(values(reps, lambda t: t.score(name).pred_class0)) for name in ["in_domain", *ood]},
            collapsed=list(fell), collapse=fell,
            teacher_in_domain_accuracy=stats(values(reps, lambda t: t.teacher_in_domain_accuracy)),
            dropped_queries=sum(t.n_dropped for t in reps),
            demos_truncated=stats(values(reps, lambda t: t.demos_truncated)) if truncated else None,
            tokens_cut=stats(values(reps, lambda t: t.tokens_cut)) if truncated else None,
            peak_memory_mib=stats(values(reps, lambda t: t.peak_memory_mib)),
            seconds=stats(values(reps, lambda t: t.seconds)),
            **_costs(mine, reps),
            trainable_params=int(max(trainable)) if trainable else None,
            lr=sorted(set(values(reps, lambda t: t.lr))),
            search_trials=sum(t.phase == "search" for t in mine),
            **{status: sum(t.status == status for t in mine) for status in ("pruned", "failed", "diverged")},
            # failed trials a --resume ran again, and how they ended this time
            retried=_retried(cell, mine, retried or [])))
    return out


def _collapse(reps: list[Trial], sets: list[str]) -> dict[str, Collapse]:
    """Per set where any seed answered one class ≥ 90 % of the time (a mean over seeds hides one
    seed's collapse): how many seeds of how many, and every seed's top-class share."""
    out = {}
    for name in sets:
        scored = [(int(t.data_seed), t.score(name)) for t in reps]
        scored = [(s, x) for s, x in scored if present(x.pred_top) and present(x.pred_top_class)]
        k, n = collapsed_seeds([float(x.pred_top) for _, x in scored])
        if k:
            out[name] = Collapse(seeds=k, of=n, shares={s: round(float(x.pred_top), 4) for s, x in scored},
                                 classes={s: x.pred_top_class for s, x in scored})
    return out


def collapse_text(c: CellStats, name: str) -> str:
    """'COLLAPSED on hans in 2 of 3 seeds'."""
    info = c.collapse.get(name)
    where = "in domain" if name == "in_domain" else f"on {name}"
    return f"COLLAPSED {where}" + (f" in {info.seeds} of {info.of} seeds" if info else "")


def _costs(rows: list[Trial], reps: list[Trial]) -> dict:
    """A cell's costs: adapting it once = its whole search (every search trial, pruned ones by their
    epochs) + one replicate's own training (mean); serving per query; Ray's share apart."""
    search = [t for t in rows if t.phase == "search"]
    rep_adapt = stats(values(reps, lambda t: t.adaptation_seconds))
    search_s = total(search, lambda t: t.adaptation_seconds)
    first = rows[0]
    serve = lambda get: stats(values(reps, lambda t: get(t.serving)))  # noqa: E731
    return {"search_seconds": round(search_s, 3), "replicate_adaptation_seconds": rep_adapt,
            "adaptation_seconds": round(search_s + (rep_adapt.mean if rep_adapt else 0.0), 3),
            "serve_ms_per_query": serve(lambda s: s.ms_per_query), "serve_peak_mib": serve(lambda s: s.peak_memory_mib),
            "serve_cpu_ms_per_query": serve(lambda s: s.cpu_ms_per_query),
            "serve_kv_bytes_per_query": serve(lambda s: s.kv_bytes_per_query),
            # serving measured alone (a sweep's gate) in every replicate, or not: a shared machine's figures are noisy
            "serve_alone": all(bool(t.serving.exclusive) for t in reps),
            "trial_seconds": round(total(rows, lambda t: t.trial_seconds), 3),
            "ray_overhead_seconds": round(total(rows, lambda t: t.ray_overhead_seconds), 3),
            "labelled_examples": int(first.shots) + (int(first.n_dev or 0) if spec.get(first.method).trains else 0)}


def interval_text(st: Stat | None, digits: int = 3) -> str:
    """An accuracy as "mean [lo, hi]" (its 95 % interval over seeds and examples), "-" when none."""
    if not st:
        return "-"
    lo, hi = st.ci95 or (st.mean, st.mean)
    return f"{st.mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def flags(c: CellStats) -> list[str]:
    return (["DROPPED QUERIES"] if c.dropped_queries else []) + [collapse_text(c, n) for n in c.collapsed]


def summary_table(cells: list[CellStats]) -> pd.DataFrame:
    """cell_stats as text, one row per cell: accuracies with their intervals, costs, trial counts."""
    rows = []
    for c in cells:
        row = {"cell": c.cell, "seeds": c.seeds, "in-domain acc": interval_text(c.in_domain_accuracy)}
        row.update({f"{name} acc": interval_text(st) for name, st in c.ood_accuracy.items()})
        row["flags"] = ", ".join(flags(c)) or "-"
        full = [("in-domain", c.in_domain_accuracy_full_vocab), *c.ood_accuracy_full_vocab.items()]
        row.update({f"{name} acc (full vocab)": mean_std(st) for name, st in full if st})
        row.update({f"{name.replace('_', '-')} P(class 0)": mean_std(st, 2) for name, st in c.pred_class0.items() if st})
        if c.teacher_in_domain_accuracy:
            row["teacher in-domain acc"] = mean_std(c.teacher_in_domain_accuracy)
        row["dropped queries"] = c.dropped_queries
        row["truncated demos"] = (f"{c.demos_truncated.mean:.0f}/{c.shots}, {c.tokens_cut.mean:.0f} tokens cut"
                                  if c.demos_truncated else "-")
        trains = spec.get(c.method).trains
        row["labelled"] = f"{c.shots}+{c.labelled_examples - c.shots} dev" if trains else f"{c.shots}"
        row["adapt s"] = f"{c.adaptation_seconds:.0f}" if trains else "0"
        row["serve ms/q"] = mean_std(c.serve_ms_per_query, 1) + ("" if c.serve_alone or not c.serve_ms_per_query
                                                                  else " (shared)")
        row["serve CPU ms/q"] = mean_std(c.serve_cpu_ms_per_query, 1)
        row["serve MiB"] = mean_std(c.serve_peak_mib, 0)
        kv = c.serve_kv_bytes_per_query
        row["KV MiB/q"] = f"{kv.mean / 2 ** 20:.1f}" if kv else "-"  # what a query attends to beside its own tokens
        row["peak MiB"], row["seconds"] = mean_std(c.peak_memory_mib, 0), mean_std(c.seconds, 0)
        row["Ray overhead s"] = f"{c.ray_overhead_seconds:.0f}"
        row["trainable params"] = f"{c.trainable_params:,}" if c.trainable_params is not None else "-"
        row["lr"] = ", ".join(f"{x:.3g}" for x in c.lr) or "-"
        row["search trials"] = c.search_trials
        row.update({"pruned": c.pruned, "failed": c.failed, "diverged": c.diverged})
        r = c.retried
        row["retried"] = (f"{r.trials} ({', '.join(f'{n} {s}' for s, n in sorted(r.now.items())) or 'not rerun'})"
                          if r.trials else "-")
        rows.append(row)
    return pd.DataFrame(rows)


def title_of(rows: list[Trial], sweep: str | None = None) -> str:
    """What ran, from the records themselves: sweep, tasks (+ OOD sets), models, methods, shots, seeds."""
    if not rows:
        return sweep or "no records"
    names = lambda vs: ", ".join(str(v) for v in sorted({v for v in vs if present(v)}))  # noqa: E731
    ood = ood_names(rows)
    models = ", ".join(sorted({Path(str(t.model).rstrip("/")).name for t in rows}))
    methods = ", ".join(sorted({variant_of(t.cell) for t in rows if "/" in t.cell}))
    reps = [t for t in rows if t.phase != "search"]  # the search's held-out tuning seed is not a replicate
    seeds = len({t.data_seed for t in (reps or rows) if present(t.data_seed)})
    parts = [f"{names(t.task for t in rows)}{' (OOD: ' + ', '.join(ood) + ')' if ood else ''}", models, methods,
             f"{names(t.shots for t in rows)} shots", f"{seeds} data seed{'s' if seeds != 1 else ''}"]
    return " · ".join(([sweep] if sweep else []) + parts)


def to_text(df: pd.DataFrame, width: int | None = None) -> str:
    """The summary as an aligned table no wider than the terminal: columns are kept in order of
    importance until the width is used; the rest are named at the end (all are in summary.md)."""
    if df.empty:
        return "(no records)\n"
    width = width or shutil.get_terminal_size((120, 24)).columns
    first = [c for c in df.columns if c in ("cell", "seeds") or c.endswith(" acc")] + [
        c for c in ("flags", "adapt s", "serve ms/q", "serve MiB", "failed") if c in df.columns]
    text = df[first + [c for c in df.columns if c not in first]].map(_cell)
    widths = {c: max(len(c), *(len(v) for v in text[c])) for c in text.columns}
    kept, used = [], -2
    for c in text.columns:  # two spaces between columns
        if used + 2 + widths[c] <= width or not kept:
            kept.append(c)
            used += 2 + widths[c]
    lines = ["  ".join(c.ljust(widths[c]) if i == 0 else c.rjust(widths[c]) for i, c in enumerate(kept))]
    lines += ["  ".join(v.ljust(widths[c]) if i == 0 else v.rjust(widths[c]) for i, (c, v) in enumerate(zip(kept, row)))
              for row in text[kept].itertuples(index=False)]
    hidden = [c for c in text.columns if c not in kept]
    if hidden:
        lines += textwrap.wrap(f"(not shown at this width: {', '.join(hidden)}; all in summary.md)", width)
    return "\n".join(line.rstrip()[:width] for line in lines) + "\n"


def _cell(v) -> str:
    """A column only some cells have (the CD teacher's accuracy) is missing elsewhere: '-'."""
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no records)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, title: str | None = None) -> tuple[list[Trial], pd.DataFrame, str, list]:
    """trials.parquet / trials.csv / summary.md / summary.json in `folder`, rebuilt from its records;
    returns the trials' rows, the summary table, the title (what ran, unless one is given) and the
    paired comparisons."""
    folder = Path(folder)
    records = load_records(folder)
    rows = trials(records)
    cells = cell_stats(rows, retried(folder))
    summary = summary_table(cells)
    title = title or title_of(rows, next((r.sweep for r in records if r.sweep), None))
    if rows:
        frame = to_frame(rows)
        frame.to_parquet(folder / "trials.parquet", index=False)
        frame.to_csv(folder / "trials.csv", index=False)
    notes = duplicate_notes(rows)
    comps = comparisons(rows)
    paired_md = ("\n## Paired differences (A − B over shared data seeds and examples; verdict and its reason)\n\n"
                 + "".join(f"- {line}\n" for line in comparison_lines(comps))) if comps else ""
    text = f"# {title}\n\n" + to_markdown(summary) + (PROTOCOL if not summary.empty else "") + paired_md + "".join(
        f"\n{n}\n" for n in notes)
    (folder / "summary.md").write_text(text)
    write_json_atomic(folder / "summary.json", {"title": title, "cells": dump(cells), "comparisons": dump(comps)})
    return rows, summary, title, comps


PROTOCOL = """
Accuracies: mean over the data seeds [95 % t-interval over the seeds' own means, which carry both the
seeds' and the evaluation examples' noise; below 6 seeds never narrower than the examples' noise]. FT,
PBFT and CD select on n_dev labelled examples beyond the k shots ('labelled'); ICL uses none. adapt s:
the cell's whole search plus one replicate's adaptation. serve: a sample of in-domain queries scored
as deployed, median ms per query over repeated passes, measured alone on its node or device in a sweep
("(shared)": measured beside other work). COLLAPSED on a set: a seed answered one class ≥ 90 % of the
time there. Verdicts: "a better" / "b better" (sign-flip p < 0.05 and the interval excludes 0), "no
detectable difference" (with the smallest difference this rule detects at 80 % power, simulated),
"inconclusive" (fewer than 6 seeds: the sign-flip test cannot reach p < 0.05).
"""
