"""Context distillation into a cartridge: the student is the frozen model plus a trained key/value
prefix of p tokens (Eyuboglu et al. 2025; peft's CartridgeConfig), instead of adapters in its weights.

    python -m trainers run --method cartridge --task rte --model PATH --data-dir ../shared/data \
        --shots 64 --cartridge-tokens 128 --epochs 10 --eval-limit 64

Teacher: the frozen base model with the k demonstrations in its context, exactly as in `cd` (its
distributions on the unlabelled inputs, computed once). Student: the same frozen model behind a
p-token KV prefix, initialised from the demonstrations' own keys and values for their first p
tokens (BOS included; `cartridge.tokens`, at most the context's length), so that before training it
scores a query exactly as ICL with those p tokens as its context would. Only the prefix trains
(`cartridge.frozen_tokens` of its first positions stay fixed: an attention sink), with CD's loss
(KL(teacher || student) at the answer position, `cd.temperature`, `cd.kl_over`) on the unlabelled
inputs, each presented as the query that follows the demonstrations. Serving scores the query behind
the p-token prefix: the record gives the key/value bytes a query attends to (p tokens' worth) beside
its milliseconds. Not under fsdp, and not with gradient checkpointing (peft's prefix does not combine
with it): both refused with a line.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import CartridgeConfig, get_peft_model, initialize_kv_prefix_from_past_key_values

from trainers.runtime import precision
from trainers.methods.cd import kl_divergence, teacher_pass
from trainers.methods.common import prepare, seed_everything
from trainers.config import RunConfig
from trainers.runtime.evaluation import dev_scores, label_word_predictions
from trainers.runtime.memory_plan import kv_bytes
from trainers.runtime.metering import Meter
from trainers.runtime.models import context_window, load_causal_lm, pick_device
from trainers.data.prompts import label_token_ids
from trainers.runtime.scoring import ContextScorer, answer_logits, collate, prefill
from trainers.runtime.training import finish, reporting_setup, train


class BehindPrefix:
    """The student's prompt: no context ids (the prefix stands for them), each query's ids as they
    continue the demonstrations (separator included), as the teacher and ICL read them."""

    def __init__(self, demos_prompt_ids):
        self.context, self._ids = [], demos_prompt_ids

    def queries(self, examples):
        return self._ids.queries(examples)


@torch.no_grad()
def make_student(model, context_ids: list[int], tokens: int, frozen: int):
    """The frozen model behind a `tokens`-token KV prefix taken from the first tokens of `context_ids`."""
    for p in model.parameters():
        p.requires_grad_(False)
    ids = context_ids[:tokens]
    past = prefill(model, ids, next(model.parameters()).device)
    student = get_peft_model(model, CartridgeConfig(task_type="CAUSAL_LM", num_virtual_tokens=len(ids),
                                                    num_frozen_tokens=min(frozen, len(ids))))
    initialize_kv_prefix_from_past_key_values(student, past_key_values=past)
    return student


def run(cfg: RunConfig, report=None) -> dict:
    meter = Meter(pick_device(cfg.device))
    with meter.phase("load"):
        prep = prepare(cfg)
        seed_everything(cfg.training_seed())
        prec = precision.resolve(cfg.dtype, meter.device)
        model, tok = load_causal_lm(cfg.model, cfg.dtype, cfg.device)  # frozen throughout: the compute dtype
        label_ids = label_token_ids(tok, prep.prompt)
    teacher = teacher_pass(cfg, prep, model, tok, label_ids, prec, meter)
    with meter.phase("load"):
        tokens = min(cfg.cartridge.tokens, len(teacher.fitted.prompt_ids.context))
        student = make_student(model, teacher.fitted.prompt_ids.context, tokens, cfg.cartridge.frozen_tokens)
        prec.keep_trainable_fp32(student)
    prompt_ids = BehindPrefix(teacher.fitted.prompt_ids)
    window = context_window(model, cfg.max_context) - tokens  # the prefix takes its positions
    scorer = ContextScorer(student, tok, cfg.eval_batch_size, False, window, prec.autocast)
    device, T = scorer.device, cfg.cd.temperature
    index = torch.tensor(label_ids, device=device)
    teacher_logp = {id(ex): F.log_softmax(teacher.targets[i].to(device) / T, dim=-1) for i, ex in enumerate(teacher.inputs)}
    items = list(teacher.inputs)
    ids_of = {id(ex): q[-cfg.train.max_length:] for ex, q in zip(items, prompt_ids.queries(items))}

    def student_logits(batch):
        ids, mask, last = collate([ids_of[id(ex)] for ex in batch], tok.pad_token_id, device)
        return answer_logits(student, ids, mask, last).float()

    def loss_fn(batch):
        logits = student_logits(batch)
        target = torch.stack([teacher_logp[id(ex)] for ex in batch])
        return kl_divergence(logits if cfg.cd.kl_over == "vocab" else logits[:, index], target, T) / len(batch)

    def predict(examples, name):
        return label_word_predictions(scorer, prompt_ids, label_ids, examples, desc=f"cartridge {name}")

    before = student.prompt_encoder["default"].trainable_embedding.detach().clone()
    with meter.phase("train"):
        outcome = train(student, items, loss_fn, dev_scores(meter, predict, prep), cfg.train, cfg.lr(), cfg.training_seed(),
                        reporting_setup(report, meter), prec, tokens=sum(map(len, ids_of.values())))
    moved = float((student.prompt_encoder["default"].trainable_embedding.detach() - before).abs().max())
    facts = {"context": teacher.fitted.facts, "cartridge_tokens": tokens, "lr": cfg.lr(),
             "precision": precision.facts(student, prec, trained=True),
             "train_tokens": max(map(len, ids_of.values()), default=0)}
    return finish(cfg, prep, meter, student, outcome, predict, teacher=teacher.metrics, resolved=facts,
                  extra={"distilled_inputs": len(items), "prefix_max_change": round(moved, 6)},
                  kv_bytes_per_query=kv_bytes(student, tokens))
