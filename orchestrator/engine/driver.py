"""The sweep driver: search each cell with Optuna under Ray Tune, then replicate the best
configuration of every cell over the data seeds; records, tables and a summary as it goes.

    python -m orchestrator sweep --space quickstart
    python -m orchestrator sweep --space cd_vs_icl --address auto      # on a cluster (`ray up cluster.yaml`)

Order of work: the folder's name and state are checked and its lock taken (`orchestrator.analysis.folders`),
preflight (`orchestrator.planning.preflight`: data, models, draws, resources) runs before Ray starts and
before anything is written; then Ray (`orchestrator.engine.ray_session`), then the sweep folder.
State lives under `results/<sweep>/`: the resolved space, one JSON record per finished trial
(`trials/`), Optuna's journal (`optuna.journal`), Ray's experiment folders (`ray/`), and the
tables. `--resume` rebuilds everything from that state: finished trials (their records) are
never run again, the studies are replayed and only the budget that is left is spent.
Exit status: `orchestrator.exit_codes` (0 complete, 1 incomplete, 2 bad input, 3 --max-trials
reached, 130 interrupted).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
import logging
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: our lines only
# A failed trial's final report has no dev accuracy; the searcher and the pruner handle that.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Tune's default CSV/JSON/TensorBoard loggers write a second copy of every result beside our records and
# keep state per trial to the sweep's end (ray-project/ray#64231): off, the driver grew 130 MiB per 1,000 trials, not 172
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# a trial's failure is one line from RecordWriter (retried, or its record with the error), not Tune's traceback
os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")

import optuna  # noqa: E402
import ray  # noqa: E402
import ray.tune  # noqa: E402

from orchestrator.engine import cluster, gate, storage, tracking  # noqa: E402
from orchestrator import commands, exit_codes  # noqa: E402
from orchestrator.planning import plan, preflight, time_plan  # noqa: E402
from orchestrator.analysis import results  # noqa: E402
from orchestrator.analysis.folders import SweepLock, check_folder, create_folder, set_aside_failed, staged, sweep_folder, took_over_line  # noqa: E402,E501
from trainers.contract import Record, TrialResources, TrialSpec, dump  # noqa: E402
from orchestrator.engine.ray_session import start_ray  # noqa: E402
from orchestrator.engine.callbacks import Progress, RecordWriter, StopAfter, kind  # noqa: E402
from orchestrator.engine.dashboard import SweepMetrics  # noqa: E402
from orchestrator.engine.pruning import OptunaPrunerScheduler  # noqa: E402
from orchestrator.engine.search import CellSearcher, ConfigList, journal, open_study, retry  # noqa: E402
from orchestrator.space import Space  # noqa: E402
from orchestrator.engine.trial import pack_run, trainable  # noqa: E402

# Tune's own per-trial chatter (TensorBoard hyperparameter notes, metrics of trials that an
# interrupt stopped before their first report) says nothing the records do not; its "Resume
# experiment with: Tuner.restore(...)" on Ctrl-C contradicts our --resume.
logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)
WAIT_FOR_NODES_S = 900.0  # an autoscaling cluster's wait for the nodes a trial needs


@dataclass
class Run:
    """One session of a sweep: where its files and Ray's state go, and what it reports to."""
    space: Space
    sweep_dir: Path
    ray_storage: str                 # Tune's and Train's storage_path: a local folder or a URI
    remote: storage.Remote | None    # the URI the sweep's files are mirrored to, if --results is one
    has_gpus: bool = False
    progress: Progress | None = None
    max_trials: int | None = None
    track: list | None = None
    metrics: SweepMetrics | None = None
    unwritten: list = field(default_factory=list)  # records that could not be written (the folder, the disk)

    def written(self, path: Path) -> None:
        if self.remote:
            self.remote.push(path)


