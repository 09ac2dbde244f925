"""Every line a newcomer reads names the real problem: one line and exit 2 before Ray for bad input
(a space that is a list, a YAML slip with its line, an address where no Ray answers, a model that
is not a causal LM, data that is not UTF-8, a misspelt option, an empty name, a file for a folder,
the hub out of reach), exit 4 with the command that resumes when results cannot be written, exit 5
for what nobody foresaw."""
import socket
import sys
import threading

import pytest

from orchestrator import cli, exit_codes
from trainers import cli as trainers_cli
from trainers.data.sources import SourceError, read_file


def one_error(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_space_file_that_is_a_list_is_one_line(tmp_path, capsys):
    (tmp_path / "list.yaml").write_text("- rte\n- mnli\n")
    assert cli.main(["sweep", "--space", str(tmp_path / "list.yaml"), "--dry-run"]) == exit_codes.USAGE
    assert "a search space is a YAML mapping" in one_error(capsys)


def test_a_yaml_slip_names_its_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("description: x\ntasks: [rte\nmethods: {icl: [none]}\n")
    assert cli.main(["sweep", "--space", str(tmp_path / "bad.yaml"), "--dry-run"]) == exit_codes.USAGE
    assert f"{tmp_path / 'bad.yaml'}:3:" in one_error(capsys)


def test_an_address_where_nothing_listens_is_one_line_before_ray(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    assert cli.main(["sweep", "--space", "smoke", "--address", f"127.0.0.1:{port}"]) == exit_codes.USAGE
    line = one_error(capsys)
    assert f"--address 127.0.0.1:{port}: no Ray cluster answers" in line and "leave --address out" in line


def test_an_address_where_something_else_listens_is_not_taken_for_ray(capsys):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()  # accepts, never answers
    try:
        from orchestrator.engine.ray_session import NoCluster, check_address
        with pytest.raises(NoCluster, match="not a Ray GCS"):
            check_address(f"127.0.0.1:{port}", timeout=1.0)
    finally:
        server.close()


def test_unwritable_results_end_with_exit_4_and_the_command_that_resumes(tmp_path, monkeypatch, capsys):
    from orchestrator import commands
    from orchestrator.engine import driver
    from orchestrator.analysis import results
    from orchestrator.space import load_space

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "sweep" / "trials.parquet"))

    monkeypatch.setattr(results, "write_tables", read_only)
    monkeypatch.setattr(commands, "_ARGV", ["sweep", "--space", "smoke", "--set", "shots=[8]", "--results", str(tmp_path)])
    code = driver.finish(load_space("smoke"), tmp_path / "sweep", [], unwritten=["rte/icl/opt/8shot replicate"])
    err = capsys.readouterr().err
    assert code == exit_codes.STORAGE == 4 and "Traceback" not in err
    assert "the tables could not be written (Permission denied" in err and "1 trial record(s) were not saved" in err
    assert err.strip().endswith(f"--space smoke --set 'shots=[8]' --results {tmp_path} --resume")


def test_an_unexpected_error_has_its_own_exit_status(monkeypatch, capsys):
    def bug(ns):
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(cli, "_sweep", bug)
    assert cli.main(["sweep", "--space", "smoke"]) == exit_codes.ERROR == 5
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: unexpected RuntimeError: something")


def test_a_model_that_is_not_a_causal_lm_says_so(tmp_path, data_dir, capsys):
    from transformers import BertConfig
    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               architectures=["BertForMaskedLM"]).save_pretrained(tmp_path / "bert")
    assert cli.main(["sweep", "--space", "quickstart", "--set", f"models=[{tmp_path / 'bert'}]", "--data-dir", data_dir,
                     "--results", str(tmp_path / "results")]) == exit_codes.USAGE
    line = one_error(capsys)
    assert "is not a causal language model" in line and "BertForMaskedLM" in line and "share a token id" not in line
    assert trainers_cli.main(["run", "--method", "icl", "--task", "rte", "--model", str(tmp_path / "bert"),
                              "--data-dir", data_dir, "--shots", "2"]) == 2
    assert "is not a causal language model" in one_error(capsys)


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"sentence1": "a", "label": 0}\n{"sentence1": "caf\xe9", "label": 1}\n')
    with pytest.raises(SourceError, match=rf"{path}:2: not UTF-8 text \(byte 19 of the line is 0xe9\)"):
        read_file(path, "jsonl")


@pytest.mark.parametrize("args,message", [
    (["sweep", "--spcae", "quickstart"], "unknown option --spcae (did you mean --space?)"),
    (["sweep", "--space", "smoke", "--dry-rnu"], "unknown option --dry-rnu (did you mean --dry-run?)"),
    (["sweep", "--space", "smoke", "--name", ""], "--name is empty"),
])
def test_usage_slips_are_named(args, message, capsys):
    with pytest.raises(SystemExit) if "--dry-rnu" in args or "--spcae" in args else _nothing():
        code = cli.main(args)
        assert code == exit_codes.USAGE
    assert message in one_error(capsys)


def test_a_data_dir_that_is_a_file_says_so(tiny_opt, tmp_path, capsys):
    assert cli.main(["sweep", "--space", "quickstart", "--set", f"models=[{tiny_opt}]", "--data-dir", __file__,
                     "--results", str(tmp_path)]) == 2
    assert f"data folder {__file__} is a file, not a folder" in one_error(capsys)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_single_run_without_data_or_hub_is_one_line_before_any_retry(monkeypatch, capsys):
    from trainers.data import sources
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(sources, "hub_unreachable", lambda timeout=5.0: "huggingface.co: Name or service not known")
    assert trainers_cli.main(["run", "--method", "icl", "--task", "rte", "--model", "facebook/opt-125m"]) == 2
    line = one_error(capsys)
    assert "the Hugging Face hub is unreachable" in line and "pass --data-dir" in line


def test_a_printed_command_names_this_environments_interpreter_as_typed(tmp_path, monkeypatch):
    from orchestrator import commands
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)  # a venv's python: a link to the base interpreter
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    monkeypatch.setattr(commands, "_ARGV", ["sweep", "--space", "smoke", "--set", "shots=[8, 16]"])
    assert commands.resume(tmp_path / "results" / "smoke") == \
        ".venv/bin/python -m orchestrator sweep --space smoke --set 'shots=[8, 16]' --resume"
    assert commands.report(tmp_path / "a folder") == ".venv/bin/python -m orchestrator report 'a folder'"


def test_a_report_of_single_run_records_says_what_they_are_in_one_line(tmp_path, capsys):
    """`trainers run --json` records have no cells to compare: one line, exit 2, not a traceback."""
    import shutil
    from pathlib import Path

    from orchestrator import cli
    shutil.copy(Path(__file__).resolve().parents[1] / "results/acceptance/icl_rte/icl_s0_d0.json", tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "holds single-run records" in err and "summarize" in err and "Traceback" not in err
