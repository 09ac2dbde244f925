"""Tiny randomly initialised models and a tiny, easily separable task, made offline in seconds.

    python -m trainers.data.synthetic /tmp/tiny     # writes /tmp/tiny/{opt,llama} models and /tmp/tiny/data

For tests, the `smoke` sweep and machines without the hub. The data follows the hub's schema
(`glue/rte/*.jsonl`, `hans/validation.jsonl`), so it loads through the same code as real data.
The rule: a cue word, repeated in both sentences, decides the label ("cat" -> entailment, "dog" -> not).
The tokenizer is a byte-level BPE trained in memory on that vocabulary, the label words
(" True", " False", " Yes", " No") single tokens as in real tokenizers.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

FILLER = ("the red blue small big old new tree house river stone bird fish road hill sun moon star "
          "green cold warm fast slow").split()
CUES = ("cat", "dog")  # class 0, class 1
HEURISTICS = ("lexical_overlap", "subsequence", "constituent")


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(FILLER) for _ in range(n)).capitalize() + " ."


def synthetic_rows(n: int, seed: int, heuristic: bool = False) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label, cue = i % 2, CUES[i % 2]
        s1 = _sentence(rng, rng.randint(3, 6))[:-2] + f" {cue} {cue} ."
        s2 = _sentence(rng, rng.randint(1, 3))[:-2] + f" {cue} ."
        row = {"sentence1": s1, "sentence2": s2, "label": label, "idx": i}
        if heuristic:
            row = {"premise": row["sentence1"], "hypothesis": s2, "label": label,
                   "heuristic": HEURISTICS[(i // 2) % len(HEURISTICS)]}
        rows.append(row)
    rng.shuffle(rows)
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_data(root: str | Path, n_train: int = 400, n_eval: int = 60, n_hans: int = 60, seed: int = 0) -> Path:
    """A data folder in the hub's schema holding the synthetic task as RTE and HANS."""
    root = Path(root)
    _write_jsonl(root / "glue/rte/train.jsonl", synthetic_rows(n_train, seed))
    _write_jsonl(root / "glue/rte/validation.jsonl", synthetic_rows(n_eval, seed + 1))
    _write_jsonl(root / "hans/validation.jsonl", synthetic_rows(n_hans, seed + 2, heuristic=True))
    return root


def build_tokenizer(add_bos: bool):
    """A byte-level BPE tokenizer trained in memory on the synthetic vocabulary and prompt words."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = FILLER + list(CUES) + "Question True False Yes No Answer answer question or ? : .".split()
    corpus = [" ".join(words)] * 50 + [f"{w} {w}" for w in words for _ in range(20)]
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def model_config(arch: str, vocab_size: int):
    """A tiny config: 2 layers, hidden 64. OPT adds a BOS token; the Llama tokenizer does not."""
    if arch == "opt":
        from transformers import OPTConfig
        return OPTConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, ffn_dim=128,
                         num_attention_heads=4, max_position_embeddings=1024, word_embed_proj_dim=64,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2, dropout=0.0, attention_dropout=0.0)
    if arch == "llama":
        from transformers import LlamaConfig
        return LlamaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    raise ValueError(f"unknown tiny architecture {arch!r}; valid: opt, llama")


def make_model(path: str | Path, arch: str = "opt", seed: int = 0) -> Path:
    """Save a tiny random `arch` causal LM with its tokenizer to `path` (skipped if already there)."""
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if (path / "config.json").exists():
        return path
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    tok = build_tokenizer(add_bos=arch == "opt")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(model_config(arch, len(tok)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tiny")
    for a in ("opt", "llama"):
        print(make_model(out / a, a))
    print(write_data(out / "data"))
