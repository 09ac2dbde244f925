"""The memory plan and `resources: auto`: placements for a table of (model, method, GPU memory)
cases, the refusal before Ray, and the dry run of OPT-30b from its config alone."""
import json
import os
import subprocess
import sys

import pytest

from orchestrator.planning import plan
from orchestrator.planning.placement import PlacementError
from orchestrator.space import load_space
from trainers.contract import dump
from trainers.runtime.memory_plan import estimate, shape_from_config, trainable_params

# OPT's published shapes (the hub's config.json files), written as small local configs
OPT = {"opt-125m": (768, 12, 12, 3072), "opt-1.3b": (2048, 24, 32, 8192), "opt-30b": (7168, 48, 56, 28672)}


def opt_config(hidden, layers, heads, ffn) -> dict:
    return {"architectures": ["OPTForCausalLM"], "model_type": "opt", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "ffn_dim": ffn, "vocab_size": 50272, "max_position_embeddings": 2048,
            "word_embed_proj_dim": hidden, "do_layer_norm_before": True, "activation_function": "relu"}


@pytest.fixture(scope="module")
def opt_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt")
    for name, shape in OPT.items():
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(opt_config(*shape)))
    return {name: str(root / name) for name in OPT}


def test_the_shape_from_a_config_counts_opts_parameters():
    from transformers import OPTConfig
    shape = shape_from_config(OPTConfig(**opt_config(*OPT["opt-30b"])))
    assert shape.params == pytest.approx(30.0e9, rel=0.02)  # "30b", from the config alone
    assert trainable_params(shape, "icl", "none") == 0
    assert trainable_params(shape, "pbft", "lora") == 48 * 8 * 4 * 7168  # r x (in + out) on q and v


def test_sharding_divides_weights_and_optimizer_state_by_the_workers():
    from transformers import OPTConfig
    shape = shape_from_config(OPTConfig(**opt_config(*OPT["opt-30b"])))
    one = estimate(shape, "ft", "none", "ddp", 1)["parts_mib"]
    eight = estimate(shape, "ft", "none", "fsdp", 8)["parts_mib"]
    assert one["trainable_state"] == pytest.approx(shape.params * 12 / 2 ** 20, rel=0.01)  # grads + AdamW moments
    assert eight["trainable_state"] == pytest.approx(one["trainable_state"] / 8, rel=0.01)
    assert eight["weights"] < one["weights"] / 4


CASES = [  # model, method, peft, GPU GB -> workers, GPUs per worker, parallel
    ("opt-125m", "icl", "none", 80, 1, 0.5, "ddp"),
    ("opt-1.3b", "pbft", "none", 80, 1, 0.5, "ddp"),  # ~32 GiB: two such trials share a GPU
    ("opt-1.3b", "pbft", "none", 40, 1, 1, "ddp"),
    ("opt-30b", "icl", "none", 80, 1, 1, "ddp"),
    ("opt-30b", "icl", "none", 40, 2, 1, "fsdp"),
    ("opt-30b", "pbft", "lora", 80, 1, 1, "ddp"),
    ("opt-1.3b", "cartridge", "none", 80, 1, 0.5, "ddp"),  # frozen model in bf16 + a small fp32 prefix
]


@pytest.mark.parametrize("model,method,peft,gb,workers,gpus,parallel", CASES)
def test_auto_places_each_cell_on_the_fewest_gpus_that_hold_it(opt_dirs, model, method, peft, gb, workers, gpus, parallel):
    space = load_space("ft_vs_icl", [f"models=[{opt_dirs[model]}]", "resources=auto", f"resources.gpu_memory_gb={gb}",
                                     "tasks=[rte]", "shots=[16]", f"methods={{{method}: [{peft}]}}", "search={}"])
    placed = plan.resolve_placement(space, gpus=0)
    (cell,) = plan.cells(placed)
    chosen = placed.placement[cell.id]
    assert (chosen["workers"], chosen["gpus_per_worker"], chosen["parallel"]) == (workers, gpus, parallel)
    assert chosen["estimate_gib"] <= chosen["budget_gib"] < gb
    assert plan.resources(placed, cell, has_gpus=True).workers == workers
    assert plan.run_config(placed, cell, 0, {}, True).parallel == parallel


def test_a_cartridge_is_planned_as_a_frozen_model_with_a_trained_prefix_and_never_sharded(opt_dirs):
    from transformers import OPTConfig
    shape = shape_from_config(OPTConfig(**opt_config(*OPT["opt-30b"])))
    assert trainable_params(shape, "cartridge", "none", prefix_tokens=128) == 128 * 2 * 48 * 56 * 128  # K and V
    plain = estimate(shape, "icl", "none", "ddp", 1)["parts_mib"]
    cart = estimate(shape, "cartridge", "none", "ddp", 1, prefix_tokens=128)["parts_mib"]
    assert cart["weights"] - plain["weights"] == pytest.approx(128 * 2 * 48 * 7168 * 4 / 2 ** 20, rel=0.01)
    with pytest.raises(ValueError, match="cartridge does not run under fsdp"):
        estimate(shape, "cartridge", "none", "fsdp", 2)
    # 30b in bf16 does not fit 40 GB, and a cartridge cannot shard: refused, naming what was tried
    space = load_space("ft_vs_icl", [f"models=[{opt_dirs['opt-30b']}]", "resources=auto", "resources.gpu_memory_gb=40",
                                     "tasks=[rte]", "shots=[16]", "methods={cartridge: [none]}", "search={}"])
    with pytest.raises(PlacementError, match="ddp"):
        plan.resolve_placement(space, gpus=0)


