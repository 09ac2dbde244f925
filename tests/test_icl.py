import json
import subprocess
import sys

import pytest
import torch

from trainers.config import RunConfig
from trainers.runtime.evaluation import Predictions, label_word_predictions, metrics
from trainers.methods import icl
from trainers.contract import dump
from trainers.runtime.models import load_causal_lm
from trainers.data.prompts import get_prompt, label_token_ids
from trainers.runtime.scoring import ContextScorer, PromptIds
from trainers.data.tasks import Example, load_task


def run_icl(cfg, report=None):
    """ICL's record and epoch report in their JSON form (what `--json` writes, what Ray gets)."""
    return dump(icl.run(cfg, report and (lambda epoch: report(dump(epoch)))))


@pytest.mark.parametrize("arch", ["tiny_opt", "tiny_llama"])
def test_cached_and_plain_scoring_agree(arch, request, data_dir):
    model, tok = load_causal_lm(request.getfixturevalue(arch), dtype="float32", device="cpu")
    task = load_task("rte", data_dir, ood=())
    prompt = get_prompt("nli", "eval_harness")
    label_ids = label_token_ids(tok, prompt)
    ids = PromptIds(tok, prompt, task.train[:6])
    queries = task.eval[:20]
    cached = label_word_predictions(ContextScorer(model, tok, 4, True, 512), ids, label_ids, queries)
    plain = label_word_predictions(ContextScorer(model, tok, 3, False, 512), ids, label_ids, queries)
    assert cached.logprobs.shape == (20, 2)
    assert torch.allclose(cached.logprobs, plain.logprobs, atol=1e-4, rtol=0)
    assert torch.equal(cached.full_vocab_correct, plain.full_vocab_correct)
    # Batching and padding must not change a query's score either.
    single = label_word_predictions(ContextScorer(model, tok, 1, True, 512), ids, label_ids, queries)
    assert torch.allclose(cached.logprobs, single.logprobs, atol=1e-4, rtol=0)


def test_queries_too_long_for_the_context_are_dropped_and_counted(tiny_opt):
    model, tok = load_causal_lm(tiny_opt, dtype="float32", device="cpu")
    prompt = get_prompt("nli", "eval_harness")
    short, long = Example("Red tree .", "Sun cat .", 0), Example("Red tree . " * 100, "Sun dog .", 1)
    scorer = ContextScorer(model, tok, 4, True, max_positions=60)
    p = label_word_predictions(scorer, PromptIds(tok, prompt, []), label_token_ids(tok, prompt), [short, long, short])
    assert len(p.labels) == 2 and p.n_dropped == 1
    ids = PromptIds(tok, prompt, [long])  # the demonstrations alone exceed the context
    p = label_word_predictions(scorer, ids, label_token_ids(tok, prompt), [short, short])
    assert len(p.labels) == 0 and p.n_dropped == 2
    assert metrics(p, ("a", "b")).n_dropped == 2


def test_metrics_accuracies_fractions_and_hans_breakdown():
    logprobs = torch.log(torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]))
    p = Predictions(logprobs, torch.tensor([0, 1, 1, 1]), ["lexical_overlap", "lexical_overlap", "subsequence", "subsequence"],
                    torch.tensor([True, False, False, False]))
    m = dump(metrics(p, ("entailment", "non_entailment")))
    assert m["accuracy"] == 0.5 and m["accuracy_full_vocab"] == 0.25
    assert m["pred_fraction"] == {"entailment": 0.75, "non_entailment": 0.25}
    assert m["breakdown"] == {
        "lexical_overlap/entailment": {"accuracy": 1.0, "n": 1},
        "lexical_overlap/non_entailment": {"accuracy": 0.0, "n": 1},
        "subsequence/non_entailment": {"accuracy": 0.5, "n": 2}}


