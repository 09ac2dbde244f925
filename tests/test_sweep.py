"""The sweep on Ray, end to end, with faults injected: the `smoke` space run whole on a Ray instance
this test module starts (so every other sweep here runs beside a second Ray instance, the case
that once hung), a driver killed with SIGKILL and resumed, a worker killed mid-trial, a moved
results folder with a corrupt record, a trial whose resources are held by someone else, and a
cell that fails at run time. Slow (Ray starts a worker group per trial): about 15 minutes.
Nothing sleeps to synchronise: the tests poll files and processes, each wait bounded."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.results import best_search_trials

pytestmark = pytest.mark.sweep
ray = pytest.importorskip("ray")
SMOKE_LR = "train.lr"
METRICS = {}  # the module's Ray instance exports Prometheus metrics on this port


def sweep(results, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--results", str(results), *args],
                          capture_output=True, text=True, timeout=timeout)


def records(folder):
    return {p.name: json.loads(p.read_text()) for p in sorted((folder / "trials").glob("*.json"))}


def poll(predicate, limit_s, what):
    """Wait for `predicate()` to hold, checking every 0.2 s, for at most `limit_s` seconds."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {limit_s} s")


def search_lrs(recs):
    return sorted(round(r["searched"][SMOKE_LR], 12) for r in recs.values() if r["phase"] == "search")


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance owned by this test process; sweeps reach it with --address. With its dashboard,
    as `ray start` has: Ray Train's placement-group cleaner asks the state API, which lives there."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        METRICS["port"] = s.getsockname()[1]
    ctx = ray.init(num_cpus=2, include_dashboard=True, dashboard_port=port, log_to_driver=False,
                   _metrics_export_port=METRICS["port"])
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def smoke(cluster, tmp_path_factory):
    """The whole smoke sweep, uninterrupted, on the module's Ray instance."""
    results = tmp_path_factory.mktemp("sweeps")
    run = sweep(results, "--space", "smoke", "--address", cluster)
    return {"run": run, "folder": results / "smoke", "records": records(results / "smoke")}


def test_smoke_sweep_searches_prunes_and_replicates(smoke):
    assert smoke["run"].returncode == 0, smoke["run"].stderr[-3000:]
    recs = list(smoke["records"].values())
    cells = {r["cell"] for r in recs}
    assert len(cells) == 2
    search = [r for r in recs if r["phase"] == "search"]
    assert len(search) == 4 and all(r["cell"].startswith("rte/pbft+lora") for r in search)
    assert len({r["searched"][SMOKE_LR] for r in search}) == 4  # Optuna proposed four learning rates
    pruned = [r for r in search if r["status"] == "pruned"]
    assert pruned and all(len(r["history"]) < 4 for r in pruned)  # stopped before the last epoch
    reps = [r for r in recs if r["phase"] == "replicate"]
    assert sorted((r["cell"], r["data_seed"]) for r in reps) == sorted((c, s) for c in cells for s in (0, 1))
    best = best_search_trials(recs)["rte/pbft+lora/opt/8shot"]  # best final dev accuracy, ties to the steadier
    assert all(r["searched"] == best["searched"] for r in reps if r["cell"] == best["cell"])
    pbft = {r["data_seed"]: r["seed"] for r in reps if r["cell"] == best["cell"]}
    assert len(set(pbft.values())) == 2  # each replicate trained from its own seed, derived from its data seed
    assert all(r["config"]["seed"] is None for r in recs)
    for r in reps:
        assert r["status"] == "completed" and r["metrics"]["in_domain"]["n_scored"] > 0 and "hans" in r["metrics"]["ood"]
        assert r["resources"]["peak_memory_mib"] > 0 and r["env"]["git_commit"] is not None
        assert r["config"]["final_eval"] is True and r["identity"]["model"].startswith("local:")


def test_pruned_trials_release_their_reservations(smoke, cluster):
    from ray.util import placement_group_table
    assert any(r["status"] == "pruned" for r in smoke["records"].values())
    states = [g["state"] for g in placement_group_table().values()]
    assert states and all(s == "REMOVED" for s in states), states


