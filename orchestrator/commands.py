"""Commands a message tells the user to run, printed so that they paste: this environment's own
interpreter, every argument quoted for the shell.

    python -m orchestrator sweep --space smoke --max-trials 2   # ends with the whole command that continues it

The sweep's own command line (what `python -m orchestrator` was given) is kept when the CLI starts,
so a hint can repeat its `--set`, `--data-dir`, `--results` and `--name` exactly.
"""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

_ARGV: list[str] | None = None  # the sweep command's own arguments, set by the CLI


def remember(argv: list[str]) -> None:
    global _ARGV
    _ARGV = list(argv)


def shown(path: Path | str) -> str:
    """A path as the user would type it: relative to the working folder when inside it (links not
    followed: a virtual environment's python is a link to the base interpreter)."""
    path = Path(os.path.abspath(path))
    try:
        return os.path.relpath(path) if path.is_relative_to(os.path.abspath(os.getcwd())) else str(path)
    except (ValueError, OSError):
        return str(path)


def python() -> str:
    """This environment's interpreter (a virtual environment's own when the sweep ran from one)."""
    exe = Path(sys.executable)
    return shlex.quote(shown(exe) if exe.is_relative_to(Path.cwd()) else str(exe))


def orchestrator(*args: str) -> str:
    return " ".join([python(), "-m", "orchestrator", *map(shlex.quote, args)])


def resume(sweep_dir: Path, space_path: str | None = None) -> str:
    """The command that continues this sweep: its own arguments with --resume (and without
    --max-trials, which stopped it, or --dry-run); without them (a sweep started from Python), one
    rebuilt from its folder. Inside a job from `orchestrator submit`, that command: it runs on the user's machine."""
    from trainers import settings
    submitted = settings.get("FEWSHOT_SUBMITTED_WITH")
    if submitted:
        return submitted if " --resume" in submitted else f"{submitted} --resume"
    if _ARGV and _ARGV[0] == "sweep":
        args, skip = [], False
        for i, a in enumerate(_ARGV):
            if skip:
                skip = False
                continue
            if a == "--max-trials":
                skip = True
                continue
            if a.startswith("--max-trials=") or a in ("--dry-run", "--resume"):
                continue
            args.append(a)
        return orchestrator(*args, "--resume")
    sweep_dir = Path(sweep_dir)
    return orchestrator("sweep", "--space", space_path or sweep_dir.name, "--results", shown(sweep_dir.parent),
                        "--name", sweep_dir.name, "--resume")


def report(folder: Path) -> str:
    return orchestrator("report", shown(folder))
