"""The sweep command line.

    python -m orchestrator sweep --space quickstart [--set key=value ...] [--data-dir DIR] [--name NAME]
                                 [--resume] [--address ADDR] [--dry-run] [--allow-cpu] [--max-trials N]
    python -m orchestrator submit --to http://localhost:8265 --space cd_vs_icl --results s3://BUCKET/results
    python -m orchestrator spaces
    python -m orchestrator summarize results/quickstart
    python -m orchestrator report results/quickstart           # report/report.md and figures
    python -m orchestrator decide results/quickstart --queries 1e3,1e4,1e5   # which method for that many queries

Bad input (an unknown space, key or value, a bad --name or FEWSHOT_* variable, a model, data
split or few-shot draw that does not work, resources the cluster lacks) is rejected before Ray
starts and before anything is written, one line per problem, exit status 2. Exit codes:
`orchestrator.exit_codes`, also printed by `--help`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator import exit_codes
from orchestrator.space import SpaceError, available_spaces, load_space
from trainers import settings
from trainers.settings import OneLineParser

EPILOG = f"""{exit_codes.HELP}

environment variables (checked before anything starts):
{settings.describe()}"""


def _sub(sub, name: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def _sweep_arguments(s: argparse.ArgumentParser, submit: bool) -> None:
    """The arguments of a sweep; `submit` passes them to the job, less those that only mean something here."""
    s.add_argument("--space", required=True, help="a name from search_spaces/ (python -m orchestrator spaces) or a path to a YAML file")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the space; the value is YAML, e.g. --set shots=[16] "
                        "--set fixed.train.epochs=5 --set 'tasks={rte: {ood: [hans]}}' (repeatable)")
    s.add_argument("--data-dir", help="local data folder in the hub's schema (as ../shared/data)")
    s.add_argument("--name", help="sweep name, i.e. the results/<name> folder: one folder name of letters, digits, "
                                  "'.', '_', '+', '-', at most 100 characters (default: the space's name)")
    s.add_argument("--results", default="results", help="folder that holds sweeps (default: results), or a storage URI "
                                                        "(s3://, gs://, ...: the sweep's files are staged locally and "
                                                        "mirrored there; Ray keeps its run state there)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep; finished trials are not re-run")
    if not submit:
        s.add_argument("--address", help="Ray cluster address (e.g. auto); default: $RAY_ADDRESS (set inside `ray job "
                                         "submit`), else start a local Ray instance")
        s.add_argument("--dry-run", action="store_true", help="print cells, trial counts and resources; do not start Ray")
    s.add_argument("--max-trials", type=int, metavar="N",
                   help="stop after N trials finish in this session, exit 3 (continue with --resume)")
    s.add_argument("--allow-cpu", action="store_true", help="run trials that ask for GPUs on CPUs when the cluster has none")
    s.add_argument("--prior", metavar="DIR", help="an earlier sweep's folder: the power estimate (printed by --dry-run and "
                                                  "at the start) takes its seed spread and accuracy from those records")
    if not submit:
        s.add_argument("--detect", type=float, metavar="D",
                       help="with --dry-run: the seeds x evaluation-size designs that detect an in-domain difference of D "
                            "(e.g. 0.05) with 80 %% power, and what each costs (from --prior's spread and seconds when given)")
    s.add_argument("--track", metavar="mlflow[=URI]|wandb[=PROJECT]|tensorboard", action="append", default=[],
                   help="also log every trial (config, epochs, final metrics, record) to a tracker (repeatable); "
                        "mlflow without URI: results/<sweep>/mlruns")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m orchestrator", description="Ray sweeps of few-shot adaptation methods.",
                      epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    s = _sub(sub, "sweep", help="run (or --resume) a sweep", description="Run (or --resume) a sweep: search each cell, "
             "replicate its best configuration over the data seeds, write records, tables and a report.")
    _sweep_arguments(s, submit=False)
    j = _sub(sub, "submit", help="run a sweep on a Ray cluster as a job (its code and commit travel with it)",
             description="Submit `sweep` with these arguments to a cluster's job server: this checkout's code and "
             "commit travel with the job, its log streams here, and this command ends with the sweep's exit status "
             "(the job's status on the dashboard follows it).")
    j.add_argument("--to", metavar="URL", help="the cluster's dashboard (default: $RAY_API_SERVER_ADDRESS, else "
                                                "http://localhost:8265, where `ray dashboard cluster.yaml` forwards it)")
    j.add_argument("--no-follow", action="store_true", help="return once the job is submitted (exit 0)")
    _sweep_arguments(j, submit=True)
    _sub(sub, "spaces", help="list the search spaces")
    m = _sub(sub, "summarize", help="rebuild the tables and summary of a results folder from its records")
    m.add_argument("folder", help="a sweep's results folder (e.g. results/quickstart), or a folder of single-run "
                                  "records (python -m trainers run --json)")
    m.add_argument("--title", help="the summary's title (default: what ran, from the records)")
    r = _sub(sub, "report", help="write FOLDER/report/ (report.md and figures) from a results folder's records")
    r.add_argument("folder", help="a sweep's results folder (e.g. results/quickstart): its trials/ records are read, "
                                  "FOLDER/report/ is (re)written; nothing else changes")
    d = _sub(sub, "decide", help="which method to deploy for a query volume: the cheapest in total among those "
                                 "within a tolerance of the most accurate, with the probability of each")
    d.add_argument("folder", help="a sweep's results folder (its records are read; nothing is written unless --write)")
    d.add_argument("--queries", default="1e3,1e4,1e5", help="query volumes to serve, comma-separated (default: %(default)s)")
    d.add_argument("--tolerance", type=float, default=0.01,
                   help="accuracy a method may give up against the most accurate and still be chosen (default: %(default)s)")
    d.add_argument("--max-memory-gb", type=float, metavar="G", help="methods whose measured peak memory exceeds G GiB are out")
    d.add_argument("--price", metavar="cpu_hour=P,gpu_hour=P", help="prices per device-hour: costs in money too")
    d.add_argument("--write", action="store_true", help="also write FOLDER/report/decide.md and its figure")
    return p


def _decide(ns) -> int:
    from orchestrator.analysis import decide, results
    folder = Path(ns.folder)
    if not folder.is_dir() or not results.load_records(folder):
        raise SpaceError(f"{folder} holds no result records; give a sweep's folder, e.g. results/quickstart")
    if not 0 <= ns.tolerance < 1:
        raise SpaceError(f"--tolerance {ns.tolerance}: give an accuracy difference between 0 and 1, e.g. 0.01")
    try:
        queries, prices = decide.parse_queries(ns.queries), decide.parse_prices(ns.price)
    except ValueError as e:
        raise SpaceError(str(e)) from None
    decisions = decide.decide(folder, queries, ns.tolerance, ns.max_memory_gb)
    if not decisions:
        raise SpaceError(f"{folder} has no completed replicate to decide from")
    text = "\n".join(decide.sentences(decisions)) + "\n\n" + decide.tables(decisions, prices)
    print(text)
    if ns.write:
        path = decide.write(folder, decisions, text)
        print(f"written: {path}")
    return exit_codes.OK


def _spaces() -> int:
    from orchestrator.planning import plan
    for name in available_spaces():
        try:
            space = load_space(name)
            print(f"{name:<12} {len(plan.cells(space)):>3} cells  {space.description}")
        except SpaceError as e:
            if "fetch it with:" in str(e):  # valid, but its local model is not on this machine yet
                print(f"{name:<12}   needs a model  {str(e).split('models: ', 1)[1]}")
            else:
                print(f"{name:<12} INVALID: {e}")
    return 0


def _sweep(ns) -> int:
    import dataclasses
    space = dataclasses.replace(load_space(ns.space, ns.overrides, ns.data_dir), allow_cpu=ns.allow_cpu)
    if ns.max_trials is not None and ns.max_trials < 1:
        raise SpaceError("--max-trials must be at least 1")
    from orchestrator.engine import ray_session, storage
    from orchestrator.analysis.folders import sweep_folder
    if ns.name is not None and not ns.name.strip():
        raise SpaceError("--name is empty; give a folder name (letters, digits, '.', '_', '+', '-'), e.g. --name "
                         "cd_vs_icl_try2, or leave --name out for the space's own name")
    sweep_folder(Path("."), ns.name or space.name)  # a bad name is refused before anything starts
    if ray_session.in_job() and not storage.is_uri(ns.results) and not Path(ns.results).is_absolute():
        raise SpaceError(f"--results {ns.results}: inside a Ray job the working folder is a temporary copy Ray deletes "
                         f"afterwards; give --results an absolute folder on shared storage or a URI (s3://..., gs://...)")
    address = ray_session.address_from_env(ns.address)  # a `ray job submit` job joins its cluster
    if not ns.dry_run:
        ray_session.check_address(address)  # a bounded wait, one line, before anything starts
    from orchestrator.engine.tracking import parse
    parse(ns.track)  # before anything starts: an unknown tracker or a missing library is a usage error
    if space.resources.get("auto") and address is None:  # placed from the memory plan, refused here when a cell fits nowhere
        from orchestrator.planning import plan, preflight
        space = plan.resolve_placement(space, preflight.local_totals()["GPU"])
    from orchestrator.analysis import power
    try:
        prior = power.prior_from(Path(ns.prior)) if ns.prior else None
    except (ValueError, OSError) as e:
        raise SpaceError(f"--prior {ns.prior}: {e}") from None
    if ns.detect is not None and not 0 < ns.detect < 1:
        raise SpaceError(f"--detect {ns.detect}: give a difference in accuracy between 0 and 1, e.g. --detect 0.05")
    if ns.detect is not None and not ns.dry_run:
        raise SpaceError("--detect plans a design: add --dry-run (nothing runs)")
    if ns.dry_run:
        return _dry_run(space, address, prior, ns.detect)
    warnings = [line for line in power.plan_lines(space, prior) if line.startswith("warning")]
    from orchestrator.engine.driver import (
        run_sweep,  # imports Ray: only when a sweep really starts
    )
    results = ns.results if storage.is_uri(ns.results) else Path(ns.results)
    return run_sweep(space, name=ns.name, resume=ns.resume, address=address, results_root=results,
                     max_trials=ns.max_trials, track=ns.track, warnings=warnings)


def _dry_run(space, address: str | None, prior: dict | None = None, detect: float | None = None) -> int:
    """The plan, with the cells' configurations checked, and what it can detect; nothing loaded, so it
    works without the hub. Data, models and draws are checked when the sweep starts (preflight), before Ray."""
    from orchestrator.planning import plan, preflight
    from orchestrator.analysis import power
    preflight.check_configs(space)
    totals = preflight.local_totals()
    print(plan.describe(space, has_gpus=totals["GPU"] > 0))
    print("\n" + "\n".join(power.plan_lines(space, prior)))
    if detect is not None:
        slots = space.max_concurrent_trials or max(1, int(totals["CPU"] // max(space.resources["cpus_per_worker"], 1e-9)))
        print("\n" + "\n".join(power.design_lines(space, prior, detect, totals["GPU"] > 0, slots)))
    if address is None:
        try:
            preflight.check_resources(space, totals, "this machine")
        except preflight.PreflightError as e:
            print("\non this machine the sweep would stop here:\n" + "\n".join(f"  {p}" for p in e.problems))
    print("\ndata, models, tokenizers and few-shot draws are checked when the sweep starts, before Ray")
    return 0


def _report(folder: Path) -> int:
    from orchestrator.analysis import results
    records = results.load_records(folder, set_aside=False) if folder.is_dir() else []
    if not records:
        raise SpaceError(f"{folder} holds no result records; give a sweep's folder, e.g. results/quickstart")
    if not any(r.cell for r in records):
        raise SpaceError(f"{folder} holds single-run records (python -m trainers run --json), not a sweep's: a report "
                         f"compares a sweep's cells; `python -m orchestrator summarize {folder}` tabulates these")
    from orchestrator.analysis.report import (
        write_report,  # imports matplotlib: only for a report
    )
    path = write_report(folder)
    print(f"report: {path}")
    print(path.read_text().split("\n\n")[1].strip())  # the three sentences
    return 0


def _usage_errors() -> tuple:
    """The exceptions that mean bad input (the trainers' own imported only when one was raised: they
    pull in torch, which naming a space or listing them does not need)."""
    from orchestrator.engine.ray_session import NoCluster
    from trainers.cli import USAGE_ERRORS
    return (SpaceError, NoCluster, *USAGE_ERRORS)


def main(argv: list[str] | None = None) -> int:
    from orchestrator import commands
    argv = sys.argv[1:] if argv is None else argv
    commands.remember(argv)  # a hint that says how to continue repeats the command as given
    ns = build_parser().parse_args(argv)
    try:
        bad_env = settings.problems()
        if bad_env:
            raise SpaceError("\n".join(bad_env))
        if ns.command == "spaces":
            return _spaces()
        if ns.command == "summarize":
            from orchestrator.analysis import results
            if not Path(ns.folder).is_dir() or not results.load_records(Path(ns.folder)):
                raise SpaceError(f"{ns.folder} holds no result records")
            rows, summary, title, comps = results.write_tables(Path(ns.folder), ns.title)
            print(f"{title}\n{results.to_text(summary)}")
            for line in results.comparison_lines(comps):
                print(line)
            for note in results.duplicate_notes(rows):
                print(note)
            return exit_codes.OK
        if ns.command == "report":
            return _report(Path(ns.folder))
        if ns.command == "decide":
            return _decide(ns)
        if ns.command == "submit":
            from orchestrator.engine.submit import submit
            return submit(ns)
        return _sweep(ns)
    except ModuleNotFoundError as e:  # a package imported late (ray, torch) missing from this Python
        print(settings.missing_package(e.name, "orchestrator"), file=sys.stderr)
        return exit_codes.USAGE
    except Exception as e:  # noqa: BLE001 - usage errors are one line each; anything else is a bug: its traceback
        if not isinstance(e, SpaceError) and not isinstance(e, _usage_errors()):
            import traceback
            traceback.print_exc()
            print(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} (exit "
                  f"{exit_codes.ERROR}: a bug or the environment; the traceback is above; records already written are "
                  f"kept)", file=sys.stderr)
            return exit_codes.ERROR
        for line in str(e).splitlines():  # preflight: one line per problem
            print(f"error: {line}", file=sys.stderr)
        return exit_codes.USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exit_codes.INTERRUPTED
