"""Preflight: everything a sweep needs, checked before Ray starts and before anything is written.

    python -m orchestrator sweep --space quickstart      # runs these checks first (--dry-run: only the configs)

Every model and tokenizer resolves; every task's data (train, eval and OOD splits) loads, once;
the few-shot draw works for every (task, shots, data seed); every label word is one token; every
cell's configuration is valid; the resources fit the cluster. Each problem is one line naming the
space file and key; `PreflightError` carries them all and the command exits 2. Passing preflight
also yields the content identity of every model and data split, which the trial keys hash
(`plan.trial_key`), so moving a model, data or results folder changes no key.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os

from orchestrator.planning import hub, plan
from orchestrator.planning.identity import model_identity  # noqa: F401 - preflight's public name for it
from orchestrator.space import Space, SpaceError
from trainers.methods import spec
from trainers.methods.entry import validate
from trainers.runtime.models import check_causal_lm, load_config, load_tokenizer
from trainers.data.prompts import get_prompt, label_token_ids
from trainers.data.sampling import draw
from trainers.data.tasks import load_task, resolve_data_dir



class PreflightError(SpaceError):
    """One or more problems, one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(dict.fromkeys(problems))
        super().__init__("\n".join(self.problems))


def _models(space: Space) -> set[str]:
    names = set(space.models)
    for value in [space.fixed.get("cd.teacher_model"), *(p.get("cd.teacher_model") for p in space.search.values())]:
        if isinstance(value, str) and value:
            names.add(value)
    return names


def _check_models(space: Space, problems: list[str], skip: set[str]) -> tuple[dict, dict]:
    identities, tokenizers = {}, {}
    for name in sorted(_models(space) - skip):
        try:
            config = load_config(name)
            check_causal_lm(name, config)
            identities[name] = model_identity(name, config)
            tokenizers[name] = load_tokenizer(name)
        except Exception as e:  # noqa: BLE001 - a model that does not load is a problem to report, whatever its type
            problems.append(f"{space.path}: models: {_one_line(e)}")
    return identities, tokenizers


def _check_data(space: Space, problems: list[str]) -> dict:
    loaded = {}
    for task, opts in space.tasks.items():
        ood = tuple(opts["ood"]) if "ood" in opts else None
        heuristics = tuple(opts.get("hans_heuristics") or ("lexical_overlap",))
        try:
            loaded[task] = load_task(task, space.data_dir, ood, heuristics)
        except Exception as e:  # noqa: BLE001
            where = "data_dir (--data-dir)" if space.data_dir else f"tasks.{task}"
            problems.append(f"{space.path}: {where}: {_one_line(e)}")
    return loaded


def cell_configs(space: Space, problems: list[str], skip=lambda cell: False) -> list[tuple]:
    """(cell, RunConfig) of every cell whose configuration is valid; the others become problems,
    one line per distinct message (a missing data folder is one problem, not one per cell)."""
    out, failed = [], {}
    for cell in plan.cells(space):
        if skip(cell):
            continue
        try:
            cfg = plan.run_config(space, cell, space.tuning_data_seed, {}, True)
            validate(cfg)
        except Exception as e:  # noqa: BLE001
            failed.setdefault(_one_line(e), []).append(cell.id)
            continue
        out.append((cell, cfg))
    problems.extend(f"{space.path}: {_cells(ids)}: {message}" for message, ids in failed.items())
    return out


def check_configs(space: Space) -> None:
    """The dry run's check: every cell's configuration, without loading any data or model."""
    problems: list[str] = []
    cell_configs(space, problems)
    if problems:
        raise PreflightError(problems)


def _check_cells(space: Space, tasks: dict, tokenizers: dict, problems: list[str]) -> None:
    seeds = sorted(set(space.data_seeds) | {space.tuning_data_seed})
    drawn, patterns = set(), set()
    # a cell whose data or model does not load is already reported
    for cell, cfg in cell_configs(space, problems, skip=lambda c: c.task not in tasks or c.model not in tokenizers):
        task = tasks[cell.task]
        key = (cell.task, cell.shots, cfg.n_dev, cfg.n_unlabeled)
        for seed in seeds if key not in drawn else ():
            try:
                draw(task.train, len(task.classes), cell.shots, seed, cfg.n_dev, cfg.n_unlabeled)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{space.path}: shots: {cell.shots} shots of {cell.task}, data seed {seed}: {_one_line(e)}")
                break
        drawn.add(key)
        pattern = (cell.model, task.family, cfg.pattern or task.default_pattern)
        if spec.get(cell.method).label_words and pattern not in patterns:  # ft scores through its own head
            patterns.add(pattern)  # once per model and pattern, whichever cells share them
            try:
                label_token_ids(tokenizers[cell.model], get_prompt(task.family, pattern[2]))
            except Exception as e:  # noqa: BLE001
                problems.append(f"{space.path}: fixed.pattern: {cell.task} with {cell.model_tag}: {_one_line(e)}")


