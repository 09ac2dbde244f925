"""Context distillation: a student without the demonstrations learns to match the teacher that
has them in context.

    python -m trainers run --method cd --task rte --model PATH --data-dir ../shared/data \
        --shots 16 --epochs 20 --eval-limit 200          # LoRA student by default

Teacher: the frozen base model (or `--teacher-model`) with the same k demonstrations ICL uses for
this (task, shots, data_seed). Student: the same base model with LoRA (or BitFit, or full),
fed the query alone. Loss: KL(teacher || student) between softmax distributions at the answer
position (teacher after context + query, student after the query: the positions correspond),
at temperature T, over the label words or the full vocabulary, on the sampler's unlabelled
inputs; optionally plus a cross-entropy term on the k demonstrations' gold labels.

The teacher is frozen, so its distributions are computed once, before training, with ICL's
prefix cache; when it is the student's own base model it is the student itself before its
adapters exist (LoRA starts as the identity, BitFit's new biases at zero), so no second copy
is loaded. The record carries the teacher's own ICL accuracy beside the student's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainers.runtime import context_fit, precision, sharding
from trainers.methods.common import prepare, seed_everything
from trainers.contract import Metrics
from trainers.config import ConfigError, RunConfig
from trainers.runtime.evaluation import dev_scores, evaluate_sets, evaluation_sets, label_word_predictions, metrics
from trainers.runtime.metering import SETUP_PHASE, Meter
from trainers.runtime.models import context_window, load_causal_lm, pick_device
from trainers.data.prompts import label_token_ids
from trainers.runtime.scoring import ContextScorer, PromptIds, answer_logits, collate
from trainers.runtime.training import finish, reporting_setup, train


@dataclass
class TeacherPass:
    targets: torch.Tensor        # (n, label words or vocabulary) teacher logits on the distilled inputs
    inputs: list                 # the unlabelled inputs that fit beside the demonstrations, in target order
    metrics: Metrics             # the teacher's own ICL metrics (dev; in-domain and OOD with final_eval)
    fitted: context_fit.Fit      # the demonstrations as they fit the window, and what was cut


def teacher_pass(cfg: RunConfig, prep, teacher, tok, label_ids: list[int], prec, meter: Meter) -> TeacherPass:
    """Teacher logits on the unlabelled inputs (once), the teacher's own ICL metrics, and how the context fit."""
    with meter.phase(SETUP_PHASE):
        window = context_window(teacher, cfg.max_context)
        sets = evaluation_sets(prep, cfg) if cfg.final_eval else {}
        scored = list(prep.draw.unlabeled) + list(prep.draw.dev) + [ex for examples, _ in sets.values() for ex in examples]
        fitted = context_fit.fit(tok, prep.prompt, prep.draw.labelled, scored, window, cfg.context_fit)
        scorer = ContextScorer(teacher, tok, cfg.eval_batch_size, cfg.prefix_cache, window, prec.autocast)
        index = torch.tensor(label_ids)
        keep_vocab = cfg.cd.kl_over == "vocab"
        queries = fitted.prompt_ids.queries(prep.draw.unlabeled)
        targets, kept = scorer.run(fitted.prompt_ids.context, queries,
                                   lambda lg: lg if keep_vocab else lg[:, index.to(lg.device)], desc="teacher targets")
    if targets is None:
        raise ConfigError(f"the {cfg.shots} demonstrations leave no room for any query in the teacher's context; use fewer shots")

    def predict(examples, name):
        return label_word_predictions(scorer, fitted.prompt_ids, label_ids, examples, desc=f"teacher {name}")

    with meter.phase("teacher_eval"):  # reported beside the student, not part of CD's cost: it repeats ICL
        teacher_metrics = (evaluate_sets(predict, prep, cfg, who="teacher ")
                           if cfg.final_eval and cfg.cd.teacher_eval else Metrics())
        teacher_metrics.dev = metrics(predict(prep.draw.dev, "dev"), prep.task.classes)
    return TeacherPass(targets, [prep.draw.unlabeled[i] for i in kept], teacher_metrics, fitted)


def kl_divergence(student_logits: torch.Tensor, teacher_logp: torch.Tensor, T: float) -> torch.Tensor:
    """KL(teacher || student) summed over the batch, at temperature T, scaled by T² (Hinton et al. 2015)."""
    student = F.log_softmax(student_logits / T, dim=-1)
    return F.kl_div(student, teacher_logp, log_target=True, reduction="sum") * T * T


def _load_teacher(cfg: RunConfig, student_tok, device, compute):
    teacher, tok = load_causal_lm(cfg.cd.teacher_model, cfg.dtype, sharding.load_device(cfg.parallel, cfg.device),
                                  empty=sharding.builds_empty(cfg.parallel))  # inference only: the compute dtype
    if tok.get_vocab() != student_tok.get_vocab():
        raise ConfigError(f"teacher {cfg.cd.teacher_model} and student {cfg.model} have different vocabularies; "
                          "context distillation compares their next-token distributions, so they must share a tokenizer")
    return sharding.prepare(teacher, cfg.parallel, device, compute, compute, cfg.offload)


