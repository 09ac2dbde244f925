"""What the sweep driver hears from Tune: a record per finished trial, a progress line each.

    python -m orchestrator sweep --space smoke          # one "[n/N] ..." line per finished trial, heartbeats between

`RecordWriter` writes each trial's JSON record the moment Tune reports it finished, pruned or
errored (the record of an errored trial holds Ray's own exception, never "unknown error");
`Progress` prints the line; `StopAfter` ends a session after --max-trials trials.
"""
from __future__ import annotations

import json
import shutil
import statistics
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import ray.tune

from orchestrator.analysis import results
from orchestrator.cells import variant_of
from orchestrator.engine.trial import config_of
from trainers import settings
from trainers.methods import spec
from trainers.contract import Epoch, Record, TrialSpec, load
from trainers.records import bare_record


class Kind(NamedTuple):
    """What a trial's duration depends on: its phase and its cell (task, method, model, shots)."""
    phase: str
    cell: str
    method: str  # the cell's method variant: the fallback estimate for a cell not seen yet


def kind(phase: str, cell: str) -> Kind:
    return Kind(phase, cell, variant_of(cell))


def fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """One line per finished trial, at most `width` columns (the terminal's, 100 at most); a
    heartbeat when no trial has finished for `heartbeat_s`, one line per running trial; and the time
    left. Each kind of trial is estimated from the finished trials of that kind (the same cell and
    phase, else the same phase and method); a replicate not seen yet from its cell's measured search
    trials plus the evaluation and serving its plan adds; any other kind not seen yet from the plan
    (`planned`: seconds per kind), scaled by how far finished trials of the same phase ran from their
    own plans (a search trial's ratio says nothing of a replicate, which also scores OOD sets and serves). A running
    trial that has outlived its estimate is still running: its kind's estimate takes its time so far
    into account and it is expected to need a tenth of its time so far again, so the ETA grows
    while it overruns instead of standing still. The work left is spread over `slots`."""

    MAX_SHOWN = 8  # running trials listed one per line in a heartbeat; the rest are counted
    OVERRUN = 0.1  # of its time so far: what an overdue running trial is still expected to need
    FINISH_S = 10.0  # the tables and the report after the last trial (8-12 s on this project's 2-core machine)
    # Wall time between one trial's end and the next one's start (Tune stopping one trial's process and
    # starting the next's): ~2.8 s a trial in the smoke sweep on a 2-core machine. Assumed until the
    # sweep has measured its own, which needs a trial started after one ended.
    GAP_S = 2.5

    def __init__(self, planned: Counter, slots: int = 1, width: int | None = None, heartbeat_s: float | None = None,
                 planned_seconds: dict | None = None):
        self.slots, self.done, self.start = max(1, slots), 0, time.time()
        self.width = width or min(100, shutil.get_terminal_size((100, 24)).columns)
        self.heartbeat_s = heartbeat_s if heartbeat_s is not None else settings.get("FEWSHOT_HEARTBEAT_S")
        self.seconds: dict[tuple, list[float]] = {}
        self.planned_seconds = dict(planned_seconds or {})
        self.ratios: dict[str, list[float]] = {}  # phase -> measured / planned, of its finished trials
        self.running: dict[str, tuple[Kind, float]] = {}  # trial id -> (kind, start time)
        self.last_line = time.time()
        self.stalled: str | None = None  # why the sweep stopped waiting (then StopAfter ends the experiment)
        self.first_start: float | None = None  # the first trial's start: wall time since counts trials' gaps
        self.busy = 0.0  # seconds of finished trials
        self.gap_seen = False  # a trial has started after one finished: the gaps are measured
        self.expect(planned)

    def expect(self, planned: Counter) -> None:
        """The trials still to run (known in full once the search has ended)."""
        self.todo = Counter(planned)
        self.total = self.done + sum(self.todo.values())

    def started(self, trial_id: str, k: Kind) -> None:
        self.running[trial_id] = (k, time.time())
        self.first_start = self.first_start or time.time()
        self.gap_seen = self.gap_seen or self.done > 0

    def _estimate(self, k: Kind, now: float) -> tuple[float | None, bool]:
        """(seconds, whether it was measured) for a trial of kind `k`: finished trials of that kind, with
        the running ones of the same kind that have already outlasted their mean counted at their time so far."""
        for same in (lambda x: x == k, lambda x: (x.phase, x.method) == (k.phase, k.method)):
            times = [t for key, ts in self.seconds.items() if same(key) for t in ts]
            if times:
                mean = sum(times) / len(times)
                over = [now - t0 for rk, t0 in self.running.values() if same(rk) and now - t0 > mean]
                return (sum(times) + sum(over)) / (len(times) + len(over)), True
        ratios = self.ratios.get(k.phase, [])
        ratio = statistics.median(ratios) if ratios else 1.0  # of two, their mean: not the larger
        searched = [t for key, ts in self.seconds.items() if key == Kind("search", k.cell, k.method) for t in ts]
        search_plan = self.planned_seconds.get(Kind("search", k.cell, k.method))
        if k.phase == "replicate" and searched and k in self.planned_seconds and search_plan is not None:
            # the cell's own search trials measured its training: a replicate adds its evaluation and serving
            extra = max(0.0, self.planned_seconds[k] - search_plan) * ratio
            return sum(searched) / len(searched) + extra, False
        if k in self.planned_seconds:
            return self.planned_seconds[k] * ratio, False
        times = [t for ts in self.seconds.values() for t in ts]
        return (sum(times) / len(times), True) if times else (None, False)

    def remaining(self, now: float | None = None) -> tuple[float | None, bool]:
        """(seconds of wall time left, whether every estimate behind it was measured)."""
        now = time.time() if now is None else now
        left = {k: n for k, n in self.todo.items() if n > 0}
        if not left:
            return 0.0, True
        kinds = set(left) | {k for k, _ in self.running.values()}
        est = {k: self._estimate(k, now) for k in kinds}
        if any(est[k][0] is None for k in left):
            return None, False
        work = sum(est[k][0] * n for k, n in left.items())
        for k, t0 in self.running.values():  # already counted in `left`: take off what it has done
            if k in left and est[k][0] is not None:
                elapsed = now - t0
                work -= elapsed if elapsed < est[k][0] * (1 - self.OVERRUN) else est[k][0] - self.OVERRUN * elapsed
        # wall time no trial accounts for (scheduling between trials, a slot left idle), per finished trial so far
        gaps = 0.0
        if self.first_start and self.done:
            running = sum(now - t0 for _, t0 in self.running.values())
            gaps = max(0.0, (now - self.first_start) - (self.busy + running) / self.slots) / self.done
            if not self.gap_seen:
                gaps = max(gaps, self.GAP_S / self.slots)
        n = sum(left.values())
        return (max(0.0, work) / min(self.slots, n) + gaps * n + self.FINISH_S), all(est[k][1] for k in left)

    def eta(self) -> str:
        seconds, measured = self.remaining()
        if seconds is None:
            return "ETA after the first trial"
        if not any(n > 0 for n in self.todo.values()):
            return ""
        return f"ETA {_clock(seconds)}" if measured else f"ETA ~{_clock(seconds)} (planned)"

    def line(self, rec: Record, seconds: float, trial_id: str | None = None) -> None:
        self.done += 1
        k = kind(rec.phase, rec.cell)
        self.running.pop(trial_id, None)
        self.seconds.setdefault(k, []).append(seconds)
        self.busy += seconds
        if self.planned_seconds.get(k):
            self.ratios.setdefault(k.phase, []).append(seconds / self.planned_seconds[k])
        if self.todo[k] > 0:
            self.todo[k] -= 1
        params = " ".join(f"{k.split('.')[-1]}={v:.2g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
                          for k, v in rec.searched.items())
        in_domain = rec.metrics.in_domain
        score = (f"in-domain {in_domain.accuracy:.3f}" if in_domain
                 else f"dev {rec.history[-1].dev_accuracy:.3f}" if rec.history else "")
        if rec.error:
            score = " ".join(rec.error.split())  # cut here to fit; in full at the end of the sweep
        head = f"[{self.done:>{len(str(self.total))}}/{self.total}] {rec.phase:<9} "
        status = "" if rec.status == "completed" else rec.status.upper() + " "  # the exceptions stand out
        tail = f" s{rec.data_seed} {params + ' ' if params else ''}{status}{_clock(seconds)} {self.eta()}".rstrip()
        cell = fit(rec.cell, max(16, self.width - len(head) - len(tail) - (24 if rec.error else 16)))
        print(fit(f"{head}{cell}{tail} {score}", self.width), flush=True)
        self.last_line = time.time()

    def heartbeat(self, running: list[tuple[str, str, float]], note: str | None = None) -> None:
        """`running`: (cell, how far, seconds) per running trial; printed when the sweep has been quiet:
        a line of totals, then one line per running trial (the longest-running first; beyond
        MAX_SHOWN, a count). With `note` (nothing runs, trials wait: what they wait for), the trials
        listed are the waiting ones."""
        now = time.time()
        if now - self.last_line < self.heartbeat_s or not running:
            return
        self.last_line = now
        eta = self.eta()
        state = f"{len(running)} waiting and none running" if note else f"{len(running)} running" + (f", {eta}" if eta else "")
        lines = [f"  … {_clock(now - self.start)} elapsed, {self.done}/{self.total} done, {state}:"]
        wrapped = textwrap.wrap(note, self.width, initial_indent="    ", subsequent_indent="    ") if note else []
        ordered = sorted(running, key=lambda r: -r[2])
        lines += [f"      {_clock(sec):>6}  {where:<20} {cell}" for cell, where, sec in ordered[:self.MAX_SHOWN]]
        if len(ordered) > self.MAX_SHOWN:
            lines.append(f"      … and {len(ordered) - self.MAX_SHOWN} more")
        print("\n".join([fit(lines[0], self.width), *wrapped, *(fit(line, self.width) for line in lines[1:])]), flush=True)


