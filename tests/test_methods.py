"""The training methods end to end on tiny random models and the synthetic task."""
import json
import os
import types

import pytest
import torch
import torch.nn.functional as F

import trainers.methods.cd
import trainers.methods.pbft
from trainers.runtime import adapters
from trainers.data import synthetic
from trainers.config import PeftConfig, TrainConfig
from trainers.methods import entry
from trainers.methods.entry import resolve
from trainers.contract import EvalBlock, dump
from trainers.runtime.models import load_causal_lm
from trainers.data.prompts import get_prompt, label_token_ids
from trainers.runtime.scoring import PromptIds, answer_logits, collate
from trainers.data.tasks import load_task
from trainers.runtime.training import train


def run(cfg, report=None):
    """The method's record and epoch reports in their JSON form (what `--json` writes, what Ray gets)."""
    return dump(entry.run(cfg, report and (lambda epoch: report(dump(epoch)))))


def config(model, data_dir, **over):
    base = {"task": "rte", "model": model, "data_dir": data_dir, "shots": 32, "n_dev": 16, "n_unlabeled": 64,
            "eval_limit": 40, "train.epochs": 15, "train.batch_size": 8, "train.lr": 3e-3}
    return resolve({**base, **over})


@pytest.mark.parametrize("method,peft", [("ft", "none"), ("ft", "lora"), ("ft", "bitfit"), ("pbft", "none"),
                                         ("pbft", "lora"), ("pbft", "bitfit"), ("cd", "lora"), ("cd", "bitfit")])
def test_each_method_writes_a_complete_record(method, peft, tiny_llama, data_dir):
    epochs = []
    rec = run(config(tiny_llama, data_dir, method=method, **{"peft.kind": peft, "train.epochs": 2}), epochs.append)
    assert rec["status"] == "completed" and rec["error"] is None
    assert [e["epoch"] for e in epochs] == [1, 2] and all("dev_accuracy" in e and "train_loss" in e for e in epochs)
    assert rec["history"] == [{k: v for k, v in e.items() if k != "setup_seconds"} for e in epochs]
    assert {"in_domain", "ood", "dev"} <= set(rec["metrics"]) and "hans" in rec["metrics"]["ood"]
    assert 0 < rec["params"]["trainable"] <= rec["params"]["total"]
    phases = rec["resources"]["phases"]
    assert {"load", "train", "dev", "serve", "evaluate"} <= set(phases)
    # a replicate keeping its last epoch: the training steps (CD: and the teacher's targets); its dev passes select nothing
    adapt = phases["train"]["seconds"] + phases.get("teacher_targets", {}).get("seconds", 0)
    assert rec["resources"]["adaptation_seconds"] == pytest.approx(adapt, abs=2e-3)
    assert rec["resources"]["dev_seconds_uncharged"] == phases["dev"]["seconds"]
    serving = rec["resources"]["serving"]
    assert serving["queries"] == min(32, rec["metrics"]["in_domain"]["n_scored"]) and serving["batch_size"] == 8
    assert serving["repeats"] == 3 and len(serving["ms_per_query_runs"]) == 3
    assert serving["ms_per_query"] == sorted(serving["ms_per_query_runs"])[1]  # the median of three
    assert serving["spread_ms"] == [min(serving["ms_per_query_runs"]), max(serving["ms_per_query_runs"])]
    assert serving["cpu_ms_per_query"] > 0 and serving["exclusive"] is False  # a single run has no gate
    assert serving["peak_memory_mib"] > 0 and serving["start"] < serving["end"] and serving["node"]
    for block in [rec["metrics"]["in_domain"], *rec["metrics"]["ood"].values()]:  # every example, recomputable
        ex = block["examples"]
        assert len(ex["ids"]) == len(ex["correct"]) == len(ex["pred"]) == block["n_scored"]
        assert ex["correct"].count("1") / block["n_scored"] == pytest.approx(block["accuracy"], abs=1e-4)
    assert rec["resolved"]["lr"] == 3e-3 and rec["config"]["peft"]["kind"] == peft
    if method == "cd":
        assert "in_domain" in rec["metrics"]["teacher"] and rec["extra"]["distilled_inputs"] == 64
        assert {"teacher_targets", "teacher_eval"} <= set(phases)  # the teacher's evaluation is not CD's cost
        # a pruned trial leaves only its epoch reports: the first carries the teacher's cost
        assert epochs[0]["setup_seconds"] == phases["teacher_targets"]["seconds"] and "setup_seconds" not in epochs[1]
    json.dumps(rec)


