"""A sweep's report: report.md opening with sentences a researcher can quote, backed by tables, and figures.

    python -m orchestrator report results/acceptance/sizes_cpu     # -> results/.../report/report.md

A pure function of the folder's records (it moves and changes none of them), so it can be rerun any
time; the sweep runs it at its end. The words follow the verdicts (`orchestrator/analysis/stats.py`): a
method is "best" only where it beat every other method of its task × model × shots significantly;
otherwise the report names the "highest mean" and the verdict against the runner-up. A collapsed
cell carries its flag wherever it is named. Figures are in `orchestrator/analysis/figures.py` and `orchestrator/analysis/cost_figures.py`; a figure whose
axis the sweep lacks is skipped with its reason, written where it would have been.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pandas as pd

from orchestrator.analysis import cost_figures, decide, figures, tuning
from orchestrator.cells import Cell
from orchestrator.analysis.compare import comparisons, verdict_words
from orchestrator.analysis.results import (cell_stats, interval_text, load_records, mean_std, summary_table,
                                           title_of, to_markdown)
from orchestrator.analysis.serving import (BreakEven, break_even_pairs, break_even_text, ms_interval, named,
                                           serve_difference, where_of)
from orchestrator.analysis.table import GROUP, Trial, completed_replicates, group, newest_per_seed, trials, with_model_params
from trainers.contract import CellStats, Comparison, Record


def replicates(rows: list[Trial]) -> list[Trial]:
    """One completed replicate per cell and data seed (the newest), by cell, with its model's size: the
    rows every figure plots."""
    by_cell = group(completed_replicates(rows), lambda t: t.cell)
    return with_model_params([t for mine in by_cell.values() for t in newest_per_seed(mine)])


class Oriented(NamedTuple):
    """A comparison read as best − other."""
    comp: Comparison
    diff: float
    lo: float
    hi: float
    won: bool


def _between(best: CellStats, other: CellStats, comps: list[Comparison]) -> Oriented | None:
    """The in-domain comparison of two cells, oriented best − other."""
    comp = next((x for x in comps if x.set == "in_domain" and {x.a, x.b} == {best.cell, other.cell}), None)
    if not comp:
        return None
    sign = 1 if comp.a == best.cell else -1
    lo, hi = sorted((sign * comp.ci95[0], sign * comp.ci95[1]))
    return Oriented(comp, sign * comp.mean_diff, lo, hi, comp.verdict == ("a better" if sign == 1 else "b better"))


def _best(cells: list[CellStats], comps: list[Comparison]) -> tuple[str, pd.DataFrame]:
    rows, parts = [], []
    for key in sorted({tuple(getattr(c, k) for k in GROUP) for c in cells}):
        mine = sorted((c for c in cells if tuple(getattr(c, k) for k in GROUP) == key and c.in_domain_accuracy),
                      key=lambda c: -c.in_domain_accuracy.mean)
        if not mine:
            continue
        top, where = mine[0], where_of(mine[0])
        against = [_between(top, other, comps) for other in mine[1:]]
        best = bool(against) and all(a and a.won for a in against) and not top.collapsed
        word = "best" if best else "highest mean"
        row = {"task × model × shots": where, word if best else "highest mean in domain": named(top),
               "accuracy [95 % interval]": interval_text(top.in_domain_accuracy), "collapsed": ", ".join(top.collapsed) or "-"}
        lo, hi = top.in_domain_accuracy.ci95 or (0.0, 0.0)
        # an interval over most of [0, 1]: what the design cannot tell comes before the number
        vague = (f"{top.in_domain_accuracy.n} seed{'s' if top.in_domain_accuracy.n != 1 else ''} place no "
                 f"method's accuracy closer than a {hi - lo:.2f}-wide interval and cannot tell the methods apart: "
                 if hi - lo >= 0.5 else "")
        text = (f"on {where}, {named(top)} is best in domain at {interval_text(top.in_domain_accuracy)}" if best else
                f"on {where}, {vague}{named(top)} has the highest mean in domain, {interval_text(top.in_domain_accuracy)}")
        if against and against[0]:
            a, runner = against[0], mine[1]
            row.update({"runner-up": named(runner), "difference [95 %]": f"{a.diff:+.3f} [{a.lo:+.3f}, {a.hi:+.3f}]",
                        "seeds": a.comp.n, "verdict": verdict_words(a.comp), "why": a.comp.reason})
            text += (f", {a.diff:+.3f} [{a.lo:+.3f}, {a.hi:+.3f}] over {named(runner)}: "
                     f"{verdict_words(a.comp)} ({a.comp.reason})")
        rows.append(row)
        parts.append(text)
    sentence = ("In domain, " + "; ".join(parts) + ".") if parts else "No cell completed a replicate."
    return sentence, pd.DataFrame(rows)


def collapse_note(cells: list[CellStats]) -> str:
    """What COLLAPSED means, with the first flagged cell's seeds as the example, under the sentences."""
    c = next((c for c in cells if c.collapsed and c.collapse.get(c.collapsed[0])), None)
    if not c:
        return ""
    name = c.collapsed[0]
    info = c.collapse[name]
    seeds = ", ".join(f"seed {s} answered {info.classes.get(s, 'one class')} {100 * share:.0f} % of the time"
                      for s, share in sorted(info.shares.items()))
    return (f"COLLAPSED on a set: a seed answered one class at least 90 % of the time there, so on a balanced set it "
            f"scores about 0.5 whatever it learned; e.g. {figures.variant(c.cell)} on {where_of(c)}, "
            f"{'in domain' if name == 'in_domain' else name}: {seeds}.")


