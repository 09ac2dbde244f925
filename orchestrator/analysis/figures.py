"""The report's accuracy figures and the helpers every figure shares (the cost figures are in
`orchestrator/analysis/cost_figures.py`), each a pure function of a sweep's records (PNG and SVG, matplotlib Agg).

    python -m orchestrator report results/acceptance/sizes_cpu      # writes report/*.png, *.svg

Every figure takes the replicates (a `Trial` row per completed replicate: the newest per cell and
data seed; orchestrator/analysis/table.py), the per-cell statistics and the records, and either writes its files or raises `Skip`
with the reason its axis is missing (one model size, one shot count, no search), which the report
prints in its place. Conventions: a collapsed cell's markers are hollow in every figure; intervals
are the cells' own (seeds and examples); every figure says its n (seeds × examples); models of
different families are never joined by a line as if they were one scaling curve.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on a cluster node
matplotlib.rcParams["svg.hashsalt"] = "fewshot-sweeps"  # the same records draw the same file: no random ids
import matplotlib.pyplot as plt  # noqa: E402

from orchestrator.cells import Cell, variant_of  # noqa: E402
from orchestrator.analysis.table import Trial, group, ood_names, present, unique, values  # noqa: E402
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


def sets_of(reps: list[Trial]) -> list[tuple[str, str]]:
    """(set, label) of every accuracy the replicates carry: in-domain first, then the OOD sets."""
    return [("in_domain", "in-domain")] + [(n, f"{n} (OOD)") for n in ood_names(reps)
                                           if values(reps, lambda t: t.score(n).accuracy)]


def accuracy(t: Trial, name: str) -> float:
    """A replicate's accuracy on a set, NaN where it has none (matplotlib leaves it out)."""
    v = t.score(name).accuracy
    return float(v) if present(v) else math.nan


def _cell_of(cells: list[CellStats], cell: str) -> CellStats:
    return next(c for c in cells if c.cell == cell)


def hollow(c: CellStats, set_name: str) -> bool:
    """A cell's marker for one set is hollow when a seed collapsed on that set (each set its own)."""
    return set_name in c.collapsed


def seed_collapsed(t: Trial, set_name: str) -> bool:
    """One replicate answered one class ≥ 90 % of the time on a set."""
    top = t.score(set_name).pred_top
    return present(top) and float(top) >= COLLAPSE


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


def point(ax, x, y, ci, v: str, hollow: bool, marker: str = "o", size: float = 6, label: str | None = None):
    lo, hi = ci or (y, y)
    ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], color=color(v), marker=marker, ms=size, capsize=3,
                mfc="none" if hollow else color(v), label=label, ls="none")


def accuracy_vs_axis(reps: list[Trial], cells: list[CellStats], out: Path, axis: str) -> list[Path]:
    """Accuracy against model size (parameters) or shots, per method: seeds as faint points, each
    cell's mean and interval; a line joins the points of one method within one model family only."""
    x_of, fixed, xlabel, name = ((lambda t: t.model_params, lambda t: t.shots, "parameters", "accuracy_vs_size")
                                 if axis == "size" else (lambda t: t.shots, lambda t: t.model, "shots (k)", "accuracy_vs_shots"))
    written = []
    for (task, other), rows_of in group(reps, lambda t: (t.task, fixed(t))).items():
        if len({x_of(t) for t in rows_of if present(x_of(t))}) < 2:
            continue
        sets = sets_of(rows_of)
        fig, axes = plt.subplots(1, len(sets), figsize=(4.8 * len(sets), 4.0), squeeze=False)
        mine = [_cell_of(cells, c) for c in unique(t.cell for t in rows_of)]
        for ax, (set_name, label) in zip(axes[0], sets):
            by_variant = group(rows_of, lambda t: variant(t.cell))
            for i, (v, rows) in enumerate(by_variant.items()):
                dodge = 1 + 0.03 * (i - (len(by_variant) - 1) / 2)  # methods side by side, not on top of each other
                for f_i, fam_rows in enumerate(group(rows, lambda t: family(t.model)).values()):
                    line = []
                    for cell, cr in group(fam_rows, lambda t: t.cell).items():
                        c, x = _cell_of(cells, cell), x_of(cr[0])
                        st = c.accuracy(set_name)
                        if not st or not present(x):
                            continue
                        x *= dodge
                        ax.scatter([x] * len(cr), [accuracy(t, set_name) for t in cr], color=color(v), alpha=0.3, s=12,
                                   linewidths=0)
                        point(ax, x, st.mean, st.ci95, v, hollow(c, set_name))
                        line.append((x, st.mean))
                    if len(line) > 1:
                        xs, ys = zip(*sorted(line))
                        ax.plot(xs, ys, color=color(v), ls=FAMILY_STYLES[f_i % len(FAMILY_STYLES)], lw=1)
                ax.plot([], [], color=color(v), marker="o", label=v)
            ax.set(xlabel=xlabel, ylabel="accuracy", title=f"{label}\n{n_text(mine, set_name)}")
            if axis == "size":
                firsts: dict = {}
                for t in rows_of:
                    firsts.setdefault(t.model, t)
                sizes = {t.model_params: t.model for t in firsts.values()}
                log_x(ax, {n: f"{model_name(m)}\n{n / 1e6:.0f}M" for n, m in sizes.items()})
            else:
                ax.set_xticks(sorted({t.shots for t in rows_of}))
            ax.axhline(0.5, color="grey", lw=0.6, ls=":")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        what = f"{other} shots" if axis == "size" else model_name(other)
        fig.suptitle(f"{task}: accuracy vs {xlabel} ({what}); hollow: collapsed; lines join one model family only", y=1.05)
        written += save(fig, out, f"{name}_{task}_{what.replace(' ', '')}")
    if not written:
        raise Skip(f"one {'model size' if axis == 'size' else 'shot count'} per task in this sweep")
    return written