EPOCH_KEYS = ("epoch", "train_loss", "dev_accuracy", "lr", "epoch_seconds", "setup_seconds", "tokens_per_second")


def spec_of(trial) -> TrialSpec:
    """A Tune trial's spec, from the config Tune carries (Ray's edge)."""
    return load(TrialSpec, trial.config)


def epoch_of(result: dict) -> Epoch:
    """A trial's epoch report as Tune passes it on (beside Tune's own keys): a line of its record's history."""
    return load(Epoch, {k: result[k] for k in EPOCH_KEYS if k in result})


def waiting_for(pending: list) -> str:
    """What pending trials wait for, in words: the cluster's lost nodes and what is free."""
    try:
        nodes = ray.nodes()
        lost = [n.get("NodeManagerAddress", "?") + f" ({n['NodeID'][:8]})" for n in nodes if not n.get("Alive")]
        free = ray.available_resources()
    except Exception:  # noqa: BLE001 - the state API is a courtesy here; the wait itself is the fact
        lost, free = [], {}
    have = f"{free.get('CPU', 0):g} CPU / {free.get('GPU', 0):g} GPU free"
    return (f"node(s) lost: {', '.join(lost)}; {have}" if lost else f"resources not available ({have})")


class StopAfter(ray.tune.Stopper):
    """Ends the session once `limit` trials have finished (--max-trials); --resume continues."""

    def __init__(self, progress: Progress, limit: int | None):
        self.progress, self.limit = progress, limit

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        return bool(self.progress.stalled) or (self.limit is not None and self.progress.done >= self.limit)


