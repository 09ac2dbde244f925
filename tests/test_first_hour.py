"""The first hour, as a newcomer meets it: the printed way out runs as printed, one sweep per
folder (a second driver refused, a dead one's lock taken over), names and FEWSHOT_* variables
checked before Ray, near-miss keys answered with "did you mean". No Ray starts here."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.planning import hub
from orchestrator.analysis.folders import LOCK, SweepLock, sweep_folder, took_over_line
from orchestrator.space import SpaceError, load_space
from trainers import settings
from trainers.data import synthetic
from trainers.config import ConfigError, RunConfig

REPO = Path(__file__).resolve().parents[1]


def cli(*args, env=None, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=cwd)


def test_a_second_driver_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    with SweepLock(tmp_path / "smoke"):
        r = cli("sweep", "--space", "smoke", "--results", str(tmp_path))
    assert r.returncode == 2, r.stderr
    line, = r.stderr.strip().splitlines()
    assert f"{tmp_path / 'smoke'} is in use by another sweep (PID {os.getpid()} on " in line and "--name NAME" in line
    assert not (tmp_path / "smoke" / "trials").exists()


def test_a_lock_whose_holder_is_gone_is_taken_over_with_a_line_saying_so(tmp_path):
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / LOCK).write_text(json.dumps({"host": "elsewhere", "pid": 4242, "started": "2026-12-01T10:00:00+00:00"}))
    lock = SweepLock(folder).acquire()  # no process holds the kernel lock: the file is all that is left
    try:
        assert "was locked by a sweep that is gone (PID 4242 on elsewhere, since 2026-12-01" in took_over_line(lock)
        holder = json.loads((folder / LOCK).read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(SpaceError, match=f"in use by another sweep \\(PID {os.getpid()} on "):
            SweepLock(folder).acquire()  # a second lock in this very process conflicts too
    finally:
        lock.release()
    assert not (folder / LOCK).exists()  # nothing else was written: no trace is left
    assert took_over_line(SweepLock(folder).acquire()) is None


def test_a_refused_lock_leaves_no_folder_it_created(tmp_path):
    with SweepLock(tmp_path / "a" / "smoke"):
        with pytest.raises(SpaceError):
            SweepLock(tmp_path / "a" / "smoke").acquire()
        assert (tmp_path / "a" / "smoke" / LOCK).exists()
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("name,message", [
    ("../../../tmp/escaped", "must be one folder name"),
    ("a/b", "must be one folder name"),
    (".hidden", "must be one folder name"),
    ("x" * 300, "--name is 300 characters long; use at most 100"),
])
def test_names_that_leave_the_results_folder_or_break_the_file_system_are_refused(tmp_path, name, message):
    with pytest.raises(SpaceError, match=message):
        sweep_folder(tmp_path, name)
    r = cli("sweep", "--space", "smoke", "--results", str(tmp_path / "results"), "--name", name)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path.parent / "escaped").exists()
    assert sweep_folder(tmp_path, "cd_vs_icl_try2.b+1") == tmp_path / "cd_vs_icl_try2.b+1"


@pytest.mark.parametrize("variable,value,message", [
    ("FEWSHOT_HEARTBEAT_S", "abc", "FEWSHOT_HEARTBEAT_S='abc': expected a number of seconds"),
    ("FEWSHOT_HEARTBEAT_S", "-5", "expected seconds between 0 and 86400"),
    ("FEWSHOT_QUIET", "yes", "FEWSHOT_QUIET='yes': expected 0 or 1"),
    ("FEWSHOT_DATA_DIR", "/no/such/folder", "folder /no/such/folder does not exist"),
    ("FEWSHOT_GIT_COMMIT", "not a commit", "expected a git commit id"),
    ("FEWSHOT_HEARTBAET_S", "5", "FEWSHOT_HEARTBAET_S is not one this tool reads; did you mean FEWSHOT_HEARTBEAT_S?"),
])
def test_bad_environment_variables_are_refused_before_ray_in_one_line(tmp_path, variable, value, message):
    r = cli("sweep", "--space", "smoke", "--results", str(tmp_path / "results"),
            env={variable: value, "RAY_TMPDIR": str(tmp_path / "ray")})
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "ray").exists()  # nothing written, Ray never started


def test_a_single_run_refuses_them_too_while_help_still_answers():
    env = {**os.environ, "FEWSHOT_QUIET": "yes"}
    r = subprocess.run([sys.executable, "-m", "trainers", "run", "--method", "icl"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "FEWSHOT_QUIET='yes': expected 0 or 1" in r.stderr, r.stderr
    assert subprocess.run([sys.executable, "-m", "trainers", "run", "--help"], capture_output=True, env=env).returncode == 0


def test_every_variable_the_code_reads_is_in_the_checked_list():
    read = {name for folder in ("orchestrator", "trainers") for path in (REPO / folder).glob("*.py")
            for name in re.findall(r"FEWSHOT_[A-Z][A-Z_]*[A-Z]", path.read_text())}
    assert "FEWSHOT_HEARTBEAT_S" in read and read <= set(settings.SETTINGS), read - set(settings.SETTINGS)


@pytest.mark.parametrize("override,near", [
    ("fixed.train.epoch=3", "'train.epochs'"), ("budjet=3", "'budget'"), ("tasks=[rtee]", "'rte'"),
    ("methods={pbtf: [lora]}", "'pbft'"), ("search.pbft.train.lrr={loguniform: [1e-4, 1e-3]}", "'train.lr'"),
    ("pruner={type: median, n_warmup_step: 1}", "'n_warmup_steps'"),
])
def test_near_miss_keys_get_did_you_mean(override, near):
    with pytest.raises(SpaceError, match=f"did you mean {near}"):
        load_space("quickstart", [override])


def test_config_keys_get_did_you_mean_too():
    with pytest.raises(ConfigError, match=r"unknown config key 'train.warmup' \(did you mean 'train.warmup_ratio'\?\)"):
        RunConfig().replace(**{"train.warmup": 0.1})
    with pytest.raises(SpaceError, match=r"unknown search space 'quickstrat' \(did you mean 'quickstart'\?\)"):
        load_space("quickstrat")


def test_help_names_exit_codes_the_yaml_of_set_and_the_report_folder():
    sweep_help = cli("sweep", "--help").stdout
    for text in ("3    stopped after --max-trials trials", "130  interrupted", "the value is YAML", "FEWSHOT_HEARTBEAT_S",
                 "exit 3 (continue with --resume)"):
        assert text in " ".join(sweep_help.split()) or text in sweep_help, text
    report_help = " ".join(cli("report", "--help").stdout.split())
    assert "a sweep's results folder (e.g. results/quickstart)" in report_help and "FOLDER/report/ is (re)written" in report_help


def test_the_printed_way_out_runs_as_printed_from_another_folder(tmp_path):
    """The offline command: this environment's own Python (not a bare `python`), gguf installed
    before the model fetcher, and a sweep command that parses and plans from wherever it was printed."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": "http://127.0.0.1:9", "FEWSHOT_MODEL_DIR": str(tmp_path / "models")}
    r = cli("sweep", "--space", "quickstart", "--results", str(tmp_path / "results"), env=env, cwd=elsewhere)
    assert r.returncode == 2, r.stderr
    steps = [shlex.split(s) for s in r.stderr.split("run offline: ")[1].strip().split(" && ")]
    assert all(s[0] == sys.executable for s in steps), steps  # absolute: printed outside the checkout
    if not hub.SHARED.joinpath("models", "fetch_models.py").is_file():
        pytest.skip(f"no {hub.SHARED}/models/fetch_models.py beside this checkout: the way out is only the sweep")
    install, fetch, sweep = steps
    assert install[1:4] == ["-m", "pip", "install"] and hub.GGUF in install  # fetch_models.py needs gguf
    assert fetch[-1] == hub.OFFLINE_MODEL and Path(elsewhere, fetch[1]).resolve().is_file()
    paths = subprocess.run([*fetch[:2], "--print-paths"], capture_output=True, text=True, cwd=elsewhere,
                           env={**os.environ, **env}, timeout=120)
    assert paths.returncode == 0 and str(tmp_path / "models" / hub.OFFLINE_MODEL) in paths.stdout, paths.stderr
    synthetic.make_model(tmp_path / "models" / hub.OFFLINE_MODEL, "llama")  # what the fetch would leave there
    planned = subprocess.run([*sweep, "--dry-run"], capture_output=True, text=True, cwd=elsewhere,
                             env={**os.environ, **env}, timeout=300)
    assert planned.returncode == 0, planned.stderr
    assert "rte/pbft+lora/smollm2-135m/16shot" in planned.stdout
