"""Every `FEWSHOT_*` environment variable the code reads, with its meaning and its check.

    FEWSHOT_HEARTBEAT_S=abc python -m orchestrator sweep --space smoke    # error: ..., exit 2, before Ray

The sweep and the single-run command check them all first (`problems()`), so a bad value is one
line naming the variable and what it may be, never a traceback after Ray has started. Readers
elsewhere use `get()`, which returns the checked value (or the default).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Callable


class SettingError(ValueError):
    """An environment variable holds a value its reader cannot use."""


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < value < 86_400:
        raise ValueError("expected seconds between 0 and 86400")
    return value


def _folder(text: str) -> str:
    if not text.strip():
        raise ValueError("expected a folder path")
    return os.path.expanduser(text)


def _existing_folder(text: str) -> str:
    path = _folder(text)
    if not os.path.isdir(path):
        raise ValueError(f"folder {path} does not exist")
    return path


def _revisions(text: str) -> dict:
    import json
    try:
        value = json.loads(text)
    except ValueError:
        raise ValueError("expected a JSON object of hub id -> commit") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ValueError("expected a JSON object of hub id -> commit")
    return value


def _commit(text: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", text):
        raise ValueError("expected a git commit id (hex, optionally with -dirty)")
    return text


@dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str


SETTINGS = {s.name: s for s in [
    Setting("FEWSHOT_DATA_DIR", _existing_folder, None, "data folder in the hub's schema when --data-dir is not given"),
    Setting("FEWSHOT_MODEL_DIR", _folder, "~/.cache/fewshot-models", "where fetch_models.py puts the offline models"),
    Setting("FEWSHOT_CACHE", _folder, None, "cache of data files fetched from URLs (default ~/.cache/fewshot-sweeps/data)"),
    Setting("FEWSHOT_HEARTBEAT_S", _seconds, 60.0, "seconds without a finished trial before the sweep prints what runs"),
    Setting("FEWSHOT_QUIET", _flag, False, "1: no progress lines from a run"),
    Setting("FEWSHOT_PROGRESS", _flag, None, "1/0: progress bars on or off (default: on a terminal only)"),
    Setting("FEWSHOT_GIT_COMMIT", _commit, None, "the commit recorded in every record (set by the sweep for its workers)"),
    Setting("FEWSHOT_SUBMITTED_WITH", str, None, "the command that submitted this job (set by `orchestrator submit`): "
            "a hint to continue the sweep repeats it with --resume"),
    Setting("FEWSHOT_HUB_REVISIONS", _revisions, {}, "JSON hub id -> commit: hub models load at these commits (set by "
            "the sweep for its workers: what preflight resolved)"),
]}


def get(name: str) -> Any:
    """The variable's checked value, or its default when unset or empty."""
    setting = SETTINGS[name]
    text = os.environ.get(name, "")
    if text == "":
        return setting.default
    try:
        return setting.parse(text)
    except ValueError as e:
        raise SettingError(f"environment variable {name}={text!r}: {e} ({setting.help}); fix or unset it") from None


def problems() -> list[str]:
    """One line per FEWSHOT_* variable whose value cannot be used (and per unknown FEWSHOT_ name)."""
    out = []
    for name in sorted(SETTINGS):
        try:
            get(name)
        except SettingError as e:
            out.append(str(e))
    for name in sorted(os.environ):
        if name.startswith("FEWSHOT_") and name not in SETTINGS:
            from difflib import get_close_matches
            near = get_close_matches(name, list(SETTINGS), n=1)
            out.append(f"environment variable {name} is not one this tool reads"
                       + (f"; did you mean {near[0]}?" if near else f"; known: {', '.join(sorted(SETTINGS))}"))
    return out


def describe() -> str:
    """The variables for --help."""
    return "\n".join(f"  {s.name:<20} {s.help}" for s in SETTINGS.values())


def missing_package(name: str | None, package: str) -> str:
    """The one line for a Python that lacks one of the project's packages (run outside its venv)."""
    import sys
    return (f"error: Python package {name!r} is missing from {sys.executable}; run the project's environment: "
            f".venv/bin/python -m {package} ... (install it with: python3 -m venv .venv && "
            f".venv/bin/pip install torch==2.13.0 -e .)")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string of a parser and of its subcommands (the top parser reports theirs too)."""
    out = []
    for action in parser._actions:
        out += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out += _options(sub)
    return out


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments: one line and exit status 2, never argparse's usage block; an option this
    command does not know is named first (with the nearest known one), before any complaint about
    what is then missing (`--spcae x` is a typo, not a missing --space)."""
    argv: list[str] = []

    def parse_args(self, args=None, namespace=None):
        OneLineParser.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def _unknown_option(self) -> str | None:
        import difflib
        known = _options(self)
        for token in OneLineParser.argv:
            name = token.split("=", 1)[0]
            if name.startswith("--") and name not in known and not any(k.startswith(name) for k in known):
                near = difflib.get_close_matches(name, known, n=1)
                return f"unknown option {name}" + (f" (did you mean {near[0]}?)" if near else "")
        return None

    def error(self, message):
        unknown = self._unknown_option() if "unrecognized arguments" in message or "required" in message else None
        self.exit(2, f"error: {unknown or message} (see --help)\n")
