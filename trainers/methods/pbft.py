"""Pattern-based fine-tuning: the pretrained LM head at the answer position, trained with
cross-entropy towards the label word (restricted to the label words), optionally with LoRA or BitFit.

    python -m trainers run --method pbft --peft lora --task rte --model PATH --data-dir ../shared/data \
        --shots 32 --epochs 20 --eval-limit 200

The input is the query formatted by the pattern with no demonstrations, exactly as zero-shot ICL
scores it, and evaluation is ICL's scoring (both accuracies, per-class prediction fractions).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainers.runtime import precision, sharding
from trainers.methods.common import prepare, seed_everything
from trainers.config import RunConfig
from trainers.runtime.evaluation import dev_scores, label_word_predictions
from trainers.runtime.metering import Meter
from trainers.runtime.models import context_window, load_causal_lm, pick_device
from trainers.data.prompts import label_token_ids
from trainers.runtime.scoring import ContextScorer, PromptIds, answer_logits, collate
from trainers.runtime.training import finish, train


def label_word_loss(model, tok, prompt, label_ids: list[int], examples: list, max_length: int,
                    encoded: list[list[int]] | None = None):
    """PBFT's loss on a batch of `examples`: cross-entropy over the label words' logits at the answer
    position. `encoded`: the examples' training ids, when the caller has them already."""
    device = next(model.parameters()).device
    index = torch.tensor(label_ids, device=device)
    encoded = encoded or PromptIds(tok, prompt, []).training_inputs(examples, max_length)
    inputs = {id(ex): ids for ex, ids in zip(examples, encoded)}

    def loss_fn(batch):
        ids, mask, last = collate([inputs[id(ex)] for ex in batch], tok.pad_token_id, device)
        logits = answer_logits(model, ids, mask, last)[:, index].float()
        return F.cross_entropy(logits, torch.tensor([ex.label for ex in batch], device=device))

    return loss_fn


def run(cfg: RunConfig, report=None) -> dict:
    meter = Meter(pick_device(cfg.device))
    with meter.phase("load"):
        prep = prepare(cfg)
        seed_everything(cfg.training_seed())
        prec = precision.resolve(cfg.dtype, meter.device)
        model, tok = load_causal_lm(cfg.model, prec.training_load_dtype(cfg.peft.kind == "none"),
                                    sharding.load_device(cfg.parallel, cfg.device), empty=sharding.builds_empty(cfg.parallel))
        label_ids = label_token_ids(tok, prep.prompt)
        model, peft_facts = sharding.make_trainable(model, cfg, prec, meter.device)
    prompt_ids = PromptIds(tok, prep.prompt, [])  # no demonstrations: the query after the tokenizer's BOS, if any
    scorer = ContextScorer(model, tok, cfg.eval_batch_size, False, context_window(model, cfg.max_context), prec.autocast)
    encoded = prompt_ids.training_inputs(prep.draw.labelled, cfg.train.max_length)
    loss_fn = label_word_loss(model, tok, prep.prompt, label_ids, prep.draw.labelled, cfg.train.max_length, encoded)

    def predict(examples, name):
        return label_word_predictions(scorer, prompt_ids, label_ids, examples, desc=f"pbft {name}")

    with meter.phase("train"):
        outcome = train(model, prep.draw.labelled, loss_fn, dev_scores(meter, predict, prep), cfg.train, cfg.lr(), cfg.training_seed(), report, prec,
                        tokens=sum(map(len, encoded)))
    return finish(cfg, prep, meter, model, outcome, predict,
                  resolved={"lr": cfg.lr(), "precision": precision.facts(model, prec, trained=True),
                            "train_tokens": max(map(len, encoded)), **peft_facts})
