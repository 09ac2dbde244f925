"""The cluster files (on-premise, AWS, GCP) pass the checks `ray up` runs before it contacts any
machine, and keep the cluster closed: token authentication on every node, the dashboard on
localhost, no token in git; the cloud files have GPU node types beside a driver-only head."""
import re
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster.yaml"


def prepared():
    return prepare_config(yaml.safe_load(CLUSTER.read_text()))  # merges the local provider's defaults, as `ray up` does


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = prepared()
    validate_config(config)  # Ray's JSON schema, ray/autoscaler/ray-schema.json
    assert config["provider"]["type"] == "local" and config["provider"]["worker_ips"]
    assert any("pip install" in c and "-e ." in c for c in config["setup_commands"])
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])


def test_every_node_starts_with_token_authentication_and_a_local_dashboard():
    config = prepared()
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in starts)
    head = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in CLUSTER.read_text().split("cluster_name:")[1]
    # the token reaches every node by file_mounts, from the user's own machine
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_no_token_is_committed():
    text = CLUSTER.read_text()
    assert not re.search(r"RAY_AUTH_TOKEN=\S", text)
    ignored = (ROOT / ".gitignore").read_text()
    assert "auth_token" in ignored


@pytest.mark.parametrize("name", ["cluster-aws.yaml", "cluster-gcp.yaml"])
def test_cloud_cluster_files_validate_and_have_gpu_node_types_beside_a_driver_only_head(name):
    raw = yaml.safe_load((ROOT / name).read_text())
    config = prepare_config(raw)  # the provider's defaults merged, as `ray up` does, before contacting the cloud
    validate_config(config)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and "GPU" not in head["resources"]  # the driver only: no trial lands there
    gpu = {n: t for n, t in types.items() if t.get("resources", {}).get("GPU", 0) >= 1}
    assert len(gpu) >= 2 and {t["resources"]["GPU"] for t in gpu.values()} >= {1, 8}  # a small and a large GPU type
    for t in gpu.values():
        assert t["min_workers"] == 0 < t["max_workers"] and t["resources"]["gpu_memory_gb"] > 0
    assert any("torch" in c for c in config["setup_commands"])  # CUDA torch from PyPI
    starts = [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c]
    assert all("RAY_AUTH_MODE=token" in c and "RAY_TRAIN_ENABLE_STATE_TRACKING=1" in c for c in starts)
    assert "--dashboard-host=127.0.0.1" in next(c for c in starts if "--head" in c)
    assert "python -m orchestrator submit" in (ROOT / name).read_text()  # the code and its commit travel with the job
    for t in gpu.values():  # Ray gives only the head cloud credentials; the trials write their state to the bucket
        node = t["node_config"]
        assert node.get("IamInstanceProfile") or any("cloud-platform" in " ".join(a["scopes"])
                                                     for a in node.get("serviceAccounts", []))


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster-aws.yaml", "cluster-gcp.yaml"])
def test_every_node_runs_ray_from_the_environment_first_on_its_path_with_the_tested_torch(name):
    """A submitted job's `python` is looked up on the PATH Ray started with: it must be the environment
    Ray runs in (the job failed with "package 'ray' is missing" when it was the system's)."""
    config = prepare_config(yaml.safe_load((ROOT / name).read_text()))
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if " ray start" not in command and "/ray start" not in command:
            continue
        ray = re.search(r"(\S+)/ray start", command).group(1).replace("~", "$HOME")
        assert command.startswith(f"export PATH={ray}:$PATH;"), command
        assert "--metrics-export-port=8080" in command and "RAY_TRAIN_ENABLE_STATE_TRACKING=1" in command
    tested = re.search(r"torch==([\d.]+)", (ROOT / "README.md").read_text()).group(1)
    pins = re.findall(r"torch(==[\d.]+)?", " ".join(config["setup_commands"]))
    assert pins and set(pins) == {f"=={tested}"}, pins
