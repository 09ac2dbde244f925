"""Mixed precision that trains: fp32 master weights under bf16/fp16 autocast, recorded per part (CPU autocast)."""
import pytest
import torch
import torch.nn.functional as F

from trainers.runtime import precision
from trainers.config import TrainConfig
from trainers.methods import entry
from trainers.methods.entry import resolve
from trainers.contract import EvalBlock, dump
from trainers.runtime.models import load_causal_lm
from trainers.data.prompts import get_prompt, label_token_ids
from trainers.runtime.scoring import PromptIds, answer_logits, collate
from trainers.data.tasks import load_task
from trainers.runtime.training import train


def run(cfg, report=None):
    """The method's record and epoch reports in their JSON form (what `--json` writes, what Ray gets)."""
    return dump(entry.run(cfg, report and (lambda epoch: report(dump(epoch)))))

CPU = torch.device("cpu")


def changed_fraction(model_dir, data_dir, load_dtype: str, compute: torch.dtype) -> float:
    """Share of trained weight elements that one AdamW step at lr 1e-5 moved (every weight trains)."""
    model, tok = load_causal_lm(model_dir, load_dtype, "cpu")
    prec = precision.Precision(CPU, compute)
    prompt, task = get_prompt("nli", "eval_harness"), load_task("rte", data_dir, ood=())
    ids, index = PromptIds(tok, prompt, []), torch.tensor(label_token_ids(tok, prompt))

    def loss_fn(batch):
        x, mask, last = collate(ids.training_inputs(batch, 64), tok.pad_token_id, "cpu")
        return F.cross_entropy(answer_logits(model, x, mask, last)[:, index].float(), torch.tensor([e.label for e in batch]))

    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(epochs=1, batch_size=16, warmup_ratio=0.0, max_grad_norm=0.0)
    train(model, task.train[:16], loss_fn, lambda: EvalBlock(accuracy=0.0), cfg, 1e-5, 0, precision=prec)
    moved = sum(int((p.detach() != b).sum()) for p, b in zip(model.parameters(), before))
    return moved / sum(b.numel() for b in before)


def test_bf16_autocast_moves_the_weights_as_fp32_does_and_bf16_weights_would_not(tiny_llama, data_dir):
    fp32 = changed_fraction(tiny_llama, data_dir, "float32", torch.float32)
    mixed = changed_fraction(tiny_llama, data_dir, "float32", torch.bfloat16)  # the project's recipe: fp32 masters
    bf16_weights = changed_fraction(tiny_llama, data_dir, "bfloat16", torch.float32)  # what `--dtype auto` used to do
    assert fp32 > 0.5
    assert mixed >= 0.9 * fp32
    assert bf16_weights < 0.5 * fp32, (fp32, mixed, bf16_weights)


def base(model, data_dir, **over):
    return resolve({"task": "rte", "model": model, "data_dir": data_dir, "shots": 16, "n_dev": 8, "n_unlabeled": 16,
                    "eval_limit": 20, "train.epochs": 2, "train.batch_size": 8, "train.lr": 3e-3, **over})


@pytest.mark.parametrize("method,peft,dtype,frozen", [
    ("pbft", "lora", "bfloat16", "bfloat16"), ("pbft", "none", "bfloat16", None),
    ("ft", "bitfit", "bfloat16", "bfloat16"), ("pbft", "lora", "float16", "float16")])
def test_training_keeps_fp32_trainable_weights_and_records_each_part(method, peft, dtype, frozen, tiny_llama, data_dir):
    rec = run(base(tiny_llama, data_dir, method=method, dtype=dtype, **{"peft.kind": peft}))
    assert rec["status"] == "completed" and rec["metrics"]["in_domain"]["n_scored"] == 20
    assert rec["resolved"]["precision"] == {"compute": dtype, "autocast": True, "trainable_weights": "float32",
                                            "frozen_weights": frozen, "grad_scaler": dtype == "float16"}
    assert rec["history"][-1]["train_loss"] < rec["history"][0]["train_loss"]


def test_inference_models_run_in_the_compute_dtype_and_cd_records_teacher_and_student(tiny_llama, data_dir):
    icl = run(base(tiny_llama, data_dir, method="icl", dtype="bfloat16"))
    assert icl["resolved"]["precision"] == {"compute": "bfloat16", "weights": "bfloat16", "autocast": True}
    cd = run(base(tiny_llama, data_dir, method="cd", dtype="bfloat16"))
    assert cd["resolved"]["precision"]["teacher"]["weights"] == "bfloat16"
    assert cd["resolved"]["precision"]["student"]["trainable_weights"] == "float32"
    assert cd["resolved"]["precision"]["student"]["frozen_weights"] == "bfloat16"
    fp32 = run(base(tiny_llama, data_dir, method="icl"))  # CPU default: fp32 everywhere, no autocast
    assert fp32["resolved"]["precision"] == {"compute": "float32", "weights": "float32", "autocast": False}