def _serving(cells: list[CellStats], reps: list[Trial]) -> tuple[str, pd.DataFrame]:
    """Per task × model × shots, the cell with the lowest serving cost where its difference from every
    other cell's is measurable over the seeds; else the cells it cannot be told apart from."""
    parts, against = [], {}
    for key in sorted({tuple(getattr(c, k) for k in GROUP) for c in cells}):
        mine = sorted((c for c in cells if tuple(getattr(c, k) for k in GROUP) == key and c.serve_ms_per_query),
                      key=lambda c: c.serve_ms_per_query.mean)
        if len(mine) < 2:
            continue
        cheap = mine[0]
        diffs = {c.cell: serve_difference(reps, cheap.cell, c.cell) for c in mine[1:]}
        against.update({cell: d for cell, d in diffs.items() if d})
        tied = [c for c in mine[1:] if not (diffs[c.cell] and diffs[c.cell].measurable)]
        dearer = [c for c in mine[1:] if c not in tied]
        ms = lambda c: f"{c.serve_ms_per_query.mean:.0f} ms"  # noqa: E731
        noisy = "" if all(c.serve_alone for c in mine) else " (measured beside other trials: not comparable)"
        if not tied:
            runner = mine[1]
            parts.append(f"on {where_of(cheap)}, {named(cheap)} has the lowest serving cost, {ms(cheap)} a query against "
                         f"{ms(runner)} for {named(runner)} ({ms_interval(diffs[runner.cell])}){noisy}")
            continue
        text = (f"on {where_of(cheap)}, no measurable serving difference between {named(cheap)} ({ms(cheap)}) and "
                + ", ".join(f"{named(c)} ({ms(c)}, {ms_interval(diffs[c.cell])})" if diffs[c.cell] else named(c)
                            for c in tied))
        if dearer:
            text += f"; {named(cheap)} serves measurably cheaper than " + ", ".join(
                f"{named(c)} ({ms(c)}, {ms_interval(diffs[c.cell])})" for c in dearer)
        parts.append(text + noisy)
    rows = [{"cell": c.cell, "serve ms/query": mean_std(c.serve_ms_per_query, 1),
             "vs the cheapest (ms, 95 % over seeds)": ms_interval(against[c.cell]) if c.cell in against else "-",
             "serve CPU ms/query": mean_std(c.serve_cpu_ms_per_query, 1),
             "measured alone": "yes" if c.serve_alone else "no (beside other trials)",
             "serve peak MiB": mean_std(c.serve_peak_mib, 0), "adaptation s (search + one replicate)":
             f"{c.search_seconds:.0f} + {c.replicate_adaptation_seconds.mean if c.replicate_adaptation_seconds else 0:.0f}",
             "Ray overhead s (all trials)": f"{c.ray_overhead_seconds:.0f}",
             "labelled examples used": c.labelled_examples} for c in cells]
    sentence = ("Serving: " + "; ".join(parts) + ".") if parts else "Serving costs were not metered in these records."
    return sentence, pd.DataFrame(rows)