def test_icl_run_writes_a_complete_record(tiny_llama, data_dir):
    cfg = RunConfig(method="icl", task="rte", model=tiny_llama, data_dir=data_dir, shots=4, n_dev=8, n_unlabeled=8)
    reports = []
    rec = run_icl(cfg, reports.append)
    assert rec["status"] == "completed" and reports and reports[0]["epoch"] == 1
    assert set(rec["metrics"]) == {"in_domain", "ood", "dev"}
    hans = rec["metrics"]["ood"]["hans"]
    assert hans["n_scored"] == 20 and set(hans["breakdown"]) == {"lexical_overlap/entailment", "lexical_overlap/non_entailment"}
    assert rec["resources"]["phases"]["load"]["seconds"] > 0 and rec["resources"]["peak_memory_mib"] > 0
    assert rec["resolved"]["pattern"]["name"] == "eval_harness" and rec["env"]["versions"]["torch"]
    assert rec["params"]["trainable"] == 0 and rec["params"]["total"] > 0
    json.dumps(rec)  # serialisable as it stands


def cli(*args):
    return subprocess.run([sys.executable, "-m", "trainers", "run", *args], capture_output=True, text=True)


def test_cli_writes_record_and_summary(tiny_opt, data_dir, tmp_path):
    out = tmp_path / "rec.json"
    r = cli("--method", "icl", "--task", "rte", "--model", tiny_opt, "--data-dir", data_dir, "--shots", "2",
            "--n-dev", "4", "--n-unlabeled", "4", "--eval-limit", "10", "--ood", "hans", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "in-domain" in r.stdout and "hans" in r.stdout
    rec = json.loads(out.read_text())
    assert rec["metrics"]["in_domain"]["n_scored"] == 10 and rec["config"]["shots"] == 2


@pytest.mark.parametrize("args,message", [
    (["--task", "sst9"], "unknown task 'sst9'; valid tasks:"),
    (["--method", "magic"], "unknown method 'magic'; valid methods:"),
    (["--model", "./no/such/folder"], "model folder ./no/such/folder does not exist"),
    (["--shots", "many"], "shots must be of type int"),
    (["--dtype", "float8"], "invalid choice"),
    (["--data-dir", "/no/such/dir"], "data folder /no/such/dir does not exist"),
    (["--pattern", "fancy"], "unknown pattern 'fancy'"),
    (["--ood", "imagenet"], "unknown OOD set 'imagenet'"),
])
def test_cli_usage_errors_are_one_line_with_exit_2(args, message, tiny_opt):
    r = cli("--model", tiny_opt, *args) if "--model" not in args else cli(*args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def _tiny_gemma3():
    """A Gemma-3-shaped model: five sliding-window layers (window 8) and one full-attention layer."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=16, sliding_window=8, max_position_embeddings=512,
                           layer_types=["sliding_attention"] * 5 + ["full_attention"])
    return AutoModelForCausalLM.from_config(cfg).eval()


def test_a_sliding_window_model_scores_behind_its_prefix_cache_as_in_one_pass():
    """Gemma 3 keeps only its window in five layers' caches: a many-shot context prefilled in chunks
    (shorter and longer than the window) must still score each query as the whole text in one pass."""
    from trainers.runtime.scoring import answer_logits, batch_cache, collate, prefill
    model = _tiny_gemma3()
    context, queries = list(range(5, 45)), [[7, 8, 9, 10], [11, 12]]
    with torch.no_grad():
        truth = torch.stack([model(input_ids=torch.tensor([context + q])).logits[0, -1] for q in queries])
        ids, mask, last = collate(queries, 0, "cpu")
        for chunk in (3, 16, 4096):
            cached = answer_logits(model, ids, mask, last, batch_cache(prefill(model, context, "cpu", chunk=chunk), 2))
            assert torch.allclose(cached, truth, atol=1e-5), (chunk, (cached - truth).abs().max())


@pytest.mark.parametrize("arch", ["tiny_llama", "gemma3"])
def test_kv_bytes_per_query_are_what_the_prefix_cache_holds(arch, request):
    """The record's KV bytes per query are the bytes of the context's real cache: every position in a
    full-attention model, only the window in Gemma 3's sliding layers (not 6x the window's worth)."""
    from trainers.runtime.memory_plan import kv_bytes
    from trainers.runtime.scoring import prefill
    model = _tiny_gemma3() if arch == "gemma3" else load_causal_lm(request.getfixturevalue(arch), "float32", "cpu")[0]
    for tokens in (5, 40):
        with torch.no_grad():
            cache = prefill(model, list(range(5, 5 + tokens)), "cpu")
        held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
        assert kv_bytes(model, tokens) == held, (tokens, kv_bytes(model, tokens), held)