def test_opt_30b_full_fine_tuning_on_80gb_gpus_is_sharded_over_at_least_four(opt_dirs):
    space = load_space("ft_vs_icl", [f"models=[{opt_dirs['opt-30b']}]", "resources=auto", "resources.gpu_memory_gb=80",
                                     "tasks=[rte]", "shots=[16]", "methods={ft: [none]}", "search={}"])
    placed = plan.resolve_placement(space, gpus=0)
    chosen = placed.placement[plan.cells(placed)[0].id]
    assert chosen["parallel"] == "fsdp" and chosen["workers"] >= 4 and chosen["gpus_per_worker"] == 1
    assert chosen["estimate_gib"] <= 80 * 0.9 - 1


def test_a_cell_that_fits_nowhere_is_refused_with_its_numbers(opt_dirs):
    space = load_space("ft_vs_icl", [f"models=[{opt_dirs['opt-30b']}]", "resources=auto", "resources.gpu_memory_gb=16",
                                     "resources.max_gpus_per_trial=4", "tasks=[rte]", "shots=[16]", "methods={ft: [none]}", "search={}"])
    with pytest.raises(PlacementError, match=r"rte/ft/opt-30b/16shot fits nowhere: 1 x .* GiB.*4 x .* GiB \(fsdp.*13\.4 GiB usable"):
        plan.resolve_placement(space, gpus=0)


def _dry_run(tmp_path, *sets):
    """The CLI's dry run with facebook/opt-30b known only by its config.json in an offline hub cache."""
    snap = tmp_path / "hf" / "hub" / "models--facebook--opt-30b" / "snapshots" / "0"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps(opt_config(*OPT["opt-30b"])))
    (tmp_path / "hf" / "hub" / "models--facebook--opt-30b" / "refs").mkdir()
    (tmp_path / "hf" / "hub" / "models--facebook--opt-30b" / "refs" / "main").write_text("0")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--space", "ft_vs_icl", "--set",
                           "models=[facebook/opt-30b]", "--set", "resources=auto", *sets, "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_the_dry_run_plans_opt_30b_from_its_config_alone(tmp_path):
    r = _dry_run(tmp_path, "--set", "resources.gpu_memory_gb=80")
    assert r.returncode == 0, r.stderr
    estimates = [float(line.split("estimated ")[1].split(" GiB")[0]) for line in r.stdout.splitlines() if "estimated" in line]
    assert len(estimates) == 4 * 7 * 4  # tasks x (icl + 6 trained variants) x shots
    assert max(estimates) <= 80 and "fsdp" in r.stdout and "16 worker(s)" in r.stdout  # full FT: 8 GPUs are not enough
    assert not list((tmp_path / "hf").rglob("*.safetensors")) and not list((tmp_path / "hf").rglob("*.bin"))


def test_the_dry_run_refuses_a_cell_too_large_for_the_gpus_in_one_line(tmp_path):
    r = _dry_run(tmp_path, "--set", "resources.gpu_memory_gb=16")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "fits nowhere" in r.stderr and "Traceback" not in r.stderr


def test_a_size_rule_shards_the_larger_models_of_ft_vs_icl(opt_dirs, tmp_path):
    big = tmp_path / "opt-6.7b"
    big.mkdir()
    (big / "config.json").write_text(json.dumps(opt_config(4096, 32, 32, 16384)))
    space = load_space("ft_vs_icl", [f"models=[{opt_dirs['opt-125m']}, {big}]", "tasks=[rte]", "shots=[16]",
                                     "methods={ft: [none]}", "search={}"])
    small, large = plan.cells(space)
    assert plan.run_config(space, small, 0, {}, True).parallel == "ddp"
    assert plan.run_config(space, large, 0, {}, True).parallel == "fsdp"
    assert dump(plan.resources(space, large, has_gpus=True)) == {"workers": 2, "cpus_per_worker": 8, "gpus_per_worker": 1,
                                                                 "in_process": False}
    run = plan.run_config(space, small, 0, {}, True)
    without = {k: v for k, v in run.to_dict().items() if k not in ("parallel", "offload")}  # as records written before the field
    assert plan.trial_key(run, {}) == plan.trial_key(without, {})  # old sweeps keep their keys


def test_on_cpu_workers_fsdp_rank_0_holds_the_checkpoint_while_loading():
    from transformers import OPTConfig
    shape = shape_from_config(OPTConfig(**opt_config(*OPT["opt-1.3b"])))
    cpu = estimate(shape, "pbft", "lora", "fsdp", 4, "float32", device="cpu")
    gpu = estimate(shape, "pbft", "lora", "fsdp", 4, "float32", device="cuda")
    assert cpu["peak_mib"] >= shape.params * 4 / 2 ** 20 + cpu["parts_mib"]["runtime"]  # the whole fp32 checkpoint
    assert cpu["peak_mib"] - gpu["peak_mib"] > shape.params * 4 / 2 ** 20 / 2  # a GPU holds the shards, not the checkpoint


def test_on_a_cluster_auto_takes_the_gpu_memory_its_nodes_report(opt_dirs):
    space = load_space("ft_vs_icl", [f"models=[{opt_dirs['opt-1.3b']}]", "resources=auto", "tasks=[rte]", "shots=[16]",
                                     "methods={pbft: [none]}", "search={}"])
    (cell,) = plan.cells(space)
    # the cluster's nodes report 80 GB GPUs: two such trials share one; on 40 GB ones each takes a GPU
    assert plan.resolve_placement(space, 8, gpu_memory_gb=80).placement[cell.id]["gpus_per_worker"] == 0.5
    assert plan.resolve_placement(space, 8, gpu_memory_gb=40).placement[cell.id]["gpus_per_worker"] == 1
