"""A sweep's report: report.md opening with three quotable sentences, backed by tables, and figures.

    python -m orchestrator report results/acceptance/sizes_cpu     # -> results/.../report/report.md

A pure function of the folder's records (it moves and changes none of them), so it can be rerun any
time; the sweep runs it at its end. Figures are in `orchestrator/figures.py`; a figure whose axis
the sweep lacks is skipped with its reason, written where it would have been.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from orchestrator import figures
from orchestrator.results import (_newest_per_seed, cell_stats, comparisons, load_records, mean_std, title_of, to_markdown,
                                  summary_table, trials_table)

GROUP = ("task", "model", "shots")


def replicates(table: pd.DataFrame) -> pd.DataFrame:
    """One completed replicate per cell and data seed (the newest), the rows every figure plots."""
    reps = table[(table["phase"] != "search") & (table["status"] == "completed")]
    reps = pd.concat([_newest_per_seed(g) for _, g in reps.groupby("cell")]) if len(reps) else reps.copy()
    # a model's size: its fewest parameters over the records (LoRA adapters and heads add some)
    reps["model_params"] = reps.groupby("model")["total_params"].transform("min") if len(reps) else []
    return reps


def _where(c: dict) -> str:
    return f"{c['task']}, {figures.model_name(c['model'])}, {c['shots']} shots"


def break_even_pairs(cells: list[dict]) -> list[dict]:
    """Per task × model × shots, each trained cell against ICL: queries after which adapting once
    (its whole search and training) costs less than carrying the demonstrations in every prompt."""
    out = []
    for c in cells:
        icl = next((i for i in cells if i["method"] == "icl" and all(i[k] == c[k] for k in GROUP)), None)
        if c["method"] == "icl" or not icl or not c["serve_ms_per_query"] or not icl["serve_ms_per_query"]:
            continue
        ms, icl_ms, adapt = c["serve_ms_per_query"]["mean"], icl["serve_ms_per_query"]["mean"], c["adaptation_seconds"]
        saving = (icl_ms - ms) / 1000  # seconds saved per query
        out.append({"where": _where(c), "method": figures.variant(c["cell"]), "cell": c["cell"], "adapt_s": adapt,
                    "ms": ms, "icl_ms": icl_ms, "break_even_queries": math.ceil(adapt / saving) if saving > 0 else None})
    return out


def _best(cells: list[dict], comps: list[dict]) -> tuple[str, pd.DataFrame]:
    rows, parts = [], []
    for key in sorted({tuple(c[k] for k in GROUP) for c in cells}):
        mine = sorted((c for c in cells if tuple(c[k] for k in GROUP) == key and c["in_domain_accuracy"]),
                      key=lambda c: -c["in_domain_accuracy"]["mean"])
        if not mine:
            continue
        best, where = mine[0], _where(mine[0])
        acc = best["in_domain_accuracy"]
        row = {"task × model × shots": where, "best in-domain": figures.variant(best["cell"]),
               "accuracy": f"{acc['mean']:.3f}" + (f" [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}]" if acc["ci95"] else "")}
        text = f"on {where} {row['best in-domain']} is best in domain ({acc['mean']:.3f})"
        if len(mine) > 1:
            runner = mine[1]
            comp = next((x for x in comps if x["set"] == "in_domain" and {x["a"], x["b"]} == {best["cell"], runner["cell"]}), None)
            if comp:
                sign = 1 if comp["a"] == best["cell"] else -1
                lo, hi = sorted((sign * comp["ci95"][0], sign * comp["ci95"][1]))
                verdict = "within noise" if comp["verdict"] == "within noise" else "a real difference"
                row.update({"runner-up": figures.variant(runner["cell"]), "difference": f"{sign * comp['mean_diff']:+.3f}",
                            "95 % interval": f"[{lo:+.3f}, {hi:+.3f}]", "p": f"{comp['p']:.2f}", "seeds": comp["n"],
                            "verdict": verdict})
                text += (f", ahead of {row['runner-up']} by {row['difference']} [{lo:+.3f}, {hi:+.3f}] over "
                         f"{comp['n']} seeds ({verdict})")
        rows.append(row)
        parts.append(text)
    sentence = ("In domain, " + "; ".join(parts) + ".") if parts else "No cell completed a replicate."
    return sentence, pd.DataFrame(rows)


def _serving(cells: list[dict]) -> tuple[str, pd.DataFrame]:
    rows, parts = [], []
    for c in cells:
        rows.append({"cell": c["cell"], "serve ms/query": mean_std(c["serve_ms_per_query"], 1),
                     "serve peak MiB": mean_std(c["serve_peak_mib"], 0), "adaptation s (search + one replicate)":
                     f"{c['search_seconds']:.0f} + {(c['replicate_adaptation_seconds'] or {}).get('mean', 0):.0f}",
                     "Ray overhead s (all trials)": f"{c['ray_overhead_seconds']:.0f}",
                     "labelled examples used": c["labelled_examples"]})
    for key in sorted({tuple(c[k] for k in GROUP) for c in cells}):
        mine = [c for c in cells if tuple(c[k] for k in GROUP) == key and c["serve_ms_per_query"]]
        if len(mine) < 2:
            continue
        mine.sort(key=lambda c: c["serve_ms_per_query"]["mean"])
        cheap, dear = mine[0], mine[-1]
        ratio = dear["serve_ms_per_query"]["mean"] / cheap["serve_ms_per_query"]["mean"]
        parts.append(f"on {_where(cheap)} {figures.variant(cheap['cell'])} serves a query in "
                     f"{cheap['serve_ms_per_query']['mean']:.0f} ms against {dear['serve_ms_per_query']['mean']:.0f} ms "
                     f"for {figures.variant(dear['cell'])} ({ratio:.1f}× cheaper)")
    sentence = ("Cheapest to serve: " + "; ".join(parts) + ".") if parts else "Serving costs were not metered in these records."
    return sentence, pd.DataFrame(rows)


def _break_even_text(pairs: list[dict]) -> tuple[str, pd.DataFrame]:
    rows = [{"task × model × shots": p["where"], "method": p["method"], "adaptation s": f"{p['adapt_s']:.0f}",
             "ms/query": f"{p['ms']:.1f}", "ICL ms/query": f"{p['icl_ms']:.1f}",
             "break-even queries": f"{p['break_even_queries']:,}" if p["break_even_queries"] else "never (not cheaper per query)"}
            for p in pairs]
    parts = [f"{p['method']} on {p['where']} pays back its {p['adapt_s']:.0f} s of adaptation after "
             f"{p['break_even_queries']:,} queries" if p["break_even_queries"] else
             f"{p['method']} on {p['where']} never pays back (no cheaper per query than ICL)" for p in pairs]
    sentence = ("Against ICL, " + "; ".join(parts) + ".") if parts else "No trained method beside ICL to break even against."
    return sentence, pd.DataFrame(rows)


def _figures(table, reps, cells, pairs, records, out: Path) -> list[str]:
    plan = [("Accuracy vs model size", lambda: figures.accuracy_vs_axis(reps, out, "size")),
            ("In-domain vs OOD accuracy", lambda: figures.id_vs_ood(reps, out)),
            ("Accuracy vs shots", lambda: figures.accuracy_vs_axis(reps, out, "shots")),
            ("Serving cost vs accuracy", lambda: figures.cost_accuracy(cells, out)),
            ("Break-even", lambda: figures.break_even(pairs, out)),
            ("HANS per heuristic and label", lambda: figures.hans_breakdown(records, reps, out)),
            ("The search", lambda: figures.search(records, out))]
    lines = []
    for title, draw in plan:
        try:
            if reps.empty:
                raise figures.Skip("no completed replicate")
            paths = draw()
        except figures.Skip as why:
            lines.append(f"### {title}\n\nskipped: {why}\n")
            continue
        lines.append(f"### {title}\n\n" + "".join(f"![{title}]({p.name})\n" for p in paths if p.suffix == ".png"))
    return lines


def write_report(folder: Path) -> Path:
    """report/report.md and its figures under `folder`, from its records; returns report.md's path."""
    folder = Path(folder)
    records = load_records(folder, set_aside=False)
    table = trials_table(records)
    out = folder / "report"
    out.mkdir(exist_ok=True)
    for old in list(out.glob("*.png")) + list(out.glob("*.svg")):  # a figure whose axis went away must not linger
        old.unlink()
    reps, cells, comps = replicates(table), cell_stats(table), comparisons(table)
    pairs = break_even_pairs(cells)
    title = title_of(table, next((r["sweep"] for r in records if r.get("sweep")), None))
    (best, best_t), (cheap, cheap_t), (even, even_t) = _best(cells, comps), _serving(cells), _break_even_text(pairs)
    comp_t = pd.DataFrame([{"A": figures.variant(c["a"]), "B": figures.variant(c["b"]),
                            "where": c["a"].split("/", 1)[0] + ", " + "/".join(c["a"].split("/")[2:]), "set": c["set"],
                            "A − B": f"{c['mean_diff']:+.3f}", "95 % interval": f"[{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}]",
                            "p": f"{c['p']:.2f}", "seeds": c["n"], "verdict": c["verdict"],
                            "collapsed": ", ".join(c.get("collapsed") or []) or "-"} for c in comps])
    text = [f"# {title}\n", f"{best} {cheap} {even}\n",
            "## Best method per task × model × shots\n", to_markdown(best_t),
            "## Serving and adaptation costs\n", to_markdown(cheap_t), _COSTS,
            "## Break-even against ICL\n", to_markdown(even_t),
            "## Paired differences over shared data seeds\n", to_markdown(comp_t), _PAIRED,
            "## Summary per cell\n", to_markdown(summary_table(table)), _PROTOCOL, "## Figures\n", *_figures(
                table, reps, cells, pairs, records, out)]
    path = out / "report.md"
    path.write_text("\n".join(text))
    return path


