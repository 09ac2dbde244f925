"""The sweep's terminal: trial lines that fit 100 columns, heartbeats while nothing finishes, and
an ETA from each kind of trial's own duration."""
from collections import Counter

import pytest

from orchestrator.engine.callbacks import Progress, kind
from trainers.contract import Record, load

PBFT, ICL = "rte/pbft+lora/smollm2-135m/16shot", "rte/icl/smollm2-135m/16shot"


@pytest.fixture(autouse=True)
def trials_only(monkeypatch):
    """The arithmetic below is the trials' own; the tables and report after them are tested apart."""
    monkeypatch.setattr(Progress, "FINISH_S", 0.0)


def record(cell, phase="search", status="completed", error=None, seed=0):
    return load(Record, {"cell": cell, "phase": phase, "status": status, "data_seed": seed, "error": error,
                         "searched": {"train.lr": 0.000188} if phase == "search" else {},
                         "history": [{"dev_accuracy": 0.531}], "metrics": {}})


def test_trial_lines_fit_the_width_even_with_long_cells_and_errors(capsys):
    p = Progress(Counter({kind("search", PBFT): 2}), slots=2, width=100)
    p.line(record("mnli_merge_neutral/pbft+bitfit/a-very-long-organisation-name/some-model-13b/32shot"), 95.0)
    p.line(record(PBFT, status="failed", error="ContextError: " + "the demonstrations do not fit; " * 10), 12.0)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line) <= 100 for line in lines)
    assert lines[0].startswith("[1/2] search ") and "lr=0.00019 1m35s" in lines[0]
    assert "FAILED" in lines[1] and "ContextError: the" in lines[1] and lines[1].endswith("…")


def test_eta_uses_each_kinds_own_duration_not_the_first_trial(capsys):
    p = Progress(Counter({kind("replicate", ICL): 4, kind("replicate", PBFT): 2}), slots=2, width=100)
    assert p.eta() == "ETA after the first trial"  # no plan given, nothing measured
    p.line(record(ICL, "replicate"), 30.0)  # ICL is quick ...
    assert p.eta() == "ETA 1m15s"  # ... and until a PBFT trial is seen, the ICL time stands in: (3 + 2) x 30 / 2
    p.line(record(PBFT, "replicate"), 300.0)  # ... PBFT is slow
    assert p.eta() == "ETA 3m15s"  # 3 ICL x 30 s + 1 PBFT x 300 s, over 2 slots
    p.expect(Counter({kind("replicate", PBFT): 1}))
    assert p.total == 3 and p.eta() == "ETA 5m00s"  # one trial left uses one slot, not two


def test_before_any_trial_ends_the_eta_comes_from_the_plan_then_each_phase_from_its_own_trials(capsys, monkeypatch):
    monkeypatch.setattr(Progress, "GAP_S", 0.0)  # the gaps between trials have a test of their own
    planned = {kind("search", PBFT): 100.0, kind("replicate", PBFT): 200.0, kind("replicate", ICL): 50.0}
    p = Progress(Counter({kind("search", PBFT): 2, kind("replicate", PBFT): 2, kind("replicate", ICL): 2}), slots=2,
                 width=100, planned_seconds=planned)
    assert p.eta() == "ETA ~5m50s (planned)"  # (2 x 100 + 2 x 200 + 2 x 50) / 2
    p.started("t1", kind("search", PBFT))
    p.running["t1"] = (kind("search", PBFT), p.running["t1"][1] - 59.5)  # running for about a minute already
    assert p.eta() == "ETA ~5m20s (planned)"  # its 60 s are done
    p.line(record(PBFT), 150.0, "t1")  # took 1.5x its plan: the other search trial is now measured at 150 s ...
    assert "t1" not in p.running
    # ... a PBFT replicate is that measured training plus the 100 s of evaluation its plan adds; ICL's plan stands
    assert p.eta() == "ETA ~6m15s (planned)"  # (150 + 2 x (150 + 100) + 2 x 50) / 2
    p.line(record(ICL, "replicate"), 100.0)  # a replicate 2x its plan: the replicates' planned evaluation doubles too
    assert p.eta() == "ETA ~7m55s (planned)"  # (150 + 2 x (150 + 100 x 2) + 100 for the ICL one left) / 2


