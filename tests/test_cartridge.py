"""The cartridge student (trainers/methods/cartridge.py): a trained key/value prefix of the frozen model."""
import json

import pytest
import torch

from trainers.methods import cartridge
from trainers.config import ConfigError
from trainers.runtime.evaluation import label_word_predictions
from trainers.runtime.memory_plan import kv_bytes_per_token, shape_from_config, trainable_params
from trainers.methods import entry
from trainers.methods.entry import resolve, validate
from trainers.contract import dump
from trainers.runtime.models import load_causal_lm
from trainers.data.prompts import get_prompt, label_token_ids
from trainers.data.sampling import draw
from trainers.runtime.scoring import ContextScorer, PromptIds
from trainers.data.tasks import load_task


def run(cfg, report=None):
    """The method's record and epoch reports in their JSON form (what `--json` writes, what Ray gets)."""
    return dump(entry.run(cfg, report and (lambda epoch: report(dump(epoch)))))


def config(model, data_dir, **over):
    base = {"task": "rte", "model": model, "data_dir": data_dir, "method": "cartridge", "shots": 8, "n_dev": 16,
            "n_unlabeled": 32, "eval_limit": 24, "train.epochs": 2, "train.batch_size": 8, "train.lr": 3e-2,
            "cartridge.tokens": 24}
    return resolve({**base, **over})


@pytest.mark.parametrize("arch", ["tiny_llama", "tiny_opt"])
def test_an_untrained_cartridge_scores_exactly_as_icl_with_its_first_p_tokens(arch, request, data_dir):
    model, tok = load_causal_lm(request.getfixturevalue(arch), "float32", "cpu")
    model.eval()
    task = load_task("rte", data_dir, ood=())
    prompt = get_prompt("nli", "eval_harness")
    d = draw(task.train, len(task.classes), 8, 0, n_dev=8, n_unlabeled=0)
    demos = PromptIds(tok, prompt, d.labelled)
    label_ids = label_token_ids(tok, prompt)
    p = 20
    assert len(demos.context) > p  # the prefix is a strict part of the demonstrations
    first_p = PromptIds(tok, prompt, [])
    first_p.context = demos.context[:p]
    first_p.queries = demos.queries  # the queries as they continue the demonstrations
    icl = label_word_predictions(ContextScorer(model, tok, 4, True, 4096), first_p, label_ids, d.dev)
    student = cartridge.make_student(model, demos.context, p, frozen=1)
    student.eval()
    behind = label_word_predictions(ContextScorer(student, tok, 4, False, 4096), cartridge.BehindPrefix(demos),
                                    label_ids, d.dev)
    assert torch.allclose(behind.logprobs, icl.logprobs, atol=1e-5), (behind.logprobs - icl.logprobs).abs().max()


def test_only_the_prefix_trains_and_the_record_counts_its_kv_bytes(tiny_llama, data_dir):
    base_before = {k: v.clone() for k, v in load_causal_lm(tiny_llama, "float32", "cpu")[0].state_dict().items()}
    seen = {}
    real = cartridge.make_student

    def keep(model, *args, **kw):
        seen["model"] = model
        return real(model, *args, **kw)

    cartridge.make_student, restore = keep, real
    try:
        epochs = []
        rec = run(config(tiny_llama, data_dir, **{"train.epochs": 4}), epochs.append)
    finally:
        cartridge.make_student = restore
    assert rec["status"] == "completed" and [e["epoch"] for e in epochs] == [1, 2, 3, 4], rec["error"]
    losses = [e["train_loss"] for e in epochs]
    assert losses[-1] < 0.7 * losses[0], losses  # the student moves towards its teacher
    base_after = seen["model"].state_dict()
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)  # the model itself is untouched
    assert rec["extra"]["prefix_max_change"] > 0  # ... and the prefix moved
    shape = shape_from_config(seen["model"].config)
    p = rec["resolved"]["cartridge_tokens"]
    assert p == 24 and rec["params"]["trainable"] == trainable_params(shape, "cartridge", "none", prefix_tokens=p) - (
        2 * shape.layers * shape.kv_heads * shape.head_dim)  # one frozen position (the attention sink) excluded
    assert rec["resources"]["serving"]["kv_bytes_per_query"] == p * kv_bytes_per_token(shape, 4)
    assert {"teacher_targets", "train", "serve"} <= set(rec["resources"]["phases"])
    assert epochs[0]["setup_seconds"] == rec["resources"]["phases"]["teacher_targets"]["seconds"]
    assert "in_domain" in rec["metrics"]["teacher"] and "hans" in rec["metrics"]["ood"]
    json.dumps(rec)


def test_icl_records_the_kv_bytes_of_its_whole_context(tiny_opt, data_dir):
    rec = run(resolve({"task": "rte", "model": tiny_opt, "data_dir": data_dir, "method": "icl", "shots": 4,
                       "eval_limit": 16}))
    shape = shape_from_config(load_causal_lm(tiny_opt, "float32", "cpu")[0].config)
    context = rec["resolved"]["context_tokens"]
    assert context > 0 and rec["resources"]["serving"]["kv_bytes_per_query"] == context * kv_bytes_per_token(shape, 4)


@pytest.mark.parametrize("over,message", [
    ({"parallel": "fsdp"}, r"cartridge does not run under --parallel fsdp \(its prefix lives in peft's"),
    ({"train.grad_checkpointing": True}, r"cartridge trains a key/value prefix, which gradient checkpointing"),
    ({"peft.kind": "lora"}, r"cartridge accepts --peft none, not lora"),
])
def test_what_a_cartridge_cannot_combine_with_is_refused_in_one_line(tiny_llama, data_dir, over, message):
    with pytest.raises(ConfigError, match=message):
        validate(config(tiny_llama, data_dir, **over))


def test_a_long_context_prefilled_in_chunks_scores_as_one_pass(tiny_llama):
    from trainers.runtime.scoring import answer_logits, batch_cache, collate, prefill
    model, tok = load_causal_lm(tiny_llama, "float32", "cpu")
    model.eval()
    context = list(range(5, 5 + 70))
    query = [[7, 8, 9, 10], [11, 12]]
    ids, mask, last = collate(query, tok.pad_token_id, "cpu")
    with torch.no_grad():
        whole = answer_logits(model, ids, mask, last, batch_cache(prefill(model, context, "cpu", chunk=4096), 2))
        chunked = answer_logits(model, ids, mask, last, batch_cache(prefill(model, context, "cpu", chunk=16), 2))
    assert torch.allclose(whole, chunked, atol=1e-5), (whole - chunked).abs().max()
