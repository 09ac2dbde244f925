"""Preflight: a sweep's data, draws, models and resources checked before Ray starts and before
anything is written, one line per problem; content identities that survive moved folders."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from orchestrator.planning import hub, plan, preflight
from orchestrator.space import load_space
from trainers.data import synthetic


def space_file(tmp_path, model, data, **change):
    doc = {"description": "d", "tasks": {"rte": {"ood": ["hans"]}}, "methods": {"icl": ["none"], "pbft": ["lora"]},
           "models": [model], "shots": [8], "data_seeds": [0, 1], "data_dir": data,
           "fixed": {"n_dev": 16, "n_unlabeled": 16}, "resources": {"workers": 1, "cpus_per_worker": 1}, **change}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def data(tmp_path):
    return synthetic.write_data(tmp_path / "data")


def sweep(path, results, *args):
    return subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--space", str(path), "--results", str(results), *args],
                          capture_output=True, text=True, timeout=300)


def test_a_good_space_passes_with_content_identities_that_survive_moved_folders(tmp_path, tiny_opt, data):
    checked = preflight.run(load_space(str(space_file(tmp_path, tiny_opt, str(data)))))
    ident = checked.identity
    assert ident["models"][tiny_opt].startswith("local:") and set(ident["data"]["rte"]) >= {"glue/rte/train.jsonl", "hans/validation.jsonl"}
    moved_model, moved_data = shutil.copytree(tiny_opt, tmp_path / "m2" / "opt"), shutil.copytree(data, tmp_path / "d2")
    again = preflight.run(load_space(str(space_file(tmp_path, str(moved_model), str(moved_data)))))
    assert again.identity["models"][str(moved_model)] == ident["models"][tiny_opt] and again.identity["data"] == ident["data"]
    keys = [plan.trial_key(run, plan.trial_identity(s, run))
            for s in (checked, again) for run in [plan.run_config(s, plan.cells(s)[1], 0, {"train.lr": 1e-3}, False)]]
    assert keys[0] == keys[1]


@pytest.mark.parametrize("corrupt,message", [
    (lambda lines: lines[:3] + ['{"sentence1": "cut sho'] + lines[3:], "data_dir (--data-dir): "),
    (lambda lines: [json.dumps({k: v for k, v in json.loads(lines[0]).items() if k != "sentence2"})] + lines[1:], "sentence2"),
])
def test_bad_data_is_refused_before_ray_and_nothing_is_written(tmp_path, tiny_opt, data, corrupt, message):
    train = data / "glue" / "rte" / "train.jsonl"
    train.write_text("\n".join(corrupt(train.read_text().splitlines())) + "\n")
    path = space_file(tmp_path, tiny_opt, str(data))
    r = sweep(path, tmp_path / "results")
    assert r.returncode == 2 and message in r.stderr and "Ray dashboard" not in r.stdout, r.stderr
    assert "train.jsonl" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith(f"error: {path}: ") and not (tmp_path / "results").exists()


def test_draw_problems_name_shots_task_and_seed_one_line_each(tmp_path, tiny_opt, data):
    r = sweep(space_file(tmp_path, tiny_opt, str(data), shots=[8, 5000, 7]), tmp_path / "results")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert "shots: 5000 shots of rte, data seed 0: class 0 has" in lines[0] and "use a multiple of 2" in lines[1]
    assert not (tmp_path / "results").exists()


def test_missing_model_and_data_are_both_reported(tmp_path, data):
    r = sweep(space_file(tmp_path, "no-such-org/no-such-model", str(tmp_path / "nowhere")), tmp_path / "results")
    assert r.returncode == 2 and "hub is unreachable (HF_HUB_OFFLINE is set)" in r.stderr
    assert "needs it for model no-such-org/no-such-model; run offline:" in r.stderr
    assert "data_dir (--data-dir): data folder" in r.stderr and len(r.stderr.strip().splitlines()) == 2


def test_an_unreachable_hub_stops_the_main_job_at_once_with_the_offline_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: refused at once, network or not
    r = subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "--space", "quickstart", "--results",
                        str(tmp_path / "results"), "--set", "models=[org/model]"], capture_output=True, text=True,
                       timeout=300, env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "the Hugging Face hub is unreachable (127.0.0.1:" in lines[0]
    assert "needs it for model org/model and the data of rte" in lines[0]
    command = lines[0].split("run offline: ")[1].split(" && ")[-1]
    assert "models=[org/model]" not in command and "--set 'models=[" in command and "--data-dir" in command
    assert command.split(" -m ")[1].startswith("orchestrator sweep --space quickstart --results")
    assert not (tmp_path / "results").exists()


def test_offline_command_replaces_the_hub_parts_of_the_users_command():
    argv = ["sweep", "--space", "q", "--data-dir", "/old", "--set", "models=[a/b]", "--set", "shots=[8]"]
    cmd = hub.offline_command(argv, ["a/b"], True)
    assert "/old" not in cmd and "a/b" not in cmd and "--set 'shots=[8]'" in cmd
    assert cmd.count("--data-dir") == 1 and cmd.count("models=") == 1
    assert hub.offline_command(argv, [], False).endswith("sweep --space q --data-dir /old --set 'models=[a/b]' --set 'shots=[8]'")


def test_resources_gpus_asked_of_a_cpu_only_cluster_need_allow_cpu(tmp_path, tiny_opt, data):
    space = load_space(str(space_file(tmp_path, tiny_opt, str(data), resources={"workers": 1, "cpus_per_worker": 1,
                                                                                   "gpus_per_worker": 1})))
    with pytest.raises(preflight.PreflightError, match=r"resources.gpus_per_worker: 2 cells .* ask\(s\) for 1 GPU per worker "
                                                       r"but this machine has none; add --allow-cpu"):
        preflight.check_resources(space, {"CPU": 2, "GPU": 0}, "this machine")
    preflight.check_resources(dataclasses.replace(space, allow_cpu=True), {"CPU": 2, "GPU": 0}, "this machine")
    preflight.check_resources(space, {"CPU": 2, "GPU": 1}, "the cluster")
    with pytest.raises(preflight.PreflightError, match=r"ask\(s\) for 1 worker\(s\) x 1 CPU / 1 GPU but the cluster has 0 CPU"):
        preflight.check_resources(space, {"CPU": 0, "GPU": 1}, "the cluster")


def test_a_refused_sweep_leaves_the_folder_free_for_the_corrected_command(tmp_path, tiny_opt, data):
    path = space_file(tmp_path, tiny_opt, str(data), resources={"workers": 1, "cpus_per_worker": 64})
    r = sweep(path, tmp_path / "results")
    assert r.returncode == 2 and "resources: 2 cells" in r.stderr and "this machine has" in r.stderr
    assert not (tmp_path / "results").exists()  # so the corrected command is not "already holds a sweep"