def test_optuna_study_holds_one_trial_per_tune_trial_in_its_true_state(smoke):
    import optuna
    from orchestrator.search import journal
    study = optuna.load_study(study_name="rte/pbft+lora/opt/8shot", storage=journal(smoke["folder"] / "optuna.journal"))
    states = sorted(t.state.name for t in study.trials)
    recs = [r for r in smoke["records"].values() if r["phase"] == "search"]
    assert states == sorted({"completed": "COMPLETE", "pruned": "PRUNED"}[r["status"]] for r in recs)


def test_smoke_sweep_writes_tables_and_summary(smoke):
    folder = smoke["folder"]
    table = pd.read_parquet(folder / "trials.parquet")
    assert len(table) == len(smoke["records"]) and (folder / "trials.csv").exists()
    summary = (folder / "summary.md").read_text()
    assert "rte/pbft+lora" in summary and "rte/icl" in summary and "± " in summary
    assert summary.startswith("# smoke · rte (OOD: hans) · opt · icl, pbft+lora · 8 shots · 2 data seeds\n")
    out = smoke["run"].stdout
    assert "\nsmoke · rte (OOD: hans)" in out and "| cell |" not in out  # the terminal gets a table, not Markdown
    assert "[8/8]" in out  # the progress total counted what ran
    assert all(len(line) <= 100 for line in out.splitlines() if line.startswith("["))
    saved = json.loads((folder / "summary.json").read_text())
    assert all(isinstance(c["in_domain_accuracy"]["mean"], float) and c["in_domain_accuracy"]["n"] == 2 for c in saved["cells"])


def test_smoke_sweep_ends_with_a_report_of_every_figure_its_axes_allow(smoke):
    report = smoke["folder"] / "report"
    assert f"report:  {report / 'report.md'}" in smoke["run"].stdout
    text = (report / "report.md").read_text()
    for fig in ("id_vs_ood_rte_hans", "cost_accuracy", "break_even", "hans_breakdown", "search"):
        assert (report / f"{fig}.png").stat().st_size > 0 and (report / f"{fig}.svg").exists(), fig
    assert "### Accuracy vs model size\n\nskipped: one model size per task in this sweep" in text
    assert "### Accuracy vs shots\n\nskipped: one shot count per task in this sweep" in text
    assert "pbft+lora on rte, opt, 8 shots" in text.split("\n\n")[1]  # the break-even sentence names the cell


