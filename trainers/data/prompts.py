"""Prompt patterns and label words as versioned data (`trainers/data/prompts.yaml`).

    python -c "from trainers.data.prompts import get_prompt; print(get_prompt('nli', 'gpt3'))"

Demonstrations and queries go through the same `format_input`, so a query is formatted exactly
like the demonstrations before it; a demonstration is the query text plus its label word. The
prompt is one string, `full(demos, query)`: the demonstrations joined by the separator, then the
separator and the query. The separator before the query belongs to the query's part, so the
demonstrations' part is the same for every query (and its key/value cache can be shared).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from trainers.data.tasks import Example

PROMPTS_FILE = Path(__file__).parent / "prompts.yaml"


class PromptError(ValueError):
    """An unknown pattern, or label words the tokenizer cannot score as single tokens."""


@dataclass(frozen=True)
class Prompt:
    name: str
    version: int
    template: str
    before_label: str
    label_words: tuple[str, ...]
    separator: str

    def format_input(self, ex: Example) -> str:
        """The text whose next token is the answer: identical for demonstrations and queries."""
        return self.template.format(text1=ex.text1, text2=ex.text2) + self.before_label

    def demonstration(self, ex: Example) -> str:
        return self.format_input(ex) + self.label_words[ex.label]

    def context(self, demos: list[Example]) -> str:
        """The demonstrations joined by the separator (no trailing separator: it starts the query's part)."""
        return self.separator.join(self.demonstration(d) for d in demos)

    def query(self, ex: Example, after_demos: bool) -> str:
        """The query's part of the prompt: the separator when demonstrations precede it, then the input."""
        return (self.separator if after_demos else "") + self.format_input(ex)

    def full(self, demos: list[Example], ex: Example) -> str:
        """The whole prompt string the model reads for `ex`, up to the answer position."""
        return self.context(demos) + self.query(ex, bool(demos))

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "template": self.template,
                "before_label": self.before_label, "label_words": list(self.label_words)}


@functools.lru_cache(maxsize=1)
def _shipped_patterns() -> dict:
    return yaml.safe_load(PROMPTS_FILE.read_text())["patterns"]


def _patterns() -> dict:
    """The shipped patterns and those a registered tasks file defines (trainers/data/user_tasks.py)."""
    from trainers.data import user_tasks
    extra = {family: p for more in user_tasks.registered() for family, p in more["patterns"].items()}
    return {**_shipped_patterns(), **extra} if extra else _shipped_patterns()


def pattern_names(family: str) -> list[str]:
    return sorted(_patterns().get(family, {}))


def get_prompt(family: str, name: str) -> Prompt:
    patterns = _patterns()
    if family not in patterns:
        raise PromptError(f"no patterns for task family {family!r}; known families: {', '.join(patterns)}")
    if name not in patterns[family]:
        raise PromptError(f"unknown pattern {name!r} for {family} tasks; valid: {', '.join(sorted(patterns[family]))}")
    p = patterns[family][name]
    return Prompt(name=name, version=int(p["version"]), template=p["template"], before_label=p["before_label"],
                  label_words=tuple(p["label_words"]), separator=p["separator"])


def label_token_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The token id of each label word; fails unless every label word is exactly one token."""
    ids = []
    for word in prompt.label_words:
        toks = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(toks) != 1:
            pieces = tokenizer.convert_ids_to_tokens(toks)
            raise PromptError(f"label word {word!r} of pattern {prompt.name!r} is {len(toks)} tokens {pieces} for this "
                              "tokenizer; choose another --pattern")
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        raise PromptError(f"label words {prompt.label_words} of pattern {prompt.name!r} share a token id")
    return ids
