import random

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from trainers.data.prompts import PromptError, get_prompt, label_token_ids, pattern_names
from trainers.runtime.scoring import PromptIds
from trainers.data.tasks import Example

DEMOS = [Example("A man sleeps.", "A person rests.", 0), Example("Dogs bark.", "Cats fly.", 1)]
QUERY = Example("It rains.", "The ground is wet.", 0)
WORDS = "the a man dog cat sleeps rests bark fly rain ground is wet house river green cold person it".split()


def _texts(rng: random.Random, n: int) -> list[Example]:
    sent = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))).capitalize() + rng.choice([".", " .", "?"])
    return [Example(sent(), sent(), i % 2) for i in range(n)]


def _corpus() -> list[str]:
    """Whole prompts of every pattern, so the tokenizers learn the separators' merges ("\\n\\n" as one token)."""
    rng, out = random.Random(0), []
    for family in ("nli", "qqp", "cola"):
        for name in pattern_names(family):
            p = get_prompt(family, name)
            for _ in range(40):
                demos = _texts(rng, 3)
                out.append(p.context(demos) + p.separator + p.separator.join(p.label_words) + "\n\n\n")
    return out


def _fast(tok, bos: bool):
    from tokenizers import processors
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def bpe_tokenizer():
    """Byte-level BPE with GPT-2's pre-tokenization (OPT, GPT-2, SmolLM2): "\\n\\n" at a string's end is one token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _fast(tok, bos=True)


def sentencepiece_tokenizer(newlines_apart: bool = True):
    """SentencePiece-style (Llama, Gemma): spaces become "▁" on the next word, "▁" is prepended to a string, and
    newlines are pieces of their own (Gemma's whitespace symbols; byte fallback in Llama) unless told otherwise."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    metaspace = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex("\n+"), "isolated"), metaspace]) \
        if newlines_apart else metaspace
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"]))
    return _fast(tok, bos=True)


TOKENIZERS = {"bpe": bpe_tokenizer, "sentencepiece": sentencepiece_tokenizer}
PATTERNS = [(f, n) for f in ("nli", "qqp", "cola") for n in pattern_names(f)]


@pytest.fixture(scope="module", params=sorted(TOKENIZERS))
def tokenizer(request):
    return TOKENIZERS[request.param]()


@pytest.mark.parametrize("family,name", PATTERNS)
def test_demonstrations_and_query_are_formatted_identically(family, name):
    p = get_prompt(family, name)
    for ex in DEMOS + [QUERY]:
        # A demonstration is exactly the query text plus its label word: no trailing space, no variant.
        assert p.demonstration(ex) == p.format_input(ex) + p.label_words[ex.label]
        assert not p.format_input(ex).endswith(" ")
    assert p.context(DEMOS) == p.separator.join(p.format_input(d) + p.label_words[d.label] for d in DEMOS)
    full = p.full(DEMOS, QUERY)
    assert full == p.context(DEMOS) + p.separator + p.format_input(QUERY)
    # The query after the context reads as a demonstration would, up to its label word.
    assert (full + p.label_words[0]).endswith(p.separator + p.demonstration(QUERY))
    assert p.full([], QUERY) == p.format_input(QUERY)


@pytest.mark.parametrize("family,name", PATTERNS)
def test_scored_ids_are_the_whole_prompt_strings_ids(tokenizer, family, name):
    p = get_prompt(family, name)
    rng = random.Random(1)
    queries = _texts(rng, 12)
    for demos in ([], _texts(rng, 1), _texts(rng, 5)):
        ids = PromptIds(tokenizer, p, demos)
        for q, q_ids in zip(queries, ids.queries(queries)):
            assert ids.context + q_ids == ids.whole(q), (family, name, p.full(demos, q))
        assert ids.context[:1] == [tokenizer.bos_token_id]  # special tokens belong to the context, once


def test_tokenizing_context_and_query_apart_would_differ(tokenizer):
    """The old way (context ending in its separator, query tokenized alone) gives other ids: the check has teeth."""
    differs = 0
    for family, name in PATTERNS:
        p = get_prompt(family, name)
        apart = tokenizer(p.context(DEMOS) + p.separator)["input_ids"] + \
            tokenizer(p.format_input(QUERY), add_special_tokens=False)["input_ids"]
        differs += apart != PromptIds(tokenizer, p, DEMOS).whole(QUERY)
    assert differs > 0


def test_a_tokenizer_merging_across_the_prefix_boundary_is_refused():
    """Pieces that join a label word and the newline ("e\n") leave no shared prefix to cache: a clear error."""
    from trainers.runtime.scoring import TokenizationError
    tok = sentencepiece_tokenizer(newlines_apart=False)
    ids = PromptIds(tok, get_prompt("nli", "eval_harness"), DEMOS)
    assert ids.whole(QUERY)[:len(ids.context)] != ids.context
    with pytest.raises(TokenizationError, match="cannot be cached as one prefix; choose another --pattern"):
        ids.queries([QUERY])


def test_training_inputs_cut_the_query_from_the_left(tiny_opt):
    tok = AutoTokenizer.from_pretrained(tiny_opt)
    p = get_prompt("nli", "eval_harness")
    ids = PromptIds(tok, p, [])
    full = ids.training_inputs([QUERY], 1000)[0]
    assert full == ids.whole(QUERY) and full[0] == tok.bos_token_id
    short = ids.training_inputs([QUERY], 6)[0]
    assert len(short) == 6 and short[0] == tok.bos_token_id and short[1:] == full[-5:]


def test_reference_patterns_text():
    p = get_prompt("nli", "gpt3")
    assert p.demonstration(DEMOS[0]) == "A man sleeps. question: A person rests. Yes or No? answer: Yes"
    p = get_prompt("nli", "eval_harness")
    assert p.demonstration(DEMOS[1]) == "Dogs bark.\nQuestion: Cats fly. True or False?\nAnswer: False"


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
