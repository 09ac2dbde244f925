"""Starting (or joining) Ray for a sweep: the one place that calls `ray.init`.

    python -m orchestrator sweep --space smoke                      # a local Ray instance, started here
    python -m orchestrator sweep --space smoke --address auto       # an existing cluster
    ray job submit --working-dir . -- python -m orchestrator sweep --space smoke --results /abs/or/s3://...

What every trial's processes need from the driver travels in the job's runtime environment: the
variables the sweep resolved (the data folder, the caches, the Hugging Face token, endpoint and
offline settings, the hub commits preflight pinned), the git commit for the records, Ray Train's
state tracking for the dashboard's Train tab; and, when the driver joins a cluster from a checkout,
the project's code itself (`working_dir`), so an edit reaches every node. Inside a `ray job submit`
job (RAY_ADDRESS set by Ray) the driver joins that cluster as it is: the job already carries its
code and environment, and no address is invented for the trials.
"""
from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from trainers.records import COMMIT_ENV, git_commit

REPO = Path(__file__).resolve().parents[2]
# the driver's settings that decide what a trial reads: they must be the same on every node
PASSED = ("FEWSHOT_DATA_DIR", "FEWSHOT_CACHE", "FEWSHOT_MODEL_DIR", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT",
          "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
          "WANDB_MODE", "WANDB_SILENT", "MLFLOW_ALLOW_FILE_STORE", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
EXCLUDES = [".venv", ".git", "results", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"]


def in_job() -> bool:
    """Running as the entrypoint of `ray job submit` (Ray sets these for the job's driver)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def job_env_keys() -> set[str]:
    """The variables a `ray job submit --runtime-env-json` already sets for every process of the job:
    Ray refuses a ray.init that names any of them again, and they reach the trials without it."""
    try:
        job = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    except json.JSONDecodeError:
        return set()
    return set(((job.get("runtime_env") or {}).get("env_vars") or {}))


def address_from_env(address: str | None) -> str | None:
    """--address, else the cluster a Ray job (or the user's RAY_ADDRESS) points at, else None: start one."""
    return address or os.environ.get("RAY_ADDRESS") or None


class NoCluster(Exception):
    """--address names a place where no Ray cluster answers (a usage error: one line, exit 2)."""


def token_source() -> str | None:
    """Where this machine keeps a Ray authentication token, if it has one (Ray's own places)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
    return str(path) if path.is_file() else None


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Before Ray starts: a host:port (or ray://host:port) address must accept a connection within
    `timeout` seconds, else one line instead of Ray's minute of retries and tracebacks. A cluster that
    asks for token authentication gets it when this machine has the token (RAY_AUTH_MODE=token set
    here for ray.init, as `ray start` does for its own processes), else one line saying where to put it."""
    if not address or address in ("auto", "local") or in_job():
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host:
        host, port = target, "10001" if address.startswith("ray://") else "6379"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        if not address.startswith("ray://") and _ask_gcs(f"{host}:{port}", timeout) == "token":
            if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                if not token_source():
                    raise NoCluster(f"--address {address}: the Ray cluster there asks for token authentication and this "
                                    f"machine has no token; copy the cluster's ~/.ray/auth_token here (or set "
                                    f"RAY_AUTH_TOKEN) and run again")
                os.environ["RAY_AUTH_MODE"] = "token"  # Ray reads the token from its usual places
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise NoCluster(f"--address {address}: no Ray cluster answers at {host}:{port} ({why}, waited at most "
                        f"{timeout:.0f} s); start one there (`ray start --head` on that machine) and check the "
                        f"address, or leave --address out to run on a local Ray instance") from None


def _ask_gcs(target: str, timeout: float) -> str | None:
    """One call to the Ray GCS at `target` (its cluster id): a port that accepts connections may be
    another service (or a proxy), and ray.init would then retry for half a minute."""
    import grpc  # not ray: Ray reads RAY_AUTH_MODE when it is first imported, and this may have to set it
    with grpc.insecure_channel(target) as channel:
        try:  # an empty GetClusterIdRequest is zero bytes on the wire
            channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId", request_serializer=lambda _: b"",
                                response_deserializer=lambda raw: raw)(None, timeout=timeout)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return "token"  # a Ray GCS that wants a token
            raise OSError(f"not a Ray GCS: {e.code().name.lower()}") from None
    return None


def hub_revisions(space) -> dict[str, str]:
    """hub id -> the commit preflight resolved (model identities "hub:name@commit")."""
    out = {}
    for name, ident in ((space.identity or {}).get("models") or {}).items():
        if ident.startswith("hub:") and not ident.endswith("@unresolved"):
            out[name] = ident.rsplit("@", 1)[1]
    return out


def trial_env(space) -> dict[str, str]:
    env = {COMMIT_ENV: git_commit() or "", "FEWSHOT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false",
           "RAY_TRAIN_ENABLE_STATE_TRACKING": "1"}
    env.update({k: os.environ[k] for k in PASSED if os.environ.get(k)})
    revisions = hub_revisions(space)
    if revisions:
        env["FEWSHOT_HUB_REVISIONS"] = json.dumps(revisions, sort_keys=True)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(address: str | None, space) -> str:
    """Start a local instance (address None) or join `address`; returns the dashboard URL."""
    import ray
    env = trial_env(space)
    for key in job_env_keys():  # the job's own value, the same one this process read
        env.pop(key, None)
    runtime_env: dict = {"env_vars": env}
    if address is None and not ray.is_initialized():
        # Ray's own helpers inside the trials (the placement-group cleaner among them) find their
        # cluster through RAY_ADDRESS; without it, another Ray instance on the host makes them pick
        # the wrong one or die. So the local instance gets a known GCS port and says where it is.
        port = _free_port()
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "1")  # the local dashboard's Train tab
        # one machine is never preempted: Ray Train's per-trial watcher actor would only cost a process start
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    elif address is not None and not in_job() and (REPO / ".git").exists():
        runtime_env["working_dir"], runtime_env["excludes"] = str(REPO), EXCLUDES  # this checkout's code on every node
    # Worker logs stay in Ray's log folder and the dashboard; the terminal gets one line per trial.
    # Ray's start-up notices (token authentication, "N worker processes started", whose threshold
    # is the CPU count while every trial starts three actors) stay in Ray's logs.
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "16")
    kwargs = {} if in_job() else {"job_config": ray.job_config.JobConfig(metadata={"fewshot_sweep": space.name})}
    try:
        ctx = ray.init(address=address, log_to_driver=False, runtime_env=runtime_env, ignore_reinit_error=True,
                       logging_level=logging.ERROR, **kwargs)
    except ConnectionError as e:  # --address auto with no cluster running here
        raise NoCluster(f"--address {address}: {str(e).splitlines()[0]}; start one (`ray start --head`) or leave "
                        f"--address out to run on a local Ray instance") from None
    url = getattr(ctx, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url