def _lengths(space: Space, tasks: dict, tokenizers: dict) -> dict:
    """Per task: its evaluation sets' sizes and, per model, the mean tokens of one demonstration (on
    up to 64 pool examples): what the time plan (`orchestrator.planning.time_plan`) counts work in."""
    out = {}
    for name, task in tasks.items():
        prompt = get_prompt(task.family, space.fixed.get("pattern") or task.default_pattern)
        sample = task.train[:64]
        tokens = {}
        for model, tok in tokenizers.items():
            with contextlib.suppress(Exception):  # an estimate only: a tokenizer that balks leaves the default
                tokens[model] = round(sum(len(tok(prompt.demonstration(ex))["input_ids"]) for ex in sample) / len(sample), 1)
        out[name] = {"sets": {"in_domain": len(task.eval), **{k: len(v) for k, v in task.ood.items()}}, "tokens": tokens}
    return out


def check_resources(space: Space, totals: dict, where: str) -> None:
    """Every cell's trial fits the cluster (`totals`: {"CPU": n, "GPU": m}); GPUs asked of a CPU-only
    cluster are refused unless the sweep was started with --allow-cpu. One line per distinct request."""
    has_gpus = totals.get("GPU", 0) > 0
    have = f"{where} has {totals.get('CPU', 0):g} CPU / {totals.get('GPU', 0):g} GPU"
    problems: dict[str, list[str]] = {}
    for cell in plan.cells(space):
        asked = plan.layout(space, cell)
        if asked.gpus_per_worker and not has_gpus and not space.allow_cpu:
            problems.setdefault(f"resources.gpus_per_worker: {{cells}} ask(s) for {asked.gpus_per_worker} GPU per worker "
                                f"but {where} has none; add --allow-cpu to run them on CPUs", []).append(cell.id)
            continue
        r = plan.resources(space, cell, has_gpus)
        if r.workers * r.cpus_per_worker > totals.get("CPU", 0) or r.workers * r.gpus_per_worker > totals.get("GPU", 0):
            problems.setdefault(f"resources: {{cells}} ask(s) for {r.workers} worker(s) x {r.cpus_per_worker} CPU / "
                                f"{r.gpus_per_worker} GPU but {have}; lower them with --set resources.cpus_per_worker=... "
                                f"(or resources.workers=...)", []).append(cell.id)
    if problems:
        raise PreflightError([f"{space.path}: " + text.format(cells=_cells(ids)) for text, ids in problems.items()])


def check_cluster(space: Space, pool: list[dict], types: list[dict], where: str) -> list[dict]:
    """Every cell's worker group fits on nodes it can use (each worker on one node): on the nodes there
    now, or else on node types the autoscaler may start. Returns the resources to wait for (the
    largest group that needs new nodes); PreflightError for a group no node can hold."""
    from orchestrator.engine import cluster
    has_gpus = any(n["GPU"] for n in pool + types)
    problems, wait = {}, []
    for cell in plan.cells(space):
        asked = plan.layout(space, cell)  # GPUs asked explicitly of a cluster with none: refused as on one machine
        if asked.gpus_per_worker and not has_gpus and not space.allow_cpu and cell.id not in space.placement:
            problems.setdefault(f"resources.gpus_per_worker: {{cells}} ask(s) for {asked.gpus_per_worker:g} GPU per "
                                f"worker but {where} has none{' (nor a node type its autoscaler may start)' if types else ''}; "
                                f"add --allow-cpu to run them on CPUs", []).append(cell.id)
            continue
        r = plan.resources(space, cell, has_gpus)
        if cluster.fits(r, pool):
            continue
        if cluster.fits(r, pool + types):
            if r.workers * (r.gpus_per_worker or r.cpus_per_worker) > sum(b.get("GPU", b.get("CPU", 0)) for b in wait):
                wait = [r.per_worker() for _ in range(r.workers)]
            continue
        big = max(pool + types, key=lambda n: (n["GPU"], n["CPU"]), default={"CPU": 0, "GPU": 0})
        problems.setdefault(f"resources: {{cells}}: {r.workers} worker(s) x {r.cpus_per_worker} CPU / "
                            f"{r.gpus_per_worker} GPU fit no set of nodes of {where} (largest node {big['CPU']:g} CPU / "
                            f"{big['GPU']:g} GPU{', node types of the autoscaler included' if types else ''}); lower "
                            f"resources.cpus_per_worker, resources.gpus_per_worker or resources.workers", []).append(cell.id)
    if problems:
        raise PreflightError([f"{space.path}: " + text.format(cells=_cells(ids)) for text, ids in problems.items()])
    return wait


def local_totals() -> dict:
    """What a local Ray instance will have, known before it starts."""
    import torch
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"CPU": cpus, "GPU": torch.cuda.device_count() if torch.cuda.is_available() else 0}


def _cells(ids: list[str]) -> str:
    return ids[0] if len(ids) == 1 else f"{len(ids)} cells ({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''})"


def run(space: Space, argv: list[str] | None = None) -> Space:
    """The space with its content identities filled in, or PreflightError listing every problem
    (a hub that is needed and out of reach is one problem, whose line gives the offline command)."""
    offline = hub.check(space, _models(space), resolve_data_dir(space.data_dir), argv)
    problems: list[str] = [offline.line] if offline else []
    identities, tokenizers = _check_models(space, problems, skip=set(offline.models) if offline else set())
    tasks = _check_data(space, problems) if not (offline and offline.data) else {}
    _check_cells(space, tasks, tokenizers, problems)
    if problems:
        raise PreflightError(problems)
    data = {name: dict(sorted(t.fingerprints.items())) for name, t in tasks.items()}
    return dataclasses.replace(space, identity={"models": identities, "data": data},
                               lengths=_lengths(space, tasks, tokenizers))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"
