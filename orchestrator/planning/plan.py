"""From a space to cells and trials: what the sweep will run, before Ray starts.

    python -m orchestrator sweep --space cd_vs_icl --dry-run

A cell is task x method x PEFT variant x model x shots. Within a cell the search phase tries
`budget` configurations on the tuning data seed (judged on the dev split, without the final
evaluation); the replicate phase runs the cell's best configuration on every data seed. Cells
with nothing to search (ICL) go straight to replication. Seeds are replicates, never searched.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from orchestrator.cells import Cell, model_tag  # noqa: F401 - model_tag: plan's public name
from orchestrator.space import Space
from trainers.methods import spec
from trainers import config
from trainers.config import RunConfig, from_dict
from trainers.contract import TrialResources
from trainers.methods.spec import Parallel


def cells(space: Space) -> list[Cell]:
    return [Cell(t, m, p, model, k) for t in space.tasks for m, variants in space.methods.items()
            for p in variants for model in space.models for k in space.shots]


def search_spec(space: Space, cell: Cell) -> dict:
    """The cell's `search` entries: the method's, overridden by the method+peft ones."""
    return {**space.search.get(cell.method, {}), **space.search.get(f"{cell.method}+{cell.peft}", {})}


def searched(space: Space, cell: Cell) -> dict:
    """The cell's search distributions (plain values in `search` are fixed, not searched)."""
    return {k: v for k, v in search_spec(space, cell).items() if isinstance(v, dict)}


def base_overrides(space: Space, cell: Cell) -> dict:
    """Every RunConfig setting of a cell's trials except data seed and searched values."""
    opts = space.tasks[cell.task]
    # no training seed here: each trial derives its own from its data seed (fixed.seed holds one fixed)
    out = {"method": cell.method, "task": cell.task, "model": cell.model, "shots": cell.shots,
           "peft.kind": cell.peft, **space.fixed,
           **{k: v for k, v in search_spec(space, cell).items() if not isinstance(v, dict)}}
    if "ood" in opts:
        out["ood"] = opts["ood"] or []
    if "hans_heuristics" in opts:
        out["hans_heuristics"] = opts["hans_heuristics"]
    if space.data_dir:
        out["data_dir"] = space.data_dir
    if space.tasks_file:
        out["tasks_file"] = space.tasks_file
    if space.methods_file:
        out["methods_file"] = space.methods_file
    if spec.get(cell.method).peft == ("none",):  # nothing to choose: the config's default stands
        out.pop("peft.kind")
    # resources: auto chose the cell's placement, or a size rule may shard the larger models
    chosen = layout(space, cell)
    if chosen.parallel is not None:
        out.setdefault("parallel", chosen.parallel.value)
    if chosen.grad_checkpointing:
        out["train.grad_checkpointing"] = True
    return out


def run_config(space: Space, cell: Cell, data_seed: int, params: dict, final_eval: bool) -> RunConfig:
    """The resolved RunConfig of one trial: the method's defaults, the space's settings for the cell,
    the searched values."""
    overrides = {**spec.get(cell.method).defaults, **base_overrides(space, cell), **params,
                 "data_seed": data_seed, "final_eval": final_eval}
    return from_dict({}).replace(**overrides)


KEYED_SECTIONS = ("train", "peft", "cd", "cartridge")  # in every trial key since before sweeps existed
LATER_DEFAULTS = {("parallel",): "ddp", ("offload",): False, ("ood_limit",): None, ("cd", "teacher_eval"): True,
                  ("tasks_file",): None, ("methods_file",): None}


def path_fields() -> list[tuple[str, ...]]:
    """The config fields holding paths, which a trial key replaces by what they point to: the data and
    code files, and every model field (the student's, and those the methods' sections declare)."""
    return [("model",), ("data_dir",), ("tasks_file",), ("methods_file",), *(tuple(k.split(".")) for k in config.model_fields())]


