"""The sweep driver: search each cell with Optuna under Ray Tune, then replicate the best
configuration of every cell over the data seeds; records, tables and a summary as it goes.

    python -m orchestrator sweep --space quickstart
    python -m orchestrator sweep --space cd_vs_icl --address auto      # on a cluster (`ray up cluster.yaml`)

Order of work: the folder check and preflight (`orchestrator.preflight`: data, models, draws,
resources) run before Ray starts and before anything is written; then Ray, then the sweep folder.
State lives under `results/<sweep>/`: the resolved space, one JSON record per finished trial
(`trials/`), Optuna's journal (`optuna.journal`), Ray's experiment folders (`ray/`), and the
tables. `--resume` rebuilds everything from that state: finished trials (their records) are
never run again, the studies are replayed and only the budget that is left is spent.
Exit status: 0 when every cell has a completed replicate for every data seed, 1 otherwise
(the cells and their first errors are listed), 2 for bad input, 130 when interrupted.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: our lines only
# A failed trial's final report has no dev accuracy; the searcher and the pruner handle that.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

import optuna  # noqa: E402
import ray  # noqa: E402
import ray.tune  # noqa: E402
import yaml  # noqa: E402

from orchestrator import plan, preflight, results, tracking  # noqa: E402
from orchestrator.callbacks import Progress, RecordWriter, StopAfter, kind  # noqa: E402
from orchestrator.pruning import OptunaPrunerScheduler  # noqa: E402
from orchestrator.search import CellSearcher, ConfigList, journal  # noqa: E402
from orchestrator.space import Space, SpaceError  # noqa: E402
from orchestrator.trial import trainable  # noqa: E402
from trainers import synthetic  # noqa: E402
from trainers.records import COMMIT_ENV, git_commit  # noqa: E402

# Tune's own per-trial chatter (TensorBoard hyperparameter notes, metrics of trials that an
# interrupt stopped before their first report) says nothing the records do not; its "Resume
# experiment with: Tuner.restore(...)" on Ctrl-C contradicts our --resume.
logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)

# keys that change no finished trial's identity: a resume may change them
RESUMABLE_KEYS = {"resources", "max_concurrent_trials", "max_failures", "max_start_failures", "worker_start_timeout_s"}


def _fixtures(space: Space, root: Path) -> Space:
    """The synthetic fixtures of the `smoke` space: a tiny random model and data, written under `root`."""
    if space.fixtures != "synthetic":
        return space
    models = [str(synthetic.make_model(root / m.split(":", 1)[1], m.split(":", 1)[1])) for m in space.models]
    return dataclasses.replace(space, models=models, data_dir=str(synthetic.write_data(root / "data")))


def check_folder(space: Space, sweep_dir: Path, resume: bool) -> None:
    """Reads only: is this folder free for a new sweep, or the same sweep to resume?"""
    existing = next(p for p in [sweep_dir, *sweep_dir.parents] if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise SpaceError(f"cannot write the sweep folder {sweep_dir}: {existing} is "
                         f"{'not a folder' if not existing.is_dir() else 'not writable'}; pass --results with a writable folder")
    saved = sweep_dir / "space.yaml"
    has_records = bool(list(results.records_dir(sweep_dir).glob("*.json")))
    if saved.exists() and not resume and has_records:
        raise SpaceError(f"{sweep_dir} already holds a sweep with finished trials; pass --resume to continue it, "
                         f"or --name NAME to start another beside it")
    if resume and not saved.exists():
        raise SpaceError(f"nothing to resume in {sweep_dir}; run without --resume to start")
    if resume:
        old = yaml.safe_load(saved.read_text())["raw"]
        before, now = _leaves(old), _leaves(space.raw)
        differ = sorted(k for k in set(before) | set(now)
                        if before.get(k) != now.get(k) and k.split(".")[0] not in RESUMABLE_KEYS)
        if differ:
            raise SpaceError(f"{saved} was made with other values of {', '.join(differ)}; resume with the same space and "
                             f"--set overrides (only {', '.join(sorted(RESUMABLE_KEYS))} may change), or use --name")


def _leaves(doc: dict, prefix: str = "") -> dict:
    """{"fixed.train.epochs": 4, ...}: a resume refusal names the very keys that differ."""
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@contextlib.contextmanager
def staged(space: Space, sweep_dir: Path, resume: bool):
    """The space as preflight sees it: a resumed smoke sweep's own fixtures, a new one's in a temporary folder."""
    if space.fixtures != "synthetic" or resume:
        yield _fixtures(space, sweep_dir / "fixtures")
        return
    with tempfile.TemporaryDirectory(prefix="fewshot-preflight-") as tmp:
        yield _fixtures(space, Path(tmp))


def create_folder(space: Space, checked: Space, sweep_dir: Path) -> Space:
    """After preflight: the sweep folder, its fixtures and space.yaml. Identities are by content, so
    fixtures written again at their final place keep the identities preflight computed."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    final = checked
    if space.fixtures == "synthetic":
        fx = _fixtures(space, sweep_dir / "fixtures")
        moved = dict(zip(checked.models, fx.models))
        models = {moved.get(k, k): v for k, v in checked.identity["models"].items()}
        final = dataclasses.replace(checked, models=fx.models, data_dir=fx.data_dir,
                                    identity={**checked.identity, "models": models})
    saved = sweep_dir / "space.yaml"
    if not saved.exists() or not list(results.records_dir(sweep_dir).glob("*.json")):
        resolved = dataclasses.asdict(final) | {"raw": None}
        saved.write_text(yaml.safe_dump({"raw": final.raw, "resolved": resolved}, sort_keys=False))
    return final


