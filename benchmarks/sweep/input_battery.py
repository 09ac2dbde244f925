"""A battery of bad inputs to the sweep command (and a few to the others): exit status, seconds,
whether Ray started, message.

    python -m benchmarks.sweep.input_battery [--model ~/.cache/fewshot-models/smollm2-135m] [--data ../shared/data]

Every input is a real `python -m orchestrator sweep ...` in a fresh results folder, run one at a
time, without HF_HUB_OFFLINE (so a hub id costs what it costs on a machine without the hub).
"Ray started" is read from the command's output (Ray's "Started a local Ray instance" or our
"Ray dashboard:" line). Writes results/bench/input_battery.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.common import ROOT, publish, table  # noqa: E402


COLUMNS = ["#", "category", "input", "exit", "seconds", "ray_started", "lines", "traceback", "message"]


def cases(model: str, data: Path, work: Path) -> list[tuple[str, str, list[str]]]:
    """(category, what, arguments after `sweep`); files the cases need are written under `work`."""
    bad_yaml, a_list = work / "bad.yaml", work / "list.yaml"
    bad_yaml.write_text("tasks: [rte\n")
    a_list.write_text("- rte\n")
    broken, nocol, badlabel, empty = (_copy_rte(data, work / n) for n in ("broken", "nocol", "badlabel", "empty"))
    _edit(broken, lambda rows: rows[:5] + ['{"sentence1": "cut sho'] + rows[5:])
    _edit(nocol, lambda rows: [json.dumps({k: v for k, v in json.loads(rows[0]).items() if k != "sentence2"})] + rows[1:])
    _edit(badlabel, lambda rows: [json.dumps({**json.loads(rows[0]), "label": 5})] + rows[1:])
    shutil.rmtree(empty / "glue")
    (work / "emptymodel").mkdir()
    held = work / "held" / "quickstart"
    (held / "trials").mkdir(parents=True)
    (held / "space.yaml").write_text("raw: {}\n")
    (held / "trials" / "x.json").write_text("{}\n")
    other = work / "other" / "quickstart"
    (other / "trials").mkdir(parents=True)
    (other / "space.yaml").write_text("raw: {budget: 99}\n")
    q = ["--space", "quickstart", "--set", f"models=[{model}]"]
    qd = q + ["--data-dir", str(data)]
    nonutf = _copy_rte(data, work / "nonutf")
    train = nonutf / "glue" / "rte" / "train.jsonl"
    lines = train.read_bytes().split(b"\n")
    train.write_bytes(b"\n".join(lines[:6] + [lines[6].replace(b"e", b"\xe9", 1)] + lines[7:]))
    bert = _bert(work / "bert", model)
    corrupt = work / "corrupt" / "sweep"
    (corrupt / "trials").mkdir(parents=True)
    (corrupt / "trials" / "cut.json").write_text('{"status": "comp')
    listener = socket.socket()  # a port that accepts connections but is no Ray GCS
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _KEEP.append(listener)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    return [
        ("space", "unknown space name", ["--space", "nope"]),
        ("space", "space file that does not exist", ["--space", str(work / "none.yaml")]),
        ("space", "space file that is not YAML", ["--space", str(bad_yaml)]),
        ("space", "space file that is a list", ["--space", str(a_list)]),
        ("keys", "unknown top-level key", ["--space", "smoke", "--set", "budjet=2"]),
        ("keys", "unknown config key in fixed", ["--space", "smoke", "--set", "fixed.train.rate=1"]),
        ("keys", "unknown config key in search", ["--space", "smoke", "--set", "search.pbft.train.rate={uniform: [0, 1]}"]),
        ("keys", "unknown pruner key", ["--space", "smoke", "--set", "pruner.patience=2"]),
        ("keys", "unknown resources key", ["--space", "smoke", "--set", "resources.gpu=1"]),
        ("keys", "--set without =", ["--space", "smoke", "--set", "shots"]),
        ("types", "shots not a list", ["--space", "smoke", "--set", "shots=16"]),
        ("types", "epochs not an integer", ["--space", "smoke", "--set", "fixed.train.epochs=many"]),
        ("types", "budget a float", ["--space", "smoke", "--set", "budget=2.5"]),
        ("types", "data seeds not integers", ["--space", "smoke", "--set", "data_seeds=[a]"]),
        ("ranges", "negative fixed lr", ["--space", "smoke", "--set", "fixed.train.lr=-0.1"]),
        ("ranges", "negative lr in search", ["--space", "smoke", "--set", "search.pbft.train.lr=-0.1"]),
        ("ranges", "loguniform low > high", ["--space", "smoke", "--set", "search.pbft.train.lr={loguniform: [1e-2, 1e-4]}"]),
        ("ranges", "budget 0", ["--space", "smoke", "--set", "budget=0"]),
        ("ranges", "max_failures -1", ["--space", "smoke", "--set", "max_failures=-1"]),
        ("ranges", "--max-trials 0", ["--space", "smoke", "--max-trials", "0"]),
        ("methods", "unknown method", ["--space", "smoke", "--set", "methods={magic: [none]}"]),
        ("methods", "ICL with LoRA", ["--space", "smoke", "--set", "methods={icl: [lora]}"]),
        ("tasks", "unknown task", ["--space", "smoke", "--set", "tasks=[sst9]"]),
        ("tasks", "unknown OOD set", ["--space", "smoke", "--set", "tasks={rte: {ood: [nope]}}"]),
        ("tasks", "unknown HANS heuristic", ["--space", "smoke", "--set", "tasks={rte: {ood: [hans], hans_heuristics: [nope]}}"]),
        ("data folders", "--data-dir that does not exist", q + ["--data-dir", str(work / "nowhere")]),
        ("data folders", "--data-dir without the task's files", q + ["--data-dir", str(empty)]),
        ("data folders", "--data-dir given to smoke (writes its own)", ["--space", "smoke", "--data-dir", str(data)]),
        ("malformed data", "a cut JSON line in train", q + ["--data-dir", str(broken)]),
        ("malformed data", "a row without sentence2", q + ["--data-dir", str(nocol)]),
        # a label outside the task's ids is skipped by design (test splits carry -1); --dry-run: a real run trains for minutes
        ("malformed data", "a label id out of range (--dry-run)", q + ["--data-dir", str(badlabel), "--dry-run"]),
        ("models", "model folder that does not exist", ["--space", "quickstart", "--set", "models=[./missing-model]", "--data-dir", str(data)]),
        ("models", "hub id, hub unreachable", ["--space", "quickstart", "--data-dir", str(data)]),
        ("models", "folder without a model", ["--space", "quickstart", "--set", f"models=[{work / 'emptymodel'}]", "--data-dir", str(data)]),
        ("resources", "64 CPUs per worker on this machine", qd + ["--set", "resources.cpus_per_worker=64"]),
        ("resources", "3 workers on 2 CPUs", qd + ["--set", "resources.workers=3"]),
        ("resources", "GPUs asked, none here (cd_vs_icl)", ["--space", "cd_vs_icl", "--set", f"models=[{model}]", "--data-dir", str(data)]),
        ("resources", "fractional GPU with 2 workers", qd + ["--set", "resources={workers: 2, gpus_per_worker: 0.5}"]),
        ("shots", "more shots than a class's pool", ["--space", "smoke", "--set", "shots=[5000]"]),
        ("shots", "odd shots for two classes", ["--space", "smoke", "--set", "shots=[7]"]),
        ("shots", "negative shots", ["--space", "smoke", "--set", "shots=[-8]"]),
        ("seeds", "tuning_data_seed not a data seed", ["--space", "smoke", "--set", "tuning_data_seed=5"]),
        ("seeds", "no data seeds", ["--space", "smoke", "--set", "data_seeds=[]"]),
        ("folders", "folder with finished trials, no --resume", qd + ["--results", str(work / "held")]),
        ("folders", "--resume with nothing to resume", qd + ["--resume", "--name", "never"]),
        ("folders", "--resume with other overrides", qd + ["--resume", "--results", str(work / "other")]),
        ("folders", "--results is a file", qd + ["--results", "/etc/hostname"]),
        # issue 29: the last tracebacks and the messages that named the wrong problem
        ("space", "space file with a YAML slip (its line)", ["--space", str(bad_yaml)]),
        ("cluster", "--address where nothing listens", qd + ["--address", f"127.0.0.1:{closed}"]),
        ("cluster", "--address where something else listens", qd + ["--address", f"127.0.0.1:{listener.getsockname()[1]}"]),
        ("models", "a masked LM (BERT) folder", ["--space", "quickstart", "--set", f"models=[{bert}]", "--data-dir", str(data)]),
        ("malformed data", "bytes that are not UTF-8 in train", q + ["--data-dir", str(nonutf)]),
        ("power", "--prior that does not exist", ["--space", "smoke", "--dry-run", "--prior", str(work / "no-such-sweep")]),
        ("power", "--detect without --dry-run", ["--space", "smoke", "--detect", "0.05"]),
        ("options", "a misspelt option (--spcae)", ["--spcae", "quickstart"]),
        ("names", "--name ''", ["--space", "smoke", "--name", ""]),
        ("data folders", "--data-dir is a file", q + ["--data-dir", "/etc/hostname"]),
        ("other commands", "trainers run, no --data-dir, no hub", ["@trainers", "run", "--method", "icl", "--task", "rte",
                                                                  "--model", model, "--shots", "4"]),
        ("other commands", "summarize a folder with a corrupt record", ["@orchestrator", "summarize", str(corrupt)]),
    ]


_KEEP: list = []  # sockets the cases point at, open until the battery ends


def _bert(folder: Path, model: str) -> Path:
    """A tiny masked LM (BERT) with the model's tokenizer: a Hugging Face folder that is no causal LM."""
    from transformers import BertConfig
    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               architectures=["BertForMaskedLM"]).save_pretrained(folder)
    for f in Path(model).expanduser().glob("tokenizer*"):
        shutil.copy(f, folder / f.name)
    return folder