def trial_identity(space: Space, cfg: RunConfig) -> dict:
    """What stands for the paths in a trial's config: the content identity of its model(s) and of
    the data splits its task reads (from preflight)."""
    ident = space.identity or {}
    models = ident.get("models", {})
    from trainers.data import user_tasks
    from trainers.data.prompts import _patterns
    from trainers.data.tasks import task_definitions
    defs = task_definitions()
    out = {**{field: models.get(path, path) if path else None for field, path in cfg.model_paths().items()},
           "data": ident.get("data", {}).get(cfg.task),
           # what a run scores changes with it (version 3: each data seed its own evaluation subset)
           "tasks_version": defs["version"]}
    task = defs["tasks"][cfg.task]
    if task.get("user"):  # a user's task: its definition in place of the tasks file's path
        out["user_task"] = user_tasks.fingerprint(task, _patterns(), defs["ood_sets"])
    if cfg.methods_file:  # a user's method: its module's content in place of its path
        out["methods_file"] = hashlib.sha256(Path(cfg.methods_file).expanduser().read_bytes()).hexdigest()[:16]
    return out


def in_process(r: TrialResources) -> bool:
    """A one-worker trial the space runs in its Tune trial's own process (`resources.in_process`):
    the rule the trial follows and the time plan prices."""
    return bool(r.in_process) and r.workers == 1


def trial_key(run: RunConfig | dict, identity: dict) -> str:
    """Identity of a trial: a hash of its resolved config (a RunConfig, or its JSON form as a record
    keeps it) with every path replaced by the content it points to, so a moved model, data or results
    folder keeps its keys. A finished key is never run again."""
    body = json.loads(json.dumps(run.to_dict() if isinstance(run, RunConfig) else run))
    for path, default in LATER_DEFAULTS.items():  # added after sweeps existed: at their default, keys stay as they were
        section = body
        for part in path[:-1]:
            section = section.get(part) or {}
        if path[-1] in section and section[path[-1]] == default:
            section.pop(path[-1])
    for name in set(body) - set(KEYED_SECTIONS):  # a user's method's section: only where it is set
        if isinstance(body[name], dict) and body[name] == json.loads(json.dumps(dataclasses.asdict(config.sections()[name]()))):
            body.pop(name)
    for path in path_fields():
        d = body
        for part in path[:-1]:
            d = d.get(part) or {}
        d.pop(path[-1], None)
    return hashlib.sha1(json.dumps({"run": body, "identity": identity}, sort_keys=True).encode()).hexdigest()[:16]


def model_params(model: str) -> float | None:
    """Parameter count from the name (opt-1.3b, smollm2-135m) or a local config.json; None if unknown."""
    m = re.search(r"(\d+(?:\.\d+)?)([mb])(?![a-z])", model_tag(model).lower())
    if m:
        return float(m.group(1)) * (1e6 if m.group(2) == "m" else 1e9)
    cfg_file = Path(model).expanduser() / "config.json"
    if cfg_file.is_file():
        c = json.loads(cfg_file.read_text())
        h, layers, vocab = c.get("hidden_size"), c.get("num_hidden_layers"), c.get("vocab_size")
        if h and layers and vocab:
            return 12 * layers * h * h + vocab * h
    return None


@dataclass(frozen=True)
class Layout:
    """How a cell's trial is laid out, resolved once: its resources and, apart from them, how its
    worker group holds the model. `gpus_per_worker` None: one if the cluster has GPUs; `parallel`
    None: the run config's own (ddp unless fixed)."""
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float | None
    parallel: Parallel | None = None
    grad_checkpointing: bool = False

    def resources(self, has_gpus: bool, in_process: bool = False) -> TrialResources:
        gpus = self.gpus_per_worker
        gpus = (1 if gpus is None else gpus) if has_gpus else 0
        return TrialResources(workers=self.workers, cpus_per_worker=self.cpus_per_worker, gpus_per_worker=gpus,
                              in_process=in_process)


