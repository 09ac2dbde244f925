"""Which method to deploy for a workload: the cheapest in total (adaptation + queries × serving) among
the methods within a tolerance of the most accurate, with the probability that each is that choice.

    python -m orchestrator decide results/acceptance/decided_rte_cpu --queries 1e3,1e4,1e5 [--tolerance 0.01]
        [--max-memory-gb G] [--price cpu_hour=0.04,gpu_hour=2.5]

Per task × model × shots and per query volume N: a method is out when any seed of it collapsed in
domain, or when its measured peak memory exceeds --max-memory-gb (each with its reason). Among the
rest, those whose accuracy is within the tolerance of the best are candidates, and the one with the
lowest total cost is the choice. One bootstrap draws accuracy and cost together: data seeds are
resampled, the same seeds for every method (paired), and each drawn seed brings its accuracy and
its costs along, so a method's accuracy and cost stay paired. A seed's accuracy already holds its
evaluation sample's noise and its serving cost its timing passes' (the median of several), so they
are not resampled again within the seed (that would count those noises twice: see
`orchestrator/analysis/stats.py`). With few seeds a bootstrap understates their spread: the probabilities are
as sure as the seeds allow. Costs are device-seconds (CPU core- or GPU-seconds of the trial's
resources, on the machines the records came from); with --price, money too. A crossover volume
between two methods is where the one dearer to adapt but cheaper to serve starts to cost less in
total, with its 95 % interval over the draws, or "no measurable crossover" when in more than 2.5 %
of draws there is none (as the report's break-even: the per-query saving's interval excludes 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from orchestrator.cells import variant_of
from orchestrator.analysis.compare import correctness
from orchestrator.analysis.results import cell_stats, load_records
from orchestrator.analysis.table import GROUP, Trial, by_seed, completed_replicates, present, trials, values
from trainers.contract import CellStats, TrialResources

DRAWS = 2000


@dataclass
class Method:
    """One cell of a group: its per-seed accuracy and costs (device-seconds), and why it is out, if it is."""
    cell: str
    name: str
    seeds: list[int]
    accuracy: np.ndarray
    adapt: np.ndarray  # per seed: the cell's whole search + that seed's replicate adaptation
    serve: np.ndarray  # per seed: device-seconds per query
    out: str | None = None
    examples: list = field(default_factory=list)  # per seed: {example id: 0/1}, for the examples seeds share
    device: str = "CPU"
    peak_gib: float | None = None
    note: str = ""  # what a candidate carries along (a collapse out of domain)


@dataclass
class Decision:
    where: str
    queries: list[float]
    methods: list[Method]
    chosen: dict[float, str | None]           # the choice on the observed means, per N
    probability: dict[float, dict[str, float]]  # per N, per method: share of draws that chose it
    crossovers: list[dict] = field(default_factory=list)
    draws: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # method -> (adapt, serve) per draw
    tolerance: float = 0.01


def _device(r: TrialResources | None) -> tuple[str, float]:
    """(CPU or GPU, device count) of a trial from its resources: what one second of it costs (a record
    without them: one CPU)."""
    r = r or TrialResources()
    workers = r.workers or 1
    return ("GPU", workers * r.gpus_per_worker) if r.gpus_per_worker else ("CPU", workers * (r.cpus_per_worker or 1))


def _array(rows: list[Trial], get, missing: float = math.nan) -> np.ndarray:
    return np.array([float(v) if present(v) else missing for v in map(get, rows)], dtype=float)


def methods_of(rows: list[Trial], cells: list[CellStats], key: tuple, max_memory_gb: float | None) -> list[Method]:
    reps = completed_replicates(rows)
    mine = [c for c in cells if tuple(getattr(c, k) for k in GROUP) == key and c.seeds]  # cells with a completed replicate
    by_cell = {c.cell: by_seed([t for t in reps if t.cell == c.cell]) for c in mine}
    common = sorted(set.intersection(*(set(r) for r in by_cell.values()))) if by_cell else []
    out = []
    for c in mine:
        chosen = [by_cell[c.cell][s] for s in common]
        device, count = _device(next(t for t in rows if t.cell == c.cell).record.trial_resources)
        adapt = (c.search_seconds + _array(chosen, lambda t: t.adaptation_seconds, 0.0)) * count
        serve = _array(chosen, lambda t: t.serving.ms_per_query) / 1000 * count
        peak = max(values(chosen, lambda t: t.peak_memory_mib) + values(chosen, lambda t: t.serving.peak_memory_mib)
                   or [0.0]) / 1024
        examples = []
        for t in chosen:
            ids, correct = correctness(t.record, "in_domain")
            examples.append(dict(zip(ids, correct)) if ids is not None else {})
        m = Method(c.cell, variant_of(c.cell), common, _array(chosen, lambda t: t.score("in_domain").accuracy), adapt, serve,
                   examples=examples, device=device, peak_gib=peak or None,
                   note="; ".join(f"collapsed on {s} in {v.seeds} of {v.of} seeds"
                                  for s, v in c.collapse.items() if s != "in_domain"))
        fell = c.collapse.get("in_domain")
        if fell:
            m.out = f"collapsed in domain in {fell.seeds} of {fell.of} seeds"
        elif max_memory_gb is not None and peak > max_memory_gb:
            m.out = f"peak memory {peak:.1f} GiB exceeds --max-memory-gb {max_memory_gb:g}"
        elif not len(serve) or np.isnan(serve).any():
            m.out = "no serving cost measured"
        out.append(m)
    return out


def _choose(acc: np.ndarray, total: np.ndarray, eligible: np.ndarray, tolerance: float) -> np.ndarray:
    """Per draw (rows), the index of the cheapest method within `tolerance` of the most accurate
    eligible one (-1: none eligible)."""
    acc = np.where(eligible, acc, -np.inf)
    ok = eligible & (acc >= acc.max(axis=-1, keepdims=True) - tolerance - 1e-12)
    cost = np.where(ok, total, np.inf)
    pick = cost.argmin(axis=-1)
    return np.where(np.isfinite(cost.min(axis=-1)), pick, -1)


def joint_means(per_seed: np.ndarray, draws: int, seed: int = 0) -> np.ndarray:
    """Draws of the means of every column of `per_seed` (rows: data seeds) at once: x̄ + t-scaled
    combinations of the seeds' deviations, the multivariate-t posterior of the means under a normal
    model. Every draw moves all columns by one combination of seeds, so a method's accuracy and costs
    (and two methods against each other) stay paired; each column's marginal is the t-interval the
    report gives. One seed: its values, exactly."""
    n = per_seed.shape[0]
    mean = np.nanmean(per_seed, axis=0)
    if n < 2:
        return np.repeat(mean[None, :], draws, axis=0)
    rng = np.random.default_rng(seed)
    dev = np.nan_to_num(per_seed - mean)
    z = rng.standard_normal((draws, n))
    scale = np.sqrt((n - 1) / rng.chisquare(n - 1, size=(draws, 1)))
    return mean + scale * (z @ dev) / math.sqrt(n * (n - 1))


def shared_examples_draws(methods: list[Method], draws: int, seed: int = 0) -> np.ndarray:
    """Draws of what the evaluation examples every seed shares add to each method's accuracy (jointly:
    an example hard for one method is often hard for another), which the seeds' spread cannot show:
    a normal combination of the examples' deviations from their mean (each example's mean over the
    seeds, per method), so its variance is the examples' spread over their number. Zeros when the
    seeds share no examples."""
    per = [m.examples for m in methods]
    if not all(per) or not all(all(e) for e in per):
        return np.zeros((draws, len(methods)))
    common = set.intersection(*(set(e) for ex in per for e in ex))
    if len(common) < 2:
        return np.zeros((draws, len(methods)))
    keys = sorted(common, key=str)
    c = np.array([[np.mean([e[key] for e in ex]) for ex in per] for key in keys])  # examples x methods
    z = np.random.default_rng(seed).standard_normal((draws, len(keys))) / len(keys)
    return z @ (c - c.mean(axis=0))


def decide_group(methods: list[Method], queries: list[float], tolerance: float, where: str,
                 draws: int = DRAWS, seed: int = 0) -> Decision:
    n = len(methods[0].seeds) if methods else 0
    eligible = np.array([m.out is None for m in methods])
    k = len(methods)
    per_seed = np.column_stack([m.accuracy for m in methods] + [m.adapt for m in methods] + [m.serve for m in methods])
    drawn = joint_means(per_seed, draws, seed)
    acc, adapt, serve = drawn[:, :k], drawn[:, k:2 * k], drawn[:, 2 * k:]
    acc = acc + shared_examples_draws(methods, draws, seed + 1)
    means = [(m.accuracy.mean() if n else np.nan, m.adapt.mean() if n else np.nan, m.serve.mean() if n else np.nan)
             for m in methods]
    chosen, probability = {}, {}
    for q in queries:
        pick = _choose(acc, adapt + q * serve, np.broadcast_to(eligible, acc.shape), tolerance)
        probability[q] = {m.name: float((pick == i).mean()) for i, m in enumerate(methods)}
        point = _choose(np.array([a for a, _, _ in means]), np.array([d + q * s for _, d, s in means]), eligible, tolerance)
        chosen[q] = methods[int(point)].name if point >= 0 else None
    return Decision(where, queries, methods, chosen, probability, crossovers(methods, adapt, serve),
                    {m.name: (adapt[:, i], serve[:, i]) for i, m in enumerate(methods)}, tolerance)


def crossovers(methods: list[Method], adapt: np.ndarray, serve: np.ndarray) -> list[dict]:
    """Per pair of eligible methods: the query volume where the one dearer to adapt but cheaper to
    serve becomes cheaper in total, with its 95 % interval over the draws, or none measurable."""
    out = []
    for i in range(len(methods)):
        for j in range(i + 1, len(methods)):
            a, b = methods[i], methods[j]
            if a.out or b.out:
                continue
            if a.adapt.mean() < b.adapt.mean():  # a: the dearer to adapt
                a, b, ia, ib = b, a, j, i
            else:
                ia, ib = i, j
            saving = serve[:, ib] - serve[:, ia]  # per query, a against b
            extra = adapt[:, ia] - adapt[:, ib]
            exists = (saving > 0) & (extra > 0)
            entry = {"dearer_to_adapt": a.name, "cheaper_to_adapt": b.name}
            if exists.mean() < 0.975:
                entry.update(measurable=False, share=float(exists.mean()))
            else:
                n_star = extra[exists] / saving[exists]
                entry.update(measurable=True, queries=float(np.median(n_star)),
                             ci95=[float(np.percentile(n_star, 2.5)), float(np.percentile(n_star, 97.5))])
            out.append(entry)
    return out


def decide(folder: Path, queries: list[float], tolerance: float = 0.01, max_memory_gb: float | None = None) -> list[Decision]:
    rows = trials(load_records(Path(folder)))
    cells = cell_stats(rows)
    out = []
    for key in sorted({tuple(getattr(c, k) for k in GROUP) for c in cells}):
        methods = methods_of(rows, cells, key, max_memory_gb)
        if methods and methods[0].seeds:
            where = f"{key[0]} with {Path(str(key[1]).rstrip('/')).name} ({key[2]} shots)"
            out.append(decide_group(methods, queries, tolerance, where))
    return out


def _volume(q: float) -> str:
    return f"{q:,.0f}"


def sentences(decisions: list[Decision]) -> list[str]:
    """'For 10,000 queries on rte with smollm2-135m (16 shots), pbft+lora: P = 0.83; icl 0.17.'"""
    lines = []
    for d in decisions:
        for q in d.queries:
            probs = sorted(((p, name) for name, p in d.probability[q].items() if p > 0), reverse=True)
            if not probs:
                why = "; ".join(f"{m.name}: {m.out}" for m in d.methods)
                lines.append(f"For {_volume(q)} queries on {d.where}: no method qualifies ({why}).")
                continue
            head, rest = probs[0], probs[1:]
            lines.append(f"For {_volume(q)} queries on {d.where}, {head[1]}: P = {head[0]:.2f}"
                         + "".join(f"; {name} {p:.2f}" for p, name in rest) + ".")
    return lines


def money(seconds: float, device: str, prices: dict[str, float]) -> str:
    price = prices.get("gpu_hour" if device == "GPU" else "cpu_hour")
    return "" if price is None else f" (${seconds / 3600 * price:,.4g})"


def tables(decisions: list[Decision], prices: dict[str, float] | None = None) -> str:
    """The table behind the sentences, per group: each method's accuracy and costs, its total at each
    volume, the probability that it is the choice, and why it is out where it is."""
    prices = prices or {}
    parts = []
    for d in decisions:
        unit = {m.device for m in d.methods}
        unit_text = " and ".join(f"{u} {'core-' if u == 'CPU' else ''}seconds" for u in sorted(unit))
        head = ["method", "in-domain acc", f"adaptation ({unit_text})", "serving per 1,000 queries"] + [
            f"total at {_volume(q)} / P(chosen)" for q in d.queries] + ["status"]
        rows = []
        for m in d.methods:
            adapt, serve = float(m.adapt.mean()), float(m.serve.mean())
            rows.append([m.name, f"{m.accuracy.mean():.3f}", f"{adapt:,.0f}{money(adapt, m.device, prices)}",
                         f"{1000 * serve:,.1f}{money(1000 * serve, m.device, prices)}"]
                        + [f"{adapt + q * serve:,.0f}{money(adapt + q * serve, m.device, prices)} / "
                           f"{d.probability[q][m.name]:.2f}" for q in d.queries]
                        + [m.out or "candidate" + (f" ({m.note})" if m.note else "")])
        lines = [f"### {d.where} ({len(d.methods[0].seeds)} data seeds)", "",
                 "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        for x in d.crossovers:
            lines.append("")
            lines.append(f"- {x['dearer_to_adapt']} against {x['cheaper_to_adapt']}: " + (
                f"cheaper in total after {x['queries']:,.0f} queries (95 %: {x['ci95'][0]:,.0f}–{x['ci95'][1]:,.0f})"
                if x["measurable"] else f"no measurable crossover (one exists in {100 * x['share']:.0f} % of draws)"))
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def parse_queries(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--queries {text}: give query volumes separated by commas, e.g. 1e3,1e4,1e5") from None
    if not out or any(q <= 0 or math.isinf(q) for q in out):
        raise ValueError(f"--queries {text}: every volume must be a positive number")
    return out


def parse_prices(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key not in ("cpu_hour", "gpu_hour") or not value:
            raise ValueError(f"--price {text}: expected cpu_hour=P,gpu_hour=P (prices per device-hour)")
        out[key] = float(value)
    return out


def write(folder: Path, decisions: list[Decision], text: str) -> Path:
    """FOLDER/report/decide.md (the sentences and tables) and its figure."""
    from orchestrator.analysis import cost_figures
    out = Path(folder) / "report"
    out.mkdir(exist_ok=True)
    figures = cost_figures.total_cost(decisions, out)
    path = out / "decide.md"
    path.write_text("# Which method for your workload\n\n" + text + "\n" + "".join(f"![total cost]({p.name})\n"
                                                                              for p in figures if p.suffix == ".png"))
    return path
