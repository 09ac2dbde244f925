"""A sweep's cell: task x method (with its PEFT variant) x model x shots, and its id, built and read here only.

    python -c "from orchestrator.cells import Cell; print(Cell.parse('rte/cd+lora/smollm2-135m/16shot'))"

Ids read "task/variant/model-tag/Nshot" (e.g. rte/pbft+lora/opt-125m/16shot): records, tables,
figures and the terminal name cells by them. A parsed id keeps the model's tag (its folder or hub
name's last part), not its full path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainers.methods import spec


def model_tag(model: str) -> str:
    return Path(model.rstrip("/")).name or model


@dataclass(frozen=True)
class Cell:
    task: str
    method: str
    peft: str
    model: str
    shots: int

    @property
    def variant(self) -> str:
        """"pbft+lora", "icl" (a method that trains nothing has no PEFT variant)."""
        return spec.get(self.method).variant(self.peft) if self.method in spec.METHODS else self.method

    @property
    def model_tag(self) -> str:
        return model_tag(self.model)

    @property
    def id(self) -> str:
        return f"{self.task}/{self.variant}/{self.model_tag}/{self.shots}shot"

    @classmethod
    def parse(cls, cell_id: str) -> "Cell":
        task, variant, model, shots = cell_id.split("/")
        method, peft = spec.parse_variant(variant)
        return cls(task, method, peft, model, int(shots.removesuffix("shot")))

    @classmethod
    def of_config(cls, c: dict) -> "Cell":
        """The cell of a record's resolved config."""
        method = c["method"]
        peft = c["peft"]["kind"] if spec.get(method).trains else "none"
        return cls(c["task"], method, peft, c["model"], int(c["shots"]))


def variant_of(cell_id: str) -> str:
    """The method+PEFT part of a cell id, or the whole string when it is not one."""
    return cell_id.split("/")[1] if cell_id.count("/") == 3 else cell_id