_COSTS = """
Serving: the in-domain set scored as the model would be deployed (ICL with its k demonstrations
and their prefix cache; fine-tuned, PBFT and CD models the query alone), at the same batch size,
milliseconds per query and the peak memory while doing it (on CPU the resident set after freed
memory was handed back; on a GPU CUDA's peak allocation). Adaptation: every search trial of the
cell (pruned ones by the seconds of their epochs) plus one replicate's teacher targets, training
and dev passes; loading the model is common to all methods and left out, and so is the CD
teacher's own evaluation (it repeats ICL). Ray overhead: trial time as the sweep saw it less the
method's own, over all of the cell's trials.
"""

_PAIRED = """
A − B is the mean over the data seeds both cells completed; the interval is a paired bootstrap
(10,000 resamples) and p a sign-flip permutation test. "within noise" unless the interval
excludes 0 and p < 0.05. Over n seeds the smallest p a sign-flip test can give is 2 / 2^n (0.25
for 3 seeds, 0.0625 for 5): below 6 seeds no difference can be called real, whatever its size.
"""

_PROTOCOL = """
Protocol: FT, PBFT and CD choose their epoch, and the search its learning rate, on n_dev labelled
examples beyond the k shots ("labelled" column); ICL uses none. Each replicate has its own data
seed (the draw) and a training seed derived from it. Evaluation subsets (--eval-limit) hold equal
numbers per label and HANS heuristic, so a model answering one class everywhere scores 0.5.
"""