def test_icl_records_its_serving_cost_and_no_adaptation(tiny_opt, data_dir):
    rec = run(config(tiny_opt, data_dir, method="icl", shots=4))
    assert set(rec["resources"]["phases"]) == {"load", "evaluate", "serve"}
    assert rec["resources"]["adaptation_seconds"] == 0
    assert rec["resources"]["serving"]["queries"] == min(32, rec["metrics"]["in_domain"]["n_scored"]) > 0
    assert "correct_full_vocab" in rec["metrics"]["in_domain"]["examples"]


def test_each_data_seed_scores_its_own_evaluation_subset_the_same_for_every_method(tiny_opt, data_dir):
    ids = {}
    for method, seed in [("icl", 0), ("pbft", 0), ("icl", 1)]:
        rec = run(config(tiny_opt, data_dir, method=method, data_seed=seed, eval_limit=10, **{"train.epochs": 1}))
        ids[(method, seed)] = rec["metrics"]["in_domain"]["examples"]["ids"]
    assert ids[("icl", 0)] == ids[("pbft", 0)] and len(ids[("icl", 0)]) == 10
    assert ids[("icl", 1)] != ids[("icl", 0)]


def test_each_replicate_gets_its_own_recorded_training_seed(tiny_opt, data_dir):
    cfg = config(tiny_opt, data_dir, method="pbft", **{"train.epochs": 1, "peft.kind": "lora"})
    seeds = {cfg.replace(data_seed=d).training_seed() for d in range(5)}
    assert len(seeds) == 5 and cfg.training_seed() == config(tiny_opt, data_dir).training_seed()
    assert cfg.replace(seed=7).training_seed() == 7  # an explicit seed wins
    assert run(cfg.replace(data_seed=3))["seed"] == cfg.replace(data_seed=3).training_seed()


@pytest.mark.parametrize("method", ["ft", "pbft"])
@pytest.mark.parametrize("arch", ["tiny_opt", "tiny_llama"])
def test_fine_tuning_learns_the_easy_task(method, arch, request, data_dir):
    rec = run(config(request.getfixturevalue(arch), data_dir, method=method, **{"train.epochs": 20}))
    assert rec["metrics"]["in_domain"]["accuracy"] >= 0.85, rec["history"]
    assert rec["metrics"]["ood"]["hans"]["accuracy"] >= 0.85
    assert rec["history"][-1]["train_loss"] < rec["history"][0]["train_loss"]


