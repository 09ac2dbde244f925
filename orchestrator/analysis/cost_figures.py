"""The report's cost figures: serving cost against shots and against accuracy, and the break-even of
adapting once against paying for the demonstrations at every query.

    python -m orchestrator report results/acceptance/many_shot      # writes report/cost_*.png, break_even.png

Pure functions of the per-cell statistics (and the break-even pairs), drawn with the conventions of
`orchestrator/analysis/figures.py`: hollow markers for collapsed cells, intervals over seeds, n on the figure.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from trainers.contract import CellStats
from orchestrator.analysis.figures import Skip, color, hollow, log_x, model_name, n_text, plt, point, save, variant
from orchestrator.analysis.serving import BreakEven


def cost_vs_shots(cells: list[CellStats], out: Path) -> list[Path]:
    """Per task and model, against shots, per method: serving ms/query (median of timed passes, mean
    over seeds, bars: its 95 % interval over seeds) and the key/value bytes each query attends to beside its own
    tokens (ICL: the demonstrations'; a cartridge: its prefix's; weights-adapted students: none)."""
    written = []
    groups: dict[tuple[str, str], list[CellStats]] = {}
    for c in cells:
        groups.setdefault((c.task, c.model), []).append(c)
    for (task, model), mine in sorted(groups.items()):
        if len({c.shots for c in mine}) < 2:
            continue
        fig, (ax_ms, ax_kv) = plt.subplots(1, 2, figsize=(10, 4.0))
        for v in sorted({variant(c.cell) for c in mine}):
            rows = sorted((c for c in mine if variant(c.cell) == v), key=lambda c: c.shots)
            ms = [(c.shots, c.serve_ms_per_query) for c in rows if c.serve_ms_per_query]
            kv = [(c.shots, c.serve_kv_bytes_per_query.mean / 2 ** 20) for c in rows
                  if c.serve_kv_bytes_per_query]
            if ms:
                xs = [x for x, _ in ms]
                means = [s.mean for _, s in ms]
                lo = [s.mean - (s.ci95 or (s.mean, s.mean))[0] for _, s in ms]
                hi = [(s.ci95 or (s.mean, s.mean))[1] - s.mean for _, s in ms]
                ax_ms.errorbar(xs, means, yerr=[lo, hi], color=color(v), marker="o", capsize=3, label=v)
            if kv:
                ax_kv.plot([x for x, _ in kv], [y for _, y in kv], color=color(v), marker="o", label=v)
        shots = sorted({c.shots for c in mine})
        n = max((c.seeds for c in mine), default=0)
        for ax, ylabel in ((ax_ms, "serving ms/query (alone on its node)"), (ax_kv, "KV MiB attended per query")):
            ax.set(xlabel="shots (k)", ylabel=ylabel)
            ax.set_xticks(shots)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"{task}, {model_name(model)}: the cost of a query against shots (up to {n} seeds per point)", y=1.02)
        written += save(fig, out, f"cost_vs_shots_{task}_{model_name(model)}")
    if not written:
        raise Skip("one shot count per task and model in this sweep")
    return written


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both lower cost and higher accuracy."""
    return [i for i, (c, a) in enumerate(points)
            if not any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for c2, a2 in points)]


MARKERS = "o^sDvP*X"


def cost_accuracy(cells: list[CellStats], out: Path) -> list[Path]:
    """Per task, serving ms/query and serving peak memory against in-domain accuracy, the task's own
    Pareto front dashed (a front across tasks would compare accuracies of different questions); a
    legend names each point (colour: method, shape: model) instead of labels that collide."""
    written = []
    for task in sorted({c.task for c in cells}):
        rows = [c for c in cells if c.task == task and c.serve_ms_per_query and c.in_domain_accuracy]
        if len(rows) >= 2:
            written += _cost_accuracy_task(task, rows, out)
    if not written:
        raise Skip("fewer than two cells of one task with a serving cost (records from before serving was metered?)")
    return written


def _cost_accuracy_task(task: str, rows: list[CellStats], out: Path) -> list[Path]:
    models = sorted({c.model for c in rows})
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.6))
    fig.subplots_adjust(wspace=0.3)
    for ax, key, xlabel in ((axes[0], "serve_ms_per_query", "serving ms / query (median)"),
                            (axes[1], "serve_peak_mib", "serving peak memory (MiB)")):
        pts = [(getattr(c, key).mean, c.in_domain_accuracy.mean) for c in rows]
        for c, (x, y) in zip(rows, pts):
            v = variant(c.cell)
            fell = hollow(c, "in_domain")
            label = f"{v} · {model_name(c.model)} · {c.shots}-shot" + (" (collapsed in domain)" if fell else "")
            point(ax, x, y, c.in_domain_accuracy.ci95, v, fell, MARKERS[models.index(c.model) % len(MARKERS)], 7, label)
        line = sorted(pts[i] for i in pareto(pts))
        ax.plot([p[0] for p in line], [p[1] for p in line], color="black", lw=0.8, ls="--", label=f"Pareto front ({task})")
        ax.set(xlabel=xlabel, ylabel=f"{task} in-domain accuracy")
        xs = [p[0] for p in pts]
        if max(xs) > 5 * min(xs):  # a log axis only when the costs span orders of magnitude
            log_x(ax)
        ax.margins(0.12)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.02, 1))
    alone = all(c.serve_alone for c in rows)
    fig.suptitle(f"{task}: what it costs to serve, and what it buys ({n_text(rows)}; bars: 95 % interval; hollow: "
                 f"collapsed in domain" + ("" if alone else "; some serving measured beside other trials") + ")",
                 y=1.02, fontsize=10)
    return save(fig, out, f"cost_accuracy_{task}")


