"""The sweep on Ray with faults injected and the machinery around trials: a worker killed mid-trial,
a trial whose resources are held by someone else, a cell that fails at run time, two-worker trials,
--max-trials and Ctrl-C, tracking, serving alone, and the dashboard's metrics. Each waits on files
and processes, bounded; nothing sleeps to synchronise."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweeps import METRICS, poll, records, sweep

pytestmark = pytest.mark.sweep
ray = pytest.importorskip("ray")


def _parent(pid):
    stat = (Path("/proc") / str(pid) / "stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])  # the field after the state; the name may hold spaces


def _worker_pids(root):
    """RayTrainWorker processes descended from `root` (the sweep's own Ray instance): never another
    sweep's workers running on the same machine."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if b"RayTrainWorker" not in (d / "cmdline").read_bytes():
                    continue
                pid = int(d.name)
                while pid > 1 and pid != root:
                    pid = _parent(pid)
            except (OSError, ValueError, IndexError):
                continue
            if pid == root:
                pids.append(int(d.name))
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker through /proc")
def test_a_worker_killed_mid_trial_is_retried_and_recorded_once(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--results", str(tmp_path), "--space", "smoke",
                             "--set", "methods={icl: [none]}", "--set", "search={}", "--set", "data_seeds=[0]",
                             "--set", "resources.in_process=false",  # a Ray Train worker group, which retries its worker
                             "--name", "killed_worker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pid = poll(lambda: _worker_pids(proc.pid), 300, "a Ray Train worker")[0]
        os.kill(pid, signal.SIGKILL)
        poll(lambda: [p for p in _worker_pids(proc.pid) if p != pid], 300, "a new worker (Ray Train's retry)")
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    recs = list(records(tmp_path / "killed_worker").values())
    assert len(recs) == 1 and recs[0]["status"] == "completed"
    assert len([ln for ln in out.splitlines() if ln.startswith("[")]) == 1


def test_a_trial_whose_resources_are_held_fails_with_the_reason_and_the_sweep_goes_on(cluster, tmp_path):
    from ray.util.placement_group import placement_group, remove_placement_group
    holder = placement_group([{"CPU": 2}], name="someone-else")
    ray.get(holder.ready(), timeout=60)
    try:
        r = sweep(tmp_path, "--space", "smoke", "--address", cluster, "--set", "methods={icl: [none]}", "--set", "search={}",
                  "--set", "shots=[0, 8]", "--set", "data_seeds=[0]", "--set", "worker_start_timeout_s=5",
                  "--set", "resources.in_process=false",  # a worker group, whose start is bounded
                  "--set", "max_start_failures=1", "--name", "held", timeout=600)
    finally:
        remove_placement_group(holder)
    assert r.returncode == 1, r.stderr[-3000:]
    recs = list(records(tmp_path / "held").values())
    assert len(recs) == 2 and all(rec["status"] == "failed" for rec in recs)  # both tried, neither hangs
    assert all("did not start in 5 s" in rec["error"] and "someone-else" in rec["error"] for rec in recs)
    assert "rte/icl/opt/0shot" in r.stderr and "did not start" in r.stderr


def test_a_cell_that_fails_at_run_time_is_recorded_with_its_error_and_the_sweep_exits_1(cluster, tmp_path):
    r = sweep(tmp_path, "--space", "smoke", "--address", cluster, "--set", "methods={icl: [none]}", "--set", "search={}", "--set", "shots=[0, 8]",
              "--set", "data_seeds=[0]", "--set", "fixed.max_context=64", "--set", "fixed.context_fit=fail", "--name", "failing")
    assert r.returncode == 1, r.stderr[-3000:]
    recs = {rec["shots"]: rec for rec in records(tmp_path / "failing").values()}
    assert recs[0]["status"] == "completed"
    assert recs[8]["status"] == "failed" and recs[8]["error"] and "unknown error" not in recs[8]["error"]
    assert "rte/icl/opt/8shot: 0/1 replicates completed" in r.stderr
    assert "error in 1 trial(s), first rte/icl/opt/8shot (replicate, seed 0):\n  " + recs[8]["error"] in r.stderr


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two CPUs")
def test_two_worker_trials_train_data_parallel_and_shard_evaluation(cluster, tmp_path):
    r = sweep(tmp_path, "--space", "smoke", "--address", cluster, "--set", "methods={pbft: [lora]}", "--set", "budget=1",
              "--set", "data_seeds=[0]", "--set", "fixed.train.epochs=2", "--set", "resources.workers=2",
              "--name", "two_workers")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = list(records(tmp_path / "two_workers").values())
    assert len(recs) == 2 and all(rec["status"] == "completed" for rec in recs)
    assert all(rec["resources"]["ranks"] == 2 for rec in recs)
    replicate = next(rec for rec in recs if rec["phase"] == "replicate")
    assert replicate["metrics"]["in_domain"]["n_scored"] == 40  # every example scored once across the two shards


def test_max_trials_stops_with_3_and_ctrl_c_with_130_both_keeping_records_and_pointing_to_resume(cluster, tmp_path):
    args = ["--space", "smoke", "--address", cluster, "--set", "methods={icl: [none]}", "--set", "search={}", "--set", "shots=[0, 8]",
            "--name", "stopped"]
    stopped = sweep(tmp_path, *args, "--max-trials", "1")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "stopped after 1 trials, as --max-trials 1 asked" in stopped.stderr and "interrupted" not in stopped.stderr
    assert len(records(tmp_path / "stopped")) == 1
    # the hint is the whole command, as pasted: this interpreter, every argument quoted, --resume, no --max-trials
    line = stopped.stderr.split("Continue with:\n", 1)[1].splitlines()[0].strip()
    assert line.endswith("--resume") and "--max-trials" not in line and "'methods={icl: [none]}'" in line
    # exec: the shell becomes the sweep, so Ctrl-C (SIGINT) reaches the sweep itself
    proc = subprocess.Popen(f"exec {line}", shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: len(list((tmp_path / "stopped" / "trials").glob("*.json"))) > 1, 600, "a second record")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert f"Continue with:\n  {line}" in err and "Tuner.restore" not in out + err
    assert "sweep interrupted" in err and 2 <= len(records(tmp_path / "stopped")) < 4


def _tensorboard_tags(folder):
    """Scalar tags in the TensorBoard event files under `folder` (TFRecord framing, Event protos)."""
    from tensorboardX.proto.event_pb2 import Event
    tags = set()
    for path in folder.rglob("events.out.tfevents.*"):
        data, i = path.read_bytes(), 0
        while i + 12 <= len(data):
            n = int.from_bytes(data[i:i + 8], "little")
            tags |= {v.tag for v in Event.FromString(data[i + 12:i + 12 + n]).summary.value}
            i += 12 + n + 4
    return tags


def test_tracking_logs_every_trial_to_mlflow_wandb_and_tensorboard(cluster, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # the driver passes it to the logging actors
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this test's own client; the sweep sets it itself
    run = sweep(tmp_path, "--space", "smoke", "--address", cluster, "--set", "data_seeds=[0]", "--set", "budget=1",
                "--track", "mlflow", "--track", "wandb", "--track", "tensorboard")
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "smoke"
    recs = records(folder)
    assert len(recs) == 3  # one search trial, two replicates
    client = mlflow.tracking.MlflowClient(tracking_uri=(folder / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    by_key = {r.data.params["trial_key"]: r for r in runs}
    assert set(by_key) == {r["trial_key"] for r in recs.values()}
    for rec in recs.values():
        logged = by_key[rec["trial_key"]]
        assert "dev_accuracy" in logged.data.metrics  # per epoch, through Ray's callback
        if rec["phase"] == "replicate":
            assert logged.data.metrics["final/in_domain_accuracy"] == pytest.approx(rec["metrics"]["in_domain"]["accuracy"])
            assert logged.data.metrics["final/serve_ms_per_query"] == pytest.approx(rec["resources"]["serving"]["ms_per_query"])
        artifact = client.download_artifacts(logged.info.run_id, "record.json", str(tmp_path / rec["trial_key"]))
        assert json.loads(Path(artifact).read_text()) == rec
    offline = sorted(folder.glob("ray/*/*/wandb/offline-run-*"))
    assert len(offline) == 3 and all(list(d.glob("*.wandb")) for d in offline)
    tags = _tensorboard_tags(folder / "ray")
    assert {"ray/tune/dev_accuracy", "final/in_domain_accuracy", "final/serve_ms_per_query"} <= tags, sorted(tags)


def test_serve_phases_run_alone_while_trials_run_two_at_a_time(cluster, tmp_path):
    # the module's Ray instance whole: what earlier tests here started has ended
    poll(lambda: ray.available_resources().get("CPU", 0) >= 2, 120, "two free CPUs on the module's Ray instance")
    r = sweep(tmp_path, "--space", "smoke", "--address", cluster, "--set", "search={}", "--set", "max_concurrent_trials=2",
              "--set", "fixed.train.epochs=2", "--name", "alone")
    assert r.returncode == 0, r.stderr[-3000:]
    recs = list(records(tmp_path / "alone").values())
    assert len(recs) == 4 and all(rec["resources"]["serving"]["exclusive"] for rec in recs)
    spans = {rec["trial_key"]: [(name, t0, t1) for name, ph in rec["resources"]["phases"].items()
                                for t0, t1 in ph.get("wall", [])] for rec in recs}
    for rec in recs:
        (s0, s1), = rec["resources"]["phases"]["serve"]["wall"]
        assert s0 <= rec["resources"]["serving"]["start"] <= rec["resources"]["serving"]["end"] <= s1
        for other, phases in spans.items():
            if other != rec["trial_key"]:
                clash = [(name, t0, t1) for name, t0, t1 in phases if t0 < s1 and s0 < t1]
                assert not clash, (rec["cell"], rec["data_seed"], clash)
    # two trials were alive at once, from the trial's start to the driver's hearing of its end: the methods'
    # own phases last under a second here, so two trials' phases may by chance not overlap
    lives = sorted((rec["resources"]["timeline"]["trial_started"], rec["resources"]["timeline"]["driver_ended"])
                   for rec in recs)
    assert any(b[0] < a[1] for a, b in zip(lives, lives[1:])), lives


def _scrape(port):
    import urllib.request
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def test_the_sweeps_metrics_reach_rays_prometheus_export(cluster, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--results", str(tmp_path), "--space", "smoke",
                             "--address", cluster, "--set", "search={}", "--set", "data_seeds=[0]", "--name", "watched",
                             "--set", "fixed.train.epochs=1500"],  # a PBFT trial of half a minute: time to scrape it running
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def finished_lines():  # Ray exports application metrics with its own prefix: ray_fewshot_...
        return [ln for ln in _scrape(METRICS["port"]).splitlines() if ln.startswith("ray_fewshot_trials_finished")
                and 'sweep="watched"' in ln and 'status="completed"' in ln]

    def running_now():  # mid-trial: the running count is there and right, not dropped out or 0
        return [float(ln.rsplit(" ", 1)[1]) for ln in _scrape(METRICS["port"]).splitlines()
                if ln.startswith("ray_fewshot_trials_running") and 'sweep="watched"' in ln]

    try:
        seen = poll(lambda: [v for v in running_now() if v >= 1], 600, "a running trial in Ray's export")
        assert seen[0] >= 1
        lines = poll(finished_lines, 600, "the sweep's finished-trial counter in Ray's export")
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert 'cell="rte/' in lines[0] and float(lines[0].rsplit(" ", 1)[1]) >= 1
    assert any(ln.startswith("ray_fewshot_trial_dev_accuracy") for ln in _scrape(METRICS["port"]).splitlines())


def test_a_second_sweep_of_one_name_in_one_ray_session_finds_its_gate(cluster):
    """Two sweeps named alike in one Ray session (a benchmark, a notebook) share the gate actor: the second
    start must not drop the owner's handle, which would end the actor under the first one's trials."""
    from orchestrator.engine import gate
    for _ in range(2):
        name = gate.start("twice")
    actor = ray.get_actor(name, namespace=gate.NAMESPACE)
    assert ray.get(actor.ping.remote())
