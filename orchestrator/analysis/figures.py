"""The report's accuracy figures and the helpers every figure shares (the cost figures are in
`orchestrator/analysis/cost_figures.py`), each a pure function of a sweep's records (PNG and SVG, matplotlib Agg).

    python -m orchestrator report results/acceptance/sizes_cpu      # writes report/*.png, *.svg

Every figure takes the replicate table (one row per completed replicate: the newest per cell and
data seed), the per-cell statistics and the records, and either writes its files or raises `Skip`
with the reason its axis is missing (one model size, one shot count, no search), which the report
prints in its place. Conventions: a collapsed cell's markers are hollow in every figure; intervals
are the cells' own (seeds and examples); every figure says its n (seeds × examples); models of
different families are never joined by a line as if they were one scaling curve.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on a cluster node
matplotlib.rcParams["svg.hashsalt"] = "fewshot-sweeps"  # the same records draw the same file: no random ids
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.cells import Cell, variant_of  # noqa: E402
from orchestrator.analysis.compare import ood_names  # noqa: E402
from orchestrator.analysis.stats import COLLAPSE  # noqa: E402
from trainers.contract import CellStats, Record  # noqa: E402
from trainers.data.tasks import task_definitions  # noqa: E402

COLORS = {"icl": "#1f77b4", "cd": "#d62728", "pbft": "#2ca02c", "ft": "#9467bd", "cartridge": "#ff7f0e"}
FAMILY_STYLES = ["-", "--", ":", "-."]


class Skip(Exception):
    """This sweep lacks the figure's axis; the message says which."""


def variant(cell: str) -> str:
    return variant_of(cell)


def color(v: str) -> str:
    return COLORS.get(v.split("+")[0], "#7f7f7f")


def model_name(model: str) -> str:
    return Path(str(model).rstrip("/")).name


def family(model: str) -> str:
    """A model's family from its name, its size removed: opt-1.3b -> opt, smollm2-135m -> smollm2."""
    return re.sub(r"[-_.]?\d+(\.\d+)?[mbk]$", "", model_name(model).lower()) or model_name(model)


def sets_of(reps: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, label) of every accuracy the replicates carry: in-domain first, then the OOD sets."""
    return [("in_domain_accuracy", "in-domain")] + [(f"{n}_accuracy", f"{n} (OOD)") for n in ood_names(reps)
                                                     if reps[f"{n}_accuracy"].notna().any()]


def _set_name(col: str) -> str:
    return col[: -len("_accuracy")]


def _cell_of(cells: list[CellStats], cell: str) -> CellStats:
    return next(c for c in cells if c.cell == cell)


def hollow(c: CellStats, set_name: str) -> bool:
    """A cell's marker for one set is hollow when a seed collapsed on that set (each set its own)."""
    return set_name in c.collapsed


def seed_collapsed(row, set_name: str) -> bool:
    """One replicate (a row of the replicate table) answered one class ≥ 90 % of the time on a set."""
    top = row.get(f"{set_name}_pred_top")
    return top is not None and top == top and float(top) >= COLLAPSE


def n_text(cells: list[CellStats], set_name: str = "in_domain") -> str:
    """'n = 3 seeds × 64 examples' (ranges when cells differ)."""
    stats = [c.accuracy(set_name) for c in cells]
    stats = [s for s in stats if s]
    if not stats:
        return ""
    seeds = sorted({s.n for s in stats})
    per = sorted({round((s.examples or 0) / max(1, s.n)) for s in stats})
    fmt = lambda v: f"{v[0]}" if len(v) == 1 else f"{v[0]}–{v[-1]}"  # noqa: E731
    return f"n = {fmt(seeds)} seeds × {fmt(per)} examples"


