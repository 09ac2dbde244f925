"""Search spaces, overrides, planning and the sweep CLI's error paths: no Ray started here."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.planning import plan
from orchestrator.analysis.results import cell_stats, summary_table
from orchestrator.analysis.table import trials
from trainers.contract import Record, dump, load
from orchestrator.space import SpaceError, available_spaces, load_space, space_path
from trainers.methods.spec import METHODS


def _local_models(name):
    """The local model folders a shipped space names (fetched by ../shared/models/fetch_models.py, absent on a fresh machine)."""
    models = yaml.safe_load(space_path(name).read_text())["models"]
    return [m for m in models if m.startswith(("~", "/", "."))]


@pytest.mark.parametrize("name", available_spaces())
def test_every_shipped_space_validates(name, tiny_llama):
    missing = [m for m in _local_models(name) if not Path(m).expanduser().is_dir()]
    if missing:  # a fresh machine: the rest of the space still validates, with a tiny model in the fetched one's place
        with pytest.raises(SpaceError, match="model folder .* does not exist"):
            load_space(name)
        space = load_space(name, [f"models=[{tiny_llama}]"])
    else:
        space = load_space(name)
    assert plan.cells(space) and space.description
    for cell in plan.cells(space):
        assert plan.run_config(space, cell, space.tuning_data_seed, {}, final_eval=True).method == cell.method


def test_shipped_spaces_are_the_ones_promised():
    assert {"cd_vs_icl", "ft_vs_icl", "quickstart", "smoke"} <= set(available_spaces())
    space = load_space("cd_vs_icl")
    # 10 seeds: the sign-flip test can reach p < 0.05 (5 never could: 2 / 2^5 = 0.0625)
    assert set(space.tasks) == {"rte", "mnli"} and space.shots == [16, 32] and len(space.data_seeds) == 10
    assert {"icl", "cd", "pbft"} == set(space.methods)


def write(tmp_path, doc):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


BASE = {"description": "d", "tasks": ["rte"], "methods": {"icl": ["none"], "pbft": ["lora"]},
        "models": ["facebook/opt-125m"], "shots": [16], "data_seeds": [0, 1],
        "search": {"pbft": {"train.lr": {"loguniform": [1e-5, 1e-3]}}}}


@pytest.mark.parametrize("change,message", [
    ({"budjet": 3}, r"space.yaml: budjet: unknown key \(did you mean 'budget'\?\); allowed: name, description"),
    ({"shots": "16"}, r"shots: expected a non-empty list of int"),
    ({"methods": {"magic": ["none"]}}, r"methods.magic: unknown method; allowed: " + ", ".join(sorted(METHODS))),
    ({"methods": {"icl": ["lora"]}}, r"methods.icl: unknown PEFT variant 'lora'; allowed: none"),
    ({"tasks": ["sst9"]}, r"tasks.sst9: unknown task; allowed: cola, mnli"),
    ({"search": {"pbft": {"train.lr": {"loguniform": [1e-3, 1e-5]}}}}, r"search.pbft.train.lr: loguniform needs low < high"),
    ({"search": {"pbft": {"train.rate": {"uniform": [0, 1]}}}}, r"search.pbft.train.rate: unknown config key( \(did you mean '[a-z._]+'\?\))?; allowed:"),
    ({"search": {"pbft": {"train.lr": {"gaussian": [0, 1]}}}}, r"expected one of \{loguniform, uniform, int, choice"),
    ({"pruner": {"type": "hyperband"}}, r"pruner.type: expected one of median, successive_halving, none"),
    ({"resources": {"workers": 2, "gpus_per_worker": 0.5}}, r"fractional GPUs work with one worker per trial only"),
    ({"fixed": {"train.epochs": "many"}}, r"fixed: epochs must be of type int"),
    ({"models": ["./no/such/model"]}, r"models: model folder ./no/such/model does not exist"),
])
def test_invalid_spaces_name_file_key_and_allowed_values(tmp_path, change, message):
    with pytest.raises(SpaceError, match=message):
        load_space(write(tmp_path, {**BASE, **change}))


def test_dotted_overrides(tmp_path):
    space = load_space(write(tmp_path, BASE), ["shots=[16, 32]", "fixed.train.epochs=5", "budget=2",
                                               "search.pbft.train.lr={loguniform: [1e-4, 1e-2]}", "resources.workers=2"])
    assert space.shots == [16, 32] and space.fixed == {"train.epochs": 5} and space.budget == 2
    assert space.search["pbft"]["train.lr"] == {"loguniform": [1e-4, 1e-2]} and space.resources["workers"] == 2
    with pytest.raises(SpaceError, match="expected key=value"):
        load_space(write(tmp_path, BASE), ["shots"])


def test_cells_trials_and_keys(tmp_path):
    space = load_space(write(tmp_path, BASE), ["fixed.train.epochs=3", "budget=5"])
    cells = {c.id: c for c in plan.cells(space)}
    assert set(cells) == {"rte/icl/opt-125m/16shot", "rte/pbft+lora/opt-125m/16shot"}
    icl, pbft = cells["rte/icl/opt-125m/16shot"], cells["rte/pbft+lora/opt-125m/16shot"]
    assert plan.searched(space, icl) == {} and list(plan.searched(space, pbft)) == ["train.lr"]
    run0 = plan.run_config(space, pbft, 0, {"train.lr": 1e-4}, final_eval=False)
    assert run0.train.epochs == 3 and run0.peft.kind == "lora" and run0.final_eval is False
    run1 = plan.run_config(space, pbft, 1, {"train.lr": 1e-4}, final_eval=False)
    assert run0.seed is None  # the space's seed is the sampler's; each trial derives its training seed
    fixed = load_space(write(tmp_path, BASE), ["fixed.seed=7"])
    assert plan.run_config(fixed, plan.cells(fixed)[1], 1, {}, final_eval=True).seed == 7
    ident = plan.trial_identity(space, run0)
    assert plan.trial_key(run0, ident) == plan.trial_key(run0.to_dict(), ident) != plan.trial_key(run1, ident)
    # paths never enter the key: the same content under another folder keeps it; other content changes it
    moved = run0.replace(model="/elsewhere/opt-125m", data_dir="/elsewhere/data")
    assert plan.trial_key(moved, ident) == plan.trial_key(run0, ident)
    assert plan.trial_key(run0, {**ident, "data": {"glue/rte/train": "other"}}) != plan.trial_key(run0, ident)
    assert "5 search trials + 4 replicate trials = 9 trials" in plan.describe(space, False)


@pytest.mark.parametrize("name", ["cd_vs_icl", "ft_vs_icl"])
def test_a_trial_config_packs_its_run_small_and_unpacks_it_whole(name):
    """Tune keeps every trial's config for the whole sweep: the run travels as the fields that differ
    from the defaults, and the trial gets every field back, equal to the plan's, in every cell."""
    from orchestrator.engine.driver import _trial_config
    from orchestrator.engine.trial import run_of
    space = load_space(name, [])
    for cell in plan.cells(space):
        for phase, seed in (("search", None), ("replicate", space.data_seeds[-1])):
            config = _trial_config(space, False, cell.id, {"train.lr": 3e-4}, phase, seed)
            whole = plan.run_config(space, cell, space.tuning_data_seed if seed is None else seed, {"train.lr": 3e-4},
                                    final_eval=phase == "replicate")
            assert run_of(config) == whole.to_dict(), cell.id
            assert len(config.run) < 300 < len(str(whole.to_dict())), (cell.id, config.run)


