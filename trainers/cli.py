"""The single-run command, the prompt inspector and the data export.

    python -m trainers run --method icl --task rte --model PATH_OR_ID --shots 16 --data-seed 0 \
        [--data-dir DIR] [--eval-limit N] [--ood hans] [--pattern NAME] [--json OUT]
    python -m trainers prompt --task rte --shots 16 --model PATH_OR_ID [--data-dir DIR] [--check-tokenization]
    python -m trainers data export --to DIR [--from DIR] [--tasks rte,mnli]

Every field of `trainers.config` is a flag of `run` and `prompt` (`python -m trainers run --help`).
`run` prints a readable summary and, with `--json`, writes the result record. Bad input exits
with status 2 and one line.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from trainers.contract import EvalBlock, Record, dump
from trainers.config import ConfigError, RunConfig, sections, use_methods_file
from trainers.runtime.context_fit import ContextError
from trainers.runtime.models import ModelError
from trainers.data.prompts import PromptError
from trainers.records import write_json_atomic
from trainers.data.sampling import SamplingError
from trainers.runtime.scoring import TokenizationError
from trainers.settings import OneLineParser, SettingError, problems
from trainers.data.tasks import DataError

USAGE_ERRORS = (ConfigError, DataError, PromptError, ModelError, SamplingError, ContextError, TokenizationError, SettingError)




def _flag(f: dataclasses.Field) -> str:
    return "--" + (f.metadata.get("cli") or f.name).replace("_", "-")


def _help_text(f: dataclasses.Field, prefix: str) -> str:
    """The field's help, what it may be (methods, tasks) and its default, so --help answers both."""
    from trainers.methods.entry import METHODS
    from trainers.data.prompts import _patterns
    from trainers.data.tasks import ood_names, task_definitions, task_names
    text = f.metadata.get("help", "")
    names = {"method": sorted(METHODS), "task": task_names(), "ood": ood_names()}.get(f.name) if not prefix else None
    if names:
        text += f"; one of: {', '.join(names)}"
    if f.name == "pattern" and not prefix:
        tasks = task_definitions()["tasks"]
        text += "".join(f"; for {', '.join(t for t in tasks if tasks[t]['family'] == family)}: {', '.join(sorted(p))}"
                        for family, p in sorted(_patterns().items()))
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if isinstance(default, (tuple, list)):
        default = ",".join(map(str, default))
    if default not in (None, ""):
        text += f" (default: {default})"
    return text.replace("%", "%%")


def _add_fields(parser, cls, prefix: str) -> None:
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in ("train", "peft", "sections"):
            continue
        kw = {"dest": prefix + f.name, "default": argparse.SUPPRESS, "help": _help_text(f, prefix)}
        if hints[f.name] is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif f.metadata.get("choices"):
            kw["choices"] = f.metadata["choices"]
        group.add_argument(_flag(f), **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m trainers", description="Few-shot adaptation of causal LMs: one run.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="run one method on one task and print/write its result")
    _add_fields(run, RunConfig, "")
    for section, cls in sections().items():
        _add_fields(run, cls, section + ".")
    run.add_argument("--json", metavar="OUT", help="write the result record to this file (folders made as needed), "
                                                    "e.g. results/runs/icl_rte.json")
    prompt = sub.add_parser("prompt", help="print the prompt a model reads for the first evaluation example; "
                                           "--check-tokenization compares the scored ids with the whole string's")
    _add_fields(prompt, RunConfig, "")
    prompt.add_argument("--check-tokenization", action="store_true",
                        help="exit 1 if the ids the scorer uses differ from the tokenizer's ids of the whole prompt")
    prompt.add_argument("--check-limit", type=int, default=200, metavar="N",
                        help="examples checked per evaluation set (default: %(default)s)")
    data = sub.add_parser("data", help="data folders: `data export`")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=OneLineParser)
    export = data_sub.add_parser("export", help="write the tasks' splits in the --data-dir layout, with manifest.json")
    export.add_argument("--to", required=True, metavar="DIR", help="folder to write (created if missing)")
    export.add_argument("--from", dest="from_dir", metavar="DIR",
                        help="read from this data folder instead of the sources in tasks.yaml (the hub, the releases)")
    export.add_argument("--tasks", metavar="T1,T2", help="tasks to export, with their OOD sets (default: all)")
    return parser


def _overrides(ns: argparse.Namespace) -> dict:
    out = {k: v for k, v in vars(ns).items() if k not in ("command", "json", "check_tokenization", "check_limit")}
    for key in ("ood",):
        if isinstance(out.get(key), str) and out[key].lower() == "none":
            out[key] = ()
    return out


