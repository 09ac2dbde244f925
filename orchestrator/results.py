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
import sys
from pathlib import Path

import pandas as pd

from trainers.records import write_json_atomic

RECORDS = "trials"
CORRUPT = "corrupt"  # under trials/: records that did not parse


def records_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / RECORDS


def write_record(sweep_dir: Path, record: dict) -> Path:
    path = records_dir(sweep_dir) / f"{record['trial_key']}.json"
    write_json_atomic(path, record)
    return path


def load_records(folder: Path, set_aside: bool = True) -> list[dict]:
    """Every record of a sweep (or a folder of single-run records). One that does not parse (a
    truncated write, a hand edit) is named on stderr and moved to `trials/corrupt/`, so the rest
    load and a resumed sweep runs that trial again."""
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
            out.append(rec)
        elif sub.is_dir():  # inside trials/ every file is a record
            _set_aside(p, "is not a result record (no status or config)", set_aside)
    return out


def _set_aside(path: Path, why: str, move: bool) -> None:
    where = path
    if move:
        where = path.parent / CORRUPT / path.name
        where.parent.mkdir(exist_ok=True)
        os.replace(path, where)
    print(f"warning: record {path} {why}; {'set aside as ' + str(where) + ', its trial runs again on --resume' if move else 'skipped'}",
          file=sys.stderr)


def cell_of(rec: dict) -> str:
    c = rec["config"]
    variant = c["method"] if c["method"] == "icl" or c["peft"]["kind"] == "none" else f"{c['method']}+{c['peft']['kind']}"
    return rec.get("cell") or f"{c['task']}/{variant}/{Path(c['model'].rstrip('/')).name}/{c['shots']}shot"


def _row(rec: dict) -> dict:
    c, m = rec["config"], rec.get("metrics") or {}
    res = rec.get("resources") or {}
    row = {"cell": cell_of(rec), "phase": rec.get("phase", "run"), "status": rec["status"], "trial_key": rec.get("trial_key"),
           "task": c["task"], "method": c["method"], "peft": c["peft"]["kind"] if c["method"] != "icl" else "none",
           "model": c["model"], "shots": c["shots"], "data_seed": c["data_seed"], "seed": c["seed"],
           "lr": (rec.get("resolved") or {}).get("lr"),
           "epochs_run": len(rec.get("history") or []),
           "dev_accuracy": (m.get("dev") or {}).get("accuracy", (rec.get("history") or [{}])[-1].get("dev_accuracy")),
           "in_domain_accuracy": (m.get("in_domain") or {}).get("accuracy"),
           "in_domain_accuracy_full_vocab": (m.get("in_domain") or {}).get("accuracy_full_vocab"),
           "peak_memory_mib": res.get("peak_memory_mib"), "seconds": res.get("total_seconds"),
           "trial_seconds": rec.get("trial_seconds"),
           "trainable_params": (rec.get("params") or {}).get("trainable"), "error": rec.get("error"),
           "time": (rec.get("env") or {}).get("time")}
    context = (rec.get("resolved") or {}).get("context") or {}
    # queries left unscored because they did not fit the window (a cell with any is flagged in the summary)
    row["n_dropped"] = sum(int(b.get("n_dropped") or 0) for b in [m.get("in_domain") or {}, *(m.get("ood") or {}).values()])
    row["demos_truncated"], row["tokens_cut"] = context.get("demos_truncated"), context.get("tokens_cut")
    if m.get("in_domain"):
        row["in_domain_pred_class0"] = next(iter(m["in_domain"]["pred_fraction"].values()))
    for name, block in (m.get("ood") or {}).items():
        row[f"{name}_accuracy"] = block.get("accuracy")
        row[f"{name}_pred_class0"] = next(iter(block["pred_fraction"].values()))
    if "in_domain" in (m.get("teacher") or {}):
        row["teacher_in_domain_accuracy"] = m["teacher"]["in_domain"]["accuracy"]
    for k, v in (rec.get("searched") or {}).items():
        row[f"param:{k}"] = v
    return row


def best_search_trials(records: list[dict]) -> dict[str, dict]:
    """Per cell, the completed search trial with the best final dev accuracy.

    Ties are common on a small dev split: the steadier trial (higher mean dev accuracy over its
    epochs) wins them."""
    best: dict[str, tuple] = {}
    for r in records:
        if r.get("phase") != "search" or r["status"] != "completed":
            continue
        history = r.get("history") or [{"dev_accuracy": 0.0}]
        key = (r["metrics"]["dev"]["accuracy"], sum(h["dev_accuracy"] for h in history) / len(history))
        if r["cell"] not in best or key > best[r["cell"]][0]:
            best[r["cell"]] = (key, r)
    return {cell: rec for cell, (_, rec) in best.items()}


