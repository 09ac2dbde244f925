"""Vanilla fine-tuning: a randomly initialised classification head on the hidden state of the
last non-pad token, trained with cross-entropy; the backbone trains fully, with LoRA or BitFit.

    python -m trainers run --method ft --peft bitfit --task rte --model PATH --data-dir ../shared/data \
        --shots 32 --epochs 20 --eval-limit 200

The input is the pattern applied to the example (as the reference does), without demonstrations
and without a label word. The head is always trained; the backbone's LM head is not loaded.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from trainers.runtime import precision, sharding
from trainers.methods.common import prepare, seed_everything
from trainers.config import RunConfig
from trainers.runtime.evaluation import dev_scores, label_word_predictions
from trainers.runtime.metering import Meter
from trainers.runtime.models import context_window, load_backbone, pick_device
from trainers.runtime.scoring import ContextScorer, PromptIds, answer_logits, collate
from trainers.runtime.training import finish, train


class HeadClassifier(nn.Module):
    """Backbone + linear head at each row's last real token.

    It answers like a causal LM whose vocabulary is the classes (`.logits` at the positions in
    `logits_to_keep`), so ICL's batched scorer evaluates it unchanged.
    """

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        cfg = backbone.config
        width = getattr(cfg, "word_embed_proj_dim", None) or cfg.hidden_size  # OPT-350m projects its output
        self.head = nn.Linear(width, num_classes, device=next(backbone.parameters()).device)  # fp32: a trained weight
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.config = cfg

    def forward(self, input_ids, attention_mask, logits_to_keep, **_):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        picked = torch.take_along_dim(hidden, logits_to_keep[..., None], dim=1)
        return SimpleNamespace(logits=self.head(picked))

    def gradient_checkpointing_enable(self, **kwargs):
        self.backbone.gradient_checkpointing_enable(**kwargs)


def run(cfg: RunConfig, report=None) -> dict:
    meter = Meter(pick_device(cfg.device))
    with meter.phase("load"):
        prep = prepare(cfg)
        seed_everything(cfg.training_seed())
        prec = precision.resolve(cfg.dtype, meter.device)
        backbone, tok = load_backbone(cfg.model, prec.training_load_dtype(cfg.peft.kind == "none"),
                                      sharding.load_device(cfg.parallel, cfg.device), empty=sharding.builds_empty(cfg.parallel))
        window = context_window(backbone, cfg.max_context)
        model, peft_facts = sharding.make_trainable(  # the head beside the backbone (on meta there: buffers stay)
            backbone, cfg, prec, meter.device, wrap=lambda b: HeadClassifier(b, len(prep.task.classes)))
    prompt_ids = PromptIds(tok, prep.prompt, [])
    scorer = ContextScorer(model, tok, cfg.eval_batch_size, False, window, prec.autocast)
    device = scorer.device
    classes = list(range(len(prep.task.classes)))
    encoded = prompt_ids.training_inputs(prep.draw.labelled, cfg.train.max_length)
    inputs = {id(ex): ids for ex, ids in zip(prep.draw.labelled, encoded)}

    def loss_fn(batch):
        ids, mask, last = collate([inputs[id(ex)] for ex in batch], tok.pad_token_id, device)
        logits = answer_logits(model, ids, mask, last).float()
        return F.cross_entropy(logits, torch.tensor([ex.label for ex in batch], device=device))

    def predict(examples, name):
        p = label_word_predictions(scorer, prompt_ids, classes, examples, desc=f"ft {name}")
        p.full_vocab_correct = None  # a head has no vocabulary to be wrong over
        return p

    with meter.phase("train"):
        outcome = train(model, prep.draw.labelled, loss_fn, dev_scores(meter, predict, prep), cfg.train, cfg.lr(), cfg.training_seed(), report, prec,
                        tokens=sum(map(len, encoded)))
    return finish(cfg, prep, meter, model, outcome, predict,
                  resolved={"lr": cfg.lr(), "precision": precision.facts(model, prec, trained=True),
                            "train_tokens": max(map(len, encoded)), **peft_facts})