def _trial_config(space: Space, has_gpus: bool, cell_id: str, params: dict, phase: str = "search",
                  data_seed: int | None = None) -> TrialSpec:
    cell = next(c for c in plan.cells(space) if c.id == cell_id)
    seed = space.tuning_data_seed if data_seed is None else data_seed
    run = plan.run_config(space, cell, seed, params, final_eval=phase == "replicate")
    identity = plan.trial_identity(space, run)
    fixtures = None
    if space.fixtures == "synthetic":  # rebuilt by a worker whose node does not see the driver's folder
        fixtures = {"models": [[m, Path(m).name] for m in space.models], "data": space.data_dir}
    return TrialSpec(cell=cell_id, phase=phase, run=pack_run(run), searched=params, trial_key=plan.trial_key(run, identity),
                     identity=identity, resources=plan.resources(space, cell, has_gpus), fixtures=fixtures, sweep=space.name)


def _finished(records: list[Record]) -> dict:
    """Final reports of every recorded trial, keyed by trial key, for a resumed sweep to skip them."""
    out = {}
    for rec in records:
        report = {"epoch": max(1, len(rec.history)), "record": json.dumps(dump(rec))}  # as the trial sent it
        if rec.metrics.dev and rec.status == "completed":
            report["dev_accuracy"] = rec.metrics.dev.accuracy
        out[rec.trial_key] = report
    return out