def test_killed_driver_resumes_without_rerunning_and_proposes_the_same_trials(smoke, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--results", str(tmp_path), "--space", "smoke",
                             "--set", "data_seeds=[0]"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = tmp_path / "smoke"
    try:
        first = poll(lambda: sorted((folder / "trials").glob("*.json")), 600, "a first record")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    before = {p.name: p.read_text() for p in (folder / "trials").glob("*.json")}
    assert first and before
    resumed = sweep(tmp_path, "--space", "smoke", "--set", "data_seeds=[0]", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "was locked by a sweep that is gone" in resumed.stderr and "taking the lock over" in resumed.stderr
    after = records(folder)
    for name, text in before.items():  # untouched: not run again
        assert (folder / "trials" / name).read_text() == text
    ran = [ln for ln in resumed.stdout.splitlines() if ln.startswith("[")]
    assert len(ran) == len(after) - len(before) == 6 - len(before)
    assert search_lrs(after) == search_lrs(smoke["records"])  # the same four proposals as uninterrupted


def test_moved_results_folder_with_a_corrupt_record_reruns_only_that_trial(smoke, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(smoke["folder"], moved / "smoke", ignore=shutil.ignore_patterns("ray"))
    name, rec = next((n, r) for n, r in smoke["records"].items() if r["phase"] == "replicate")
    (moved / "smoke" / "trials" / name).write_text(json.dumps(rec)[:200])  # a truncated write
    summarize = subprocess.run([sys.executable, "-m", "orchestrator", "summarize", str(moved / "smoke")],
                               capture_output=True, text=True, timeout=120)
    assert summarize.returncode == 0 and name in summarize.stderr and "set aside" in summarize.stderr
    assert (moved / "smoke" / "trials" / "corrupt" / name).exists()
    r = sweep(moved, "--space", "smoke", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    ran = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(ran) == 1 and f" s{rec['data_seed']} " in ran[0]
    assert json.loads((moved / "smoke" / "trials" / name).read_text())["trial_key"] == rec["trial_key"]


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


def test_a_cell_that_fails_at_run_time_is_recorded_with_its_error_and_the_sweep_exits_1(tmp_path):
    r = sweep(tmp_path, "--space", "smoke", "--set", "methods={icl: [none]}", "--set", "search={}", "--set", "shots=[0, 8]",
              "--set", "data_seeds=[0]", "--set", "fixed.max_context=64", "--set", "fixed.context_fit=fail", "--name", "failing")
    assert r.returncode == 1, r.stderr[-3000:]
    recs = {rec["shots"]: rec for rec in records(tmp_path / "failing").values()}
    assert recs[0]["status"] == "completed"
    assert recs[8]["status"] == "failed" and recs[8]["error"] and "unknown error" not in recs[8]["error"]
    assert "rte/icl/opt/8shot: 0/1 replicates completed" in r.stderr
    assert "error in 1 trial(s), first rte/icl/opt/8shot (replicate, seed 0):\n  " + recs[8]["error"] in r.stderr


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two workers need two CPUs")
def test_two_worker_trials_train_data_parallel_and_shard_evaluation(tmp_path):
    r = sweep(tmp_path, "--space", "smoke", "--set", "methods={pbft: [lora]}", "--set", "budget=1",
              "--set", "data_seeds=[0]", "--set", "fixed.train.epochs=2", "--set", "resources.workers=2",
              "--name", "two_workers")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = list(records(tmp_path / "two_workers").values())
    assert len(recs) == 2 and all(rec["status"] == "completed" for rec in recs)
    assert all(rec["resources"]["ranks"] == 2 for rec in recs)
    replicate = next(rec for rec in recs if rec["phase"] == "replicate")
    assert replicate["metrics"]["in_domain"]["n_scored"] == 40  # every example scored once across the two shards


def test_max_trials_stops_with_3_and_ctrl_c_with_130_both_keeping_records_and_pointing_to_resume(tmp_path):
    args = ["--space", "smoke", "--set", "methods={icl: [none]}", "--set", "search={}", "--set", "shots=[0, 8]",
            "--name", "stopped"]
    stopped = sweep(tmp_path, *args, "--max-trials", "1")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "stopped after 1 trials, as --max-trials 1 asked" in stopped.stderr and "interrupted" not in stopped.stderr
    assert len(records(tmp_path / "stopped")) == 1
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--results", str(tmp_path), *args, "--resume"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        poll(lambda: len(list((tmp_path / "stopped" / "trials").glob("*.json"))) > 1, 600, "a second record")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert "Continue with: --resume" in err and "Tuner.restore" not in out + err
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
    starts = sorted((rec["resources"]["phases"]["load"]["wall"][0][0], rec["resources"]["phases"]["load"]["wall"][0][1])
                    for rec in recs)
    assert any(b[0] < a[1] for a, b in zip(starts, starts[1:])), starts  # two trials did run at once


def _scrape(port):
    import urllib.request
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return ""


def test_the_sweeps_metrics_reach_rays_prometheus_export(cluster, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--results", str(tmp_path), "--space", "smoke",
                             "--address", cluster, "--set", "search={}", "--set", "data_seeds=[0]", "--name", "watched"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    def finished_lines():  # Ray exports application metrics with its own prefix: ray_fewshot_...
        return [ln for ln in _scrape(METRICS["port"]).splitlines() if ln.startswith("ray_fewshot_trials_finished")
                and 'sweep="watched"' in ln and 'status="completed"' in ln]

    try:
        lines = poll(finished_lines, 600, "the sweep's finished-trial counter in Ray's export")
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert 'cell="rte/' in lines[0] and float(lines[0].rsplit(" ", 1)[1]) >= 1
    assert any(ln.startswith("ray_fewshot_trial_dev_accuracy") for ln in _scrape(METRICS["port"]).splitlines())