def charged_dev_note(records: list[Record]) -> str:
    """A line when replicates that keep their last epoch were metered before their dev passes stopped
    being charged (records without `dev_seconds_uncharged`): the costs text below would misread them."""
    old = [r for r in records if r.phase == "replicate" and r.status == "completed" and "dev" in r.resources.phases
           and (r.config.get("train") or {}).get("selection", "last") == "last"
           and r.resources.dev_seconds_uncharged is None]
    if not old:
        return ""
    return (f"These records predate the metering of 2026-12-02 (commit 2020954): {len(old)} replicate(s) that keep their last epoch charge "
            f"their dev passes to adaptation, unlike what the paragraph below describes.\n")


def tuning_note(rows: list[Trial]) -> str:
    """A line when the search ran on a data seed that is also a replicate (its winner then repeats as that replicate)."""
    searched = {t.data_seed for t in rows if t.phase == "search"}
    if not searched:
        return ""
    shared = sorted(searched & {t.data_seed for t in completed_replicates(rows)})
    if not shared:
        return f"The search ran on data seed(s) {', '.join(map(str, sorted(searched)))}, held out from the replicates."
    return (f"Note: the search ran on data seed {', '.join(map(str, shared))}, which is also a replicate: that replicate "
            f"repeats the configuration chosen on its own dev split, an optimistic bias for the searched (trained) methods "
            f"against ICL, and its cost is counted twice. Hold the tuning seed out (`tuning_data_seed`, default) to avoid it.")


def _comparison_table(comps: list[Comparison]) -> pd.DataFrame:
    return pd.DataFrame([{"A": figures.variant(c.a), "B": figures.variant(c.b),
                          "where": (lambda cell: f"{cell.task}, {cell.model_tag}/{cell.shots}shot")(Cell.parse(c.a)), "set": c.set,
                          "A − B": f"{c.mean_diff:+.3f}", "95 % interval": f"[{c.ci95[0]:+.3f}, {c.ci95[1]:+.3f}]",
                          "p": f"{c.p:.3g}", "seeds": c.n, "examples": c.examples, "verdict": verdict_words(c),
                          "why": c.reason, "collapsed": ", ".join(c.collapsed) or "-"} for c in comps])


def write_report(folder: Path) -> Path:
    """report/report.md and its figures under `folder`, from its records; returns report.md's path."""
    folder = Path(folder)
    records = load_records(folder, set_aside=False)
    rows = trials(records)
    out = folder / "report"
    out.mkdir(exist_ok=True)
    for old in list(out.glob("*.png")) + list(out.glob("*.svg")):  # a figure whose axis went away must not linger
        old.unlink()
    reps, cells, comps = replicates(rows), cell_stats(rows), comparisons(rows)
    pairs = break_even_pairs(cells, reps)
    title = title_of(rows, next((r.sweep for r in records if r.sweep), None))
    (best, best_t), (cheap, cheap_t), (even, even_t) = _best(cells, comps), _serving(cells, reps), break_even_text(pairs)
    note = tuning_note(rows)
    flag = collapse_note(cells)
    workload = decide.decide(folder, WORKLOAD_QUERIES) if reps else []
    workload_text = (_WORKLOAD + "\n".join(f"- {line}" for line in decide.sentences(workload)) + "\n\n"
                     + decide.tables(workload)) if workload else "No completed replicate to decide from.\n"
    text = [f"# {title}\n", f"{best} {cheap} {even}\n", *([flag + "\n"] if flag else []), *([note + "\n"] if note else []),
            "## Best method, or the highest mean, per task × model × shots\n", to_markdown(best_t), _VERDICTS,
            "## Serving and adaptation costs\n", to_markdown(cheap_t), _COSTS, charged_dev_note(records),
            "## Break-even against ICL\n", to_markdown(even_t),
            "## Paired differences over shared data seeds and examples\n", to_markdown(_comparison_table(comps)),
            "## Summary per cell\n", _FULL_VOCAB, to_markdown(summary_table(cells)), _PROTOCOL,
            "## Which method for your workload\n", workload_text, "## Figures\n",
            *draw_all(reps, cells, pairs, records, out, workload)]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path


_VERDICTS = """
"best" means significantly better than every other method of its task × model × shots (sign-flip test
over the data seeds, p < 0.05, and a 95 % interval that excludes 0) with no seed collapsed on any set;
otherwise the method with the highest mean is named as such. An interval is the t-interval over the
data seeds' own means (each seed's mean already carries its evaluation sample's noise; below 6 seeds
it is never narrower than that noise). When every seed scored the same examples (a whole set), the
interval and the verdict speak for that evaluation set. Below 6 seeds the sign-flip test cannot reach
p < 0.05 (its smallest p is 2 / 2^n), so every comparison there is "inconclusive". A cell is flagged
COLLAPSED on a set when any seed answered one class ≥ 90 % of the time there (with how many seeds did).
"""

