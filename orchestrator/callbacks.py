"""What the sweep driver hears from Tune: a record per finished trial, a progress line each.

    python -m orchestrator sweep --space smoke          # one "[n/N] ..." line per finished trial

`RecordWriter` writes each trial's JSON record the moment Tune reports it finished, pruned or
errored (the record of an errored trial holds Ray's own exception, never "unknown error");
`Progress` prints the line; `StopAfter` ends a session after --max-trials trials.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import ray.tune

from orchestrator import results
from trainers.config import from_dict
from trainers.records import build_record


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
            score = rec["error"][:60]  # in full at the end of the sweep
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
        self.errors: dict[str, str] = {}  # cell -> its first failed trial's error
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
        if rec["status"] == "failed" and not rec.get("history"):
            rec["history"] = self.history.get(trial.trial_id, [])
        # trial_seconds: the whole trial as the driver saw it, worker group start and stop included
        rec.update(sweep=self.sweep, cell=c["cell"], phase=c["phase"], trial_key=c["trial_key"], identity=c.get("identity"),
                   tune_trial_id=trial.trial_id, searched=c["searched"], trial_resources=c["resources"],
                   trial_seconds=seconds)
        results.write_record(self.sweep_dir, rec)
        self.written += 1
        if rec["status"] == "failed" and rec.get("error"):
            self.errors.setdefault(c["cell"], rec["error"])
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
        """The Tune trial itself died (its process, not the method): Ray's error from the trial's
        local staging copy (the synced copy may not be there yet), else from the pickled exception."""
        message = _staged_error(trial)
        rec = build_record(from_dict(trial.config["run"]), "failed", resolved={}, history=self.history.get(trial.trial_id, []),
                           error=message.splitlines()[-1][:600] if message else "trial process died without an error from Ray",
                           extra={"traceback": "\n".join((message or "").splitlines()[-30:])})
        self._write(trial, rec)


def _staged_error(trial) -> str | None:
    for read in (lambda: Path(trial.error_file).read_text(), lambda: repr(trial.get_pickled_error()),
                 lambda: str(trial.get_error())):
        try:
            text = read()
        except Exception:  # noqa: BLE001 - try the next copy
            continue
        lines = [ln for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("Failure #")]
        if lines and lines != ["None"]:
            return "\n".join(lines)
    return None
