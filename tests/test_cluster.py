"""The cluster path: a worker that would read other data fails naming both fingerprints; fixtures
rebuilt where a node lacks them; worker groups checked against the nodes they can use; a sweep
whose trials run on a second node that cannot see the results folder; results at a storage URI,
resumed with failed trials retried; the sweep's metrics scraped from Ray's Prometheus export."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sweeps import RAY, free_port, poll, stop_session, token_env

from orchestrator.engine import cluster
from orchestrator.planning import identity, plan, preflight
from orchestrator.planning.preflight import model_identity
from orchestrator.space import load_space
from trainers.config import from_dict
from trainers.data import synthetic
from trainers.runtime.models import load_config
from trainers.data.tasks import load_task


def sweep(*args, timeout=900, env=None):
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def records(folder):
    return [json.loads(p.read_text()) for p in sorted((Path(folder) / "trials").glob("*.json"))]


def test_a_worker_reading_other_data_fails_naming_its_node_and_both_fingerprints(tmp_path, tiny_opt):
    data = synthetic.write_data(tmp_path / "data")
    run = from_dict({"task": "rte", "model": tiny_opt, "data_dir": str(data)})
    fingerprints = load_task("rte", str(data)).fingerprints
    planned = {"data": dict(fingerprints), "model": model_identity(tiny_opt, load_config(tiny_opt))}
    identity.check(run, planned)  # the same copy: nothing to say
    path = data / "glue" / "rte" / "train.jsonl"
    path.write_text(path.read_text().replace("a", "b", 1))  # another copy at the same path on this "node"
    load_task.__globals__["_read_local"].cache_clear()
    with pytest.raises(identity.IdentityError) as e:
        identity.check(run, planned)
    message = str(e.value)
    assert socket.gethostname() in message and "glue/rte/train.jsonl" in message
    assert fingerprints["glue/rte/train.jsonl"] in message  # the plan's ...
    assert load_task("rte", str(data)).fingerprints["glue/rte/train.jsonl"] in message  # ... and this worker's
    with pytest.raises(identity.IdentityError, match=r"model .* differs from the plan's on .*: local:"):
        identity.check(run, {"model": "local:not-this-one"})


def test_fixtures_are_rebuilt_where_a_node_lacks_them_with_the_same_identity(tmp_path):
    here = synthetic.make_model(tmp_path / "driver" / "opt", "opt")
    there = tmp_path / "node" / "opt"
    identity.ensure_fixtures({"models": [[str(there), "opt"]], "data": str(tmp_path / "node" / "data")})
    assert model_identity(str(there), load_config(str(there))) == model_identity(str(here), load_config(str(here)))
    assert (tmp_path / "node" / "data" / "glue").is_dir()


def test_worker_groups_are_checked_against_the_nodes_they_can_use(tmp_path):
    space = load_space("smoke", ["resources={workers: 2, cpus_per_worker: 4}"])
    small = [{"CPU": 2.0, "GPU": 0.0, "gpu_memory_gb": None, "count": 1}] * 3  # 6 CPUs, but no node holds 4
    with pytest.raises(preflight.PreflightError, match=r"2 worker\(s\) x 4 CPU / 0 GPU fit no set of nodes"):
        preflight.check_cluster(space, small, [], "the cluster")
    big_type = [{"CPU": 8.0, "GPU": 0.0, "gpu_memory_gb": None, "count": 2, "type": "cpu.large"}]
    wait = preflight.check_cluster(space, small, big_type, "the cluster")  # fits once the autoscaler starts one
    assert wait == [{"CPU": 4}, {"CPU": 4}]
    assert preflight.check_cluster(space, small + big_type[:1], [], "the cluster") == []
    r = plan.resources(space, plan.cells(space)[0], False)
    assert cluster.fits(r, [{"CPU": 4, "GPU": 0, "count": 2}]) and not cluster.fits(r, [{"CPU": 4, "GPU": 0, "count": 1}])


def test_gpu_memory_and_node_types_come_from_the_cluster_file(tmp_path):
    path = tmp_path / "ray_bootstrap_config.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "cluster-aws.yaml", path)
    types = cluster.node_types(path)
    assert {t["type"] for t in types} == {"gpu.small", "gpu.large"}  # the head runs no trial
    assert cluster.gpu_memory_gb(types) == 24 and max(t["GPU"] for t in types) == 8
    assert cluster._memory({"accelerator_type:H100": 1}) == 80


@pytest.fixture
def two_nodes(tmp_path):
    """A head with no CPUs and a second raylet, in its own mount namespace, that runs every trial and
    cannot see `tmp_path / "results"` (a tmpfs hides it there). Both in sessions of their own, so
    tearing them down touches no other Ray instance on the machine."""
    if not RAY or os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to hide the results folder from the second node")
    results = tmp_path / "results"
    results.mkdir()
    port = free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_AUTH_MODE": "token",
           **token_env(tmp_path)}
    head = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=true",
                             f"--dashboard-port={free_port()}", f"--temp-dir={ray_tmp}", "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    hide = f"mount -t tmpfs tmpfs {results} && exec {RAY} start --address=127.0.0.1:{port} --num-cpus=2 --block"
    worker = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", hide], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the second node has joined when the cluster counts its CPUs
            out = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{port}', "
                                  "logging_level='ERROR'); print(ray.cluster_resources().get('CPU', 0))"],
                                 capture_output=True, text=True, env=env, timeout=60)
            if out.stdout.strip().splitlines()[-1:] == ["2.0"]:
                break
            assert head.poll() is None, "the head node did not start"
            time.sleep(1)
        yield f"127.0.0.1:{port}", results, env, worker.pid  # the second node's session id
    finally:
        stop_session(worker)
        stop_session(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_trials_on_a_node_that_cannot_see_the_results_folder_complete(two_nodes):
    address, results, env, _ = two_nodes
    r = sweep("--space", "smoke", "--address", address, "--results", str(results), "--set", "search={}",
              "--set", "data_seeds=[0]", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = records(results / "smoke")
    assert len(recs) == 2 and all(rec["status"] == "completed" for rec in recs)
    assert all(rec["env"]["host"] and rec["resources"]["serving"]["exclusive"] for rec in recs)


def _session_pids(sid: int, name: str) -> list[int]:
    """PIDs of the processes called `name` in session `sid` (a `ray start` of this test's own)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid=,comm="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines() if len(line.split(None, 2)) == 3]
    return [int(p) for p, s, c in rows if int(s) == sid and c.strip() == name]


def test_a_lost_node_ends_the_sweep_after_its_bound_naming_it_and_resume_is_offered(two_nodes):
    """The node that runs every trial dies (its raylet killed): the heartbeat says what the trials wait
    for, and after stall_timeout_s the sweep ends with exit 1, the lost node named and the command
    that resumes, instead of waiting for ever."""
    address, results, env, worker_session = two_nodes
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator", "sweep", "--space", "smoke", "--address", address,
                             "--results", str(results), "--set", "search={}", "--set", "data_seeds=[0, 1]",
                             "--set", "stall_timeout_s=20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**env, "FEWSHOT_HEARTBEAT_S": "1"})
    try:
        for line in proc.stdout:  # a trial runs on the second node (the head has no CPU)
            if " running" in line and "elapsed" in line:
                break
        raylets = _session_pids(worker_session, "raylet")
        assert raylets, "the second node's raylet was not found"
        os.kill(raylets[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 1, err[-3000:]
    assert "waiting and none running" in out and "they wait for:" in out
    assert "the sweep stopped waiting:" in err and "node(s) lost" in err and "Traceback" not in err
    assert "--resume" in err.strip().splitlines()[-1]


def test_results_at_a_uri_are_mirrored_and_a_resume_retries_failed_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the staging folder lives under it
    uri = f"file://{tmp_path / 'bucket'}"
    args = ["--space", "smoke", "--results", uri, "--set", "search={}", "--set", "data_seeds=[0]"]
    first = sweep(*args, env={"HOME": str(tmp_path / "home")})
    assert first.returncode == 0, first.stderr[-3000:]
    remote = tmp_path / "bucket" / "smoke"
    recs = records(remote)
    assert len(recs) == 2 and (remote / "summary.md").exists() and (remote / "report" / "report.md").exists()
    # a lost node: one trial's record says failed; the staging copy is gone (another machine resumes)
    victim = next(p for p in sorted((remote / "trials").glob("*.json")))
    rec = json.loads(victim.read_text())
    victim.write_text(json.dumps({**rec, "status": "failed", "error": "ActorDiedError: the node was lost"}))
    shutil.rmtree(tmp_path / "home")
    again = sweep(*args, "--resume", env={"HOME": str(tmp_path / "home")})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "retrying 1 failed trial(s) of the earlier run" in again.stdout and "read the sweep's files from" in again.stdout
    assert json.loads(victim.read_text())["status"] == "completed"
    assert len(list((remote / "trials" / "retried").glob("*.json"))) == 1
    summary = json.loads((remote / "summary.json").read_text())
    retried = [c["retried"] for c in summary["cells"] if c["retried"]["trials"]]
    assert retried == [{"trials": 1, "now": {"completed": 1}}]


def test_a_driver_without_ray_auth_mode_joins_a_token_cluster_when_it_has_thetoken_env(tmp_path):
    """`ray start --head` turns token authentication on; a driver started without RAY_AUTH_MODE used to
    retry for half a minute and fail with a traceback. It now asks the GCS, finds it wants a token,
    and uses the one this machine has (the head's token file: one machine here)."""
    if not RAY:
        pytest.skip("needs the ray command")
    port, ray_tmp = free_port(), tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}, **token_env(tmp_path)}
    proc = subprocess.Popen([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                             f"--temp-dir={ray_tmp}", "--block"], env={**env, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        poll(lambda: subprocess.run([RAY, "status", f"--address=127.0.0.1:{port}"], capture_output=True,
                                    env={**env, "RAY_AUTH_MODE": "token"}).returncode == 0, 120, "the head starting")
        r = sweep("--space", "smoke", "--address", f"127.0.0.1:{port}", "--results", str(tmp_path), "--set", "search={}",
                  "--set", "data_seeds=[0]", env={**env, "RAY_TMPDIR": ray_tmp})
        assert r.returncode == 0 and "InvalidAuthToken" not in r.stderr, r.stderr[-3000:]
        assert len(records(tmp_path / "smoke")) == 2
    finally:
        stop_session(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_gpu_space_on_a_cluster_without_gpus_is_refused_as_on_one_machine():
    import dataclasses
    space = load_space("smoke", ["resources.gpus_per_worker=1"])
    cpus = [{"CPU": 8.0, "GPU": 0.0, "gpu_memory_gb": None, "count": 2}]
    with pytest.raises(preflight.PreflightError, match=r"ask\(s\) for 1 GPU per worker but the cluster has none; add --allow-cpu"):
        preflight.check_cluster(space, cpus, [], "the cluster")
    assert preflight.check_cluster(dataclasses.replace(space, allow_cpu=True), cpus, [], "the cluster") == []
    gpu_type = [{"CPU": 8.0, "GPU": 1.0, "gpu_memory_gb": 80.0, "count": 1, "type": "gpu"}]  # the autoscaler may add one
    assert preflight.check_cluster(space, cpus, gpu_type, "the cluster") == [{"CPU": 1, "GPU": 1}]


def test_a_local_models_identity_covers_every_byte_and_is_hashed_once(tmp_path, monkeypatch):
    from orchestrator.planning import identity
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "cache" / "data"))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "opt"}')
    weights = bytearray(range(256)) * (6 * 4096)  # 6 MiB: the middle lies beyond a first and last MiB
    (folder / "model.safetensors").write_bytes(bytes(weights))
    before = identity.model_identity(str(folder), None)
    weights[3 << 20] ^= 0xFF  # one byte in the middle, size unchanged (a layer zeroed in place)
    (folder / "model.safetensors").write_bytes(bytes(weights))
    after = identity.model_identity(str(folder), None)
    assert after != before
    cached = json.loads((tmp_path / "cache" / "file_hashes.json").read_text())
    assert any(k.startswith(str((folder / "model.safetensors").resolve())) for k in cached)
    monkeypatch.setattr(identity, "CHUNK", 0)  # a read now would hash nothing: the same identity means the cache answered
    assert identity.model_identity(str(folder), None) == after
