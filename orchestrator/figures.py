"""The report's figures, each a pure function of a sweep's records (PNG and SVG, matplotlib Agg).

    python -m orchestrator report results/acceptance/sizes_cpu      # writes report/*.png, *.svg

Every figure takes the replicate table (one row per completed replicate: the newest per cell and
data seed), the whole trials table and the records, and either writes its files or raises `Skip`
with the reason its axis is missing (one model size, one shot count, no search), which the report
prints in its place.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from orchestrator.results import ood_names  # noqa: E402
from orchestrator.stats import mean_ci  # noqa: E402

COLORS = {"icl": "#1f77b4", "cd": "#d62728", "pbft": "#2ca02c", "ft": "#9467bd"}


class Skip(Exception):
    """This sweep lacks the figure's axis; the message says which."""


def variant(cell: str) -> str:
    return cell.split("/")[1]


def color(v: str) -> str:
    return COLORS.get(v.split("+")[0], "#7f7f7f")


def model_name(model: str) -> str:
    return Path(str(model).rstrip("/")).name


def sets_of(reps: pd.DataFrame) -> list[tuple[str, str]]:
    """(column, label) of every accuracy the replicates carry: in-domain first, then the OOD sets."""
    return [("in_domain_accuracy", "in-domain")] + [(f"{n}_accuracy", f"{n} (OOD)") for n in ood_names(reps)
                                                     if reps[f"{n}_accuracy"].notna().any()]