def trials_table(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([_row(r) for r in records])


def _mean_std(values: pd.Series, digits: int = 3) -> str:
    v = values.dropna().astype(float)
    if v.empty:
        return "-"
    std = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {std:.{digits}f}" if not math.isnan(std) else f"{v.mean():.{digits}f}"


def _truncation(reps: pd.DataFrame) -> str:
    """'a/k, b tokens cut' (means over the replicates) where the demonstrations had to be shortened."""
    if "demos_truncated" not in reps or not reps["demos_truncated"].fillna(0).astype(float).any():
        return "-"
    return (f"{reps['demos_truncated'].astype(float).mean():.0f}/{int(reps['shots'].max())}, "
            f"{reps['tokens_cut'].astype(float).mean():.0f} tokens cut")


def _newest_per_seed(reps: pd.DataFrame) -> pd.DataFrame:
    """One replicate per data seed: a moved folder or a rerun can leave two; the newest counts."""
    return reps.sort_values("time", kind="stable", na_position="first").drop_duplicates("data_seed", keep="last")


def duplicate_notes(table: pd.DataFrame) -> list[str]:
    """A line per (cell, data seed) with more than one completed replicate record."""
    if table.empty:
        return []
    reps = table[(table["phase"] != "search") & (table["status"] == "completed")]
    counts = reps.groupby(["cell", "data_seed"]).size()
    return [f"note: {cell} has {n} completed records for data seed {seed}; the newest is used"
            for (cell, seed), n in counts.items() if n > 1]


def summary_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per cell: mean ± std over the replicate (or single-run) trials, plus pruned/failed counts."""
    rows = []
    if table.empty:
        return pd.DataFrame()
    ood_cols = sorted(c for c in table.columns if c.endswith("_accuracy") and c not in (
        "dev_accuracy", "in_domain_accuracy", "in_domain_accuracy_full_vocab", "teacher_in_domain_accuracy"))
    order = table.drop_duplicates("cell").sort_values(["task", "method", "peft", "model", "shots"])["cell"]
    for cell in order:
        group = table[table["cell"] == cell]
        reps = _newest_per_seed(group[(group["phase"] != "search") & (group["status"] == "completed")])
        row = {"cell": cell, "seeds": len(reps), "in-domain acc": _mean_std(reps["in_domain_accuracy"])}
        for col in ood_cols:
            row[col.replace("_accuracy", " acc")] = _mean_std(reps[col])
        # a model answering one class everywhere scores ~0.5 on HANS: show how often it says class 0
        for col in ["in_domain_pred_class0"] + [c.replace("_accuracy", "_pred_class0") for c in ood_cols]:
            if col in reps:
                row[col.replace("_pred_class0", " P(class 0)").replace("_", "-")] = _mean_std(reps[col], 2)
        if "teacher_in_domain_accuracy" in reps and reps["teacher_in_domain_accuracy"].notna().any():
            row["teacher in-domain acc"] = _mean_std(reps["teacher_in_domain_accuracy"])
        row["dropped queries"] = int(reps["n_dropped"].sum()) if "n_dropped" in reps else 0
        row["truncated demos"] = _truncation(reps)
        row["flags"] = "DROPPED QUERIES" if row["dropped queries"] else "-"
        row["peak MiB"] = _mean_std(reps["peak_memory_mib"], 0)
        row["seconds"] = _mean_std(reps["seconds"], 0)
        row["trainable params"] = f"{int(reps['trainable_params'].max()):,}" if reps["trainable_params"].notna().any() else "-"
        row["lr"] = ", ".join(f"{x:.3g}" for x in sorted(reps["lr"].dropna().unique())) or "-"
        row["search trials"] = int((group["phase"] == "search").sum())
        row["pruned"] = int((group["status"] == "pruned").sum())
        row["failed"] = int((group["status"] == "failed").sum())
        row["diverged"] = int((group["status"] == "diverged").sum())
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no records)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    def cell(v) -> str:  # a column only some cells have (the CD teacher's accuracy) is NaN elsewhere
        return "-" if isinstance(v, float) and math.isnan(v) else str(v)
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_tables(folder: Path, title: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials.parquet / trials.csv / summary.md in `folder`, rebuilt from its records."""
    folder = Path(folder)
    table = trials_table(load_records(folder))
    summary = summary_table(table)
    if not table.empty:
        table.to_parquet(folder / "trials.parquet", index=False)
        table.to_csv(folder / "trials.csv", index=False)
    notes = duplicate_notes(table)
    text = (f"# {title}\n\n" if title else "") + to_markdown(summary) + "".join(f"\n{n}\n" for n in notes)
    (folder / "summary.md").write_text(text)
    write_json_atomic(folder / "summary.json", summary.to_dict(orient="records"))
    return table, summary