def _trial_config(space: Space, has_gpus: bool, cell_id: str, params: dict, phase: str = "search", data_seed: int | None = None) -> dict:
    cell = next(c for c in plan.cells(space) if c.id == cell_id)
    seed = space.tuning_data_seed if data_seed is None else data_seed
    run = plan.run_config(space, cell, seed, params, final_eval=phase == "replicate")
    identity = plan.trial_identity(space, run)
    return {"cell": cell_id, "phase": phase, "run": run, "searched": params, "trial_key": plan.trial_key(run, identity),
            "identity": identity, "resources": plan.resources(space, cell, has_gpus)}


def _finished(records: list[dict]) -> dict:
    """Final reports of every recorded trial, keyed by trial key, for a resumed sweep to skip them."""
    out = {}
    for rec in records:
        report = {"epoch": max(1, len(rec.get("history") or [])), "record": json.dumps(rec)}
        dev = (rec.get("metrics") or {}).get("dev")
        if dev and rec["status"] == "completed":
            report["dev_accuracy"] = dev["accuracy"]
        out[rec["trial_key"]] = report
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
        fits.append(total.get("CPU", 0) // max(r["workers"] * r["cpus_per_worker"], 1e-9))
        if r["gpus_per_worker"]:
            fits.append(total.get("GPU", 0) // (r["workers"] * r["gpus_per_worker"]))
    return max(1, int(min(fits)))


def _limits(space: Space) -> dict:
    return {"max_failures": space.max_failures, "max_start_failures": space.max_start_failures,
            "worker_start_timeout_s": space.worker_start_timeout_s}


def _fit(space: Space, sweep_dir: Path, name: str, trainable_fn, progress: Progress, tune: dict, has_gpus: bool,
         pruned: set[str] = frozenset(), max_trials: int | None = None, track=None) -> bool:
    """Run one Tune experiment; True when every trial it was given finished (not interrupted)."""
    writer = RecordWriter(space.name, sweep_dir, progress, pruned)
    tuner = ray.tune.Tuner(
        trainable_fn,
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=concurrency(space, has_gpus), **tune),
        run_config=ray.tune.RunConfig(name=name, storage_path=str(sweep_dir / "ray"), verbose=0,
                                      callbacks=[writer, *tracking.callbacks(track, sweep_dir, space.name)],
                                      stop=StopAfter(progress, max_trials),
                                      failure_config=ray.tune.FailureConfig(max_failures=0)))
    tuner.fit()
    return writer.written >= tune["num_samples"]


def search_budgets(space: Space, records: list[dict]) -> dict[str, int]:
    """Search trials left per cell: the budget less the cell's recorded search trials."""
    done = {c.id: sum(r["cell"] == c.id and r.get("phase") == "search" for r in records)
            for c in plan.cells(space) if plan.searched(space, c)}
    return {cell: space.budget - n for cell, n in done.items() if space.budget > n}


def search_phase(space: Space, sweep_dir: Path, has_gpus: bool, progress: Progress, max_trials: int | None,
                 track=None) -> bool:
    records = results.load_records(sweep_dir)
    budgets = search_budgets(space, records)
    if not budgets:
        return True
    spaces = {cell: plan.searched(space, next(c for c in plan.cells(space) if c.id == cell)) for cell in budgets}
    finished = _finished(records)
    fill = [cfg for cell_id, params in best_params(space, records).items() if params == {}
            for cfg in _replicates(space, has_gpus, cell_id, params, finished)]
    searcher = CellSearcher(spaces, budgets, functools.partial(_trial_config, space, has_gpus),
                            journal(sweep_dir / "optuna.journal"), seed=space.seed, pruner_spec=space.pruner,
                            startup=max(2, space.budget // 2), fill=fill)
    fn = trainable(finished, str(sweep_dir / "ray"), _limits(space))
    return _fit(space, sweep_dir, f"search-{int(time.time())}", fn, progress,
                tune={"search_alg": searcher, "scheduler": OptunaPrunerScheduler(searcher),
                      "num_samples": sum(budgets.values()) + len(fill)},
                has_gpus=has_gpus, pruned=searcher.pruned, max_trials=max_trials, track=track)


def _replicates(space: Space, has_gpus: bool, cell_id: str, params: dict, finished: dict) -> list[dict]:
    """The cell's replicate trials (one per data seed) that have no record yet."""
    configs = [_trial_config(space, has_gpus, cell_id, params, "replicate", seed) for seed in space.data_seeds]
    return [cfg for cfg in configs if cfg["trial_key"] not in finished]


def best_params(space: Space, records: list[dict]) -> dict[str, dict | None]:
    """Per cell: the searched values of its best search trial; {} with nothing to search; None if none completed."""
    best = results.best_search_trials(records)
    return {cell.id: ({} if not plan.searched(space, cell) else best[cell.id]["searched"] if cell.id in best else None)
            for cell in plan.cells(space)}


def replicate_phase(space: Space, sweep_dir: Path, has_gpus: bool, progress: Progress,
                    max_trials: int | None, track=None) -> tuple[bool, list[str]]:
    records = results.load_records(sweep_dir)
    finished = _finished(records)
    configs, skipped = [], []
    for cell_id, params in best_params(space, records).items():
        if params is None:
            skipped.append(cell_id)
            continue
        configs += _replicates(space, has_gpus, cell_id, params, finished)
    progress.expect(Counter(kind("replicate", c["cell"]) for c in configs))  # now known: what will actually run
    if not configs:
        return True, skipped
    fn = trainable(finished, str(sweep_dir / "ray"), _limits(space))
    complete = _fit(space, sweep_dir, f"replicate-{int(time.time())}", fn, progress,
                    tune={"search_alg": ConfigList(configs), "num_samples": len(configs)}, has_gpus=has_gpus,
                    max_trials=max_trials, track=track)
    return complete, skipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ray(address: str | None) -> str:
    env = {COMMIT_ENV: git_commit() or "", "FEWSHOT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    if address is None and not ray.is_initialized():
        # Ray's own helpers inside the trials (the placement-group cleaner among them) find their
        # cluster through RAY_ADDRESS; without it, another Ray instance on the host makes them pick
        # the wrong one or die. So the local instance gets a known GCS port and says where it is.
        port = _free_port()
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    # Worker logs stay in Ray's log folder and the dashboard; the terminal gets one line per trial.
    # Ray's start-up notices (token authentication, "N worker processes started", whose threshold
    # is the CPU count while every trial starts three actors) stay in Ray's logs.
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "16")
    ctx = ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env}, ignore_reinit_error=True,
                   logging_level=logging.ERROR)
    url = getattr(ctx, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url


def _planned(space: Space, records: list[dict]) -> Counter:
    """Trials this session will run per kind, as far as it is known before the search ends."""
    reps = {(r["cell"], r["data_seed"]) for r in records if r.get("phase") == "replicate" and r["status"] == "completed"}
    todo = Counter(kind("replicate", c.id) for c in plan.cells(space) for s in space.data_seeds if (c.id, s) not in reps)
    return todo + Counter({kind("search", cell): n for cell, n in search_budgets(space, records).items()})


def run_sweep(space: Space, name: str | None = None, resume: bool = False, address: str | None = None,
              results_root: Path = Path("results"), max_trials: int | None = None, track: list[str] | None = None) -> int:
    tracker = tracking.parse(track)  # an unknown tracker or a missing library stops here, before Ray
    sweep_dir = (Path(results_root) / (name or space.name)).resolve()
    check_folder(space, sweep_dir, resume)
    with staged(space, sweep_dir, resume) as staged_space:
        checked = preflight.run(staged_space)
        if address is None:
            preflight.check_resources(checked, preflight.local_totals(), "this machine")
        started_here = not ray.is_initialized()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = _start_ray(address)
        try:
            if address is not None:
                preflight.check_resources(checked, ray.cluster_resources(), f"the cluster at {address}")
            space = create_folder(space, checked, sweep_dir)
        except BaseException:
            if started_here:
                ray.shutdown()
            raise
    # a scheduler's or a shell's SIGTERM stops the sweep as Ctrl-C does: finished trials recorded, exit 130
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        code = _run_phases(space, sweep_dir, url, max_trials, tracker)
    finally:
        if started_here:
            ray.shutdown()
    return code


def _run_phases(space: Space, sweep_dir: Path, url: str, max_trials: int | None, track=None) -> int:
    print(f"sweep {space.name} -> {sweep_dir}\nRay dashboard: {url or '(not running: install ray[default])'}", flush=True)
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    progress = Progress(_planned(space, results.load_records(sweep_dir)), slots=concurrency(space, has_gpus))
    print(f"{progress.total} trials to run, {concurrency(space, has_gpus)} at a time", flush=True)
    if not search_phase(space, sweep_dir, has_gpus, progress, max_trials, track):
        return _stop(sweep_dir)
    complete, skipped = replicate_phase(space, sweep_dir, has_gpus, progress, max_trials, track)
    if not complete:
        return _stop(sweep_dir)
    return finish(space, sweep_dir, skipped)


def finish(space: Space, sweep_dir: Path, skipped: list[str]) -> int:
    """Tables, summary, every distinct error in full once, and the exit status."""
    table, summary, title, comps = results.write_tables(sweep_dir)
    print(f"\n{title}\n" + results.to_text(summary))
    for line in results.comparison_lines(comps):
        print(line)
    for note in results.duplicate_notes(table):
        print(note)
    records = results.load_records(sweep_dir)
    incomplete = []
    for cell in plan.cells(space):
        mine = [r for r in records if r["cell"] == cell.id]
        done = {r["data_seed"] for r in mine if r.get("phase") == "replicate" and r["status"] == "completed"}
        if not set(space.data_seeds) <= done:
            why = "" if any(r["status"] == "failed" for r in mine) else (
                ": no completed search trial, so it was not replicated" if cell.id in skipped else ": see its records")
            incomplete.append(f"  {cell.id}: {len(done)}/{len(space.data_seeds)} replicates completed{why}")
    print(f"records: {results.records_dir(sweep_dir)}\ntables:  {sweep_dir}/summary.md, summary.json, trials.parquet, trials.csv")
    try:  # a figure that fails must not turn a finished sweep into a failed one: the records are all there
        from orchestrator.report import write_report
        print(f"report:  {write_report(sweep_dir)} (rebuild: python -m orchestrator report {sweep_dir})")
    except Exception as e:  # noqa: BLE001
        print(f"warning: the report could not be written ({type(e).__name__}: {e}); "
              f"retry with: python -m orchestrator report {sweep_dir}", file=sys.stderr)
    errors: dict[str, list[str]] = {}
    for r in records:
        if r["status"] == "failed" and r.get("error"):
            errors.setdefault(r["error"], []).append(f"{r['cell']} ({r.get('phase')}, seed {r['data_seed']})")
    for error, where in errors.items():  # each in full, once: the trial lines above cut them to fit
        print(f"error in {len(where)} trial(s), first {where[0]}:\n  {error}", file=sys.stderr)
    if incomplete:
        print(f"{len(incomplete)} of {len(plan.cells(space))} cells have no completed replicate for every data seed:\n"
              + "\n".join(incomplete), file=sys.stderr)
        return 1
    return 0


def _stop(sweep_dir: Path) -> int:
    results.write_tables(sweep_dir)
    print(f"sweep interrupted; its finished trials are recorded. Continue with: --resume (results in {sweep_dir})",
          file=sys.stderr)
    return 130
