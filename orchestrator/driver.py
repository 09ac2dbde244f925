"""The sweep driver: search each cell with Optuna under Ray Tune, then replicate the best
configuration of every cell over the data seeds; records, tables and a summary as it goes.

    python -m orchestrator sweep --space quickstart
    python -m orchestrator sweep --space cd_vs_icl --address auto      # on a cluster (`ray up cluster.yaml`)

State lives under `results/<sweep>/`: the resolved space, one JSON record per finished trial
(`trials/`), Optuna's journal (`optuna.journal`), Ray's experiment folders (`ray/`), and the
tables. `--resume` rebuilds everything from that state: finished trials (their records) are
never run again, the searchers reload their studies and only spend the budget that is left.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter honours verbose=0: our lines only
# A failed trial's final report has no dev accuracy; the searcher and the pruner handle that.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")

import optuna  # noqa: E402
import ray  # noqa: E402
import ray.tune  # noqa: E402
import yaml  # noqa: E402

from orchestrator import plan, results  # noqa: E402
from orchestrator.pruning import OptunaPrunerScheduler  # noqa: E402
from orchestrator.search import CellSearcher, ConfigList, journal  # noqa: E402
from orchestrator.space import Space, SpaceError  # noqa: E402
from orchestrator.trial import trainable  # noqa: E402
from trainers import synthetic  # noqa: E402
from trainers.config import from_dict  # noqa: E402
from trainers.methods import validate  # noqa: E402
from trainers.records import COMMIT_ENV, build_record, git_commit  # noqa: E402


# Tune's own per-trial chatter (TensorBoard hyperparameter notes, metrics of trials that an
# interrupt stopped before their first report) says nothing the records do not.
logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
logging.getLogger("ray.tune.tune").setLevel(logging.WARNING)


class Progress:
    """One line per finished trial, with counts and an estimate of the time left."""

    def __init__(self, total: int):
        self.total, self.done, self.counts, self.start = total, 0, {}, time.time()

    def line(self, rec: dict, seconds: float) -> None:
        self.done += 1
        self.counts[rec["status"]] = self.counts.get(rec["status"], 0) + 1
        elapsed = time.time() - self.start
        eta = elapsed / self.done * max(0, self.total - self.done)
        params = " ".join(f"{k.split('.')[-1]}={v:.3g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in (rec.get("searched") or {}).items())
        m = rec.get("metrics") or {}
        score = (f"in-domain {m['in_domain']['accuracy']:.3f}" if "in_domain" in m
                 else f"dev {rec['history'][-1]['dev_accuracy']:.3f}" if rec.get("history") else "")
        if rec.get("error"):
            score = rec["error"][:60]
        tail = " · ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        print(f"[{self.done:>3}/{self.total}] {rec['phase']:<9} {rec['cell']:<44} seed {rec['data_seed']} {params:<18} "
              f"{rec['status']:<9} {score:<18} {seconds:5.0f}s | {tail} · ETA {eta / 60:.1f} min", flush=True)


class StopAfter(ray.tune.Stopper):
    """Ends the session once `limit` trials have finished (--max-trials); --resume continues."""

    def __init__(self, progress: Progress, limit: int | None):
        self.progress, self.limit = progress, limit

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.limit is not None and self.progress.done >= self.limit


class RecordWriter(ray.tune.Callback):
    """Writes each trial's record when Tune reports it finished, pruned or errored."""

    def __init__(self, sweep: str, sweep_dir: Path, progress: Progress, pruned: set[str] = frozenset()):
        self.sweep, self.sweep_dir, self.progress, self.pruned = sweep, sweep_dir, progress, pruned
        self.written = 0
        self.history: dict[str, list] = {}
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "record" not in result and "epoch" in result:
            self.history.setdefault(trial.trial_id, []).append(
                {k: result[k] for k in ("epoch", "train_loss", "dev_accuracy", "lr", "epoch_seconds") if k in result})

    def _write(self, trial, rec: dict) -> None:
        c = trial.config
        seconds = round(time.time() - self.started.get(trial.trial_id, time.time()), 3)
        # trial_seconds: the whole trial as the driver saw it, worker group start and stop included
        rec.update(sweep=self.sweep, cell=c["cell"], phase=c["phase"], trial_key=c["trial_key"],
                   tune_trial_id=trial.trial_id, searched=c["searched"], trial_resources=c["resources"],
                   trial_seconds=seconds)
        results.write_record(self.sweep_dir, rec)
        self.written += 1
        self.progress.line(rec, seconds)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if "record" in last:
            rec = json.loads(last["record"])
        elif trial.trial_id in self.pruned:  # stopped by the pruner before its final report
            history = self.history.get(trial.trial_id, [])
            rec = build_record(from_dict(trial.config["run"]), "pruned", resolved={}, history=history,
                               extra={"pruned_after_epoch": len(history)})
        else:  # stopped because the sweep was interrupted: no record, so a resume runs it again
            return
        self._write(trial, rec)

    def on_trial_error(self, iteration, trials, trial, **info):
        err = trial.get_error()
        lines = [ln for ln in str(err).splitlines() if ln.strip()] if err else ["unknown error"]
        rec = build_record(from_dict(trial.config["run"]), "failed", resolved={}, history=self.history.get(trial.trial_id, []),
                           error=lines[-1][:500], extra={"traceback": "\n".join(lines[-30:])})
        self._write(trial, rec)