def concurrency(space: Space, has_gpus: bool) -> int:
    """Trials that fit on the cluster at once. The Tune-level trial reserves (almost) nothing, so
    without this cap Tune would start every trial's driver at once, each waiting for its workers,
    and the searcher would propose every configuration before seeing any result."""
    if space.max_concurrent_trials:
        return space.max_concurrent_trials
    total = ray.cluster_resources()
    fits = []
    for cell in plan.cells(space):
        r = plan.resources(space, cell, has_gpus)
        fits.append(total.get("CPU", 0) // max(r.workers * r.cpus_per_worker, 1e-9))
        if r.gpus_per_worker:
            fits.append(total.get("GPU", 0) // (r.workers * r.gpus_per_worker))
    return max(1, int(min(fits)))


def _limits(space: Space) -> dict:
    return {"max_failures": space.max_failures, "max_start_failures": space.max_start_failures,
            "worker_start_timeout_s": space.worker_start_timeout_s, "gate": gate.name(space.name)}


def _fit(run: Run, name: str, trainable_fn, tune: dict, pruned: set[str] = frozenset()) -> bool:
    """Run one Tune experiment; True when every trial it was given finished (not interrupted)."""
    space = run.space
    writer = RecordWriter(space.name, run.sweep_dir, run.progress, pruned, gate=gate.name(space.name),
                          on_written=run.written, metrics=run.metrics, unwritten=run.unwritten,
                          stall_timeout_s=space.stall_timeout_s)
    tuner = ray.tune.Tuner(
        trainable_fn,
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=concurrency(space, run.has_gpus), **tune),
        run_config=ray.tune.RunConfig(name=f"{space.name}-{name}", storage_path=run.ray_storage, verbose=0,
                                      callbacks=[writer, *tracking.callbacks(run.track, run.sweep_dir, space.name)],
                                      stop=StopAfter(run.progress, run.max_trials),
                                      # a trial's own process lost (an in-process trial's crash, a lost node)
                                      failure_config=ray.tune.FailureConfig(max_failures=space.max_failures)))
    tuner.fit()
    return writer.written >= tune["num_samples"]


def search_budgets(space: Space, records: list[Record]) -> dict[str, int]:
    """Search trials left per cell: the budget less the cell's recorded search trials."""
    done = {c.id: sum(r.cell == c.id and r.phase == "search" for r in records)
            for c in plan.cells(space) if plan.searched(space, c)}
    return {cell: space.budget - n for cell, n in done.items() if space.budget > n}


def search_phase(run: Run) -> bool:
    space = run.space
    records = results.load_records(run.sweep_dir)
    budgets = search_budgets(space, records)
    if not budgets:
        return True
    spaces = {cell: plan.searched(space, next(c for c in plan.cells(space) if c.id == cell)) for cell in budgets}
    finished = _finished(records)
    fill = [cfg for cell_id, params in best_params(space, records).items() if params == {}
            for cfg in _replicates(space, run.has_gpus, cell_id, params, finished)]
    searcher = CellSearcher(spaces, budgets, functools.partial(_trial_config, space, run.has_gpus),
                            journal(run.sweep_dir / "optuna.journal"), seed=space.seed, pruner_spec=space.pruner,
                            startup=max(2, space.budget // 2), fill=fill)
    fn = trainable(finished, run.ray_storage, _limits(space))
    return _fit(run, f"search-{int(time.time())}", fn, pruned=searcher.pruned,
                tune={"search_alg": searcher, "scheduler": OptunaPrunerScheduler(searcher),
                      "num_samples": sum(budgets.values()) + len(fill)})


def _replicates(space: Space, has_gpus: bool, cell_id: str, params: dict, finished: dict) -> list[TrialSpec]:
    """The cell's replicate trials (one per data seed) that have no record yet."""
    configs = [_trial_config(space, has_gpus, cell_id, params, "replicate", seed) for seed in space.data_seeds]
    return [cfg for cfg in configs if cfg.trial_key not in finished]


def best_params(space: Space, records: list[Record]) -> dict[str, dict | None]:
    """Per cell: the searched values of its best search trial; {} with nothing to search; None if none completed."""
    best = results.best_search_trials(records)
    return {cell.id: ({} if not plan.searched(space, cell) else best[cell.id].searched if cell.id in best else None)
            for cell in plan.cells(space)}


def replicate_phase(run: Run) -> tuple[bool, list[str]]:
    space = run.space
    records = results.load_records(run.sweep_dir)
    finished = _finished(records)
    configs, skipped = [], []
    for cell_id, params in best_params(space, records).items():
        if params is None:
            skipped.append(cell_id)
            continue
        configs += _replicates(space, run.has_gpus, cell_id, params, finished)
    run.progress.expect(Counter(kind("replicate", c.cell) for c in configs))  # now known: what will actually run
    if not configs:
        return True, skipped
    fn = trainable(finished, run.ray_storage, _limits(space))
    complete = _fit(run, f"replicate-{int(time.time())}", fn,
                    tune={"search_alg": ConfigList(configs), "num_samples": len(configs)})
    return complete, skipped


def _planned(space: Space, records: list[Record]) -> Counter:
    """Trials this session will run per kind, as far as it is known before the search ends."""
    reps = {(r.cell, r.data_seed) for r in records if r.phase == "replicate" and r.status == "completed"}
    todo = Counter(kind("replicate", c.id) for c in plan.cells(space) for s in space.data_seeds if (c.id, s) not in reps)
    return todo + Counter({kind("search", cell): n for cell, n in search_budgets(space, records).items()})


def run_sweep(space: Space, name: str | None = None, resume: bool = False, address: str | None = None,
              results_root: Path | str = Path("results"), max_trials: int | None = None, track: list[str] | None = None,
              warnings: list[str] = ()) -> int:
    """`warnings`: lines printed once the input has passed every check (the power plan's, before any GPU hour).
    `results_root`: a folder, or a storage URI (the sweep's files staged locally and mirrored there)."""
    tracker = tracking.parse(track)  # an unknown tracker or a missing library stops here, before Ray
    name = name or space.name
    remote = storage.Remote(str(results_root), sweep_folder(Path("."), name).name) if storage.is_uri(results_root) else None
    sweep_dir = remote.local if remote else sweep_folder(Path(results_root), name)
    if not remote:
        check_folder(space, sweep_dir, resume)  # reads only: a refusal takes nothing
    with SweepLock(sweep_dir) as lock:  # before anything is written; one driver per folder
        if took_over_line(lock):
            print(took_over_line(lock), file=sys.stderr, flush=True)
        if remote and remote.pull():
            print(f"read the sweep's files from {remote.uri}", flush=True)
        check_folder(space, sweep_dir, resume)  # again, under the lock: a driver that held it may have finished
        run = Run(space, sweep_dir, remote.ray_storage() if remote else str(sweep_dir / "ray"), remote,
                  max_trials=max_trials, track=tracker)
        return _locked_sweep(run, resume, address, warnings)


def _connect(run: Run, checked: Space, address: str | None) -> Space:
    """Ray started or joined; on a cluster, the placement and the resource check from the cluster's own nodes."""
    if address is None:
        return checked
    pool, types = cluster.nodes(), cluster.node_types()
    if checked.resources.get("auto"):
        memory = checked.resources.get("gpu_memory_gb") or cluster.gpu_memory_gb(pool + types)
        gpus = int(sum(n["GPU"] * n["count"] for n in pool + types))
        checked = plan.resolve_placement(checked, gpus, memory)
    wait = preflight.check_cluster(checked, pool, types, f"the cluster at {address}")
    if wait and not cluster.wait_for(wait, lambda: cluster.fits(_group(wait), cluster.nodes()), WAIT_FOR_NODES_S):
        raise preflight.PreflightError([f"{checked.path}: resources: the cluster at {address} did not start nodes for "
                                        f"{len(wait)} worker(s) of {wait[0]} within {WAIT_FOR_NODES_S:.0f} s"])
    return checked


def _group(bundles: list[dict]) -> TrialResources:
    return TrialResources(workers=len(bundles), cpus_per_worker=bundles[0].get("CPU", 0),
                          gpus_per_worker=bundles[0].get("GPU", 0))


def _locked_sweep(run: Run, resume: bool, address: str | None, warnings: list[str]) -> int:
    space, sweep_dir = run.space, run.sweep_dir
    with staged(space, sweep_dir, resume) as staged_space:
        checked = preflight.run(staged_space)
        if address is None:
            preflight.check_resources(checked, preflight.local_totals(), "this machine")
        for line in warnings:
            print(line, file=sys.stderr, flush=True)
        started_here = not ray.is_initialized()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = start_ray(address, checked)
        try:
            checked = _connect(run, checked, address)
            run.space = create_folder(space, checked, sweep_dir)
        except BaseException:
            if started_here:
                ray.shutdown()
            raise
    if resume:
        _retry_failed(sweep_dir)
    # a scheduler's or a shell's SIGTERM stops the sweep as Ctrl-C does: finished trials recorded, exit 130
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        code = _run_phases(run, url)
    finally:
        if run.remote:
            run.remote.push_all()
            print(f"results at {run.remote.uri} (staged in {sweep_dir})", flush=True)
        if started_here:
            ray.shutdown()
    return code


def _retry_failed(sweep_dir: Path) -> None:
    """--resume runs failed trials again: their records set aside, failed search values proposed again first."""
    failed = set_aside_failed(sweep_dir)
    if not failed:
        return
    storage_ = journal(sweep_dir / "optuna.journal")
    for rec in failed:
        if rec.phase == "search":
            retry(open_study(rec.cell, storage_, {"type": "none"}), rec.trial_key)
    print(f"retrying {len(failed)} failed trial(s) of the earlier run: "
          + ", ".join(sorted({f"{r.cell} ({r.phase})" for r in failed})), flush=True)


def _run_phases(run: Run, url: str) -> int:
    space = run.space
    print(f"sweep {space.name} -> {run.remote.uri if run.remote else run.sweep_dir}\n"
          f"Ray dashboard: {url or '(not running: install ray[default])'}", flush=True)
    run.has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    gate.start(space.name)  # serve phases run alone on their node or GPU (orchestrator/engine/gate.py)
    run.metrics = SweepMetrics(run.sweep_dir.name)  # the sweep as the user named it (--name)
    planned = {kind(phase, cell): s for (phase, cell), s in time_plan.planned(space, run.has_gpus).items()}
    slots = concurrency(space, run.has_gpus)
    # the sweep owns its folder: a record that does not parse is set aside here, so its trial runs again
    run.progress = Progress(_planned(space, results.load_records(run.sweep_dir, set_aside=True)), slots=slots,
                            planned_seconds=planned)
    eta = run.progress.eta()
    print(f"{run.progress.total} trials to run, {slots} at a time" + (f", {eta}" if eta else ""), flush=True)
    if not search_phase(run):
        return _stop(run)
    complete, skipped = replicate_phase(run)
    if not complete:
        return _stop(run)
    return finish(space, run.sweep_dir, skipped, run.unwritten)


def storage_failure(space: Space, sweep_dir: Path, what: str) -> int:
    """One line for results that could not be written, with the command that continues: exit 4."""
    print(f"error: {what}; the records already in {sweep_dir} are kept. Make the folder writable (or free space) and "
          f"continue with:\n  {commands.resume(sweep_dir, space.path)}", file=sys.stderr)
    return exit_codes.STORAGE


def finish(space: Space, sweep_dir: Path, skipped: list[str], unwritten: list[str] = ()) -> int:
    """Tables, summary, every distinct error in full once, and the exit status."""
    try:
        rows, summary, title, comps = results.write_tables(sweep_dir)
    except OSError as e:
        return storage_failure(space, sweep_dir, f"the tables could not be written ({e.strerror or e}: {e.filename})"
                               + (f" and {len(unwritten)} trial record(s) were not saved" if unwritten else ""))
    if unwritten:
        return storage_failure(space, sweep_dir, f"{len(unwritten)} trial record(s) could not be written "
                                                 f"({', '.join(unwritten[:3])}{', ...' if len(unwritten) > 3 else ''})")
    print(f"\n{title}\n" + results.to_text(summary))
    for line in results.comparison_lines(comps):
        print(line)
    for note in results.duplicate_notes(rows):
        print(note)
    records = results.load_records(sweep_dir)
    incomplete = []
    for cell in plan.cells(space):
        mine = [r for r in records if r.cell == cell.id]
        done = {r.data_seed for r in mine if r.phase == "replicate" and r.status == "completed"}
        if not set(space.data_seeds) <= done:
            why = "" if any(r.status == "failed" for r in mine) else (
                ": no completed search trial, so it was not replicated" if cell.id in skipped else ": see its records")
            incomplete.append(f"  {cell.id}: {len(done)}/{len(space.data_seeds)} replicates completed{why}")
    print(f"records: {results.records_dir(sweep_dir)}\ntables:  {sweep_dir}/summary.md, summary.json, trials.parquet, trials.csv")
    try:  # a figure that fails must not turn a finished sweep into a failed one: the records are all there
        from orchestrator.analysis.report import write_report
        print(f"report:  {write_report(sweep_dir)} (rebuild: {commands.report(sweep_dir)})")
    except Exception as e:  # noqa: BLE001
        print(f"warning: the report could not be written ({type(e).__name__}: {e}); "
              f"retry with: {commands.report(sweep_dir)}", file=sys.stderr)
    errors: dict[str, list[str]] = {}
    for r in records:
        if r.status == "failed" and r.error:
            errors.setdefault(r.error, []).append(f"{r.cell} ({r.phase}, seed {r.data_seed})")
    for error, where in errors.items():  # each in full, once: the trial lines above cut them to fit
        print(f"error in {len(where)} trial(s), first {where[0]}:\n  {error}", file=sys.stderr)
    if incomplete:
        print(f"{len(incomplete)} of {len(plan.cells(space))} cells have no completed replicate for every data seed:\n"
              + "\n".join(incomplete) + f"\nto run their failed trials again: {commands.resume(sweep_dir, space.path)}",
              file=sys.stderr)
        return exit_codes.INCOMPLETE
    return exit_codes.OK


def _stop(run: Run) -> int:
    sweep_dir, progress, max_trials = run.sweep_dir, run.progress, run.max_trials
    try:
        results.write_tables(sweep_dir)
    except OSError as e:
        return storage_failure(run.space, sweep_dir, f"the tables could not be written ({e.strerror or e}: {e.filename})")
    if progress.stalled:  # a lost node, a cluster too small: waiting longer would change nothing
        print(f"error: the sweep stopped waiting: {progress.stalled}; {progress.done}/{progress.total} trials done, "
              f"their records in {sweep_dir}. When the cluster has room again (stall_timeout_s: "
              f"{run.space.stall_timeout_s:g} s), continue with:\n  {commands.resume(sweep_dir, run.space.path)}",
              file=sys.stderr)
        return exit_codes.INCOMPLETE
    if max_trials is not None and progress.done >= max_trials:
        print(f"stopped after {progress.done} trials, as --max-trials {max_trials} asked; its trials are recorded in "
              f"{sweep_dir}. Continue with:\n  {commands.resume(sweep_dir, run.space.path)}", file=sys.stderr)
        return exit_codes.MAX_TRIALS
    print(f"sweep interrupted; its finished trials are recorded in {sweep_dir}. Continue with:\n"
          f"  {commands.resume(sweep_dir, run.space.path)}", file=sys.stderr)
    return exit_codes.INTERRUPTED
