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

import pandas as pd

from orchestrator.cells import Cell, variant_of
from orchestrator.analysis.compare import cell_accuracy, comparison_lines, comparisons, newest_per_seed, ood_names
from orchestrator.analysis.stats import collapsed_seeds, mean_ci
from trainers.methods import spec
from trainers.contract import CellStats, Collapse, Context, EvalBlock, Record, Retried, Serving, Stat, dump, load
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


def cell_of(rec: Record) -> str:
    return rec.cell or Cell.of_config(rec.config).id


def _row(rec: Record) -> dict:
    c, m, res = rec.config, rec.metrics, rec.resources
    serving = res.serving or Serving()
    row = {"cell": cell_of(rec), "phase": rec.phase or "run", "status": rec.status, "trial_key": rec.trial_key,
           # what ran, as its config says (a record's own copies of these came later)
           "task": c["task"], "method": c["method"], "peft": Cell.of_config(c).peft,
           "model": c["model"], "shots": c["shots"], "data_seed": c["data_seed"],
           "seed": rec.seed if rec.keys is None or "seed" in rec.keys else c.get("seed"),
           "lr": rec.resolved.lr,
           "epochs_run": len(rec.history),
           "dev_accuracy": m.dev.accuracy if m.dev else (rec.history[-1].dev_accuracy if rec.history else None),
           "in_domain_accuracy": m.in_domain.accuracy if m.in_domain else None,
           "in_domain_accuracy_full_vocab": m.in_domain.accuracy_full_vocab if m.in_domain else None,
           "peak_memory_mib": res.peak_memory_mib, "seconds": res.total_seconds,
           "trial_seconds": rec.trial_seconds, "n_dev": c.get("n_dev"),
           # a pruned trial has no phases: its epochs' seconds (training and dev) and CD's teacher targets
           "adaptation_seconds": (res.adaptation_seconds if res.adaptation_seconds is not None
                                  else sum((h.epoch_seconds or 0) + (h.setup_seconds or 0) for h in rec.history)),
           "serve_ms_per_query": serving.ms_per_query, "serve_cpu_ms_per_query": serving.cpu_ms_per_query,
           "serve_exclusive": serving.exclusive, "serve_peak_mib": serving.peak_memory_mib,
           "serve_kv_bytes_per_query": serving.kv_bytes_per_query,
           "trainable_params": rec.params.trainable, "total_params": rec.params.total,
           "error": rec.error,
           "time": rec.env.time}
    context = rec.resolved.context or Context()
    # queries left unscored because they did not fit the window (a cell with any is flagged in the summary)
    row["n_dropped"] = sum(int(b.n_dropped or 0) for b in [m.in_domain or EvalBlock(), *m.ood.values()])
    row["demos_truncated"], row["tokens_cut"] = context.demos_truncated, context.tokens_cut
    for name, block in ([("in_domain", m.in_domain)] if m.in_domain else []) + list(m.ood.items()):
        if name != "in_domain":
            row[f"{name}_accuracy"], row[f"{name}_full_vocab"] = block.accuracy, block.accuracy_full_vocab
        fractions = block.pred_fraction
        row[f"{name}_pred_class0"] = next(iter(fractions.values()))
        row[f"{name}_pred_top"] = max(fractions.values())
        row[f"{name}_pred_top_class"] = max(fractions, key=fractions.get)
    if m.teacher and m.teacher.in_domain:
        row["teacher_in_domain_accuracy"] = m.teacher.in_domain.accuracy
    for k, v in rec.searched.items():
        row[f"param:{k}"] = v
    if row["trial_seconds"] is not None and row["seconds"] is not None:  # worker group start/stop, scheduling
        row["ray_overhead_seconds"] = round(row["trial_seconds"] - row["seconds"], 3)
    return row


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


def trials_table(records: list[Record]) -> pd.DataFrame:
    return pd.DataFrame([_row(r) for r in records])


def stats(values: pd.Series | None) -> Stat | None:
    """Mean, std, n and ci95 over the non-missing values (a t-interval over seeds), or None."""
    return load(Stat, mean_ci([] if values is None else values.dropna().astype(float).tolist()))


def mean_std(st: Stat | None, digits: int = 3) -> str:
    """A cell statistic as "mean ± std" ("-" when the cell has none)."""
    return "-" if not st else f"{st.mean:.{digits}f} ± {st.std:.{digits}f}"


