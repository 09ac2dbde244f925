"""Fitting k demonstrations and the queries into a small window: truncate, drop_queries, fail."""
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from trainers.runtime.context_fit import ContextError, fit
from trainers.methods import entry
from trainers.methods.entry import resolve
from trainers.contract import dump
from trainers.data.prompts import get_prompt
from trainers.runtime.scoring import PromptIds
from trainers.data.tasks import Example, load_task


def run(cfg, report=None):
    """The method's record and epoch reports in their JSON form (what `--json` writes, what Ray gets)."""
    return dump(entry.run(cfg, report and (lambda epoch: report(dump(epoch)))))

PROMPT = get_prompt("nli", "eval_harness")


@pytest.fixture(scope="module")
def setup(tiny_opt, data_dir):
    tok = AutoTokenizer.from_pretrained(tiny_opt)
    task = load_task("rte", data_dir, ood=())
    demos = task.train[:8]
    long_demo = Example(demos[0].text1 + " the red tree" * 30, demos[0].text2, demos[0].label)
    return tok, [long_demo] + demos[1:], task.eval[:20]


def sizes(tok, demos, queries):
    ids = PromptIds(tok, PROMPT, demos)
    return len(ids.context), max(len(q) for q in ids.queries(queries))


def test_truncate_shortens_the_longest_texts_keeps_every_demonstration_and_label(setup):
    tok, demos, queries = setup
    context, longest = sizes(tok, demos, queries)
    window = context // 2 + longest
    f = fit(tok, PROMPT, demos, queries, window, "truncate")
    assert len(f.demos) == len(demos) and [d.label for d in f.demos] == [d.label for d in demos]
    assert f.facts["context_tokens"] + f.facts["longest_query_tokens"] <= window
    assert f.facts["tokens_cut"] == context - f.facts["context_tokens"] > 0
    assert f.facts["demos_truncated"] == sum(a != b for a, b in zip(demos, f.demos)) >= 1
    assert f.demos[0] != demos[0]  # the longest text lost most
    for before, after in zip(demos, f.demos):  # texts only shortened from the end; label words untouched
        assert before.text1.startswith(after.text1) and before.text2.startswith(after.text2)
        assert PROMPT.demonstration(after).endswith(PROMPT.label_words[after.label])
    assert f.prompt_ids.context == PromptIds(tok, PROMPT, f.demos).context
    unchanged = fit(tok, PROMPT, demos, queries, context + longest, "truncate")
    assert unchanged.demos == demos and unchanged.facts["demos_truncated"] == 0


def test_drop_queries_keeps_the_demonstrations_whole(setup):
    tok, demos, queries = setup
    context, longest = sizes(tok, demos, queries)
    f = fit(tok, PROMPT, demos, queries, context + longest - 1, "drop_queries")
    assert f.demos == demos and f.facts["tokens_cut"] == 0


def test_fail_stops_with_the_numbers(setup):
    tok, demos, queries = setup
    context, longest = sizes(tok, demos, queries)
    with pytest.raises(ContextError, match=f"take {context} tokens and the longest query {longest}"):
        fit(tok, PROMPT, demos, queries, context + longest - 1, "fail")
    with pytest.raises(ContextError, match="even with every demonstration text emptied"):
        fit(tok, PROMPT, demos, queries, longest + 3, "truncate")


@pytest.mark.parametrize("policy", ["truncate", "drop_queries"])
def test_icl_run_under_max_context_reports_what_it_did(policy, tiny_opt, data_dir):
    base = {"method": "icl", "task": "rte", "model": tiny_opt, "data_dir": data_dir, "shots": 8, "n_dev": 8,
            "n_unlabeled": 8, "eval_limit": 20}
    full = run(resolve(base))["resolved"]["context"]
    window = full["context_tokens"] * 3 // 4 + full["longest_query_tokens"]  # room for the pattern, not the texts
    rec = run(resolve({**base, "max_context": window, "context_fit": policy}))
    ctx = rec["resolved"]["context"]
    assert ctx["window"] == window and ctx["policy"] == policy
    dropped = rec["metrics"]["in_domain"]["n_dropped"] + rec["metrics"]["ood"]["hans"]["n_dropped"]
    if policy == "truncate":
        assert dropped == 0 and ctx["demos_truncated"] > 0 and ctx["tokens_cut"] > 0
        assert rec["metrics"]["in_domain"]["n_scored"] == 20
    else:
        assert dropped == 40 and ctx["demos_truncated"] == 0  # the whole demonstrations leave no query room enough


def test_fail_policy_is_a_one_line_usage_error(tiny_opt, data_dir):
    r = subprocess.run([sys.executable, "-m", "trainers", "run", "--method", "icl", "--task", "rte", "--model", tiny_opt,
                        "--data-dir", data_dir, "--shots", "8", "--n-dev", "8", "--n-unlabeled", "8", "--eval-limit", "10",
                        "--max-context", "60", "--context-fit", "fail"], capture_output=True, text=True)
    assert r.returncode == 2 and "> the window of 60; use --context-fit truncate" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
