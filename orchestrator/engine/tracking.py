"""Opt-in experiment tracking: every trial a run in MLflow, Weights & Biases or TensorBoard.

    python -m orchestrator sweep --space quickstart --track mlflow        # -> results/quickstart/mlruns
    mlflow ui --backend-store-uri results/quickstart/mlruns

Ray Tune's own logger callbacks carry the trial's config and per-epoch metrics; the subclasses here
add, when the trial ends, its final metrics (accuracies, serving and adaptation cost, from the
record the sweep just wrote) and the record itself as an artifact (TensorBoard has no artifacts:
the record stays in trials/). `--track mlflow=URI` logs to a tracking server; W&B follows its own
environment (WANDB_MODE=offline writes under the trial's folder for `wandb sync`).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
from pathlib import Path

from orchestrator.space import SpaceError

from trainers.contract import Record, TrialSpec, load

KINDS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}  # --track value -> module it needs
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboard"}


class TrackingError(SpaceError):
    """--track names an unknown tracker or one whose library is not installed."""


def parse(specs: list[str] | str | None) -> list[tuple[str, str | None]]:
    """['mlflow=URI', 'wandb'] -> [('mlflow', 'URI'), ('wandb', None)]; checked before Ray starts."""
    out = []
    for spec in [specs] if isinstance(specs, str) else specs or []:
        kind, _, target = spec.partition("=")
        if kind not in KINDS:
            raise TrackingError(f"--track {spec!r}: unknown tracker; valid: mlflow[=URI], wandb[=PROJECT], tensorboard")
        if importlib.util.find_spec(KINDS[kind]) is None:
            raise TrackingError(f"--track {kind} needs the {KINDS[kind]} package: pip install -e '.[{EXTRAS[kind]}]'")
        out.append((kind, target or None))
    return out


def final_metrics(sweep_dir: Path, trial) -> tuple[dict, Path] | None:
    """The trial's record as flat numbers, and a folder holding only the record (the artifact)."""
    from orchestrator.analysis import results
    from orchestrator.analysis.table import columns, trial as trial_row
    path = results.records_dir(sweep_dir) / f"{load(TrialSpec, trial.config).trial_key}.json"
    if not path.exists():  # interrupted: no record, the trial runs again on --resume
        return None
    row = columns(trial_row(load(Record, json.loads(path.read_text()))))
    numbers = {f"final/{k}": float(v) for k, v in row.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(float(v))}
    folder = Path(trial.local_path) / "record"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder / "record.json")
    return numbers, folder


def _mlflow_tracker(sweep_dir: Path, **kwargs):
    from ray.air.integrations.mlflow import MLflowLoggerCallback  # Ray only once a sweep starts

    class MLflowTracker(MLflowLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False):
            final = final_metrics(sweep_dir, trial)
            if final and trial in self._trial_runs:
                run_id = self._trial_runs[trial]
                step = (trial.last_result or {}).get("training_iteration", 0)
                self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=final[0], step=step)
                self.mlflow_util.save_artifacts(run_id=run_id, dir=str(final[1]))
            super().log_trial_end(trial, failed)

    return MLflowTracker(**kwargs)


def _tensorboard_tracker(sweep_dir: Path):
    from ray.tune.logger import TBXLoggerCallback

    class TensorBoardTracker(TBXLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False):
            final = final_metrics(sweep_dir, trial)
            if final and trial in self._trial_writer:
                step = (trial.last_result or {}).get("training_iteration", 0)
                for key, value in final[0].items():
                    self._trial_writer[trial].add_scalar(key, value, global_step=step)
            super().log_trial_end(trial, failed)

    return TensorBoardTracker()


def _wandb_tracker(sweep_dir: Path, project: str):
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

    class WandbTracker(WandbLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False):
            final = final_metrics(sweep_dir, trial)
            if final and trial in self._trial_queues:
                step = (trial.last_result or {}).get("training_iteration", 0)
                self._trial_queues[trial].put((_QueueItem.RESULT, {**final[0], "training_iteration": step}))
                self._trial_queues[trial].put((_QueueItem.CHECKPOINT, str(final[1])))  # the record, as an artifact
            super().log_trial_end(trial, failed)

    # the logging actors run in Ray's workers, whose environment is the cluster's: the driver's mode goes along
    mode = {"mode": os.environ["WANDB_MODE"]} if os.environ.get("WANDB_MODE") else {}
    return WandbTracker(project=project, excludes=["record"], **mode)


def callbacks(track: list[tuple[str, str | None]], sweep_dir: Path, sweep: str) -> list:
    """The Tune callbacks for `--track`, to go after the record writer (they read the record it wrote)."""
    out = []
    for kind, target in track or []:
        if kind == "mlflow":
            uri = target or (sweep_dir / "mlruns").resolve().as_uri()
            if uri.startswith("file:"):  # MLflow >= 3.? keeps its file store only on request (maintenance mode)
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            out.append(_mlflow_tracker(sweep_dir, tracking_uri=uri, experiment_name=sweep))
        elif kind == "wandb":
            out.append(_wandb_tracker(sweep_dir, target or sweep))
        else:
            out.append(_tensorboard_tracker(sweep_dir))
    return out