def _fmt_block(name: str, m: EvalBlock) -> list[str]:
    full = f" (full vocab {m.accuracy_full_vocab:.3f})" if m.accuracy_full_vocab is not None else ""
    fractions = " / ".join(f"{c} {v:.2f}" for c, v in m.pred_fraction.items())
    lines = [f"  {name:<10} acc {m.accuracy:.3f}{full}   predicted: {fractions}   n={m.n_scored} dropped={m.n_dropped}"]
    for group, g in (m.breakdown or {}).items():
        lines.append(f"    {group:<36} acc {g.accuracy:.3f}  n={g.n}")
    return lines


def summary(record: Record) -> str:
    peft = record.config["peft"]["kind"]
    head = (f"{record.status.upper()}: {record.method}{'' if peft == 'none' or record.method == 'icl' else '+' + peft} · "
            f"{record.task} · {record.model} · {record.shots} shots · data seed {record.data_seed} · seed {record.seed}")
    lines = [head]
    m, teacher = record.metrics, record.metrics.teacher
    if teacher and teacher.in_domain:
        lines += _fmt_block("teacher", teacher.in_domain)[:1]
        lines += [f"  {'(teacher)':<10} {n}: acc {b.accuracy:.3f}" for n, b in teacher.ood.items()]
    if m.in_domain:
        lines += _fmt_block("in-domain", m.in_domain)
        for name, block in m.ood.items():
            lines += _fmt_block(name, block)
    ctx = record.resolved.context
    if ctx:
        lines.append(f"  context: {ctx.context_tokens} tokens for {ctx.demonstrations} demonstrations, window "
                     f"{ctx.window} ({ctx.policy}): {ctx.demos_truncated} truncated, {ctx.tokens_cut} tokens cut")
    if record.error:
        lines.append(f"  error: {record.error}")
    res = record.resources
    phases = ", ".join(f"{k} {v.seconds:.1f}s" for k, v in res.phases.items())
    if phases:
        lines.append(f"  time: {phases}; peak memory {res.peak_memory_mib:.0f} MiB ({res.peak_memory_kind})")
    if record.params.total is not None:
        lines.append(f"  parameters: {record.params.trainable:,} trainable of {record.params.total:,}")
    return "\n".join(lines)


def _data(ns) -> int:
    from trainers.data.data_export import export
    from trainers.data.tasks import task_spec
    tasks = [t.strip() for t in ns.tasks.split(",") if t.strip()] if ns.tasks else None
    for t in tasks or ():
        task_spec(t)  # an unknown name fails here, with the valid ones
    export(ns.to, ns.from_dir, tasks)
    return 0


def _join_launcher_group(cfg) -> None:
    """Under torchrun (WORLD_SIZE > 1) the ranks form their process group here: NCCL on GPUs, else gloo."""
    import os
    import torch
    import torch.distributed as dist
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        cuda = cfg.device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")


def _data_reachable(cfg) -> None:
    """Without a data folder the task's data come from the hub: one line, before datasets' retries, when
    it cannot be reached (with HF_HUB_OFFLINE set, datasets' own cache may still hold them)."""
    from trainers.data.sources import OFFLINE_SET, hub_unreachable
    from trainers.data.tasks import resolve_data_dir, task_definitions
    defs = task_definitions()
    task = defs["tasks"][cfg.task]
    splits = [task["train"], task["eval"], *(defs["ood_sets"][o]["split"] for o in (task["ood"] if cfg.ood is None else cfg.ood))]
    from_hub = any(s.get("local") or "hub" in (s.get("sources") or [{}])[0] for s in splits)  # a user's own files need no hub
    if resolve_data_dir(cfg.data_dir) or not from_hub:
        return
    why = hub_unreachable()
    if why and why != OFFLINE_SET:
        raise DataError(f"the Hugging Face hub is unreachable ({why}) and this run reads the data of {cfg.task} from it; "
                        f"pass --data-dir with a folder in the hub's schema (../shared/data on this project's machines; "
                        f"`python -m trainers data export --to DIR` on a connected machine writes one)")


def main(argv: list[str] | None = None) -> int:
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("--methods-file")
    try:  # a methods file's own methods and sections get their flags before the parser is built
        use_methods_file(early.parse_known_args(argv)[0].methods_file)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ns = build_parser().parse_args(argv)
    from trainers.methods.entry import resolve, run  # imported late: --help stays fast
    try:
        if problems():
            raise SettingError("; ".join(problems()))
        if ns.command == "data":
            return _data(ns)
        cfg = resolve(_overrides(ns))
        _data_reachable(cfg)
        if ns.command == "prompt":
            from trainers.show_prompt import main as show
            return show(cfg, ns.check_tokenization, ns.check_limit)
        _join_launcher_group(cfg)
        record = run(cfg)
    except USAGE_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from trainers.runtime.distributed import is_main
    if not is_main():  # under torchrun every rank ran; the first speaks for them
        return 0 if record.status == "completed" else 1
    print(summary(record))
    if ns.json:
        write_json_atomic(ns.json, dump(record))
        print(f"  record: {ns.json}")
    return 0 if record.status == "completed" else 1
