"""CD's own config section (`cd.temperature`, ...), read as `cfg.cd`; the cartridge reads it too. Apart
from the recipe (trainers/methods/cd.py) so that checking a config imports no torch.

    python -c "from trainers.methods.cd_config import CDConfig; print(CDConfig())"
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trainers.config import check_positive, option, validate_choices


@dataclass(frozen=True)
class CDConfig:
    """CD's config section (`cd.temperature`, ...; registered in trainers/methods/spec.py), read as cfg.cd."""
    temperature: float = field(default=1.0, metadata=option("softmax temperature of teacher and student in the KL"))
    kl_over: str = field(default="label_words", metadata=option(
        "distribution the KL compares at the answer position", choices=("label_words", "vocab")))
    ce_weight: float = field(default=0.0, metadata=option(
        "weight of a cross-entropy term on the gold labels of the k demonstrations (0: off)"))
    teacher_model: str | None = field(default=None, metadata=option(
        "teacher model (hub id or folder); default: the student's own base model, as in context distillation",
        kind="model"))
    teacher_eval: bool = field(default=True, metadata=option(
        "score the teacher on the evaluation sets too (with its own base model it repeats the ICL cell of the same data "
        "seed: false saves that time; the teacher's dev score is kept)"))

    def __post_init__(self):
        validate_choices(self)
        check_positive("temperature", self.temperature)
        check_positive("ce_weight", self.ce_weight, allow_zero=True)
