"""Results folders that never trap: reused while they hold no finished trial, refused with both
ways out (--resume, --name) once they do, and a resume refusal that names the keys that differ."""
import pytest
import yaml

from orchestrator.engine.driver import check_folder
from orchestrator.analysis import results
from trainers.contract import Record, load


def write_record(folder, rec: dict):
    return results.write_record(folder, load(Record, rec))
from orchestrator.space import SpaceError, load_space


def saved(sweep_dir, space):
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "space.yaml").write_text(yaml.safe_dump({"raw": space.raw, "resolved": {}}))


def test_a_folder_without_finished_trials_is_reused_and_one_with_them_names_both_ways_out(tmp_path, monkeypatch):
    from orchestrator import commands
    monkeypatch.setattr(commands, "_ARGV", None)  # not started from the command line: the command is rebuilt
    space = load_space("quickstart")
    folder = tmp_path / "quickstart"
    saved(folder, space)  # a sweep that failed before any trial finished (a refused run leaves nothing at all)
    check_folder(space, folder, resume=False)
    write_record(folder, {"trial_key": "k", "status": "completed"})
    with pytest.raises(SpaceError, match=r"already holds a sweep with finished trials; continue it with .*orchestrator sweep --space .*quickstart.* --resume, or pass --name NAME"):
        check_folder(space, folder, resume=False)
    check_folder(space, folder, resume=True)
    with pytest.raises(SpaceError, match=r"nothing to resume in .*never; run without --resume"):
        check_folder(space, tmp_path / "never", resume=True)


def test_resume_names_the_differing_keys_and_lets_resources_change(tmp_path):
    folder = tmp_path / "quickstart"
    saved(folder, load_space("quickstart"))
    write_record(folder, {"trial_key": "k", "status": "completed"})
    check_folder(load_space("quickstart", ["resources.cpus_per_worker=2", "max_failures=3"]), folder, resume=True)
    changed = load_space("quickstart", ["fixed.train.epochs=9", "shots=[8]", "resources.workers=2"])
    with pytest.raises(SpaceError) as e:
        check_folder(changed, folder, resume=True)
    assert "other values of fixed.train.epochs, shots;" in str(e.value) and "resources" in str(e.value)
    assert "or use --name" in str(e.value)