def _teacher_then_student(cfg: RunConfig, prep, meter: Meter):
    """Load, let the teacher label the unlabelled inputs once, then make the model the student.
    Under fsdp the student is made (and sharded) first: a module is sharded once, and fresh adapters
    (LoRA's B = 0, BitFit's zero biases) leave its function, so its teacher's targets, unchanged."""
    sharded = cfg.sharded
    with meter.phase("load"):
        seed_everything(cfg.training_seed())
        prec = precision.resolve(cfg.dtype, meter.device)
        # Its own teacher first (inference: the compute dtype); a student beside a separate teacher loads for training.
        own_teacher = not cfg.cd.teacher_model
        load_dtype = cfg.dtype if own_teacher and not sharded else prec.training_load_dtype(cfg.peft.kind == "none")
        model, tok = load_causal_lm(cfg.model, load_dtype, sharding.load_device(cfg.parallel, cfg.device),
                                    empty=sharding.builds_empty(cfg.parallel))
        label_ids = label_token_ids(tok, prep.prompt)
        if sharded:
            model, peft_facts = sharding.make_trainable(model, cfg, prec, meter.device)
        teacher = model if own_teacher else _load_teacher(cfg, tok, meter.device, prec.compute)
        teacher_precision = precision.facts(teacher, prec, trained=False)
    taught = teacher_pass(cfg, prep, teacher, tok, label_ids, prec, meter)
    del teacher  # a separate teacher is freed before the student trains
    if not sharded:
        with meter.phase("load"):
            model, peft_facts = sharding.make_trainable(model, cfg, prec, meter.device)
    facts = {"context": taught.fitted.facts, **peft_facts,
             "precision": {"teacher": teacher_precision, "student": precision.facts(model, prec, trained=True)}}
    return model, tok, label_ids, prec, taught, facts


def run(cfg: RunConfig, report=None) -> dict:
    meter = Meter(pick_device(cfg.device))
    with meter.phase("load"):
        prep = prepare(cfg)
    model, tok, label_ids, prec, taught, facts = _teacher_then_student(cfg, prep, meter)
    inputs_kept = taught.inputs
    prompt_ids = PromptIds(tok, prep.prompt, [])
    scorer = ContextScorer(model, tok, cfg.eval_batch_size, False, context_window(model, cfg.max_context), prec.autocast)
    device, T = scorer.device, cfg.cd.temperature
    index = torch.tensor(label_ids, device=device)
    teacher_logp = {id(ex): F.log_softmax(taught.targets[i].to(device) / T, dim=-1) for i, ex in enumerate(inputs_kept)}
    items = list(inputs_kept) + (list(prep.draw.labelled) if cfg.cd.ce_weight > 0 else [])
    ids_of = {id(ex): ids for ex, ids in zip(items, prompt_ids.training_inputs(items, cfg.train.max_length))}

    def student_logits(batch):
        ids, mask, last = collate([ids_of[id(ex)] for ex in batch], tok.pad_token_id, device)
        return answer_logits(model, ids, mask, last).float()

    def kl_to_teacher(batch, logits):
        teacher = torch.stack([teacher_logp[id(ex)] for ex in batch])
        return kl_divergence(logits if cfg.cd.kl_over == "vocab" else logits[:, index], teacher, T)

    def loss_fn(batch):
        logits = student_logits(batch)
        distil = [i for i, ex in enumerate(batch) if id(ex) in teacher_logp]
        gold = [i for i, ex in enumerate(batch) if id(ex) not in teacher_logp]
        loss = kl_to_teacher([batch[i] for i in distil], logits[distil]) if distil else logits.sum() * 0
        if gold:
            labels = torch.tensor([batch[i].label for i in gold], device=device)
            loss = loss + cfg.cd.ce_weight * F.cross_entropy(logits[gold][:, index], labels, reduction="sum")
        return loss / len(batch)

    @torch.no_grad()
    def mean_kl() -> float:
        was_training = model.training
        model.eval()
        with prec.autocast():
            kl = sum(float(kl_to_teacher(inputs_kept[i:i + 16], student_logits(inputs_kept[i:i + 16])))
                     for i in range(0, len(inputs_kept), 16))
        model.train(was_training)
        return round(kl / len(inputs_kept), 6)

    def predict(examples, name):
        return label_word_predictions(scorer, prompt_ids, label_ids, examples, desc=f"student {name}")

    kl_before = None
    if cfg.final_eval:  # the record's diagnostics: a search trial needs only its dev scores
        with meter.phase("diagnostics"):
            kl_before = mean_kl()
    with meter.phase("train"):
        outcome = train(model, items, loss_fn, dev_scores(meter, predict, prep), cfg.train, cfg.lr(), cfg.training_seed(), reporting_setup(report, meter),
                        prec, tokens=sum(map(len, ids_of.values())))
    return finish(cfg, prep, meter, model, outcome, predict, teacher=taught.metrics,
                  resolved={"lr": cfg.lr(), "train_tokens": max(map(len, ids_of.values())), **facts},
                  extra={"distilled_inputs": len(inputs_kept), "kl_to_teacher_before": kl_before, "kl_to_teacher_after": None},
                  diagnostics=lambda: {"kl_to_teacher_after": mean_kl()})