def test_resources_follow_model_size_rules(tmp_path):
    rules = {"workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 1,
             "by_model_size": [{"max_params": 4e8, "gpus_per_worker": 0.5}, {"max_params": None, "workers": 2}]}
    space = load_space(write(tmp_path, {**BASE, "models": ["facebook/opt-125m", "facebook/opt-6.7b"], "resources": rules}))
    small, big = [c for c in plan.cells(space) if c.method == "icl"]
    assert dump(plan.resources(space, small, has_gpus=True)) == {"workers": 1, "cpus_per_worker": 2, "gpus_per_worker": 0.5,
                                                                 "in_process": False}
    assert plan.resources(space, big, has_gpus=True).workers == 2
    assert plan.resources(space, big, has_gpus=False).gpus_per_worker == 0  # only with --allow-cpu (preflight)
    plain = load_space(write(tmp_path, {**BASE, "resources": {"workers": 1}}))
    cell = plan.cells(plain)[0]  # no GPU count given: one where the cluster has GPUs, none where it has not
    assert plan.resources(plain, cell, True).gpus_per_worker == 1 and plan.resources(plain, cell, False).gpus_per_worker == 0
    assert plan.model_params("facebook/opt-1.3b") == 1.3e9 and plan.model_params("HuggingFaceTB/SmolLM2-135M") == 135e6