class RecordWriter(ray.tune.Callback):
    """Writes each trial's record when Tune reports it finished, pruned or errored."""

    def __init__(self, sweep: str, sweep_dir: Path, progress: Progress, pruned: set[str] = frozenset(),
                 gate: str | None = None, on_written=None, metrics=None, unwritten: list | None = None,
                 stall_timeout_s: float = 600.0):
        self.sweep, self.sweep_dir, self.progress, self.pruned, self.gate = sweep, sweep_dir, progress, pruned, gate
        self.stall_timeout_s, self.waiting_since = stall_timeout_s, None  # trials pending, none running, since when
        self.unwritten = [] if unwritten is None else unwritten  # cells whose record could not be written
        self.on_written, self.metrics = on_written, metrics  # a storage mirror's upload; the dashboard's metrics
        self.written = 0
        self.history: dict[str, list] = {}
        self.started: dict[str, float] = {}
        self.shown: dict[str, tuple[str, int | None]] = {}  # a running trial's heartbeat label and its epochs

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.time()
        trial_spec = spec_of(trial)
        cfg = config_of(trial_spec)
        self.shown[trial.trial_id] = (f"{trial_spec.phase[:6]} s{cfg.data_seed}",
                                      cfg.train.epochs if spec.get(cfg.method).trains else None)
        self.progress.started(trial.trial_id, kind(trial_spec.phase, trial_spec.cell))
        if self.metrics:
            self.metrics.started()

    def on_step_end(self, iteration, trials, **info):
        if self.metrics:
            self.metrics.refresh()  # gauges set again between scrapes, or they drop out of Ray's export
        running, now = [], time.time()
        for t in trials:
            if t.status == "RUNNING" and t.trial_id in self.started:
                (where, epochs), seen = self.shown[t.trial_id], len(self.history.get(t.trial_id, []))
                where += f" epoch {seen}/{epochs}" if seen and epochs else ""
                running.append((spec_of(t).cell, where, now - self.started[t.trial_id]))
        pending = [t for t in trials if t.status == "PENDING"]
        self.waiting_since = (self.waiting_since or now) if pending and not running else None
        if self.waiting_since is None:
            self.progress.heartbeat(running)
            return
        waited = now - self.waiting_since
        why = waiting_for(pending)
        self.progress.heartbeat([(spec_of(t).cell, "waiting", waited) for t in pending],
                                note=f"they wait for: {why}; the sweep ends after {_clock(self.stall_timeout_s)} of this "
                                     f"({_clock(waited)} so far; stall_timeout_s sets it), and --resume continues")
        if waited > self.stall_timeout_s:
            self.progress.stalled = (f"{len(pending)} trial(s) waited {_clock(waited)} with none running: {why}")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """Tune runs a failed trial again (max_failures): say so in one line, with the cause."""
        error = trial.get_error() if hasattr(trial, "get_error") else None
        cause = str(error).strip().splitlines()[-1] if error and str(error).strip() else "its process died"
        if "node" in str(error or "").lower() and "died" in str(error or "").lower():
            cause = "its node was lost"
        trial_spec = spec_of(trial)
        print(fit(f"  ! {trial_spec.cell} ({trial_spec.phase}, s{config_of(trial_spec).data_seed}): {cause}; running it again "
                  f"({trial.num_failures} failure(s) so far)", self.progress.width), file=sys.stderr, flush=True)
        self.started.pop(trial.trial_id, None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "record" not in result and "epoch" in result:
            if self.metrics:
                self.metrics.epoch_done(spec_of(trial), trial.trial_id, result)
            self.history.setdefault(trial.trial_id, []).append(epoch_of(result))

    def _write(self, trial, rec: Record) -> None:
        c = spec_of(trial)
        if self.gate:  # a trial that ended (or died) holds no turn any more
            from orchestrator.engine.gate import forget
            forget(self.gate, c.trial_key)
        seconds = round(time.time() - self.started.get(trial.trial_id, time.time()), 3)
        if rec.status == "failed" and not rec.history:
            rec.history = self.history.get(trial.trial_id, [])
        # trial_seconds: the whole trial as the driver saw it, worker group start and stop included
        rec.sweep, rec.cell, rec.phase, rec.trial_key = self.sweep, c.cell, c.phase, c.trial_key
        rec.identity, rec.tune_trial_id, rec.searched = c.identity, trial.trial_id, c.searched
        rec.trial_resources, rec.trial_seconds = c.resources, seconds
        timeline = rec.resources.timeline
        if timeline is not None:
            timeline.update(driver_started=self.started.get(trial.trial_id), driver_ended=time.time())
        # Tune swallows an exception raised here ("Error stopping trial"): say what happened instead
        try:
            path = results.write_record(self.sweep_dir, rec)
        except OSError as e:
            print(f"error: the record of {c.cell} ({c.phase}, {rec.status}) could not be written: {e}; "
                  f"this trial runs again when the folder is writable and the sweep resumed", file=sys.stderr, flush=True)
            self.unwritten.append(f"{c.cell} {c.phase}")
            return
        self.written += 1
        try:
            if self.on_written:
                self.on_written(path)
            if self.metrics:
                self.metrics.trial_done(c, rec)
        except Exception as e:  # noqa: BLE001 -- the record is on disk; a mirror or the dashboard failing loses nothing
            print(f"warning: after writing {path}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        self.progress.line(rec, seconds, trial.trial_id)
        self.history.pop(trial.trial_id, None)
        self.started.pop(trial.trial_id, None)
        self.shown.pop(trial.trial_id, None)
        forget_results(trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        if "record" in last:
            rec = load(Record, json.loads(last["record"]))  # JSON: Ray's edge
        elif trial.trial_id in self.pruned:  # stopped by the pruner before its final report
            history = self.history.get(trial.trial_id, [])
            rec = bare_record(config_of(spec_of(trial)), "pruned", history=history,
                               extra={"pruned_after_epoch": len(history)})
        else:  # stopped because the sweep was interrupted: no record, so a resume runs it again
            return
        self._write(trial, rec)

    def on_trial_error(self, iteration, trials, trial, **info):
        """The Tune trial itself died (its process, not the method): Ray's error from the trial's
        local staging copy (the synced copy may not be there yet), else from the pickled exception."""
        message = _staged_error(trial)
        rec = bare_record(config_of(spec_of(trial)), "failed", history=self.history.get(trial.trial_id, []),
                           error=message.splitlines()[-1][:600] if message else "trial process died without an error from Ray",
                           extra={"traceback": "\n".join((message or "").splitlines()[-30:])})
        self._write(trial, rec)


# What Tune's own end of a run (its ResultGrid, the trackers' last step) reads of a finished trial
_KEPT = ("epoch", "dev_accuracy", "training_iteration", "done", "trial_id", "time_total_s")


# What the sweep's callbacks and trackers read of a finished trial's config (its record holds the rest)
_CONFIG_KEPT = ("cell", "phase", "trial_key", "searched", "sweep")


def forget_results(trial) -> None:
    """Tune keeps every Trial object until the sweep ends, each with its last result (the record's
    text and a copy of the trial's config inside), running statistics of every numeric key, its
    config three times (resolved, unresolved, flattened) and a cached pretty-printed JSON of it all
    for Tune's own restore, which the sweep never uses (`--resume` reads records). Once the record
    is on disk the searcher and the scheduler have had the result and nothing reads the rest: keep a
    few keys, so the driver stays flat over thousands of trials. Assigning (not mutating) the
    metadata's fields drops Tune's cached JSON of them; the trial's own is dropped by name."""
    meta = trial.run_metadata
    meta.last_result = {k: v for k, v in (meta.last_result or {}).items() if k in _KEPT}
    meta.metric_analysis, meta.metric_n_steps = {}, {}
    slim = {k: v for k, v in (trial.config or {}).items() if k in _CONFIG_KEPT}
    trial.config = slim
    if hasattr(trial, "_Trial__unresolved_config"):  # Tune's copy from before placeholders were resolved
        trial._Trial__unresolved_config = slim
    if isinstance(getattr(trial, "evaluated_params", None), dict):  # flattened; TensorBoard's hparams read the searched
        trial.evaluated_params = {k: v for k, v in trial.evaluated_params.items() if k.startswith("searched")}
    if hasattr(trial, "invalidate_json_state"):
        trial.invalidate_json_state()


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