def duplicate_notes(table: pd.DataFrame) -> list[str]:
    """A line per (cell, data seed) with more than one completed replicate record."""
    if table.empty:
        return []
    reps = table[(table["phase"] != "search") & (table["status"] == "completed")]
    counts = reps.groupby(["cell", "data_seed"]).size()
    return [f"note: {cell} has {n} completed records for data seed {seed}; the newest is used"
            for (cell, seed), n in counts.items() if n > 1]


def _retried(cell: str, group: pd.DataFrame, retried: list[Record]) -> Retried:
    keys = {r.trial_key for r in retried if r.cell == cell}
    now = group[group["trial_key"].isin(keys)]["status"].value_counts().to_dict() if keys else {}
    return Retried(trials=len(keys), now={k: int(v) for k, v in now.items()})


def cell_stats(table: pd.DataFrame, records: list[Record], retried: list[Record] | None = None) -> list[CellStats]:
    """Per cell, numbers only (summary.json): every accuracy with an interval over seeds and
    examples (`compare.cell_accuracy`; `records` are the table's rows' records, in its order); mean,
    std and t-interval over the replicates of prediction fractions, memory and time; the cell's
    trial counts."""
    if table.empty:
        return []
    ood = ood_names(table)
    out = []
    for cell in table.drop_duplicates("cell").sort_values(["task", "method", "peft", "model", "shots"])["cell"]:
        group = table[table["cell"] == cell]
        reps = newest_per_seed(group[(group["phase"] != "search") & (group["status"] == "completed")])
        first = group.iloc[0]
        truncated = "demos_truncated" in reps and bool(reps["demos_truncated"].fillna(0).astype(float).any())
        accuracy = lambda name, full=False: load(Stat, cell_accuracy(reps, records, name, full_vocab=full))  # noqa: E731
        fell = _collapse(reps, ["in_domain", *ood])
        out.append(CellStats(
            cell=cell, task=first["task"], method=first["method"], peft=first["peft"], model=first["model"],
            shots=int(first["shots"]), seeds=int(len(reps)),
            in_domain_accuracy=accuracy("in_domain"), in_domain_accuracy_full_vocab=accuracy("in_domain", True),
            ood_accuracy={name: accuracy(name) for name in ood},
            ood_accuracy_full_vocab={name: accuracy(name, True) for name in ood},
            # a model answering one class everywhere scores ~0.5 on HANS: how often it says class 0
            pred_class0={name: stats(reps.get(f"{name}_pred_class0")) for name in ["in_domain", *ood]},
            collapsed=list(fell), collapse=fell,
            teacher_in_domain_accuracy=stats(reps.get("teacher_in_domain_accuracy")),
            dropped_queries=int(reps["n_dropped"].sum()) if "n_dropped" in reps else 0,
            demos_truncated=stats(reps["demos_truncated"]) if truncated else None,
            tokens_cut=stats(reps["tokens_cut"]) if truncated else None,
            peak_memory_mib=stats(reps["peak_memory_mib"]), seconds=stats(reps["seconds"]),
            **_costs(group, reps),
            trainable_params=int(reps["trainable_params"].max()) if reps["trainable_params"].notna().any() else None,
            lr=[float(x) for x in sorted(reps["lr"].dropna().unique())],
            search_trials=int((group["phase"] == "search").sum()),
            **{status: int((group["status"] == status).sum()) for status in ("pruned", "failed", "diverged")},
            # failed trials a --resume ran again, and how they ended this time
            retried=_retried(cell, group, retried or [])))
    return out


def _collapse(reps: pd.DataFrame, sets: list[str]) -> dict[str, Collapse]:
    """Per set where any seed answered one class ≥ 90 % of the time (a mean over seeds hides one
    seed's collapse): how many seeds of how many, and every seed's top-class share."""
    out = {}
    for name in sets:
        if f"{name}_pred_top" not in reps:
            continue
        rows = reps[["data_seed", f"{name}_pred_top", f"{name}_pred_top_class"]].dropna()
        k, n = collapsed_seeds(rows[f"{name}_pred_top"].astype(float).tolist())
        if k:
            out[name] = Collapse(seeds=k, of=n, shares={int(s): round(float(v), 4) for s, v, _ in rows.itertuples(index=False)},
                                 classes={int(s): c for s, _, c in rows.itertuples(index=False)})
    return out


