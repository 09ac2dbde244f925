"""Sweeps submitted to a cluster as Ray jobs: `orchestrator submit`, and a hand-written `ray job submit`.

    python -m pytest -q tests/test_jobs.py
"""
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from sweeps import RAY, free_port, poll, records, stop_session, token_env

from trainers.records import git_commit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node cluster as the cluster files start one: token authentication on, and the environment
    Ray runs from first on PATH (so a job's `python` is that environment's). Its own job agent port (a
    second Ray instance on the host, the other test process's, holds Ray's default one)."""
    if not RAY:
        pytest.skip("needs the ray command")
    tmp = tmp_path_factory.mktemp("head")
    dashboard, ray_tmp = free_port(), tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_AUTH_MODE": "token", **token_env(tmp),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([RAY, "start", "--head", f"--port={free_port()}", "--num-cpus=2", "--include-dashboard=true",
                             f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={free_port()}",
                             f"--temp-dir={ray_tmp}", "--block"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    headers = {"Authorization": f"Bearer {Path(env['RAY_AUTH_TOKEN_PATH']).read_text()}"}
    try:
        poll(lambda: _ready(url, headers), 180, "the head's job agent running a job")
        yield url, headers, env["RAY_AUTH_TOKEN_PATH"]
    finally:
        stop_session(proc)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _ready(url, headers) -> bool:
    from ray.job_submission import JobSubmissionClient
    try:
        client = JobSubmissionClient(url, headers=headers)
        job = client.submit_job(entrypoint="true")
    except (ConnectionError, RuntimeError):  # refused connections, "No available agent"
        return False
    return poll(lambda: client.get_job_status(job).is_terminal(), 120, "a trivial job") is not None


def _submit(url, token_path, *args):
    """The command a user types: no RAY_AUTH_MODE, the token where this machine keeps it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    return subprocess.run([sys.executable, "-m", "orchestrator", "submit", "--to", url, *args], capture_output=True,
                          text=True, timeout=900, env={**env, "RAY_AUTH_TOKEN_PATH": token_path}, cwd=REPO)


def test_a_submitted_sweep_keeps_its_commit_and_the_job_and_command_end_with_its_exit(head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient
    url, headers, token_path = head
    ok = _submit(url, token_path, "--space", "smoke", "--results", str(tmp_path), "--name", "submitted",
                 "--set", "search={}", "--set", "data_seeds=[0]")
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert "submitted job submitted-" in ok.stdout and "succeeded (exit 0)" in ok.stdout
    recs = records(tmp_path / "submitted")
    assert len(recs) == 2 and {rec["env"]["git_commit"] for rec in recs.values()} == {git_commit()}  # without passing it
    client = JobSubmissionClient(url, headers=headers)
    job = next(j for j in client.list_jobs() if (j.submission_id or "").startswith("submitted-"))
    assert job.metadata["fewshot_sweep"] == "submitted" and job.status == JobStatus.SUCCEEDED

    bad = _submit(url, token_path, "--space", "smoke", "--results", str(tmp_path), "--name", "nodata",
                  "--data-dir", str(tmp_path / "not-on-the-cluster"), "--set", "search={}")
    assert bad.returncode == 2, bad.stdout[-3000:] + bad.stderr[-3000:]
    assert "error: " in bad.stdout and "failed (exit 2)" in bad.stdout  # the job's own line streams here
    job = next(j for j in client.list_jobs() if (j.submission_id or "").startswith("nodata-"))
    assert job.status == JobStatus.FAILED and job.driver_exit_code == 2


def test_a_submit_refused_here_sends_nothing(head, tmp_path):
    url, _, token_path = head
    r = _submit(url, token_path, "--space", "smoke", "--results", "relative")
    assert r.returncode == 2 and "give an absolute folder" in r.stderr and "submitted job" not in r.stdout
    no_token = _submit(url, str(tmp_path / "missing"), "--space", "smoke", "--results", str(tmp_path))
    assert no_token.returncode == 2 and "wants a token" in no_token.stderr, no_token.stderr[-2000:]


def test_no_follow_returns_once_submitted_with_the_command_that_follows_it(head, tmp_path):
    url, headers, token_path = head
    r = _submit(url, token_path, "--no-follow", "--space", "smoke", "--results", str(tmp_path), "--name", "quick",
                "--data-dir", str(tmp_path / "absent"))  # the job itself ends at once (exit 2): nothing lingers
    assert r.returncode == 0 and "its log follows" not in r.stdout, r.stdout + r.stderr
    follow = r.stdout.strip().splitlines()[-1]
    assert follow.startswith("follow it: RAY_AUTH_MODE=token ray job logs -f quick-") and url in follow


def test_a_hand_written_job_that_sets_the_sweeps_variables_itself_runs_and_keeps_its_commit(head, tmp_path):
    """The guide's `ray job submit --runtime-env-json '{"env_vars": {"FEWSHOT_GIT_COMMIT": ...}}'`: Ray refuses
    a ray.init that names a job's variable again, so the driver must leave the job's own to the job."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    from orchestrator.engine.ray_session import EXCLUDES
    url, headers, _ = head
    client = JobSubmissionClient(url, headers=headers)
    job = client.submit_job(
        entrypoint=f"python -m orchestrator sweep --space smoke --results {tmp_path} --name submitted "
                   "--set 'search={}' --set 'data_seeds=[0]'",
        runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES,
                     "env_vars": {"FEWSHOT_GIT_COMMIT": "feedc0de", "FEWSHOT_PROGRESS": "0"}})
    status = poll(lambda: client.get_job_status(job).is_terminal() and client.get_job_status(job), 600,
                  "the submitted sweep's end")
    assert status == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    recs = records(tmp_path / "submitted")
    assert len(recs) == 2 and {rec["env"]["git_commit"] for rec in recs.values()} == {"feedc0de"}