def id_vs_ood(reps: list[Trial], cells: list[CellStats], out: Path) -> list[Path]:
    """In-domain against OOD accuracy, one point per replicate (the reference paper's view), chance marked."""
    written = []
    for task, rows_of in group(reps, lambda t: t.task).items():
        mine = [_cell_of(cells, c) for c in unique(t.cell for t in rows_of)]
        smallest = min(values(rows_of, lambda t: t.model_params), default=None)
        for set_name, label in sets_of(rows_of)[1:]:
            fig, ax = plt.subplots(figsize=(5.6, 4.6))
            for cell, rows in group(rows_of, lambda t: t.cell).items():
                v, m = variant(cell), model_name(rows[0].model)
                marker = "o" if rows[0].model_params == smallest else "s"
                # each point is one seed: hollow when that seed collapsed on either set this figure plots
                fell = [seed_collapsed(t, "in_domain") or seed_collapsed(t, set_name) for t in rows]
                legend = f"{v} · {m} · {rows[0].shots} shots" + (f" ({sum(fell)} collapsed)" if any(fell) else "")
                for hollow_seed in (False, True):
                    pick = [t for t, f in zip(rows, fell) if f == hollow_seed]
                    if pick:
                        ax.scatter([accuracy(t, "in_domain") for t in pick], [accuracy(t, set_name) for t in pick],
                                   edgecolors=color(v), marker=marker, alpha=0.85,
                                   facecolors="none" if hollow_seed else color(v), label=legend)
                        legend = None
            ax.axhline(0.5, color="grey", lw=0.8, ls=":", label="chance (balanced subsets)")
            ax.axvline(0.5, color="grey", lw=0.8, ls=":")
            seen = values(rows_of, lambda t: t.score("in_domain").accuracy) + values(rows_of, lambda t: t.score(set_name).accuracy)
            lims = [min(0.3, min(seen) - 0.05), max(0.8, max(seen) + 0.05)]
            ax.plot(lims, lims, color="grey", lw=0.6, ls="--")
            ax.set(xlabel="in-domain accuracy", ylabel=f"{label} accuracy", xlim=lims, ylim=lims,
                   title=f"{task}: in-domain vs {label}\n{n_text(mine, set_name)}; points: replicates "
                         f"(hollow: that seed collapsed)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1))
            written += save(fig, out, f"id_vs_ood_{task}_{set_name}")
    if not written:
        raise Skip("no OOD set in this sweep")
    return written


def group_breakdown(records: list[Record], reps: list[Trial], cells: list[CellStats], out: Path, name: str) -> list[Path]:
    """Accuracy per group × gold label of a grouped OOD set (HANS: its heuristics; the set's `groups`
    in trainers/data/tasks.yaml) per cell, the mean over replicates with the examples behind each
    square: collapse is a column of 1s and 0s."""
    keep = {t.trial_key for t in reps}
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
