"""Power before spending: the smallest difference a planned sweep's verdict rule detects, whether its
seeds can reach significance at all, and (with --detect) the seeds × evaluation-size designs that
reach 80 % power for a difference, with what each costs.

    python -m orchestrator sweep --space cd_vs_icl --dry-run                    # from the stated prior
    python -m orchestrator sweep --space decided_rte_cpu --dry-run --prior results/acceptance/task_matrix_cpu --detect 0.05

One seed's paired difference between two methods varies by σ² = σ²_seed + σ²_example / m: the
few-shot draw's spread (`seed_sd`) plus the evaluation noise of m examples, σ²_example being the
variance of one example's paired difference (a -1/0/+1 outcome). Part of σ²_example is the examples'
own effects σ²_b, which move every seed alike on the examples they share: seeds drawing m of a pool of
N vary by σ²_seed + (σ²_example − σ²_b) / m + σ²_b (1/m − 1/N), and the pool adds σ²_b / N to the
mean whatever the seeds (`seed_spread`, `shared_variance`). Methods differ in how closely they agree
on single examples (two LoRA students far more than either with ICL), so where the prior's sweep
compared the same two methods on the same task and set, that pair's own spread is used (`for_pair`). The smallest difference detected
with 80 % power is `stats.detectable(n, σ)`: the verdict rule itself (sign-flip p < 0.05 and a
t-interval excluding 0) simulated over n seeds, not a normal formula, which overstates the rule's
power at few seeds. The prior is stated: `seed_sd` 0.05 (the reference paper's seed-to-seed spread is
often 5–10 points), accuracy 0.6 with independent errors (σ²_example = 2 p (1 - p)), unless `--prior
DIR` measures both from an earlier sweep's per-seed paired differences, and its seconds per trial.
Fewer than 6 seeds can never reach p < 0.05 with the sign-flip test: the plan says so, with no number.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from orchestrator.analysis.stats import MIN_SEEDS, detectable, min_p, seed_noise, shared_examples, t95
from orchestrator.analysis.table import Trial, by_seed, completed_replicates, group, present, trials, values
from trainers.contract import Comparison

DEFAULT_SEED_SD, DEFAULT_ACCURACY = 0.05, 0.6
DEFAULT_EFFECT_SD = 0.3  # the spread of single examples' own paired effects (SmolLM2 on RTE: 0.34 between two methods)
MAX_SEEDS = 200  # a design search stops here
EVAL_PHASES = ("evaluate", "teacher_eval")  # a replicate's phases whose work grows with the evaluation sets


def prior_from(folder: Path) -> dict:
    """seed_sd, example_sd and accuracy from an earlier sweep's in-domain comparisons (the per-seed
    paired differences' spread less their own evaluation noise, pooled over comparisons), and the
    seconds its trials took (`seconds`: per task, method and model, what a replicate costs apart
    from its evaluation and per evaluated query; a search trial's)."""
    from orchestrator.analysis.compare import comparisons
    from orchestrator.analysis.results import load_records
    folder = Path(folder)
    if not folder.exists():
        raise ValueError("does not exist; give an earlier sweep's results folder (e.g. results/acceptance/task_matrix_cpu)")
    if not folder.is_dir():
        raise ValueError("is a file; give an earlier sweep's results folder")
    records = load_records(folder, set_aside=False)
    if not records:
        raise ValueError("holds no result records; give an earlier sweep's results folder")
    rows = trials(records)
    every = [c for c in comparisons(rows) if c.n > 1]
    comps = [c for c in every if c.set == "in_domain"]
    if not comps:
        raise ValueError("has no in-domain comparison over two or more data seeds to take a prior from")
    reps = completed_replicates(rows)
    sets = {}
    for name in sorted({c.set for c in every} - {"in_domain"}):  # an OOD set's spread is its own
        sets[name] = {**_spread([c for c in every if c.set == name], reps, name),
                      "comparisons": sum(c.set == name for c in every)}
    accs = values(reps, lambda t: t.score("in_domain").accuracy)
    return {**_spread(comps, reps, "in_domain"), "accuracy": float(np.mean(accs)), "comparisons": len(comps),
            "seconds": _seconds(rows), "sets": sets, "pairs": _pair_spreads(every, reps),
            "source": f"the records of {folder} ({len(comps)} in-domain comparisons over "
                      f"{len({s for c in comps for s in c.seeds})} data seeds)"}


def _pair_spreads(comps: list[Comparison], reps: list[Trial]) -> dict:
    """(task, set, variant, variant) -> the spread of that pair's comparisons (pooled over models and
    shots), the two variants in sorted order."""
    from orchestrator.cells import Cell
    groups: dict = {}
    for c in comps:
        a, b = Cell.parse(c.a), Cell.parse(c.b)
        groups.setdefault((a.task, c.set, *sorted((a.variant, b.variant))), []).append(c)
    return {key: {**_spread(group, reps, key[1]), "comparisons": len(group),
                  "seeds": min(c.n for c in group)} for key, group in groups.items()}


def _spread(comps: list[Comparison], reps: list[Trial], name: str) -> dict:
    """seed_sd, example_sd and effect_sd of one evaluation set's comparisons: the per-seed paired
    differences' spread less their own evaluation noise (less what shared examples hide of it), one
    example's paired-difference spread, and the examples' own effects, pooled over comparisons."""
    from orchestrator.analysis.compare import aligned_ids, strata_of
    seed_vars, example_vars, effects = [], [], []
    for c in comps:
        ra, rb = (by_seed([t for t in reps if t.cell == cell]) for cell in (c.a, c.b))
        diffs, per_seed, ids = [], [], []
        for s in c.seeds:
            a, b, keys = aligned_ids(ra[s].record, rb[s].record, name)
            diffs.append(float((a - b).mean()))
            per_seed.append(a - b)
            ids.append(keys)
        b2, overlap = shared_examples(per_seed, ids if all(k is not None for k in ids) else None)
        strata = strata_of({s: ra[s].record for s in c.seeds}, name,
                           dict(zip(c.seeds, ids)) if all(k is not None for k in ids) else None)
        noise = seed_noise(per_seed, [strata[s] for s in c.seeds] if strata else None, overlap)
        example_vars += [v * len(d) for v, d in zip(noise, per_seed)]
        seed_vars.append(float(np.var(diffs, ddof=1)) - float(np.mean(noise)) + b2 * overlap)
        if overlap:
            effects.append(b2)
    return {"seed_sd": math.sqrt(max(0.0, float(np.mean(seed_vars)))), "example_sd": math.sqrt(float(np.mean(example_vars))),
            "effect_sd": math.sqrt(float(np.mean(effects))) if effects else 0.0}


def _seconds(rows: list[Trial]) -> dict:
    """(task, variant, model tag) -> {"fixed", "per_query", "search"}: a replicate's seconds less its
    evaluation, its evaluation's seconds per scored query (CD's teacher included), a search trial's."""
    from orchestrator.cells import Cell
    out: dict = {}
    for cell, mine in group(rows, lambda t: t.cell).items():
        c = Cell.parse(cell)
        fixed, per_query = [], []
        for t in completed_replicates(mine):
            m, phases = t.record.metrics, t.record.resources.phases
            scored = sum(int(b.n_scored or 0) for b in [*([m.in_domain] if m.in_domain else []), *m.ood.values()])
            spent = sum(phases[p].seconds or 0.0 for p in EVAL_PHASES if p in phases)
            if scored and present(t.trial_seconds):
                fixed.append(float(t.trial_seconds) - spent)
                per_query.append(spent / scored)
        search = values((t for t in mine if t.phase == "search"), lambda t: t.trial_seconds)
        if fixed:
            out[(c.task, c.variant, c.model_tag)] = {"fixed": float(np.mean(fixed)), "per_query": float(np.mean(per_query)),
                                                     "search": float(np.mean(search)) if search else 0.0}
    return out


def default_prior() -> dict:
    return {"seed_sd": DEFAULT_SEED_SD, "example_sd": math.sqrt(2 * DEFAULT_ACCURACY * (1 - DEFAULT_ACCURACY)),
            "effect_sd": DEFAULT_EFFECT_SD, "accuracy": DEFAULT_ACCURACY, "seconds": {},
            "source": f"the stated prior (seed spread {DEFAULT_SEED_SD}, accuracy {DEFAULT_ACCURACY}, independent errors, "
                      f"examples' own effects {DEFAULT_EFFECT_SD})"}


def for_set(prior: dict, name: str) -> dict:
    """The prior for one evaluation set: an OOD set's own spread where the prior's sweep compared
    methods on it (its methods may agree there far more, or less, than in domain), else in-domain's."""
    return {**prior, **(prior.get("sets") or {}).get(name, {})}


def for_pair(prior: dict, task: str, name: str, a: str, b: str) -> dict | None:
    """The prior of one pair of methods on one task and set, where the prior's sweep compared them
    there (None otherwise: the set's pooled prior serves)."""
    own = (prior.get("pairs") or {}).get((task, name, *sorted((a, b))))
    return {**for_set(prior, name), **own} if own else None


def seed_spread(prior: dict, m: int, pool: int = 0) -> float:
    """The standard deviation of one seed's paired difference scored on m examples drawn from a pool
    of `pool` (0: a pool so large that seeds share none): the examples' own effects σ²_b are in each
    seed's evaluation noise only as far as the seeds' examples differ; what they share moves every
    seed alike (`shared_variance`)."""
    effect = min(prior.get("effect_sd", 0.0) ** 2, prior["example_sd"] ** 2)
    unshared = max(0.0, 1 / m - 1 / pool) if pool else 1 / m
    return math.sqrt(prior["seed_sd"] ** 2 + (prior["example_sd"] ** 2 - effect) / m + effect * unshared)


def shared_variance(prior: dict, pool: int) -> float:
    """The variance of the mean difference that the evaluation pool itself adds: seeds drawing their
    examples from a pool of `pool` share, on average, 1/pool of each other's (every one, for the whole
    set), and what they share no number of seeds averages away: σ²_b / pool."""
    return prior.get("effect_sd", 0.0) ** 2 / pool if pool else 0.0


def set_size(space, task: str, name: str) -> tuple[int, str]:
    """(rows of one evaluation set, where that number comes from): the local file's rows, else the
    official split's size from the task definitions."""
    from trainers.data.tasks import task_definitions
    defs = task_definitions()
    split = defs["tasks"][task]["eval"] if name == "in_domain" else defs["ood_sets"][name]["split"]
    size, how = int(split.get("size") or 0), "the official split's rows"
    if space.data_dir and split.get("local"):
        path = Path(space.data_dir) / split["local"]
        if path.is_file():
            with path.open("rb") as f:
                size, how = sum(1 for _ in f), f"{path.name}'s rows"
    if name == "hans":  # one heuristic of three unless the space asks for more
        wanted = space.tasks[task].get("hans_heuristics") or space.fixed.get("hans_heuristics") or ["lexical_overlap"]
        size = size if "all" in wanted else size * len(wanted) // 3
    return size, how


def eval_size(space, task: str, name: str = "in_domain", limit: int | None = None) -> tuple[int, str]:
    """(examples each seed scores on one set, how that is known): the space's limit (or `limit`) within
    the set's size."""
    size, how = set_size(space, task, name)
    if limit is None:
        limit = space.fixed.get("eval_limit") if name == "in_domain" else (
            space.fixed.get("ood_limit") or space.fixed.get("eval_limit"))
    if limit and (not size or limit < size):
        which = "eval_limit" if name == "in_domain" or not space.fixed.get("ood_limit") else "ood_limit"
        return int(limit), f"{which} {limit}: each seed its own subset"
    return size, f"the whole set ({how}): every seed scores the same examples"


def _variants(space, task: str) -> list[str]:
    from orchestrator.planning import plan
    return sorted({c.variant for c in plan.cells(space) if c.task == task})


def _pairs(space, task: str) -> int:
    k = len(_variants(space, task))
    return k * (k - 1) // 2 * len(space.models) * len(space.shots)


def _planned(prior: dict, n: int, m: int, pool: int) -> tuple[float, float, float]:
    """(detectable difference, the 95 % interval's half-width, what the pool's examples hold of it)
    for n seeds scoring m examples each from a pool of `pool`."""
    sd, shared = seed_spread(prior, m, pool), shared_variance(prior, pool)
    return detectable(n, sd, shared), t95(n - 1) * math.sqrt(sd ** 2 / n + shared), 1.96 * math.sqrt(shared)


def _set_lines(space, prior: dict, task: str, name: str, n: int) -> list[str]:
    """One evaluation set's power: one line from the pooled prior, then a line per pair of methods
    whose own spread the prior measured (those predict that pair's interval)."""
    m, how = eval_size(space, task, name)
    pool = set_size(space, task, name)[0]
    where = f"  {task} {'in domain' if name == 'in_domain' else 'on ' + name}: {_pairs(space, task)} paired comparison(s), "
    if n < MIN_SEEDS:
        return [where + f"{m} examples each: no power — with {n} seed{'s' if n != 1 else ''} the sign-flip "
                        f"test cannot reach p < 0.05 (its smallest p is {min_p(n):.4g})"]
    own = for_set(prior, name)
    size, half, held = _planned(own, n, m, pool)
    lines = [where + f"{m} examples each ({how}): differences of {size:.3f} or more are detected with 80 % power by "
                     f"the verdict rule (simulated); a comparison's 95 % interval about ±{half:.3f}"
                     + (f", of which the {pool} examples themselves hold ±{held:.3f} whatever the seeds" if held else "")
                     + (f" (the prior's own {own['comparisons']} comparison(s) on {name}: seed spread "
                        f"{own['seed_sd']:.3f}, examples' own effects {own['effect_sd']:.2f})"
                        if name in (prior.get("sets") or {}) else "")]
    variants = _variants(space, task)
    for a, b in [(a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]:
        pair = for_pair(prior, task, name, a, b)
        if pair:
            size, half, held = _planned(pair, n, m, pool)
            lines.append(f"    {a} − {b}: detects {size:.3f}, interval about ±{half:.3f}"
                         + (f" (examples hold ±{held:.3f})" if held else "")
                         + f" — this pair's own spread in the prior ({pair['seeds']} seeds): seed spread "
                           f"{pair['seed_sd']:.3f}, examples' own effects {pair['effect_sd']:.2f}")
    return lines


def plan_lines(space, prior: dict | None = None) -> list[str]:
    """The dry run's power section: per task and evaluation set, the smallest difference the verdict
    rule detects with 80 % power and the interval it will print (per pair of methods where the prior
    measured that pair), or that it has no power at all."""
    prior = prior or default_prior()
    n = len(space.data_seeds)
    lines = [f"power: {n} data seeds; prior from {prior['source']}: seed spread {prior['seed_sd']:.3f}, "
             f"one example's paired-difference spread {prior['example_sd']:.2f}, examples' own effects "
             f"{prior.get('effect_sd', 0):.2f}"]
    for task in space.tasks:
        for name in ["in_domain", *(space.tasks[task].get("ood") or [])]:
            lines += _set_lines(space, prior, task, name, n)
    if n < MIN_SEEDS:
        lines.append(f"warning: with {n} data seed(s) no comparison can reach p < 0.05 (the sign-flip test's smallest p "
                     f"is {min_p(n):.4g}): every verdict will be 'inconclusive'; use at least {MIN_SEEDS} data seeds "
                     f"(--set 'data_seeds=[{', '.join(map(str, range(MIN_SEEDS)))}]') for a verdict")
    return lines


def seeds_needed(prior: dict, m: int, target: float, pool: int = 0) -> int | None:
    """The fewest seeds whose rule detects `target` with 80 % power at m examples per seed drawn from
    a pool of `pool` (None: more than MAX_SEEDS, or the pool's own examples forbid it)."""
    sd, shared = seed_spread(prior, m, pool), shared_variance(prior, pool)
    if detectable(MAX_SEEDS, sd, shared) > target:
        return None
    lo, hi = MIN_SEEDS, MAX_SEEDS  # detectable falls with n: the first n at or under target
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if detectable(mid, sd, shared) <= target else (mid + 1, hi)
    return lo


def _replicate_seconds(space, cell, prior: dict, m: int, m_ood: list[int], has_gpus: bool) -> tuple[float | None, bool]:
    """(planned seconds of one replicate of `cell` scoring m in-domain and m_ood OOD examples, whether
    measured): the prior's measured cost of the same task, method and model, else the time plan."""
    measured = prior["seconds"].get((cell.task, cell.variant, cell.model_tag))
    if measured:
        return measured["fixed"] + measured["per_query"] * (m + sum(m_ood)), True
    from orchestrator.planning import plan, time_plan
    from trainers.runtime.memory_plan import shape_of
    if not Path(cell.model).expanduser().is_dir():  # a hub id: the dry run loads nothing, so its shape is unknown here
        return None, False
    try:
        shape = shape_of(cell.model)
    except Exception:  # noqa: BLE001 - a folder without a readable config: no estimate
        return None, False
    run = plan.run_config(space, cell, space.tuning_data_seed, {}, final_eval=True)
    sets = {"in_domain": m, **{name: k for name, k in zip(space.tasks[cell.task].get("ood") or [], m_ood)}}
    r = plan.resources(space, cell, has_gpus)
    return time_plan.trial_seconds(run, shape, None, sets, r.cpus_per_worker, r.gpus_per_worker,
                                   plan.in_process(r)), False


def _search_seconds(space, cell, prior: dict, has_gpus: bool) -> float:
    from orchestrator.planning import plan, time_plan
    if not plan.searched(space, cell):
        return 0.0
    measured = prior["seconds"].get((cell.task, cell.variant, cell.model_tag))
    if measured and measured["search"]:
        return space.budget * measured["search"]
    if not Path(cell.model).expanduser().is_dir():
        return 0.0
    return space.budget * time_plan.planned(space, has_gpus).get(("search", cell.id), 0.0)


def _clock(seconds: float) -> str:
    h, rest = divmod(int(round(seconds)), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _pair_priors(space, prior: dict, task: str) -> list[dict]:
    """The in-domain priors a design must satisfy on `task`: each pair of methods' own where the prior
    measured it, the pooled prior for the rest."""
    variants = _variants(space, task)
    pairs = [(a, b) for i, a in enumerate(variants) for b in variants[i + 1:]]
    return [for_pair(prior, task, "in_domain", a, b) or prior for a, b in pairs] or [prior]


def design_lines(space, prior: dict | None, target: float, has_gpus: bool, slots: int) -> list[str]:
    """Per task, the seeds × evaluation-size designs whose verdict rule detects an in-domain
    difference of `target` with 80 % power, and what each costs in planned time, cheapest named."""
    from orchestrator.planning import plan
    prior = prior or default_prior()
    lines = [f"design: seeds and evaluation size to detect an in-domain difference of {target:.3f} with 80 % power "
             f"(prior from {prior['source']}; {slots} trial(s) at a time)"]
    for task in space.tasks:
        size, _ = set_size(space, task, "in_domain")
        cells = [c for c in plan.cells(space) if c.task == task]
        oods = space.tasks[task].get("ood") or []
        search = sum(_search_seconds(space, c, prior, has_gpus) for c in cells)
        options, priors = [], _pair_priors(space, prior, task)
        worst = max(priors, key=lambda p: p.get("effect_sd", 0.0))
        floor = (t95(MAX_SEEDS) + 0.8416) * math.sqrt(shared_variance(worst, size))  # what the pool allows at best
        for m in sorted({k for k in (32, 64, 128, 256, 512) if k < size} | {size}):
            needed = [seeds_needed(p, m, target, size) for p in priors]  # every pair must reach the power
            n = None if None in needed else max(needed)
            m_ood = [eval_size(space, task, o, None if space.fixed.get("ood_limit") else m)[0] for o in oods]
            costs = [_replicate_seconds(space, c, prior, m, m_ood, has_gpus) for c in cells]
            per_seed = None if any(s is None for s, _ in costs) else sum(s for s, _ in costs)
            total = None if n is None or per_seed is None else (n * per_seed + search) / max(1, slots)
            options.append((m, n, total, all(k for _, k in costs)))
        lines.append(f"  {task} ({len(cells)} cells; OOD sets at {'ood_limit ' + str(space.fixed['ood_limit']) if space.fixed.get('ood_limit') else 'the same limit'}):")
        lines.append(f"    {'examples per seed':<44} {'seeds':>6} {'replicates':>10}  planned time")
        for m, n, total, measured in options:
            what = f"{m} (the whole set: shared by every seed)" if m == size else f"{m} (each seed its own subset)"
            lines.append(f"    {what:<44} {n if n else '>' + str(MAX_SEEDS):>6} {n * len(cells) if n else '-':>10}  "
                         + (f"{_clock(total)} ({'measured cost' if measured else 'planned cost'})" if total else "-"))
        if all(n is None for _, n, _, _ in options) and floor >= target:
            lines.append(f"    no design detects {target:.3f} here: the {size} examples of {task}'s evaluation set themselves "
                         f"vary by ±{1.96 * math.sqrt(shared_variance(worst, size)):.3f} (examples' own effects, spread "
                         f"{worst.get('effect_sd', 0):.2f}), whatever the seeds; about {floor:.3f} is the least any number "
                         f"of seeds can detect on them")
        priced = [o for o in options if o[2] is not None]
        if not priced and any(n for _, n, _, _ in options):
            best = min((o for o in options if o[1]), key=lambda o: o[1], default=None)
            lines.append("    no cost known before the models load (hub ids): give --prior DIR, an earlier sweep of these "
                         "cells, for measured seconds")
            if best:
                limit = "" if best[0] == size else f" --set fixed.eval_limit={best[0]}"
                lines.append(f"    to run the design with the fewest seeds: --set 'data_seeds=[{', '.join(map(str, range(best[1])))}]'{limit}")
        if priced:
            best, fewest = min(priced, key=lambda o: o[2]), min(priced, key=lambda o: o[0])
            lever = (f"; evaluation size is the cheaper lever here: {fewest[1]} seeds x {fewest[0]} examples would take "
                     f"{_clock(fewest[2])}" if best[0] > fewest[0] else
                     "; more seeds on small evaluation subsets are the cheaper lever here" if len(priced) > 1 else "")
            lines.append(f"    cheapest: {best[1]} seeds x {best[0]} examples, {_clock(best[2])}{lever}")
            limit = "" if best[0] == size else f" --set fixed.eval_limit={best[0]}"
            lines.append(f"    to run it: --set 'data_seeds=[{', '.join(map(str, range(best[1])))}]'{limit}")
    return lines