def test_summary_reports_replicates_and_counts_pruned_and_failed():
    def rec(phase, status, seed, acc, lr=1e-4):
        return {"phase": phase, "status": status, "trial_key": f"{phase}{seed}{status}",
                "config": {"task": "rte", "method": "pbft", "peft": {"kind": "lora"}, "model": "m", "shots": 16,
                           "data_seed": seed, "seed": 0},
                "resolved": {"lr": lr}, "history": [{"epoch": 1, "dev_accuracy": 0.5}],
                "metrics": {"in_domain": {"accuracy": acc, "pred_fraction": {"a": 0.5, "b": 0.5}},
                            "ood": {"hans": {"accuracy": acc - 0.1, "pred_fraction": {"a": 1.0, "b": 0.0}}}} if acc else {},
                "resources": {"peak_memory_mib": 100.0, "total_seconds": 10.0}, "params": {"trainable": 7}}
    records = [rec("search", "completed", 0, None), rec("search", "pruned", 0, None), rec("search", "failed", 0, None),
               rec("replicate", "completed", 0, 0.6), rec("replicate", "completed", 1, 0.8)]
    s = summary_table(cell_stats(trials([load(Record, r) for r in records]))).iloc[0]
    assert s["seeds"] == 2 and s["in-domain acc"].startswith("0.700 [") and s["hans acc"].startswith("0.600 [")
    assert (s["search trials"], s["pruned"], s["failed"]) == (3, 1, 1) and s["hans P(class 0)"] == "1.00 ± 0.00"
    assert (s["dropped queries"], s["truncated demos"], s["flags"]) == (0, "-", "COLLAPSED on hans in 2 of 2 seeds")  # HANS all class 0
    # A replicate that truncated demonstrations and dropped queries: counted in the table, flagged in the summary.
    records[-1]["resolved"]["context"] = {"demos_truncated": 10, "tokens_cut": 300}
    records[-1]["metrics"]["ood"]["hans"]["n_dropped"] = 3
    records[-2]["resolved"]["context"] = {"demos_truncated": 0, "tokens_cut": 0}
    records = [load(Record, r) for r in records]
    rows = trials(records)
    assert [t.n_dropped for t in rows] == [0, 0, 0, 0, 3] and rows[-1].demos_truncated == 10
    s = summary_table(cell_stats(rows)).iloc[0]
    assert (s["dropped queries"], s["truncated demos"], s["flags"]) == (3, "5/16, 150 tokens cut", "DROPPED QUERIES, COLLAPSED on hans in 2 of 2 seeds")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True)


def test_spaces_command_lists_every_space():
    r = cli("spaces")
    assert r.returncode == 0 and all(name in r.stdout for name in available_spaces())


def test_dry_run_checks_configs_and_prints_the_plan_without_ray(tiny_opt, data_dir):
    r = cli("sweep", "--space", "cd_vs_icl", "--dry-run", "--set", "shots=[16]", "--set", f"models=[{tiny_opt}]",
            "--set", "tasks={rte: {ood: [hans]}}", "--data-dir", data_dir, "--allow-cpu",
            "--set", "resources.cpus_per_worker=1")
    assert r.returncode == 0, r.stderr
    assert "rte/cd+lora/opt/16shot" in r.stdout and "3 cells" in r.stdout
    assert "Ray dashboard" not in r.stdout


def test_dry_run_needs_no_hub_and_shows_what_this_machine_would_refuse():
    r = cli("sweep", "--space", "cd_vs_icl", "--dry-run")  # hub ids, hub unreachable (HF_HUB_OFFLINE in conftest)
    assert r.returncode == 0, r.stderr
    assert "36 cells" in r.stdout and "checked when the sweep starts" in r.stdout
    if not __import__("torch").cuda.is_available():
        assert "on this machine the sweep would stop here" in r.stdout and "--allow-cpu" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["--space", "nope"], "unknown search space 'nope'; available:"),
    (["--space", "smoke", "--set", "budjet=2"], "budjet: unknown key"),
    (["--space", "quickstart", "--set", "models=[./missing-model]"], "model folder ./missing-model does not exist"),
    (["--space", "quickstart", "--data-dir", "/no/such/data", "--set", "models=[{tiny}]"], "data folder /no/such/data does not exist"),
    (["--space", "smoke", "--max-trials", "0"], "--max-trials must be at least 1"),
    (["--space", "smoke", "--set", "shots=[-8]"], "smoke.yaml: shots: expected an integer >= 0, got -8"),
    (["--space", "smoke", "--set", "search.pbft.train.lr=-0.1"], "smoke.yaml: search.pbft.train.lr: lr must be > 0"),
    (["--space", "smoke", "--set", "tuning_data_seed=-7"], "smoke.yaml: tuning_data_seed: expected an integer >= 0"),
    (["--space", "smoke", "--data-dir", "."], "fixtures: synthetic writes its own model and data"),
])
def test_sweep_usage_errors_exit_2_with_one_line(args, message, tiny_opt):
    args = [a.replace("{tiny}", tiny_opt) for a in args]
    r = cli("sweep", *args, "--dry-run") if "--max-trials" not in args else cli("sweep", *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_local_paths_become_absolute_for_the_workers(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    path = write(tmp_path, {**BASE, "models": ["./model", "facebook/opt-125m"]})
    monkeypatch.chdir(tmp_path)
    space = load_space(path, data_dir="data")
    assert space.data_dir == str(tmp_path / "data") and space.models == [str(tmp_path / "model"), "facebook/opt-125m"]


@pytest.mark.parametrize("package,missing,args", [
    ("orchestrator", "yaml", ["--help"]),                 # needed to start at all
    ("orchestrator", "ray", ["sweep", "--space", "smoke"]),  # imported only when a sweep starts
    ("trainers", "torch", ["--help"]),
])
def test_a_python_without_the_project_packages_gets_one_line_and_the_way_out(tmp_path, package, missing, args):
    code = f"import sys, runpy; sys.modules[{missing!r}] = None; runpy.run_module({package!r}, run_name='__main__')"
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error: Python package {missing!r} is missing") and ".venv/bin/python -m" in r.stderr
    assert not (tmp_path / "results").exists()  # nothing written before the missing package was found