def break_even(pairs: list[BreakEven], out: Path) -> list[Path]:
    """Total seconds against queries served: ICL (per-query cost × N) against each trained method
    (adaptation + per-query cost × N), one panel per task × model × shots; the band is the range of
    break-even points over the data seeds, not one exact crossing."""
    if not pairs:
        raise Skip("no trained method beside ICL with a serving cost in the same task × model × shots")
    keys = sorted({p.where for p in pairs})
    fig, axes = plt.subplots(1, len(keys), figsize=(5.4 * len(keys), 4.2), squeeze=False)
    for ax, where in zip(axes[0], keys):
        mine = [p for p in pairs if p.where == where]
        top = max([(p.range or (0, 0))[1] for p in mine] + [1000]) * 3
        n = [10 ** (i / 20) for i in range(0, int(20 * math.log10(top)) + 1)]
        ax.plot(n, [mine[0].icl_ms / 1000 * x for x in n], color=color("icl"), label="icl")
        for p in mine:
            ax.plot(n, [p.adapt_s + p.ms / 1000 * x for x in n], color=color(p.method), label=p.named)
            if p.range:
                lo, hi = p.range
                ax.axvspan(lo * 0.97, hi * 1.03, color=color(p.method), alpha=0.15)
                ax.annotate(_short_range(p), (math.sqrt(lo * hi), 0.02), xycoords=("data", "axes fraction"), rotation=90,
                            fontsize=7, color=color(p.method), xytext=(2, 0), textcoords="offset points")
        seeds = max(len(p.per_seed) for p in mine)
        ax.set(xscale="log", yscale="log", xlabel="queries served", ylabel="total seconds (adaptation + serving)",
               title=f"{where}\nband: break-even over {seeds} data seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Break-even: adapting once against paying for the demonstrations at every query", y=1.05)
    return save(fig, out, "break_even")


def _short_range(p: BreakEven) -> str:
    lo, hi = p.range
    text = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    return text + (f" (+{p.never} never)" if p.never else "")




def total_cost(decisions: list, out: Path) -> list[Path]:
    """Per task × model × shots: total device-seconds (adaptation + N × serving) against the queries
    served, log-log, one band per method (95 % of `decide`'s draws over the data seeds), crossovers
    marked; a method that is out (collapsed, over the memory limit) dashed and grey with its reason,
    one more than the tolerance below the most accurate dotted."""
    if not decisions:
        raise Skip("no completed replicate to decide from")
    fig, axes = plt.subplots(1, len(decisions), figsize=(5.6 * len(decisions), 4.4), squeeze=False)
    for ax, d in zip(axes[0], decisions):
        top = max(d.queries) * 10
        n = [10 ** (i / 10) for i in range(10, int(10 * math.log10(top)) + 1)]
        for m in d.methods:
            adapt, serve = d.draws[m.name]
            if m.out or not len(m.serve):
                if len(m.serve) and not np.isnan(m.serve).any():
                    ax.plot(n, [float(m.adapt.mean()) + x * float(m.serve.mean()) for x in n], color="grey", ls="--",
                            label=f"{m.name}: out ({m.out})")
                continue
            best = max(float(o.accuracy.mean()) for o in d.methods if not o.out)
            outside = float(m.accuracy.mean()) < best - d.tolerance  # drawn apart: not offered on the means
            totals = [adapt + x * serve for x in n]
            lo = [float(np.nanpercentile(t, 2.5)) for t in totals]
            hi = [float(np.nanpercentile(t, 97.5)) for t in totals]
            mid = [float(np.nanmedian(t)) for t in totals]
            ax.plot(n, mid, color=color(m.name), ls=":" if outside else "-",
                    label=m.name + (f" (more than {d.tolerance:g} below the most accurate)" if outside else ""))
            ax.fill_between(n, lo, hi, color=color(m.name), alpha=0.08 if outside else 0.2)
        for x in d.crossovers:
            if x["measurable"]:
                ax.axvline(x["queries"], color="black", lw=0.6, ls=":")
                ax.axvspan(*x["ci95"], color="black", alpha=0.06)
                ax.annotate(f"{x['dearer_to_adapt']} cheaper than {x['cheaper_to_adapt']}\nfrom {x['queries']:,.0f}",
                            (x["queries"], 0.02), xycoords=("data", "axes fraction"), fontsize=6.5, rotation=90)
        unit = " / ".join(sorted({f"{m.device} {'core-' if m.device == 'CPU' else ''}seconds" for m in d.methods}))
        ax.set(xscale="log", yscale="log", xlabel="queries served", ylabel=f"total {unit}",
               title=f"{d.where}\nbands: 95 % of the draws over {len(d.methods[0].seeds)} data seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Adaptation + serving against the queries a deployment will serve", y=1.04)
    return save(fig, out, "decide_total_cost")