def _copy_rte(data: Path, to: Path) -> Path:
    for split in ("glue/rte", "hans"):
        shutil.copytree(data / split, to / split)
    return to


def _edit(root: Path, change) -> None:
    path = root / "glue" / "rte" / "train.jsonl"
    path.write_text("\n".join(change(path.read_text().splitlines())) + "\n")


def run_case(args: list[str], results: Path) -> dict:
    """`args` after `python -m orchestrator sweep`; or, starting with @trainers / @orchestrator, another command."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if args and args[0].startswith("@"):
        command = [sys.executable, "-m", args[0][1:], *args[1:]]
    else:
        command = [sys.executable, "-m", "orchestrator", "sweep", *args,
                   *([] if "--results" in args else ["--results", str(results)])]
    start = time.perf_counter()
    r = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    out = r.stdout + r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    message = errors[0] if errors else (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [""])[-1]
    return {"exit": r.returncode, "seconds": round(seconds, 1), "lines": len(errors),
            "ray_started": "Started a local Ray instance" in out or "Ray dashboard:" in out,
            "traceback": "Traceback (most recent call last)" in out, "message": message[:300]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path("~/.cache/fewshot-models/smollm2-135m").expanduser()))
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--out-dir", default=str(ROOT / "results" / "bench"))
    ns = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i, (category, what, args) in enumerate(cases(ns.model, Path(ns.data), work), 1):
            row = {"#": i, "category": category, "input": what, **run_case(args, work / f"results{i}")}
            rows.append(row)
            print(f"{i:>2} {category:<14} {what:<44} exit {row['exit']} {row['seconds']:>6.1f}s "
                  f"ray {'yes' if row['ray_started'] else 'no '} {row['message'][:140]}", flush=True)
    text = ("Bad inputs to `python -m orchestrator sweep` (and to `trainers run` and `summarize` where the input says), "
            "one at a time, without HF_HUB_OFFLINE:\n\n"
            "    python -m benchmarks.sweep.input_battery\n\n"
            + table(COLUMNS, [[r[c] for c in COLUMNS] for r in rows]))
    publish("input_battery", Path(ns.out_dir), text, {"benchmark": "input_battery", "rows": rows})
    return 0 if all(not r["ray_started"] and not r["traceback"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