def _fixtures(space: Space, sweep_dir: Path) -> Space:
    """The synthetic fixtures of the `smoke` space: a tiny random model and data, written here."""
    if space.fixtures != "synthetic":
        return space
    root = sweep_dir / "fixtures"
    models = [str(synthetic.make_model(root / m.split(":", 1)[1], m.split(":", 1)[1])) for m in space.models]
    return dataclasses.replace(space, models=models, data_dir=str(synthetic.write_data(root / "data")))


def _check_trials(space: Space) -> None:
    """Every cell's configuration is valid before Ray starts."""
    for cell in plan.cells(space):
        validate(from_dict(plan.run_config(space, cell, space.tuning_data_seed, {}, True)))


def prepare(space: Space, name: str | None, results_root: Path, resume: bool) -> tuple[Space, Path]:
    sweep_dir = (results_root / (name or space.name)).resolve()
    saved = sweep_dir / "space.yaml"
    if saved.exists() and not resume:
        raise SpaceError(f"{sweep_dir} already holds a sweep; pass --resume to continue it, or --name to start another")
    if resume and saved.exists() and yaml.safe_load(saved.read_text())["raw"] != space.raw:
        raise SpaceError(f"{saved} was made from a different space or --set overrides; resume with the same ones, or use --name")
    if resume and not saved.exists():
        raise SpaceError(f"nothing to resume in {sweep_dir}; run without --resume to start")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    space = _fixtures(space, sweep_dir)
    _check_trials(space)
    if not saved.exists():
        saved.write_text(yaml.safe_dump({"raw": space.raw, "resolved": dataclasses.asdict(space) | {"raw": None}}, sort_keys=False))
    return space, sweep_dir


def _trial_config(space: Space, has_gpus: bool, cell_id: str, params: dict, phase: str = "search", data_seed: int | None = None) -> dict:
    cell = next(c for c in plan.cells(space) if c.id == cell_id)
    seed = space.tuning_data_seed if data_seed is None else data_seed
    run = plan.run_config(space, cell, seed, params, final_eval=phase == "replicate")
    return {"cell": cell_id, "phase": phase, "run": run, "searched": params, "trial_key": plan.trial_key(run),
            "resources": plan.resources(space, cell, has_gpus)}


def _finished(sweep_dir: Path) -> dict:
    """Final reports of every recorded trial, keyed by trial key, for a resumed sweep to skip them."""
    out = {}
    for rec in results.load_records(sweep_dir):
        report = {"epoch": max(1, len(rec.get("history") or [])), "record": json.dumps(rec)}
        dev = (rec.get("metrics") or {}).get("dev")
        if dev:
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


def _fit(space: Space, sweep_dir: Path, name: str, trainable_fn, progress: Progress, tune: dict, has_gpus: bool,
         pruned: set[str] = frozenset(), max_trials: int | None = None) -> bool:
    """Run one Tune experiment; True when every trial it was given finished (not interrupted)."""
    writer = RecordWriter(space.name, sweep_dir, progress, pruned)
    tuner = ray.tune.Tuner(
        trainable_fn,
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=concurrency(space, has_gpus), **tune),
        run_config=ray.tune.RunConfig(name=name, storage_path=str(sweep_dir / "ray"), verbose=0, callbacks=[writer],
                                      stop=StopAfter(progress, max_trials),
                                      failure_config=ray.tune.FailureConfig(max_failures=0)))
    tuner.fit()
    return writer.written >= tune["num_samples"]


def search_phase(space: Space, sweep_dir: Path, has_gpus: bool, progress: Progress, max_trials: int | None) -> bool:
    records = [r for r in results.load_records(sweep_dir) if r.get("phase") == "search"]
    done = {c.id: sum(r["cell"] == c.id for r in records) for c in plan.cells(space) if plan.searched(space, c)}
    budgets = {cell: space.budget - n for cell, n in done.items() if space.budget > n}
    if not budgets:
        return True
    spaces = {cell: plan.searched(space, next(c for c in plan.cells(space) if c.id == cell)) for cell in budgets}
    searcher = CellSearcher(spaces, budgets, functools.partial(_trial_config, space, has_gpus),
                            sweep_dir / "optuna.journal", seeds={cell: space.seed + done[cell] for cell in budgets})
    scheduler = OptunaPrunerScheduler(space.pruner, journal(sweep_dir / "optuna.journal"))
    fn = trainable(_finished(sweep_dir), str(sweep_dir / "ray"), space.max_failures)
    return _fit(space, sweep_dir, f"search-{int(time.time())}", fn, progress,
                tune={"search_alg": searcher, "scheduler": scheduler, "num_samples": sum(budgets.values())},
                has_gpus=has_gpus, pruned=scheduler.pruned, max_trials=max_trials)