def train_teacher(tiny_dir, data_dir):
    """A tiny model taught the synthetic task with demonstrations in its context, saved as a folder."""
    path = tiny_dir / "teacher"
    if path.exists():
        return str(path)
    torch.manual_seed(0)
    model, tok = load_causal_lm(str(synthetic.make_model(tiny_dir / "teacher_init", "llama", seed=1)), "float32", "cpu")
    prompt, task = get_prompt("nli", "eval_harness"), load_task("rte", data_dir, ood=())
    index = torch.tensor(label_token_ids(tok, prompt))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        batch = [task.train[int(i)] for i in torch.randint(len(task.train), (8,), generator=g)]
        demos = [task.train[int(i)] for i in torch.randint(len(task.train), (int(torch.randint(0, 5, (1,), generator=g)),), generator=g)]
        ids, mask, last = collate(PromptIds(tok, prompt, demos).training_inputs(batch, 256), tok.pad_token_id, "cpu")
        loss = F.cross_entropy(answer_logits(model, ids, mask, last)[:, index], torch.tensor([ex.label for ex in batch]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_context_distillation_learns_from_a_good_teacher(tiny_dir, tiny_llama, data_dir):
    teacher = train_teacher(tiny_dir, data_dir)
    rec = run(config(tiny_llama, data_dir, method="cd", shots=4, n_unlabeled=128,
                     **{"cd.teacher_model": teacher, "peft.kind": "none", "train.epochs": 10}))
    assert rec["metrics"]["teacher"]["in_domain"]["accuracy"] >= 0.9  # the context-given skill exists
    assert rec["metrics"]["in_domain"]["accuracy"] >= 0.85  # and the student, with no context, has it too
    assert rec["history"][-1]["train_loss"] < 0.5 * rec["history"][0]["train_loss"]
    assert rec["extra"]["kl_to_teacher_after"] < 0.5 * rec["extra"]["kl_to_teacher_before"]


def test_context_distillation_moves_the_student_towards_its_own_teacher(tiny_opt, data_dir):
    rec = run(config(tiny_opt, data_dir, method="cd", shots=8, **{"train.epochs": 5, "train.lr": 1e-2}))
    assert rec["extra"]["kl_to_teacher_before"] > 0
    assert rec["extra"]["kl_to_teacher_after"] < rec["extra"]["kl_to_teacher_before"]
    assert rec["history"][-1]["train_loss"] < rec["history"][0]["train_loss"]


def test_the_teacher_runs_once_per_input_not_once_per_epoch(tiny_dir, tiny_opt, data_dir, monkeypatch):
    teacher = str(synthetic.make_model(tiny_dir / "opt_teacher", "opt", seed=3))
    rows = []
    real_load = trainers.methods.cd._load_teacher

    def counting_load(cfg, tok, *args):
        model = real_load(cfg, tok, *args)
        model.register_forward_hook(lambda m, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
        return model

    monkeypatch.setattr(trainers.methods.cd, "_load_teacher", counting_load)
    counts = []
    for epochs in (1, 3):
        rows.clear()
        run(config(tiny_opt, data_dir, method="cd", shots=4, **{"cd.teacher_model": teacher, "train.epochs": epochs}))
        counts.append(sum(rows))
    # one prefix pass per scoring call, plus every unlabelled input and evaluation example once
    assert counts[0] == counts[1]
    assert counts[0] < 64 + 2 * 40 + 16 + 10


@pytest.mark.parametrize("kind", ["lora", "bitfit"])
@pytest.mark.parametrize("arch", ["tiny_opt", "tiny_llama"])
def test_peft_trains_exactly_the_intended_parameters(kind, arch, request, data_dir):
    model, tok = load_causal_lm(request.getfixturevalue(arch), "float32", "cpu")
    model, facts = adapters.apply(model, PeftConfig(kind=kind))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if kind == "lora":
        assert trainable and all("lora_" in n for n in trainable)
        assert {n.split(".")[-4] for n in trainable} == {"q_proj", "v_proj"}
    else:
        assert trainable and all(n.endswith(".bias") for n in trainable)
        if arch == "tiny_llama":  # no biases of its own: zero-initialised ones were added to the linear layers
            assert facts["zero_init_biases_added"] == 2 * 7
            assert all(float(before[n].abs().sum()) == 0 for n in trainable)
    assert not any("embed" in n for n in trainable)
    prompt = get_prompt("nli", "eval_harness")
    task = load_task("rte", data_dir, ood=())
    prompt_ids, index = PromptIds(tok, prompt, []), torch.tensor(label_token_ids(tok, prompt))

    def loss_fn(batch):
        ids, mask, last = collate(prompt_ids.training_inputs(batch, 64), tok.pad_token_id, "cpu")
        return F.cross_entropy(answer_logits(model, ids, mask, last)[:, index], torch.tensor([ex.label for ex in batch]))

    train(model, task.train[:16], loss_fn, lambda: EvalBlock(accuracy=0.0), TrainConfig(epochs=2, batch_size=8), 1e-2, 0)
    for n, p in model.named_parameters():
        if n in trainable:
            assert not torch.equal(p, before[n]) or "lora_A" in n and kind == "lora", n
        else:
            assert torch.equal(p, before[n]), f"{n} changed but is not {kind}-trainable"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in trainable)


def test_same_seeds_give_identical_results(tiny_opt, data_dir):
    cfg = config(tiny_opt, data_dir, method="pbft", **{"train.epochs": 3, "peft.kind": "lora"})
    a, b = run(cfg), run(cfg)
    assert a["metrics"] == b["metrics"]
    assert [(h["train_loss"], h["dev_accuracy"]) for h in a["history"]] == [(h["train_loss"], h["dev_accuracy"]) for h in b["history"]]
    c = run(cfg.replace(seed=cfg.training_seed() + 1))
    assert [h["train_loss"] for h in c["history"]] != [h["train_loss"] for h in a["history"]]


def test_a_non_finite_loss_gives_a_diverged_result(tiny_opt, data_dir, monkeypatch):
    nan_ce = lambda logits, labels, **kw: (logits.sum() * float("nan"))
    monkeypatch.setattr(trainers.methods.pbft, "F", types.SimpleNamespace(cross_entropy=nan_ce))
    reports = []
    rec = run(config(tiny_opt, data_dir, method="pbft", **{"train.epochs": 3}), reports.append)
    assert rec["status"] == "diverged" and "non-finite loss" in rec["error"]
    assert rec["metrics"] == {} and reports == [] and rec["extra"]["steps"] == 0


def test_best_epoch_selection_restores_the_best_dev_weights(tiny_opt, data_dir):
    rec = run(config(tiny_opt, data_dir, method="pbft", **{"train.epochs": 6, "train.selection": "best"}))
    best = max(rec["history"], key=lambda h: h["dev_accuracy"])
    assert rec["extra"]["selected_epoch"] == best["epoch"]
    assert rec["metrics"]["dev"]["accuracy"] == best["dev_accuracy"]


def test_best_selection_leaves_the_model_on_the_weights_whose_dev_score_is_reported():
    from trainers.config import TrainConfig
    from trainers.runtime.training import train
    torch.manual_seed(0)
    model, x, y = torch.nn.Linear(4, 2), torch.randn(16, 4), torch.randint(0, 2, (16,))
    loss_fn = lambda batch: torch.nn.functional.cross_entropy(model(x[batch]), y[batch])  # noqa: E731
    dev_fn = lambda: EvalBlock(accuracy=-torch.nn.functional.cross_entropy(model(x), 1 - y).detach().item())  # noqa: E731
    cfg = TrainConfig(epochs=8, batch_size=4, selection="best", warmup_ratio=0.0)
    outcome = train(model, list(range(16)), loss_fn, dev_fn, cfg, lr=0.5, seed=0)
    scores = [h.dev_accuracy for h in outcome.history]
    assert outcome.best_epoch == 1 + scores.index(max(scores)) and outcome.best_epoch < len(scores)
    assert dev_fn() == outcome.dev  # the reported dev metrics are those of the weights the model ends with


def test_run_help_lists_methods_and_tasks_and_shows_defaults():
    from trainers.cli import build_parser
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
    from trainers.methods.spec import METHODS
    assert f"one of: {', '.join(sorted(METHODS))} (default: icl)" in text and "one of: cola, mnli" in text
    assert "(default: 16)" in text and "(default: lexical_overlap)" in text
    assert "one of: cola_ood, hans, paws_qqp" in text and "for rte, mnli, mnli_merge_neutral: eval_harness, gpt3, minimal" in text


def test_a_single_run_prints_a_line_per_epoch_and_per_evaluation_set_without_a_tty(tiny_opt, data_dir):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "trainers", "run", "--method", "pbft", "--model", tiny_opt, "--data-dir",
                        data_dir, "--shots", "8", "--n-dev", "8", "--epochs", "2", "--eval-limit", "12", "--ood", "hans"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "FEWSHOT_PROGRESS": "0"})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()  # a pipe, not a terminal: no progress bars, but these lines
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("train loss" in ln and "dev accuracy" in ln and ln.endswith(" s") for ln in epochs)
    assert any(ln.startswith("in_domain: accuracy ") and " on 12 examples, " in ln for ln in lines)
    assert any(ln.startswith("hans: accuracy ") and " on 12 examples, " in ln for ln in lines)
    assert any(ln.startswith("train: ") and "peak" in ln for ln in lines)