def collapse_text(c: CellStats, name: str) -> str:
    """'COLLAPSED on hans in 2 of 3 seeds'."""
    info = c.collapse.get(name)
    where = "in domain" if name == "in_domain" else f"on {name}"
    return f"COLLAPSED {where}" + (f" in {info.seeds} of {info.of} seeds" if info else "")


def _costs(group: pd.DataFrame, reps: pd.DataFrame) -> dict:
    """A cell's costs: adapting it once = its whole search (every search trial, pruned ones by their
    epochs) + one replicate's own training (mean); serving per query; Ray's share apart."""
    search = group[group["phase"] == "search"]
    rep_adapt = stats(reps["adaptation_seconds"]) if "adaptation_seconds" in reps else None
    search_s = float(search["adaptation_seconds"].fillna(0).sum()) if "adaptation_seconds" in search else 0.0
    overhead = group["ray_overhead_seconds"].dropna() if "ray_overhead_seconds" in group else pd.Series(dtype=float)
    return {"search_seconds": round(search_s, 3), "replicate_adaptation_seconds": rep_adapt,
            "adaptation_seconds": round(search_s + (rep_adapt.mean if rep_adapt else 0.0), 3),
            "serve_ms_per_query": stats(reps.get("serve_ms_per_query")), "serve_peak_mib": stats(reps.get("serve_peak_mib")),
            "serve_cpu_ms_per_query": stats(reps.get("serve_cpu_ms_per_query")),
            "serve_kv_bytes_per_query": stats(reps.get("serve_kv_bytes_per_query")),
            # serving measured alone (a sweep's gate) in every replicate, or not: a shared machine's figures are noisy
            "serve_alone": bool(reps["serve_exclusive"].fillna(False).astype(bool).all()) if "serve_exclusive" in reps else False,
            "trial_seconds": round(float(group["trial_seconds"].fillna(0).sum()), 3) if "trial_seconds" in group else None,
            "ray_overhead_seconds": round(float(overhead.sum()), 3),
            "labelled_examples": int(group.iloc[0]["shots"]) + (int(group.iloc[0].get("n_dev") or 0)
                                                                if spec.get(group.iloc[0]["method"]).trains else 0)}


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


def title_of(table: pd.DataFrame, sweep: str | None = None) -> str:
    """What ran, from the records themselves: sweep, tasks (+ OOD sets), models, methods, shots, seeds."""
    if table.empty:
        return sweep or "no records"
    names = lambda col: ", ".join(str(v) for v in sorted(set(table[col].dropna())))  # noqa: E731
    ood = ood_names(table)
    models = ", ".join(sorted({Path(str(m).rstrip("/")).name for m in table["model"]}))
    methods = ", ".join(sorted({variant_of(c) for c in table["cell"] if "/" in c}))
    reps = table[table["phase"] != "search"]  # the search's held-out tuning seed is not a replicate
    seeds = (reps if len(reps) else table)["data_seed"].nunique()
    parts = [f"{names('task')}{' (OOD: ' + ', '.join(ood) + ')' if ood else ''}", models, methods,
             f"{names('shots')} shots", f"{seeds} data seed{'s' if seeds != 1 else ''}"]
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


def write_tables(folder: Path, title: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame, str, list]:
    """trials.parquet / trials.csv / summary.md / summary.json in `folder`, rebuilt from its records;
    returns the trials table, the summary table, the title (what ran, unless one is given) and the
    paired comparisons."""
    folder = Path(folder)
    records = load_records(folder)
    table = trials_table(records)
    cells = cell_stats(table, records, retried(folder))
    summary = summary_table(cells)
    title = title or title_of(table, next((r.sweep for r in records if r.sweep), None))
    if not table.empty:
        table.to_parquet(folder / "trials.parquet", index=False)
        table.to_csv(folder / "trials.csv", index=False)
    notes = duplicate_notes(table)
    comps = comparisons(table, records)
    paired_md = ("\n## Paired differences (A − B over shared data seeds and examples; verdict and its reason)\n\n"
                 + "".join(f"- {line}\n" for line in comparison_lines(comps))) if comps else ""
    text = f"# {title}\n\n" + to_markdown(summary) + (PROTOCOL if not summary.empty else "") + paired_md + "".join(
        f"\n{n}\n" for n in notes)
    (folder / "summary.md").write_text(text)
    write_json_atomic(folder / "summary.json", {"title": title, "cells": dump(cells), "comparisons": dump(comps)})
    return table, summary, title, comps


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