def layout(space: Space, cell: Cell) -> Layout:
    """The cell's layout: `resources: auto`'s placement (the memory plan's choice) when the space has
    one, else what the space asks (the first size rule that fits the model wins)."""
    if cell.id in space.placement:
        p = space.placement[cell.id]
        return Layout(p["workers"], p["cpus_per_worker"], p["gpus_per_worker"], Parallel.of(p["parallel"]),
                      bool(p.get("grad_checkpointing")))
    r = {k: space.resources[k] for k in ("workers", "cpus_per_worker", "gpus_per_worker")}
    size = model_params(cell.model)
    for rule in space.resources["by_model_size"] or []:
        limit = rule.get("max_params")
        if limit is None or (size is not None and size <= float(limit)):
            r.update({k: v for k, v in rule.items() if k != "max_params"})
            break
    parallel = r.pop("parallel", None)
    return Layout(**r, parallel=None if parallel is None else Parallel.of(parallel))


def resources(space: Space, cell: Cell, has_gpus: bool) -> TrialResources:
    """What a trial of the cell reserves on this cluster. GPUs explicitly asked of a CPU-only
    cluster reach here only with --allow-cpu (preflight refuses them otherwise)."""
    # a placement was made for GPUs the memory plan saw: its GPUs stand
    return layout(space, cell).resources(has_gpus or cell.id in space.placement, bool(space.resources.get("in_process")))


def resolve_placement(space: Space, gpus: int, gpu_memory_gb: float | None = None) -> Space:
    """`resources: auto`: every cell's placement from the memory plan, or PlacementError (before Ray,
    or right after joining a cluster, from its nodes: `gpus` reachable, `gpu_memory_gb` each)."""
    import dataclasses

    from orchestrator.planning import placement
    if not space.resources.get("auto"):
        return space
    if gpu_memory_gb and not space.resources.get("gpu_memory_gb"):
        space = dataclasses.replace(space, resources={**space.resources, "gpu_memory_gb": gpu_memory_gb})
    chosen = {}
    for cell in cells(space):
        cfg = run_config(space, cell, space.tuning_data_seed, {}, True)
        chosen[cell.id] = placement.choose(space, cell, cfg, gpus)
    return dataclasses.replace(space, placement=chosen)


def describe(space: Space, has_gpus: bool) -> str:
    """The dry-run table: cells, trials per phase, resources per trial."""
    lines = [f"sweep {space.name}: {space.description}", f"  space file: {space.path}",
             f"  data seeds {space.data_seeds} (search on {space.tuning_data_seed}); pruner {space.pruner['type']}; "
             f"GPUs {'yes' if has_gpus else 'no'}", ""]
    total_search = total_rep = 0
    lines.append(f"  {'cell':<52} {'search':>6} {'replicates':>10}  resources per trial")
    for cell in cells(space):
        n_search = space.budget if searched(space, cell) else 0
        r = layout(space, cell)  # what the trial asks; a machine without GPUs is judged below the table
        gpus = "1 GPU if the cluster has one" if r.gpus_per_worker is None else f"{r.gpus_per_worker:g} GPU"
        total_search, total_rep = total_search + n_search, total_rep + len(space.data_seeds)
        params = ", ".join(searched(space, cell)) or "-"
        lines.append(f"  {cell.id:<52} {n_search:>6} {len(space.data_seeds):>10}  {r.workers} worker(s) x "
                     f"{r.cpus_per_worker:g} CPU, {gpus}   searching: {params}")
        if space.placement:
            p = space.placement[cell.id]
            lines.append(f"  {'':<52} {'':>6} {'':>10}  {p['parallel']}{' + checkpointing' if p['grad_checkpointing'] else ''}"
                         f": estimated {p['estimate_gib']:.1f} GiB per worker of {p['budget_gib']:.1f} GiB usable")
    lines += ["", f"  {len(cells(space))} cells, {total_search} search trials + {total_rep} replicate trials = "
              f"{total_search + total_rep} trials"]
    return "\n".join(lines)