def test_an_overdue_trial_makes_the_eta_grow_as_time_passes_never_stand_still():
    p = Progress(Counter({kind("replicate", ICL): 3}), slots=1, width=100)
    p.line(record(ICL, "replicate"), 100.0)  # measured: 100 s a trial
    p.started("t2", kind("replicate", ICL))
    t0 = p.running["t2"][1]
    shown = [p.remaining(t0 + dt)[0] for dt in (10, 50, 89, 95, 150, 300)]
    # on time: the ETA falls as the running trial progresses
    assert shown[0] > shown[1] > shown[2]
    # overdue (past 90 % of its estimate): it grows with the time that passes, for it and its kind's next trial
    assert shown[3] < shown[4] < shown[5]
    assert all(b != a for a, b in zip(shown, shown[1:]))


def test_a_heartbeat_shows_every_running_trial_on_its_own_line(capsys):
    p = Progress(Counter({kind("search", PBFT): 3}), slots=2, width=100, heartbeat_s=0)
    p.heartbeat([(ICL, "replic s0", 20.0), (PBFT, "search s0 epoch 2/4", 75.0)])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(len(line) <= 100 for line in out)
    assert "0/3 done, 2 running" in out[0]
    assert "1m15s" in out[1] and "epoch 2/4" in out[1] and out[1].endswith(PBFT)  # the longest-running first
    assert "0m20s" in out[2] and out[2].endswith(ICL)
    many = Progress(Counter({kind("search", PBFT): 20}), slots=12, width=100, heartbeat_s=0)
    many.heartbeat([(f"{PBFT}-{i}", "search", float(i)) for i in range(12)])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 + Progress.MAX_SHOWN + 1 and out[-1].strip() == "… and 4 more" and out[1].endswith("-11")
    quiet = Progress(Counter({kind("search", PBFT): 3}), heartbeat_s=3600)
    quiet.heartbeat([(PBFT, "epoch 2/4", 75.0)])
    assert capsys.readouterr().out == ""


def test_the_record_writer_keeps_nothing_of_a_trial_once_its_record_is_written(tmp_path, capsys):
    """Tune keeps every trial object for the whole sweep: once a record is on disk, neither its text,
    nor the copy of the config in Tune's last result, nor Tune's running statistics of every metric
    (nor their cached JSON) may stay in the driver's memory, nor the writer's own per-trial state."""
    import json
    from types import SimpleNamespace

    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from orchestrator.engine.callbacks import RecordWriter
    from trainers.config import RunConfig
    from trainers.contract import dump
    from trainers.records import build_record

    run = json.dumps(RunConfig(method="icl", model="m").to_dict())  # as the driver packs it
    rec = build_record(RunConfig(method="icl", model="m"), "completed", resolved={}, history=[], metrics={})
    config = {"cell": ICL, "phase": "replicate", "trial_key": "k1", "identity": None, "searched": {}, "resources": {},
              "run": run}
    meta = _TrainingRunMetadata()  # Tune's own per-trial results holder
    meta.last_result = {"epoch": 1, "dev_accuracy": 0.5, "training_iteration": 2, "config": config,
                        "record": json.dumps(dump(rec))}
    for step, name in enumerate(("epoch", "dev_accuracy", "time_this_iter_s")):
        meta.update_metric(name, 0.5, step=step + 1)
    before = meta.get_json_state()  # cached, as Tune's experiment checkpoint leaves it
    trial = SimpleNamespace(trial_id="t1", run_metadata=meta, last_result=meta.last_result, config=config,
                            evaluated_params={"run": run, "searched/train.lr": 0.01, "cell": ICL})
    writer = RecordWriter("s", tmp_path, Progress(Counter({kind("replicate", ICL): 1}), width=100))
    writer.on_trial_start(0, [trial], trial)
    writer.on_trial_result(0, [trial], trial, {"epoch": 1, "dev_accuracy": 0.5})
    writer.on_trial_complete(0, [trial], trial)
    written = json.loads((tmp_path / "trials" / "k1.json").read_text())
    assert written["status"] == "completed" and written["trial_key"] == "k1"
    assert meta.last_result == {"epoch": 1, "dev_accuracy": 0.5, "training_iteration": 2}
    assert meta.metric_analysis == {} and meta.metric_n_steps == {}
    after = meta.get_json_state()
    assert '"record"' in before and '"record"' not in after and '"trial_key"' not in after and len(after) < len(before) / 4
    assert writer.history == {} and writer.started == {} and writer.written == 1
    # the trial's own config copies keep what the callbacks and trackers read at its end, not the run config
    assert trial.config == {"cell": ICL, "phase": "replicate", "trial_key": "k1", "searched": {}}
    assert trial.evaluated_params == {"searched/train.lr": 0.01}


