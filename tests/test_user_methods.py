"""A researcher's own method, from a module of their own: one file with its config section, its
recipe and one `register` call runs through a sweep (its section's value reaching every trial, its
records read back by `summarize`), and a methods file that cannot be used is refused in one line."""
import json
import subprocess
import sys

import pytest

from orchestrator import cli
from trainers.config import ConfigError, from_dict

TOY = '''"""A toy method: it answers one class, the one its config section names, for every query."""
from dataclasses import dataclass, field

import torch

from trainers.config import option
from trainers.contract import Epoch, Metrics
from trainers.methods.common import prepare
from trainers.methods.spec import MethodSpec, register
from trainers.records import build_record
from trainers.runtime.evaluation import Predictions, evaluate_sets, metrics
from trainers.runtime.metering import Meter


@dataclass(frozen=True)
class ToyConfig:
    answer: int = field(default=0, metadata=option("the class index answered for every query"))


def run(cfg, report=None):
    meter = Meter(torch.device("cpu"))
    with meter.phase("load"):
        prep = prepare(cfg)

    def predict(examples, name):
        logprobs = torch.full((len(examples), len(prep.task.classes)), -9.0)
        logprobs[:, cfg.toy.answer] = 0.0
        return Predictions(logprobs, torch.tensor([ex.label for ex in examples]), [ex.group for ex in examples],
                           ids=[ex.uid() for ex in examples])

    with meter.phase("evaluate"):
        dev = metrics(predict(prep.draw.dev, "dev"), prep.task.classes)
    if report:
        report(Epoch(epoch=1, dev_accuracy=dev.accuracy))
    results = evaluate_sets(predict, prep, cfg, meter=meter) if cfg.final_eval else Metrics()
    results.dev = dev
    return build_record(cfg, "completed", resolved=prep.resolved(cfg), metrics=results, resources=meter.resources())


register(MethodSpec("toy", run, "answers one class everywhere", trains=False, section=("toy", ToyConfig)))
'''


@pytest.fixture(autouse=True)
def shipped_methods_only():
    """A methods file registers in this process: leave the registry as the other tests expect it."""
    from trainers.methods import spec
    before = dict(spec.METHODS)
    yield
    spec.METHODS.clear()
    spec.METHODS.update(before)
    for name in [m for m in sys.modules if m.startswith("fewshot_methods_")]:
        del sys.modules[name]


def toy_space(tmp_path, tiny, data, answer=1):
    (tmp_path / "toy_method.py").write_text(TOY)
    return ["sweep", "--space", "quickstart", "--set", f"models=[{tiny}]", "--set", f"data_dir={data}",
            "--set", f"methods_file={tmp_path / 'toy_method.py'}", "--set", "methods={toy: [none]}",
            "--set", "search={}", "--set", "shots=[4]", "--set", "data_seeds=[0, 1]", "--set", "fixed.n_dev=4",
            "--set", "fixed.eval_limit=8", "--set", "fixed.serve_queries=4", "--set", f"fixed.toy.answer={answer}",
            "--results", str(tmp_path / "results")]


@pytest.mark.sweep
def test_a_method_of_ones_own_runs_through_a_sweep_with_its_config_section(tmp_path, tiny_opt, data_dir):
    r = subprocess.run([sys.executable, "-m", "orchestrator", *toy_space(tmp_path, tiny_opt, data_dir)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "results" / "quickstart"
    recs = [json.loads(p.read_text()) for p in (folder / "trials").glob("*.json")]
    assert sorted(x["data_seed"] for x in recs) == [0, 1] and {x["cell"] for x in recs} == {"rte/toy/opt/4shot"}
    for x in recs:
        assert x["status"] == "completed" and x["config"]["toy"] == {"answer": 1}
        entailment, not_entailment = x["metrics"]["in_domain"]["pred_fraction"].values()
        assert (entailment, not_entailment) == (0.0, 1.0)  # the section's answer reached the trial
        assert x["metrics"]["ood"]["hans"]["n_scored"] > 0
    s = subprocess.run([sys.executable, "-m", "orchestrator", "summarize", str(folder)], capture_output=True, text=True,
                       timeout=300)  # a fresh process: the records name their methods file
    assert s.returncode == 0 and "rte/toy/opt/4shot" in (folder / "summary.md").read_text(), s.stderr[-2000:]


def test_a_methods_section_is_keyed_parsed_and_left_out_of_other_trials_keys(tmp_path, tiny_opt):
    (tmp_path / "toy_method.py").write_text(TOY)
    from orchestrator.planning import plan
    before = plan.trial_key(from_dict({"model": tiny_opt}).to_dict(), {})
    cfg = from_dict({"method": "toy", "model": tiny_opt, "methods_file": str(tmp_path / "toy_method.py"),
                     "toy": {"answer": "1"}})
    assert cfg.toy.answer == 1 and cfg.replace(**{"toy.answer": 0}).toy.answer == 0
    with pytest.raises(ConfigError, match="toy.answer"):
        cfg.replace(**{"toy.answr": 0})
    assert plan.trial_key(from_dict({"model": tiny_opt}).to_dict(), {}) == before  # the toy's section at its default


@pytest.mark.parametrize("source,message", [
    (None, "no such Python file"),
    ("raise RuntimeError('half written')", "failed to import: RuntimeError: half written"),
    ("from trainers.methods.spec import MethodSpec, register\nregister(MethodSpec('icl', print, 'mine', trains=False))",
     "method 'icl' is already registered"),
])
def test_a_methods_file_that_cannot_be_used_is_one_line_before_ray(tmp_path, tiny_opt, data_dir, source, message, capsys):
    args = toy_space(tmp_path, tiny_opt, data_dir)
    if source is None:
        (tmp_path / "toy_method.py").unlink()
    else:
        (tmp_path / "toy_method.py").write_text(source)
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