def _log_x(ax, ticks: dict | None = None) -> None:
    """A log x axis labelled in plain numbers (or at `ticks`: value -> label), no minor labels."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    if ticks:
        ax.set_xticks(list(ticks), list(ticks.values()), fontsize=8)
    else:
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    for p in paths:
        fig.savefig(p, dpi=150 if p.suffix == ".png" else None, bbox_inches="tight")
    plt.close(fig)
    return paths


def _groups(reps: pd.DataFrame, by: list[str]):
    return reps.groupby(by, sort=True) if len(reps) else []


def _mean_line(ax, xs, groups, v, label):
    """Seeds as faint points, the mean with its 95 % interval as a line with error bars."""
    means, lo, hi = [], [], []
    for x, values in zip(xs, groups):
        ax.scatter([x] * len(values), values, color=color(v), alpha=0.35, s=14, linewidths=0)
        st = mean_ci(values)
        means.append(st["mean"])
        ci = st["ci95"] or [st["mean"], st["mean"]]
        lo.append(st["mean"] - ci[0])
        hi.append(ci[1] - st["mean"])
    ax.errorbar(xs, means, yerr=[lo, hi], color=color(v), marker="o", capsize=3, label=label)


def accuracy_vs_axis(reps: pd.DataFrame, out: Path, axis: str) -> list[Path]:
    """Accuracy against model size (parameters) or shots, per method; a panel per evaluation set."""
    x_col, fixed, xlabel, name = (("model_params", "shots", "parameters", "accuracy_vs_size") if axis == "size"
                                  else ("shots", "model", "shots (k)", "accuracy_vs_shots"))
    written = []
    for (task, other), group in _groups(reps, ["task", fixed]):
        if group[x_col].nunique() < 2:
            continue
        sets = sets_of(group)
        fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.8), squeeze=False)
        for ax, (col, label) in zip(axes[0], sets):
            variants = sorted(group["cell"].map(variant).unique())
            for i, (v, rows) in enumerate(group.groupby(group["cell"].map(variant))):
                per_x = rows.groupby(x_col)[col].apply(lambda s: s.dropna().tolist())
                per_x = per_x[per_x.map(len) > 0]
                dodge = 1 + 0.025 * (i - (len(variants) - 1) / 2)  # methods side by side, not on top of each other
                _mean_line(ax, [x * dodge for x in per_x.index], list(per_x.values), v, v)
            ax.set(xlabel=xlabel, ylabel="accuracy", title=label)
            if axis == "size":
                sizes = group.drop_duplicates("model").set_index("model_params")["model"]
                _log_x(ax, {n: f"{model_name(m)}\n{n / 1e6:.0f}M" for n, m in sizes.items()})
            else:
                ax.set_xticks(sorted(group["shots"].unique()))
            ax.axhline(0.5, color="grey", lw=0.6, ls=":")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        what = f"{other} shots" if axis == "size" else model_name(other)
        fig.suptitle(f"{task}: accuracy vs {xlabel} ({what}; points: data seeds, bars: 95 % CI)", y=1.03)
        written += _save(fig, out, f"{name}_{task}_{what.replace(' ', '')}")
    if not written:
        raise Skip(f"one {'model size' if axis == 'size' else 'shot count'} per task in this sweep")
    return written


def id_vs_ood(reps: pd.DataFrame, out: Path) -> list[Path]:
    """In-domain against OOD accuracy, one point per replicate (the reference paper's view)."""
    written = []
    for task, group in _groups(reps, ["task"]):
        task = task[0] if isinstance(task, tuple) else task
        for col, label in sets_of(group)[1:]:
            fig, ax = plt.subplots(figsize=(5.2, 4.4))
            for cell, rows in group.groupby("cell"):
                v, m = variant(cell), model_name(rows["model"].iloc[0])
                marker = "o" if rows["model_params"].iloc[0] == group["model_params"].min() else "s"
                ax.scatter(rows["in_domain_accuracy"], rows[col], color=color(v), marker=marker, alpha=0.8,
                           label=f"{v} · {m} · {rows['shots'].iloc[0]} shots")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.6, ls="--")
            ax.set(xlabel="in-domain accuracy", ylabel=f"{label} accuracy", title=f"{task}: in-domain vs {label}",
                   xlim=(0.2, 0.9), ylim=(0.2, 0.9))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            written += _save(fig, out, f"id_vs_ood_{task}_{col[:-len('_accuracy')]}")
    if not written:
        raise Skip("no OOD set in this sweep")
    return written


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower cost and higher accuracy."""
    return [i for i, (c, a) in enumerate(points)
            if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]


def cost_accuracy(cells: list[dict], out: Path) -> list[Path]:
    """Serving ms/query and serving peak memory against in-domain accuracy, Pareto front marked."""
    rows = [c for c in cells if c["serve_ms_per_query"] and c["in_domain_accuracy"]]
    if len(rows) < 2:
        raise Skip("fewer than two cells with a serving cost (records from before serving was metered?)")
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    fig.subplots_adjust(wspace=0.3)
    for ax, key, xlabel in ((axes[0], "serve_ms_per_query", "serving ms / query"),
                            (axes[1], "serve_peak_mib", "serving peak memory (MiB)")):
        pts = [(c[key]["mean"], c["in_domain_accuracy"]["mean"]) for c in rows]
        front = set(pareto(pts))
        for i, (c, (x, y)) in enumerate(zip(rows, pts)):
            v = variant(c["cell"])
            ci = c["in_domain_accuracy"]["ci95"] or [y, y]
            ax.errorbar([x], [y], yerr=[[y - ci[0]], [ci[1] - y]], color=color(v), marker="*" if i in front else "o",
                        ms=11 if i in front else 6, capsize=3)
            ax.annotate(f"{v} · {model_name(c['model'])}", (x, y), fontsize=6.5, textcoords="offset points",
                        xytext=(5, 6 if i % 2 else -10))  # alternate above/below: neighbours rarely collide
        line = sorted(pts[i] for i in front)
        ax.plot([p[0] for p in line], [p[1] for p in line], color="black", lw=0.8, ls="--", label="Pareto front")
        ax.set(xlabel=xlabel, ylabel="in-domain accuracy")
        xs = [p[0] for p in pts]
        if max(xs) > 5 * min(xs):  # a log axis only when the costs span orders of magnitude
            _log_x(ax)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("What it costs to serve, and what it buys (stars: Pareto front; bars: 95 % CI over seeds)", y=1.02)
    return _save(fig, out, "cost_accuracy")


def break_even(pairs: list[dict], out: Path) -> list[Path]:
    """Total seconds against queries served: ICL (per-query cost × N) against each trained method
    (adaptation + per-query cost × N), one panel per task × model × shots."""
    if not pairs:
        raise Skip("no trained method beside ICL with a serving cost in the same task × model × shots")
    keys = sorted({p["where"] for p in pairs})
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4.0), squeeze=False)
    for ax, where in zip(axes[0], keys):
        mine = [p for p in pairs if p["where"] == where]
        top = max([p["break_even_queries"] or 0 for p in mine] + [1000]) * 3
        n = [10 ** (i / 20) for i in range(0, int(20 * math.log10(top)) + 1)]
        ax.plot(n, [mine[0]["icl_ms"] / 1000 * x for x in n], color=color("icl"), label="icl")
        for p in mine:
            ax.plot(n, [p["adapt_s"] + p["ms"] / 1000 * x for x in n], color=color(p["method"]), label=p["method"])
            if p["break_even_queries"]:
                ax.axvline(p["break_even_queries"], color=color(p["method"]), lw=0.7, ls=":")
                ax.annotate(f"{p['break_even_queries']:,}", (p["break_even_queries"], 0.02), xycoords=("data", "axes fraction"),
                            rotation=90, fontsize=7, color=color(p["method"]), xytext=(2, 0), textcoords="offset points")
        ax.set(xscale="log", yscale="log", xlabel="queries served", ylabel="total seconds (adaptation + serving)",
               title=where)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Break-even: adapting once against paying for the demonstrations at every query", y=1.03)
    return _save(fig, out, "break_even")


def hans_breakdown(records: list[dict], reps: pd.DataFrame, out: Path) -> list[Path]:
    """Accuracy per HANS heuristic × label per cell (mean over replicates): collapse is a column of 1s and 0s."""
    keep = set(reps["trial_key"])
    cells: dict[str, dict[str, list[float]]] = {}
    for r in records:
        block = (((r.get("metrics") or {}).get("ood") or {}).get("hans") or {}).get("breakdown")
        if r.get("trial_key") in keep and block:
            for k, v in block.items():
                cells.setdefault(r["cell"], {}).setdefault(k, []).append(v["accuracy"])
    if not cells:
        raise Skip("no HANS breakdown in the records (no HANS set)")
    names = sorted(cells)
    rows = sorted({k for c in cells.values() for k in c})
    grid = [[sum(cells[c].get(k, [float("nan")])) / max(1, len(cells[c].get(k, []))) for c in names] for k in rows]
    fig, ax = plt.subplots(figsize=(1.1 * len(names) + 3.5, 0.45 * len(rows) + 2.2))
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), [f"{variant(c)}\n{c.split('/')[2]}" for c in names], fontsize=7, rotation=30)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title("HANS accuracy per heuristic and gold label (mean over seeds)")
    return _save(fig, out, "hans_breakdown")


def search(records: list[dict], out: Path) -> list[Path]:
    """Per cell: every search trial's dev accuracy per epoch (pruned ones end in ×), and the searched
    value against the trial's final dev accuracy."""
    trials = [r for r in records if r.get("phase") == "search" and r.get("history")]
    if not trials:
        raise Skip("no search trials (nothing was searched)")
    cells = sorted({r["cell"] for r in trials})
    fig, axes = plt.subplots(2, len(cells), figsize=(4.4 * len(cells), 7.0), squeeze=False)
    fig.subplots_adjust(wspace=0.35, hspace=0.3)
    for j, cell in enumerate(cells):
        mine = [r for r in trials if r["cell"] == cell]
        ax = axes[0][j]
        for r in mine:
            h = r["history"]
            ax.plot([e["epoch"] for e in h], [e["dev_accuracy"] for e in h], color=color(variant(cell)), alpha=0.7)
            if r["status"] == "pruned":
                ax.scatter([h[-1]["epoch"]], [h[-1]["dev_accuracy"]], marker="x", color="black", zorder=3)
        ax.set(title=f"{variant(cell)} · {cell.split('/')[2]}", xlabel="epoch", ylabel="dev accuracy")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax = axes[1][j]
        params = sorted({k for r in mine for k in (r.get("searched") or {})})
        key = "train.lr" if "train.lr" in params else (params[0] if params else None)
        xs = [r["searched"][key] for r in mine if key in (r.get("searched") or {})]
        ys = [r["history"][-1]["dev_accuracy"] for r in mine if key in (r.get("searched") or {})]
        marks = ["x" if r["status"] == "pruned" else "o" for r in mine if key in (r.get("searched") or {})]
        for x, y, m in zip(xs, ys, marks):
            ax.scatter([x], [y], marker=m, color=color(variant(cell)))
        if xs and min(xs) > 0 and max(xs) > 5 * min(xs):
            _log_x(ax)
        else:
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
        ax.set(xlabel=key or "-", ylabel="last dev accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("The search: dev accuracy per epoch (× pruned) and the searched value", y=1.01)
    return _save(fig, out, "search")
