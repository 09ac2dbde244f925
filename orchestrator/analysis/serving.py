"""Serving costs between the cells of a task × model × shots: a difference per query over the data
seeds both measured, and when adapting once pays back against carrying ICL's demonstrations.

    python -m orchestrator report results/acceptance/sizes_cpu     # report.md's serving and break-even sections
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from orchestrator.analysis import figures
from orchestrator.analysis.results import collapse_text
from orchestrator.analysis.stats import mean_ci
from orchestrator.analysis.table import GROUP, Trial, present
from trainers.contract import CellStats, Stat, load
from trainers.methods import spec

@dataclass(frozen=True)
class Saving:
    """b − a serving ms per query over the data seeds both measured, and whether its interval excludes 0."""
    stat: Stat
    seeds: list[int]
    measurable: bool


@dataclass(frozen=True)
class BreakEven:
    """A trained cell against ICL of its task × model × shots (`break_even_pairs`)."""
    where: str
    method: str
    cell: str
    named: str                        # the method with its COLLAPSED flags
    adapt_s: float                    # the cell's adaptation: its search and one replicate's
    ms: float
    icl_ms: float
    per_seed: dict[int, int | None]   # queries to break even, per data seed (None: never)
    saving: Saving | None             # ICL's ms − the cell's
    dearer: bool                      # measurably dearer per query than ICL
    range: tuple[int, int] | None     # the seeds' break-even range, where the saving is measurable
    never: int                        # seeds where it never pays back
    alone: bool                       # both cells' serving measured alone


def where_of(c: CellStats) -> str:
    return f"{c.task}, {figures.model_name(c.model)}, {c.shots} shots"


def named(c: CellStats) -> str:
    """A cell's method, with its COLLAPSED flags (and in how many seeds) wherever it is named."""
    fell = [collapse_text(c, s)[len("COLLAPSED "):].replace(" seeds", "") for s in c.collapsed]
    return figures.variant(c.cell) + (f" (COLLAPSED {' and '.join(fell)} seeds)" if fell else "")


def _serve_ms(reps: list[Trial], cell: str) -> dict[int, float]:
    return {int(t.data_seed): float(t.serving.ms_per_query) for t in reps
            if t.cell == cell and present(t.serving.ms_per_query)}


def serve_difference(reps: list[Trial], a: str, b: str) -> Saving | None:
    """b − a serving ms/query over the data seeds both measured (the same queries for both: the seed's
    own evaluation sample): mean, t-interval over seeds, and whether it excludes 0 ("measurable")."""
    ms = {c: _serve_ms(reps, c) for c in (a, b)}
    seeds = sorted(set(ms[a]) & set(ms[b]))
    st = load(Stat, mean_ci([ms[b][s] - ms[a][s] for s in seeds]))
    if not st:
        return None
    lo, hi = st.ci95 or (None, None)
    return Saving(st, seeds, lo is not None and (lo > 0 or hi < 0))


def ms_interval(d: Saving, unit: str = "ms") -> str:
    """'+9.0 [-2.1, +20.2] ms over 3 seeds'."""
    st = d.stat
    if st.ci95 is None:
        return f"{st.mean:+.1f} {unit} (1 seed: no interval)"
    return f"{st.mean:+.1f} [{st.ci95[0]:+.1f}, {st.ci95[1]:+.1f}] {unit} over {st.n} seeds"


def break_even_pairs(cells: list[CellStats], reps: list[Trial]) -> list[BreakEven]:
    """Per task × model × shots, each trained cell against ICL: the per-query saving over the data
    seeds (ICL's ms − the cell's, per seed, with its interval) and, where that saving is measurable
    (its interval excludes 0), the queries after which adapting once (the cell's search and this
    replicate's adaptation) costs less than carrying the demonstrations in every prompt, per seed."""
    out = []
    for c in cells:
        icl = next((i for i in cells if not spec.get(i.method).trains and all(getattr(i, k) == getattr(c, k) for k in GROUP)), None)
        if not spec.get(c.method).trains or not icl or not c.serve_ms_per_query or not icl.serve_ms_per_query:
            continue
        saving = serve_difference(reps, c.cell, icl.cell)  # ICL's ms − the cell's: positive when it saves
        theirs = {int(t.data_seed): t.serving.ms_per_query for t in reps if t.cell == icl.cell}
        per_seed = {}
        for r in (t for t in reps if t.cell == c.cell):
            seed = int(r.data_seed)
            if seed not in theirs or not present(r.serving.ms_per_query):
                continue
            save_s = (theirs[seed] - r.serving.ms_per_query) / 1000 if present(theirs[seed]) else math.nan
            adapt = c.search_seconds + (r.adaptation_seconds or 0)
            per_seed[seed] = math.ceil(adapt / save_s) if save_s > 0 else None
        finite = sorted(v for v in per_seed.values() if v is not None)
        pays = bool(saving and saving.measurable and saving.stat.mean > 0)
        out.append(BreakEven(where=where_of(c), method=figures.variant(c.cell), cell=c.cell, named=named(c),
                             adapt_s=c.adaptation_seconds, ms=c.serve_ms_per_query.mean, icl_ms=icl.serve_ms_per_query.mean,
                             per_seed=per_seed, saving=saving,
                             dearer=bool(saving and saving.measurable and saving.stat.mean < 0),
                             range=(finite[0], finite[-1]) if finite and pays else None,
                             never=sum(v is None for v in per_seed.values()), alone=c.serve_alone and icl.serve_alone))
    return out


def range_text(p: BreakEven) -> str:
    if p.dearer:
        return "never (measurably dearer per query than ICL)"
    if not p.range:
        return "no measurable payback (the per-query saving's interval includes 0)"
    lo, hi = p.range
    text = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
    return text + (f" ({p.never} of {len(p.per_seed)} seeds: never)" if p.never else "")


def break_even_text(pairs: list[BreakEven]) -> tuple[str, pd.DataFrame]:
    rows = [{"task × model × shots": p.where, "method": p.named, "adaptation s": f"{p.adapt_s:.0f}",
             "ms/query": f"{p.ms:.1f}", "ICL ms/query": f"{p.icl_ms:.1f}",
             "saving per query vs ICL": ms_interval(p.saving) if p.saving else "-",
             "break-even queries (per data seed)": range_text(p),
             "per seed": ", ".join(f"s{s}: {v:,}" if v else f"s{s}: never" for s, v in sorted(p.per_seed.items()))}
            for p in pairs]
    parts = []
    for p in pairs:
        saving = f"saving {ms_interval(p.saving, 'ms a query')}" if p.saving else "no saving measured"
        if p.range:
            parts.append(f"{p.named} on {p.where} pays back its {p.adapt_s:.0f} s of adaptation after {range_text(p)} "
                         f"queries ({saving})" + ("" if p.alone else " (serving measured beside other trials)"))
        elif p.dearer:
            parts.append(f"{p.named} on {p.where} never pays back: it is measurably dearer per query than ICL ({saving})")
        else:
            parts.append(f"{p.named} on {p.where}: no measurable payback ({saving}; its interval includes 0)")
    sentence = ("Against ICL, " + "; ".join(parts) + ".") if parts else "No trained method beside ICL to break even against."
    return sentence, pd.DataFrame(rows)