def test_a_record_that_cannot_be_written_says_so_and_a_failing_mirror_loses_nothing(tmp_path, capsys, monkeypatch):
    """Tune swallows what a callback raises: the writer itself must say a record was not written
    (and not count it), and a mirror that fails after the record is on disk must not lose its count."""
    import json
    from types import SimpleNamespace

    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from orchestrator.analysis import results
    from orchestrator.engine.callbacks import RecordWriter
    from trainers.config import RunConfig
    from trainers.contract import dump
    from trainers.records import build_record

    def finished(key):
        rec = build_record(RunConfig(method="icl", model="m"), "completed", resolved={}, history=[], metrics={})
        config = {"cell": ICL, "phase": "replicate", "trial_key": key, "identity": None, "searched": {},
                  "resources": {}, "run": json.dumps({"method": "icl", "model": "m"})}
        meta = _TrainingRunMetadata()
        meta.last_result = {"record": json.dumps(dump(rec))}
        return SimpleNamespace(trial_id=key, last_result=meta.last_result, config=config, run_metadata=meta)

    def mirror_down(path):
        raise ConnectionError("bucket unreachable")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    writer = RecordWriter("s", tmp_path, Progress(Counter({kind("replicate", ICL): 2}), width=100), on_written=mirror_down)
    real_write = results.write_record
    monkeypatch.setattr(results, "write_record", disk_full)
    lost = finished("k1")
    writer.on_trial_start(0, [lost], lost)
    writer.on_trial_complete(0, [lost], lost)
    err = capsys.readouterr().err
    assert "could not be written" in err and "No space left" in err and "runs again" in err and writer.written == 0
    assert writer.unwritten == [f"{ICL} replicate"]  # the driver ends with exit 4 and the command that resumes
    monkeypatch.setattr(results, "write_record", real_write)
    kept = finished("k2")
    writer.on_trial_start(0, [kept], kept)
    writer.on_trial_complete(0, [kept], kept)
    assert "bucket unreachable" in capsys.readouterr().err and writer.written == 1
    assert json.loads((tmp_path / "trials" / "k2.json").read_text())["trial_key"] == "k2"