_COSTS = """
Serving: a fixed sample of in-domain queries (`serve_queries`) scored as the model would be deployed
(ICL with its k demonstrations behind their key/value cache, built before timing; fine-tuned, PBFT
and CD models the query alone), at the same batch size, after a warm-up, `serve_repeats` times: the
median milliseconds per query, and the process CPU time per query. In a sweep the serve phase runs
alone on its node (CPU) or device (GPU): other trials' phases wait meanwhile ("measured alone").
Peak memory is the phase's (on CPU the resident set after freed memory was handed back; on a GPU
CUDA's peak allocation). Adaptation: every search trial of the cell (pruned ones by their epochs and
CD's teacher targets) plus one replicate's teacher targets and training; a replicate's dev passes
are charged only when they select its epoch. Loading the model is common to all methods and left
out, and so is the CD teacher's own evaluation (it repeats ICL). A serving difference is measured per
data seed (both cells timed on that seed's queries) and called only where its 95 % interval over the
seeds excludes 0: otherwise "no measurable serving difference". Break-even is given only where the
per-query saving against ICL is measurable: per data seed, that seed's trained replicate against that
seed's ICL replicate; otherwise "no measurable payback".
"""

WORKLOAD_QUERIES = [1e3, 1e4, 1e5]
_WORKLOAD = """For each query volume, the method with the lowest total cost (adaptation, search included, plus
the queries' serving) among those within 0.01 of the most accurate in domain, and how often each
method is that choice over draws of the data seeds' means (accuracy and cost drawn together; no
method collapsed in domain is offered). `python -m orchestrator decide DIR --queries ... --tolerance
... --max-memory-gb ... --price ...` asks it for your own workload.

"""

_FULL_VOCAB = """Accuracy columns count a query right when the gold label word scores above the other label words;
the "(full vocab)" columns count it right only when the gold label word is the top token of the whole
vocabulary (the reference paper's ICL metric: a model that answers with another word is wrong).
"""

_PROTOCOL = """
Protocol: FT, PBFT and CD choose their epoch, and the search its learning rate, on n_dev labelled
examples beyond the k shots ("labelled" column); ICL uses none. Each replicate has its own data seed
(the draw, and its own stratified evaluation subset with --eval-limit) and a training seed derived
from it. Subsets hold equal numbers per label and HANS heuristic, so a model answering one class
everywhere scores 0.5. Accuracy restricted to the label words is the headline; accuracy over the full
vocabulary (a top token that is not a label word counts wrong, the reference paper's ICL metric) is
the "(full vocab)" column.
"""


def draw_all(reps: list[Trial], cells: list[CellStats], pairs: list[BreakEven], records: list[Record], out: Path,
             workload: list | None = None) -> list[str]:
    """Every figure, as report.md's sections: its images, or the reason it was skipped."""
    plan = [("Accuracy vs model size", lambda: figures.accuracy_vs_axis(reps, cells, out, "size")),
            ("In-domain vs OOD accuracy", lambda: figures.id_vs_ood(reps, cells, out)),
            ("Accuracy vs shots", lambda: figures.accuracy_vs_axis(reps, cells, out, "shots")),
            ("Serving cost vs accuracy", lambda: cost_figures.cost_accuracy(cells, out)),
            ("Serving cost vs shots", lambda: cost_figures.cost_vs_shots(cells, out)),
            ("Break-even", lambda: cost_figures.break_even(pairs, out)),
            *((f"{name} per group and label", lambda name=name: figures.group_breakdown(records, reps, cells, out, name))
              for name in figures.grouped_sets()),
            ("The search", lambda: figures.search(records, out)),
            ("Expected best dev accuracy against the tuning budget", lambda: tuning.tuning_curves(records, out)),
            ("Total cost against the queries served", lambda: cost_figures.total_cost(workload, out))]
    lines = []
    for title, draw in plan:
        try:
            if not reps:
                raise figures.Skip("no completed replicate")
            paths = draw()
        except figures.Skip as why:
            lines.append(f"### {title}\n\nskipped: {why}\n")
            continue
        lines.append(f"### {title}\n\n" + "".join(f"![{title}]({p.name})\n" for p in paths if p.suffix == ".png"))
    return lines
