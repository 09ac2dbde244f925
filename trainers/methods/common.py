"""What every method does first: load the task, draw the few-shot sets, pick the prompt.

    python -c "from trainers.config import RunConfig; from trainers.methods.common import prepare; \
print(prepare(RunConfig(task='rte', data_dir='../shared/data')).draw.sizes())"
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from trainers.config import RunConfig
from trainers.data.prompts import Prompt, get_prompt
from trainers.data.sampling import FewShotDraw, draw
from trainers.data.tasks import TaskData, load_task, task_definitions


@dataclass(frozen=True)
class Prepared:
    task: TaskData
    draw: FewShotDraw
    prompt: Prompt

    def resolved(self, cfg: RunConfig, **more) -> dict:
        """What the defaults resolved to, recorded beside the config."""
        spec = task_definitions()["tasks"][self.task.name]
        user = {"task_definition": spec["definition"], "tasks_file": cfg.tasks_file} if spec.get("user") else {}
        return {"pattern": self.prompt.describe(), "ood": list(self.task.ood), "data_source": self.task.source,
                "data_fingerprints": dict(self.task.fingerprints), "tasks_version": task_definitions()["version"],
                "draw": self.draw.sizes(), **user, **more}


def prepare(cfg: RunConfig) -> Prepared:
    task = load_task(cfg.task, cfg.data_dir, cfg.ood, cfg.hans_heuristics)
    prompt = get_prompt(task.family, cfg.pattern or task.default_pattern)
    fewshot = draw(task.train, len(task.classes), cfg.shots, cfg.data_seed, cfg.n_dev, cfg.n_unlabeled)
    return Prepared(task, fewshot, prompt)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