def test_trials_that_wait_with_none_running_are_shown_and_end_the_sweep_after_the_bound(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from orchestrator.engine import callbacks
    from orchestrator.engine.callbacks import RecordWriter, StopAfter
    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    monkeypatch.setattr(callbacks, "waiting_for", lambda pending: "node(s) lost: 10.0.0.2 (ab12cd34); 0 CPU / 0 GPU free")
    progress = Progress(Counter({kind("replicate", ICL): 2}), width=100, heartbeat_s=0)
    writer = RecordWriter("s", tmp_path, progress, stall_timeout_s=600)
    stop = StopAfter(progress, None)
    waiting = [SimpleNamespace(status="PENDING", trial_id="t1", config={"cell": ICL})]
    writer.on_step_end(0, waiting)
    clock[0] += 300
    writer.on_step_end(1, waiting)
    out = capsys.readouterr().out
    assert "1 waiting and none running" in out and "5m00s so far" in out
    assert "they wait for: node(s) lost: 10.0.0.2 (ab12cd34)" in " ".join(out.split())  # wrapped, never cut
    assert all(len(line) <= 100 for line in out.splitlines())
    assert not stop.stop_all()
    clock[0] += 301
    writer.on_step_end(2, waiting)
    assert stop.stop_all() and "waited 10m01s with none running: node(s) lost" in progress.stalled
    running = [SimpleNamespace(status="RUNNING", trial_id="t2", config={"cell": ICL})]
    progress.stalled, writer.started["t2"], writer.shown["t2"] = None, clock[0], ("replic s0", None)
    writer.on_step_end(3, running + waiting)  # something runs again: the wait starts over
    assert writer.waiting_since is None


def test_an_unseen_replicate_is_its_cells_measured_search_plus_what_the_plan_adds():
    planned = {kind("search", PBFT): 90.0, kind("replicate", PBFT): 150.0}  # the replicate adds 60 s of evaluation
    p = Progress(Counter({kind("search", PBFT): 1, kind("replicate", PBFT): 2}), slots=1, width=100, planned_seconds=planned)
    p.line(record(PBFT), 40.0)  # the search trial took 40 s, not 90: training is quicker than planned
    assert p.eta() == "ETA ~3m20s (planned)"  # 2 x (40 + 60), not 2 x 150 nor 2 x 150 x 40/90


def test_wall_time_between_trials_and_the_report_at_the_end_count_in_the_eta(monkeypatch):
    from orchestrator.engine import callbacks
    monkeypatch.setattr(Progress, "FINISH_S", 10.0)
    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    p = Progress(Counter({kind("replicate", ICL): 4}), slots=1, width=100)
    for i in range(2):  # two 2-second trials, each started 3 s after the last ended (Tune's scheduling)
        clock[0] += 3
        p.started(f"t{i}", kind("replicate", ICL))
        clock[0] += 2
        p.line(record(ICL, "replicate"), 2.0, f"t{i}")
    # from the first start: 7 s of wall for 4 s of trials, 1.5 s unaccounted per trial; 2 trials left
    assert p.remaining()[0] == pytest.approx(2 * 2.0 + 2 * 1.5 + 10.0)


def test_before_a_gap_between_trials_is_seen_the_eta_assumes_one(monkeypatch):
    """At the first trial's end no gap has been measured yet (the next trial has not started): the
    ETA assumes Progress.GAP_S a trial, then takes the sweep's own once a trial starts after one ended."""
    from orchestrator.engine import callbacks
    monkeypatch.setattr(Progress, "FINISH_S", 10.0)
    monkeypatch.setattr(Progress, "GAP_S", 2.5)
    clock = [100.0]
    monkeypatch.setattr(callbacks.time, "time", lambda: clock[0])
    p = Progress(Counter({kind("replicate", ICL): 4}), slots=1, width=100)
    p.started("t0", kind("replicate", ICL))
    clock[0] += 2
    p.line(record(ICL, "replicate"), 2.0, "t0")
    assert p.remaining()[0] == pytest.approx(3 * 2.0 + 3 * 2.5 + 10.0)  # not 3 x 2 + 10: the gaps are real
    clock[0] += 0.5  # Tune starts the next one quickly here: the measured gap replaces the assumed one
    p.started("t1", kind("replicate", ICL))
    assert p.remaining()[0] == pytest.approx(3 * 2.0 + 3 * 0.5 + 10.0)
