"""cluster.yaml passes the checks `ray up` runs before it contacts any machine."""
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parent.parent / "cluster.yaml"


def test_cluster_yaml_is_a_valid_ray_cluster_config():
    config = yaml.safe_load(CLUSTER.read_text())
    prepared = prepare_config(config)  # merges the local provider's defaults, as `ray up` does
    validate_config(prepared)  # Ray's JSON schema, ray/autoscaler/ray-schema.json
    assert prepared["provider"]["type"] == "local" and prepared["provider"]["worker_ips"]
    assert any("pip install" in c and "-e ." in c for c in prepared["setup_commands"])
    assert any("ray start --head" in c for c in prepared["head_start_ray_commands"])
