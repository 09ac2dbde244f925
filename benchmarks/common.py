"""What the benchmark scripts share: options, set-up, alternating measurement in `Meter` phases,
and the printed table written beside the JSON figures.

    python -m benchmarks.icl_prefix_cache --help      # the shared options appear in every script

Memory: before each measured phase, freed memory is handed back to the system (glibc
`malloc_trim` on CPU, the caching allocator's `empty_cache` on a GPU), so a phase's peak does not
inherit what an earlier phase freed but the allocator kept. `peak` is `Meter`'s figure (RSS
high-water mark reset per phase on CPU, CUDA max allocated on a GPU), weights included;
`working` is that peak minus the memory in use when the phase began: what the work itself added.
On CPU the RSS also counts freed heap memory that glibc keeps, which depends on allocation order:
with `MALLOC_MMAP_THRESHOLD_=65536` in the environment (large blocks mapped and unmapped one by
one; slower) the peaks come close to live tensor bytes. Measured so on SmolLM2, ft_throughput's
~360 MiB gap between the two loops vanished (1620 against 1616 MiB), and at 16 shots the ICL plain
path's working memory fell from 663 to 301 MiB while the cached path's stayed higher (589 MiB).

Threads: one by default. On a CPU shared with other jobs, every multi-threaded operator waits
for its slowest thread, and a descheduled thread stalls it for a time slice: on the project's
2-core machine under load, two threads made SmolLM2's 1165-token prefix pass 3.7x slower than one
thread (13.7 s against 3.7 s) and copying the prefix cache 37x slower, which penalises the paths
made of many small operations (the cached ones) most. `--threads 0` leaves torch's own choice.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from trainers.config import RunConfig
from trainers.runtime.metering import MiB, Meter
from trainers.runtime.models import load_causal_lm, pick_device
from trainers.records import environment, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "~/.cache/fewshot-models/smollm2-135m"
DEFAULT_DATA = os.path.relpath(ROOT.parent / "shared" / "data")  # ../shared/data from the repo root, from any cwd


def parser(doc: str, repeats: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="causal LM folder or hub id (default: %(default)s)")
    p.add_argument("--data-dir", default=DEFAULT_DATA, help="task data in the hub's schema (default: %(default)s)")
    p.add_argument("--task", default="rte", help="task name (default: %(default)s)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the few-shot draw (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="torch seed (default: %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="auto: fp32 on CPU, bf16 on a GPU that supports it (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=repeats,
                   help="measured runs of each path, interleaved; the fastest is kept (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; 0: torch's own choice (default: %(default)s, see benchmarks/common.py)")
    p.add_argument("--out-dir", default=os.path.relpath(ROOT / "results" / "bench"), help="(default: %(default)s)")
    return p


def run_config(args, shots: int) -> RunConfig:
    """The project's own config, so the sampler draws exactly what a `trainers run` would."""
    return RunConfig(task=args.task, model=args.model, shots=shots, data_seed=args.data_seed, seed=args.seed,
                     data_dir=args.data_dir, ood=(), dtype=args.dtype, device=args.device)


def load_model(args):
    torch.manual_seed(args.seed)
    return load_causal_lm(args.model, args.dtype, args.device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: a phase's peak may then include what an earlier phase freed


def _in_use_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / MiB
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return float("nan")


def alternate(meter: Meter, runs: dict[str, Callable[[], Any]], order: list[str], tag: str = "",
              before: Callable[[str], None] | None = None) -> tuple[dict[str, dict], dict[str, Any]]:
    """Run the callables in `order` (names may recur), each run in its own Meter phase.

    Interleaving lets every path meet the same machine conditions (other jobs, clock state); per
    path the fastest time and the lowest peak are kept, since interference only adds. CPU seconds
    (this process, all threads) are kept beside wall seconds: on a shared machine they move less.
    `before` runs outside the timed phase. Returns (figures per name, each name's last result).
    """
    samples: dict[str, list[dict]] = {name: [] for name in runs}
    results: dict[str, Any] = {}
    for name in order:
        if before:
            before(name)
        _release(meter.device)
        start, phase = _in_use_mib(meter.device), f"{tag}{name}#{len(samples[name]) + 1}"
        cpu = time.process_time()
        with meter.phase(phase):
            results[name] = runs[name]()
        cpu, rec = round(time.process_time() - cpu, 3), meter.phases[phase]
        peak = rec.peak_mib
        samples[name].append({"seconds": rec.seconds, "cpu_seconds": cpu, "peak_mib": peak,
                              "working_mib": round(peak - start, 1)})
    figures = {name: {key: min(s[key] for s in runs_) for key in runs_[0]} | {"runs": runs_}
               for name, runs_ in samples.items()}
    return figures, results


def round_robin(names, repeats: int) -> list[str]:
    return [name for _ in range(repeats) for name in names]


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def phase_rows(*paths: dict) -> list[list]:
    """Table rows of what `alternate` measured, one column per path."""
    return [["seconds (fastest run)", *(p["seconds"] for p in paths)],
            ["CPU seconds (least)", *(p["cpu_seconds"] for p in paths)],
            ["peak memory MiB", *(p["peak_mib"] for p in paths)],
            ["working memory MiB (peak - start)", *(p["working_mib"] for p in paths)],
            ["seconds of every run", *(" ".join(str(r["seconds"]) for r in p["runs"]) for p in paths)]]


def fmt(x) -> str:
    if isinstance(x, bool) or not isinstance(x, float):
        return str(x)
    if x != x or abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table, padded so that it also lines up in a terminal; numbers right-aligned."""
    cells = [[fmt(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _environment(device: torch.device) -> dict:
    env = {**environment(), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "load_average_at_end": os.getloadavg()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def main(name: str, argv: list[str] | None, options: Callable[[], argparse.ArgumentParser],
         measure: Callable[[argparse.Namespace, torch.device], dict], render: Callable[[dict], str],
         title: Callable[[argparse.Namespace, torch.device], str]) -> dict:
    """Parse, measure, then print the table and write it as Markdown and the figures, arguments
    and environment as JSON."""
    argv = sys.argv[1:] if argv is None else argv
    args = options().parse_args(argv)
    module = name
    if os.path.expanduser(args.model) != os.path.expanduser(DEFAULT_MODEL):  # beside the default model's files, not over them
        name = f"{name}_{Path(args.model).name}"
    device = pick_device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    load_before, started = os.getloadavg(), time.perf_counter()
    figures = measure(args, device)
    run = {"wall_seconds": round(time.perf_counter() - started, 1), "load_average_at_start": load_before}
    command = " ".join([f"python -m benchmarks.{module}", *argv])
    env = _environment(device)
    machine = (f"- machine: {env.get('gpu', device.type)}, {env['torch_threads']} torch threads on "
               f"{env['cpu_count']} CPUs; "
               f"1-minute load average {load_before[0]:.1f} at start, {env['load_average_at_end'][0]:.1f} at end; "
               f"{run['wall_seconds']:.0f} s in all")
    text = f"# {title(args, device)}\n\n    {command}\n\n{render(figures)}\n{machine}\n"
    publish(name, Path(args.out_dir), text, {"benchmark": module, "command": command, "args": vars(args),
                                             "figures": figures, "run": run, "env": env})
    return figures


def publish(name: str, out: Path, text: str, record: dict) -> None:
    """Print the Markdown report and write it beside the JSON record: results/bench/<name>.{md,json}
    (<name>_<model folder> for a model other than the default)."""
    print("\n" + text)
    write_json_atomic(out / f"{name}.json", record)
    (out / f"{name}.md").write_text(text)