def log_x(ax, ticks: dict | None = None) -> None:
    """A log x axis labelled in plain numbers (or at `ticks`: value -> label), no minor labels."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ticks:
        ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    else:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for p in paths:
        fig.savefig(p, dpi=150 if p.suffix == ".png" else None, bbox_inches="tight",
                    metadata={"Date": None} if p.suffix == ".svg" else None)  # nor the hour it was drawn
    plt.close(fig)
    return paths


def _groups(reps: pd.DataFrame, by: list[str]):
    return reps.groupby(by, sort=True) if len(reps) else []


def point(ax, x, y, ci, v: str, hollow: bool, marker: str = "o", size: float = 6, label: str | None = None):
    lo, hi = ci or (y, y)
    ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], color=color(v), marker=marker, ms=size, capsize=3,
                mfc="none" if hollow else color(v), label=label, ls="none")


def accuracy_vs_axis(reps: pd.DataFrame, cells: list[CellStats], out: Path, axis: str) -> list[Path]:
    """Accuracy against model size (parameters) or shots, per method: seeds as faint points, each
    cell's mean and interval; a line joins the points of one method within one model family only."""
    x_col, fixed, xlabel, name = (("model_params", "shots", "parameters", "accuracy_vs_size") if axis == "size"
                                  else ("shots", "model", "shots (k)", "accuracy_vs_shots"))
    written = []
    for (task, other), group in _groups(reps, ["task", fixed]):
        if group[x_col].nunique() < 2:
            continue
        sets = sets_of(group)
        fig, axes = plt.subplots(1, len(sets), figsize=(4.8 * len(sets), 4.0), squeeze=False)
        mine = [_cell_of(cells, c) for c in group["cell"].unique()]
        for ax, (col, label) in zip(axes[0], sets):
            variants = sorted(group["cell"].map(variant).unique())
            for i, v in enumerate(variants):
                dodge = 1 + 0.03 * (i - (len(variants) - 1) / 2)  # methods side by side, not on top of each other
                rows = group[group["cell"].map(variant) == v]
                for f_i, (fam, fam_rows) in enumerate(rows.groupby(rows["model"].map(family))):
                    line = []
                    for cell, cr in fam_rows.groupby("cell"):
                        c, x = _cell_of(cells, cell), cr[x_col].iloc[0] * dodge
                        st = c.accuracy(_set_name(col))
                        if not st:
                            continue
                        ax.scatter([x] * len(cr), cr[col], color=color(v), alpha=0.3, s=12, linewidths=0)
                        point(ax, x, st.mean, st.ci95, v, hollow(c, _set_name(col)))
                        line.append((x, st.mean))
                    if len(line) > 1:
                        xs, ys = zip(*sorted(line))
                        ax.plot(xs, ys, color=color(v), ls=FAMILY_STYLES[f_i % len(FAMILY_STYLES)], lw=1)
                ax.plot([], [], color=color(v), marker="o", label=v)
            ax.set(xlabel=xlabel, ylabel="accuracy", title=f"{label}\n{n_text(mine, _set_name(col))}")
            if axis == "size":
                sizes = group.drop_duplicates("model").set_index("model_params")["model"]
                log_x(ax, {n: f"{model_name(m)}\n{n / 1e6:.0f}M" for n, m in sizes.items()})
            else:
                ax.set_xticks(sorted(group["shots"].unique()))
            ax.axhline(0.5, color="grey", lw=0.6, ls=":")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        what = f"{other} shots" if axis == "size" else model_name(other)
        fig.suptitle(f"{task}: accuracy vs {xlabel} ({what}); hollow: collapsed; lines join one model family only", y=1.05)
        written += save(fig, out, f"{name}_{task}_{what.replace(' ', '')}")
    if not written:
        raise Skip(f"one {'model size' if axis == 'size' else 'shot count'} per task in this sweep")
    return written


