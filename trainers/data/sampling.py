"""The few-shot sampler: one seeded, class-balanced draw shared by every method.

    python -c "from trainers.data.tasks import load_task; from trainers.data.sampling import draw; \
t = load_task('rte', data_dir='../shared/data', ood=()); print(draw(t.train, 2, 16, data_seed=0).sizes())"

From the train pool and `data_seed` alone (never the training seed) it draws three disjoint sets:
the labelled few-shot set (ICL demonstrations or the fine-tuning set; for a larger `shots` a
superset of the smaller draw, and the same whatever `n_dev`), a labelled dev split (the same
whatever `shots`), and unlabelled inputs for context distillation. Duplicate texts in the pool
count once.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from trainers.data.tasks import Example


class SamplingError(ValueError):
    """The requested draw cannot be made from this pool."""


@dataclass(frozen=True)
class FewShotDraw:
    labelled: list[Example]
    dev: list[Example]
    unlabeled: list[Example]  # methods read only the inputs; labels stay for analysis

    def sizes(self) -> dict:
        return {"labelled": len(self.labelled), "dev": len(self.dev), "unlabeled": len(self.unlabeled)}


def _per_class(n: int, num_classes: int, what: str) -> int:
    if n % num_classes:
        raise SamplingError(f"{what}={n} cannot be split evenly over {num_classes} classes; use a multiple of {num_classes}")
    return n // num_classes


def _roles(members: list[Example], shot_k: int, dev_k: int) -> tuple[list, list, list]:
    """Split one class's shuffled members into (labelled, dev, rest).

    Even positions are the labelled set's candidates and odd ones the dev split's, each list
    continued by the other's from its far end: the labelled set does not change with n_dev, nor
    the dev split with shots, while each fits its half; the two never overlap while
    shot_k + dev_k <= len(members)."""
    even, odd = members[0::2], members[1::2]
    labelled = (even + odd[::-1])[:shot_k]
    dev = (odd + even[::-1])[:dev_k]
    taken = {id(ex) for ex in labelled + dev}
    return labelled, dev, [ex for ex in members if id(ex) not in taken]


def draw(pool: list[Example], num_classes: int, shots: int, data_seed: int,
         n_dev: int = 32, n_unlabeled: int = 64) -> FewShotDraw:
    seen, unique = set(), []
    for ex in pool:
        if ex.key() not in seen:
            seen.add(ex.key())
            unique.append(ex)
    by_class = {c: [ex for ex in unique if ex.label == c] for c in range(num_classes)}
    dev_k, shot_k = _per_class(n_dev, num_classes, "n_dev"), _per_class(shots, num_classes, "shots")
    order = random.Random(data_seed)
    labelled, dev, rest = [], [], []
    for c, members in by_class.items():
        if len(members) < dev_k + shot_k:
            raise SamplingError(f"class {c} has {len(members)} examples in the pool, fewer than the "
                                f"{dev_k} dev + {shot_k} labelled asked for")
        order.shuffle(members)
        mine = _roles(members, shot_k, dev_k)
        labelled, dev, rest = labelled + mine[0], dev + mine[1], rest + mine[2]
    # each set's order from its own stream, so that no set's order depends on another's size
    random.Random(f"labelled {data_seed}").shuffle(labelled)
    random.Random(f"dev {data_seed}").shuffle(dev)
    random.Random(f"unlabeled {data_seed}").shuffle(rest)
    if len(rest) < n_unlabeled:
        raise SamplingError(f"only {len(rest)} pool examples remain for the {n_unlabeled} unlabelled inputs asked for")
    return FewShotDraw(labelled=labelled, dev=dev, unlabeled=rest[:n_unlabeled])


def without_overlap(examples: list[Example], shown: list[Example]) -> tuple[list[Example], int]:
    """Drop evaluation examples whose text was shown (as a demonstration or training example)."""
    keys = {ex.key() for ex in shown}
    kept = [ex for ex in examples if ex.key() not in keys]
    return kept, len(examples) - len(kept)
