"""Starting (or joining) Ray for a sweep: the one place that calls `ray.init`.

    python -m orchestrator sweep --space smoke                    # a local Ray instance, started here
    python -m orchestrator sweep --space smoke --address auto     # an existing cluster

What every trial's processes need from the driver travels in the job's runtime environment
(`env_vars`): the git commit for the records, progress bars off, and, for a local instance, where
its GCS listens.
"""
from __future__ import annotations

import logging
import os
import socket

import ray

from trainers.records import COMMIT_ENV, git_commit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ray(address: str | None) -> str:
    """Start a local instance (address None) or connect to `address`; returns the dashboard URL."""
    env = {COMMIT_ENV: git_commit() or "", "FEWSHOT_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}
    if address is None and not ray.is_initialized():
        # Ray's own helpers inside the trials (the placement-group cleaner among them) find their
        # cluster through RAY_ADDRESS; without it, another Ray instance on the host makes them pick
        # the wrong one or die. So the local instance gets a known GCS port and says where it is.
        port = _free_port()
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    # Worker logs stay in Ray's log folder and the dashboard; the terminal gets one line per trial.
    # Ray's start-up notices (token authentication, "N worker processes started", whose threshold
    # is the CPU count while every trial starts three actors) stay in Ray's logs.
    os.environ.setdefault("RAY_worker_maximum_startup_concurrency", "16")
    ctx = ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env}, ignore_reinit_error=True,
                   logging_level=logging.ERROR)
    url = getattr(ctx, "dashboard_url", "") or ""
    return f"http://{url}" if url and not url.startswith("http") else url