def best_params(space: Space, sweep_dir: Path) -> dict[str, dict | None]:
    """Per cell: the searched values of its best search trial; {} with nothing to search; None if none completed."""
    best = results.best_search_trials(results.load_records(sweep_dir))
    return {cell.id: ({} if not plan.searched(space, cell) else best[cell.id]["searched"] if cell.id in best else None)
            for cell in plan.cells(space)}


def replicate_phase(space: Space, sweep_dir: Path, has_gpus: bool, progress: Progress,
                    max_trials: int | None) -> tuple[bool, list[str]]:
    finished = _finished(sweep_dir)
    configs, skipped = [], []
    for cell_id, params in best_params(space, sweep_dir).items():
        if params is None:
            skipped.append(cell_id)
            continue
        for seed in space.data_seeds:
            cfg = _trial_config(space, has_gpus, cell_id, params, "replicate", seed)
            if cfg["trial_key"] not in finished:
                configs.append(cfg)
    if not configs:
        return True, skipped
    fn = trainable(finished, str(sweep_dir / "ray"), space.max_failures)
    complete = _fit(space, sweep_dir, f"replicate-{int(time.time())}", fn, progress,
                    tune={"search_alg": ConfigList(configs), "num_samples": len(configs)}, has_gpus=has_gpus,
                    max_trials=max_trials)
    return complete, skipped


def _start_ray(address: str | None) -> str:
    env = {COMMIT_ENV: git_commit() or "", "FEWSHOT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    # Worker logs stay in Ray's log folder and the dashboard; the terminal gets one line per trial.
    ctx = ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env}, ignore_reinit_error=True)
    url = getattr(ctx, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url


def run_sweep(space: Space, name: str | None = None, resume: bool = False, address: str | None = None,
              results_root: Path = Path("results"), max_trials: int | None = None) -> int:
    space, sweep_dir = prepare(space, name, Path(results_root), resume)
    started_here = not ray.is_initialized()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = _start_ray(address)
    try:
        print(f"sweep {space.name} -> {sweep_dir}\nRay dashboard: {url or '(not running: install ray[default])'}", flush=True)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        _check_resources(space, has_gpus)
        done = {k for k in _finished(sweep_dir)}
        n_cells = len(plan.cells(space))
        total = sum(space.budget for c in plan.cells(space) if plan.searched(space, c)) + n_cells * len(space.data_seeds)
        progress = Progress(max(0, total - len(done)))
        print(f"{progress.total} trials to run, {concurrency(space, has_gpus)} at a time", flush=True)
        if not search_phase(space, sweep_dir, has_gpus, progress, max_trials):
            return _stop(sweep_dir)
        complete, skipped = replicate_phase(space, sweep_dir, has_gpus, progress, max_trials)
        if not complete:
            return _stop(sweep_dir)
    finally:
        if started_here:
            ray.shutdown()
    table, summary = results.write_tables(sweep_dir, title=f"{space.name}: {space.description}")
    print("\n" + results.to_markdown(summary))
    for cell in skipped:
        print(f"note: {cell} has no completed search trial, so it was not replicated (see its failed/pruned records)")
    print(f"records: {results.records_dir(sweep_dir)}  tables: {sweep_dir}/trials.parquet, trials.csv, summary.md")
    return 0


def _check_resources(space: Space, has_gpus: bool) -> None:
    """A trial that asks for more than the whole cluster has would wait forever: refuse it now."""
    total = ray.cluster_resources()
    for cell in plan.cells(space):
        r = plan.resources(space, cell, has_gpus)
        cpus, gpus = r["workers"] * r["cpus_per_worker"], r["workers"] * r["gpus_per_worker"]
        if cpus > total.get("CPU", 0) or gpus > total.get("GPU", 0):
            raise SpaceError(f"{cell.id} asks for {r['workers']} worker(s) x {r['cpus_per_worker']} CPU / {r['gpus_per_worker']} GPU "
                             f"but the cluster has {total.get('CPU', 0):g} CPU / {total.get('GPU', 0):g} GPU; "
                             f"lower them with --set resources.cpus_per_worker=... (or resources.workers=...)")


def _stop(sweep_dir: Path) -> int:
    results.write_tables(sweep_dir)
    print(f"sweep interrupted; its finished trials are recorded. Continue with: --resume (results in {sweep_dir})",
          file=sys.stderr)
    return 130
