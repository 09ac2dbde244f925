"""What the cluster can hold, read from the cluster itself: its nodes now, and the node types an
autoscaling cluster may still start.

    python -m orchestrator sweep --space cd_vs_icl --address auto --set resources=auto

`resources: auto` sizes trials by each GPU's memory: a node's custom resource `gpu_memory_gb` (the
cluster files set it per node type), else its accelerator type's known memory, else CUDA on the
driver's machine. Preflight checks that every trial's worker group fits on nodes it can use (each
worker on one node; the group over several), counting the node types the autoscaler may start
(`~/ray_bootstrap_config.yaml` on the head). When a group fits only on nodes not started yet, the
sweep asks the autoscaler for them and waits, bounded, saying what it waits for.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import yaml

from trainers.contract import TrialResources

BOOTSTRAP = Path("~/ray_bootstrap_config.yaml").expanduser()  # the cluster file as `ray up` left it on the head
MEMORY_GB = {"A10G": 24, "L4": 24, "T4": 16, "V100": 16, "A100": 40, "A100-80G": 80, "H100": 80, "H200": 141, "L40S": 48,
             "A40": 48, "RTX": 24}


def _memory(resources: dict) -> float | None:
    if resources.get("gpu_memory_gb"):
        return float(resources["gpu_memory_gb"])
    for key in resources:
        if key.startswith("accelerator_type:"):
            return MEMORY_GB.get(key.split(":", 1)[1])
    return None


def nodes() -> list[dict]:
    """Alive nodes: {"CPU", "GPU", "gpu_memory_gb", "count": 1}."""
    import ray
    out = []
    for n in ray.nodes():
        if n.get("Alive"):
            r = n.get("Resources") or {}
            out.append({"CPU": r.get("CPU", 0.0), "GPU": r.get("GPU", 0.0), "gpu_memory_gb": _memory(r), "count": 1})
    return out


def node_types(path: Path = BOOTSTRAP) -> list[dict]:
    """Worker node types an autoscaler may start beyond the nodes there now: {"CPU", "GPU", "gpu_memory_gb", "count"}."""
    if not path.is_file():
        return []
    config = yaml.safe_load(path.read_text()) or {}
    head = config.get("head_node_type")
    out = []
    for name, t in (config.get("available_node_types") or {}).items():
        r = t.get("resources") or {}
        if name != head and t.get("max_workers", 0) > 0:
            out.append({"CPU": float(r.get("CPU", 0)), "GPU": float(r.get("GPU", 0)), "gpu_memory_gb": _memory(r),
                        "count": int(t["max_workers"]), "type": name})
    return out


def gpu_memory_gb(pool: list[dict]) -> float | None:
    """The smallest GPU memory among the GPU nodes (any of them may get a trial)."""
    known = [n["gpu_memory_gb"] for n in pool if n["GPU"] and n["gpu_memory_gb"]]
    return min(known) if known else None


def fits(r: TrialResources, pool: list[dict]) -> bool:
    """Whether `workers` workers of `cpus_per_worker` / `gpus_per_worker` fit the nodes (each worker on one node)."""
    per = lambda n: min(n["CPU"] // r.cpus_per_worker if r.cpus_per_worker else math.inf,  # noqa: E731
                        n["GPU"] // r.gpus_per_worker if r.gpus_per_worker else math.inf)
    room = sum(min(per(n), r.workers) * n["count"] for n in pool)
    return room >= r.workers


def wait_for(bundles: list[dict], needed, limit_s: float, say=print) -> bool:
    """Ask the autoscaler for `bundles` and wait until `needed()` holds (True), at most `limit_s`."""
    from ray.autoscaler.sdk import request_resources
    request_resources(bundles=bundles)
    deadline, last = time.monotonic() + limit_s, 0.0
    while time.monotonic() < deadline:
        if needed():
            return True
        if time.monotonic() - last >= 30:
            left = deadline - time.monotonic()
            say(f"waiting for the autoscaler to start nodes for {len(bundles)} worker(s) ({left:.0f} s left)")
            last = time.monotonic()
        time.sleep(5)
    return needed()
