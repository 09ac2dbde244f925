"""Run a sweep on a Ray cluster as a submitted job: this checkout's code and commit travel with it, its
log streams here, and this command (and the job's status on the dashboard) ends with the sweep's exit.

    python -m orchestrator submit --to http://localhost:8265 --space cd_vs_icl --results s3://BUCKET/results

The job's entrypoint is `python -m orchestrator sweep ...` with the same arguments; the cluster files
put the environment Ray runs in first on every node's PATH, so `python` is that environment's. The
token comes from this machine's usual places (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
import shlex
from pathlib import Path

from orchestrator import commands, exit_codes
from orchestrator.engine import storage
from orchestrator.space import SpaceError, load_space

DEFAULT_DASHBOARD = "http://localhost:8265"  # where `ray dashboard cluster.yaml` forwards the head's dashboard
# options of `sweep` that pass through to the job as they are (flags, then options with one value)
FLAGS = ("resume", "allow_cpu")
VALUED = ("data_dir", "name", "results", "max_trials", "prior")


def sweep_args(ns) -> list[str]:
    """The `sweep` arguments the job runs with: the ones given here, in a stable order."""
    args = ["--space", ns.space]
    for item in ns.overrides:
        args += ["--set", item]
    for key in VALUED:
        if getattr(ns, key) is not None:
            args += [f"--{key.replace('_', '-')}", str(getattr(ns, key))]
    args += [f"--{key.replace('_', '-')}" for key in FLAGS if getattr(ns, key)]
    for item in ns.track:
        args += ["--track", item]
    return args


def check(ns) -> str:
    """What can be known here, before anything is sent: the space and its overrides, the name, and a
    results place that outlives the job. Returns the sweep's name."""
    space = load_space(ns.space, ns.overrides)
    from orchestrator.analysis.folders import sweep_folder
    sweep_folder(Path("."), ns.name or space.name)  # a bad name is refused here, not in the job
    if not storage.is_uri(ns.results) and not Path(ns.results).is_absolute():
        raise SpaceError(f"--results {ns.results}: the job runs in a temporary copy of this folder that Ray deletes "
                         f"afterwards; give an absolute folder on the cluster's shared storage or a URI (s3://..., gs://...)")
    return ns.name or space.name


def _headers() -> dict:
    from orchestrator.engine.ray_session import token_source
    source = token_source()  # Ray's own places, in its order
    token = os.environ["RAY_AUTH_TOKEN"] if source == "RAY_AUTH_TOKEN" else Path(source).read_text().strip() if source else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(url: str):
    import logging

    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient
    for name in ("ray", "ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk"):  # Ray's notices
        logging.getLogger(name).setLevel(logging.ERROR)  # (once ray is imported: it sets these levels itself)
    try:
        return JobSubmissionClient(url, headers=_headers())
    except (ConnectionError, RuntimeError, AuthenticationError) as e:
        first = (str(e).splitlines() or [""])[0]
        if "auth" in first.lower() or "401" in first or "403" in first:
            raise SpaceError(f"--to {url}: the cluster wants a token this machine does not have; copy the head's "
                             f"~/.ray/auth_token here (or set RAY_AUTH_TOKEN) and run again") from None
        raise SpaceError(f"--to {url}: no Ray dashboard answers there ({first[:160]}); start the cluster (`ray up "
                         f"cluster.yaml`) and forward its dashboard (`ray dashboard cluster.yaml`), or give --to "
                         f"the head's dashboard address") from None


def submit(ns) -> int:
    from orchestrator.engine.ray_session import EXCLUDES, REPO
    from trainers.records import COMMIT_ENV, git_commit
    name = check(ns)
    url = ns.to or os.environ.get("RAY_API_SERVER_ADDRESS") or DEFAULT_DASHBOARD
    client = _client(url)
    commit = git_commit() or ""
    here = commands.orchestrator("submit", "--to", url, *sweep_args(ns))
    env = {COMMIT_ENV: commit, "FEWSHOT_SUBMITTED_WITH": here} if commit else {"FEWSHOT_SUBMITTED_WITH": here}
    job = f"{name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
    try:
        client.submit_job(entrypoint=shlex.join(["python", "-m", "orchestrator", "sweep", *sweep_args(ns)]),
                          submission_id=job, runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES, "env_vars": env},
                          metadata={"fewshot_sweep": name, "fewshot_commit": commit or "unknown"})
    except (ConnectionError, RuntimeError) as e:  # the job server answered, but not with a job
        raise SpaceError(f"--to {url}: the cluster did not take the job: {(str(e).splitlines() or [''])[0][:200]}; "
                         f"`ray status` on the head says whether its nodes are up") from None
    print(f"submitted job {job} (commit {commit or 'unknown'}) to {url}" + ("" if ns.no_follow else "; its log follows"))
    ray = f"{'RAY_AUTH_MODE=token ' if _headers() else ''}ray job"  # Ray's own CLI sends the token only when told
    if ns.no_follow:
        print(f"follow it: {ray} logs -f {job} --address {url}")
        return exit_codes.OK
    try:
        asyncio.run(_follow(client, job))
    except KeyboardInterrupt:
        print(f"\nthe job goes on: follow it with `{ray} logs -f {job} --address {url}`, stop it with "
              f"`{ray} stop {job} --address {url}`")
        return exit_codes.INTERRUPTED
    info = client.get_job_info(job)
    code = info.driver_exit_code
    print(f"job {job}: {info.status.value.lower()} (exit {code if code is not None else 'unknown'})")
    if code is None:
        return exit_codes.OK if info.status.value == "SUCCEEDED" else exit_codes.ERROR
    return code


async def _follow(client, job: str) -> None:
    async for lines in client.tail_job_logs(job):
        print(lines, end="", flush=True)