def id_vs_ood(reps: pd.DataFrame, cells: list[CellStats], out: Path) -> list[Path]:
    """In-domain against OOD accuracy, one point per replicate (the reference paper's view), chance marked."""
    written = []
    for task, group in _groups(reps, ["task"]):
        task = task[0] if isinstance(task, tuple) else task
        mine = [_cell_of(cells, c) for c in group["cell"].unique()]
        for col, label in sets_of(group)[1:]:
            fig, ax = plt.subplots(figsize=(5.6, 4.6))
            for cell, rows in group.groupby("cell"):
                v, m = variant(cell), model_name(rows["model"].iloc[0])
                marker = "o" if rows["model_params"].iloc[0] == group["model_params"].min() else "s"
                # each point is one seed: hollow when that seed collapsed on either set this figure plots
                fell = [seed_collapsed(r, "in_domain") or seed_collapsed(r, _set_name(col)) for _, r in rows.iterrows()]
                legend = f"{v} · {m} · {rows['shots'].iloc[0]} shots" + (f" ({sum(fell)} collapsed)" if any(fell) else "")
                for hollow_seed in (False, True):
                    pick = [f == hollow_seed for f in fell]
                    if any(pick):
                        ax.scatter(rows["in_domain_accuracy"][pick], rows[col][pick], edgecolors=color(v), marker=marker,
                                   alpha=0.85, facecolors="none" if hollow_seed else color(v), label=legend)
                        legend = None
            ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance (balanced subsets)")
            ax.axvline(0.5, color="grey", lw=0.8, ls=":")
            lims = [min(0.3, rows_min(group, col)), max(0.8, rows_max(group, col))]
            ax.plot(lims, lims, color="grey", lw=0.6, ls="--")
            ax.set(xlabel="in-domain accuracy", ylabel=f"{label} accuracy", xlim=lims, ylim=lims,
                   title=f"{task}: in-domain vs {label}\n{n_text(mine, _set_name(col))}; points: replicates "
                         f"(hollow: that seed collapsed)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1))
            written += save(fig, out, f"id_vs_ood_{task}_{_set_name(col)}")
    if not written:
        raise Skip("no OOD set in this sweep")
    return written


def rows_min(group: pd.DataFrame, col: str) -> float:
    return float(min(group["in_domain_accuracy"].min(), group[col].min())) - 0.05


def rows_max(group: pd.DataFrame, col: str) -> float:
    return float(max(group["in_domain_accuracy"].max(), group[col].max())) + 0.05


def group_breakdown(records: list[Record], reps: pd.DataFrame, cells: list[CellStats], out: Path, name: str) -> list[Path]:
    """Accuracy per group × gold label of a grouped OOD set (HANS: its heuristics; the set's `groups`
    in trainers/data/tasks.yaml) per cell, the mean over replicates with the examples behind each
    square: collapse is a column of 1s and 0s."""
    keep = set(reps["trial_key"])
    acc: dict[str, dict[str, list[float]]] = {}
    count: dict[str, dict[str, int]] = {}
    for r in records:
        block = r.metrics.ood[name].breakdown if name in r.metrics.ood else None
        if r.trial_key in keep and block:
            for k, v in block.items():
                acc.setdefault(r.cell, {}).setdefault(k, []).append(v.accuracy)
                count.setdefault(r.cell, {})[k] = count.get(r.cell, {}).get(k, 0) + (v.n or 0)
    if not acc:
        raise Skip(f"no {name} breakdown in the records")
    names = sorted(acc)
    rows = sorted({k for c in acc.values() for k in c})
    grid = [[sum(acc[c].get(k, [float("nan")])) / max(1, len(acc[c].get(k, []))) for c in names] for k in rows]
    fig, ax = plt.subplots(figsize=(1.25 * len(names) + 3.5, 0.55 * len(rows) + 2.4))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}\nn={count[names[j]].get(rows[i], 0)}", ha="center", va="center", fontsize=6.5)
    labels = [f"{Cell.parse(c).task}\n{variant(c)}\n{Cell.parse(c).model_tag} {Cell.parse(c).shots}-shot"
              + ("\nCOLLAPSED" if name in _cell_of(cells, c).collapsed else "") for c in names]
    ax.set_xticks(range(len(names)), labels, fontsize=7, rotation=30)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    fig.colorbar(im, ax=ax, label="accuracy")
    seeds = max(len(v) for c in acc.values() for v in c.values())
    column = task_definitions()["ood_sets"][name].get("group_column", "group")
    ax.set_title(f"{name} accuracy per {column} and gold label (mean over up to {seeds} seeds; n: examples over seeds)")
    return save(fig, out, f"{name}_breakdown")


def grouped_sets() -> list[str]:
    """The OOD sets whose definition names groups (HANS's heuristics): each gets a breakdown figure."""
    return [n for n, d in task_definitions()["ood_sets"].items() if d.get("groups")]


def search(records: list[Record], out: Path) -> list[Path]:
    """Per cell: every search trial's dev accuracy per epoch (pruned ones end in ×), and the searched
    value against the trial's final dev accuracy (a learning rate on a log axis, as it is searched)."""
    trials = [r for r in records if r.phase == "search" and r.history]
    if not trials:
        raise Skip("no search trials (nothing was searched)")
    cells = sorted({r.cell for r in trials})
    fig, axes = plt.subplots(2, len(cells), figsize=(4.4 * len(cells), 7.0), squeeze=False)
    fig.subplots_adjust(wspace=0.35, hspace=0.35)
    for j, cell in enumerate(cells):
        mine = [r for r in trials if r.cell == cell]
        ax = axes[0][j]
        for r in mine:
            h = r.history
            ax.plot([e.epoch for e in h], [e.dev_accuracy for e in h], color=color(variant(cell)), alpha=0.7)
            if r.status == "pruned":
                ax.scatter([h[-1].epoch], [h[-1].dev_accuracy], marker="x", color="black", zorder=3)
        n_dev = mine[0].config.get("n_dev")
        where = Cell.parse(cell)
        ax.set(title=f"{where.task}: {variant(cell)} · {where.model_tag} · {where.shots}-shot\n{len(mine)} trials, dev n = {n_dev}",
               xlabel="epoch",
               ylabel="dev accuracy")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax = axes[1][j]
        params = sorted({k for r in mine for k in r.searched})
        key = "train.lr" if "train.lr" in params else (params[0] if params else None)
        used = [r for r in mine if key in r.searched]
        for r in used:
            ax.scatter([r.searched[key]], [r.history[-1].dev_accuracy],
                       marker="x" if r.status == "pruned" else "o", color=color(variant(cell)))
        xs = [r.searched[key] for r in used]
        if xs and min(xs) > 0 and (key.endswith("lr") or max(xs) > 5 * min(xs)):
            log_x(ax)
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.0e}"))
        ax.set(xlabel=key or "-", ylabel="last dev accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("The search: dev accuracy per epoch (× pruned) and the searched value", y=1.01)
    return save(fig, out, "search")
