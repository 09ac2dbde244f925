import pytest
from transformers import AutoTokenizer

from trainers.prompts import PromptError, get_prompt, label_token_ids
from trainers.scoring import encode_context, encode_query
from trainers.tasks import Example

DEMOS = [Example("A man sleeps.", "A person rests.", 0), Example("Dogs bark.", "Cats fly.", 1)]
QUERY = Example("It rains.", "The ground is wet.", 0)


@pytest.mark.parametrize("family,name", [("nli", "minimal"), ("nli", "gpt3"), ("nli", "eval_harness"),
                                          ("qqp", "minimal"), ("qqp", "eval_harness"), ("cola", "minimal")])
def test_demonstrations_and_query_are_formatted_identically(family, name):
    p = get_prompt(family, name)
    for ex in DEMOS + [QUERY]:
        # A demonstration is exactly the query text plus its label word: no trailing space, no variant.
        assert p.demonstration(ex) == p.format_input(ex) + p.label_words[ex.label]
        assert not p.format_input(ex).endswith(" ")
    context = p.context(DEMOS)
    assert context == "".join(p.format_input(d) + p.label_words[d.label] + p.separator for d in DEMOS)
    # The query after the context reads as a demonstration would, up to its label word.
    full = context + p.format_input(QUERY)
    assert (full + p.label_words[0]).endswith(p.demonstration(QUERY))


def test_reference_patterns_text():
    p = get_prompt("nli", "gpt3")
    assert p.demonstration(DEMOS[0]) == "A man sleeps. question: A person rests. Yes or No? answer: Yes"
    p = get_prompt("nli", "eval_harness")
    assert p.demonstration(DEMOS[1]) == "Dogs bark.\nQuestion: Cats fly. True or False?\nAnswer: False"


def test_context_and_query_ids_are_the_concatenation_scored(tiny_opt):
    tok = AutoTokenizer.from_pretrained(tiny_opt)
    p = get_prompt("nli", "eval_harness")
    ctx = encode_context(tok, p, DEMOS)
    assert ctx[0] == tok.bos_token_id  # special tokens belong to the context, once
    assert tok.bos_token_id not in encode_query(tok, p, QUERY)
    assert encode_context(tok, p, []) == [tok.bos_token_id]


def test_label_words_must_be_single_tokens(tiny_opt):
    tok = AutoTokenizer.from_pretrained(tiny_opt)
    p = get_prompt("nli", "eval_harness")
    ids = label_token_ids(tok, p)
    assert len(ids) == 2 and len(set(ids)) == 2
    bad = p.__class__(**{**p.__dict__, "label_words": (" True", " Trueish")})
    with pytest.raises(PromptError, match="' Trueish' of pattern 'eval_harness' is [0-9]+ tokens"):
        label_token_ids(tok, bad)


def test_unknown_pattern_lists_valid_names():
    with pytest.raises(PromptError, match="valid: eval_harness, gpt3, minimal"):
        get_prompt("nli", "fancy")
