"""How much code still reads records and statistics by string key: a count over the source, now and at an
earlier commit, with one vocabulary (issue 31's measure of the typed contract).

    python -m benchmarks.contract_count --before 639a4db      # -> results/bench/contract_count.{json,md}

Counted in orchestrator/, trainers/ and benchmarks/ (trainers/contract.py itself left out): every
subscript by a string constant (`x["seconds"]`) and every `.get("...")` whose key is the name of a field
of the typed contract: the record and what it holds, a trial's spec and resources, a cell's statistics
(`trainers/contract.py`, the vocabulary read from the current tree). The wider count adds the fields of
the analysis' and the meter's own rows (the trials table's `Trial` and `SetScore`, `Saving`, `BreakEven`,
the meter's `Peak` and `PhaseState`). A key that happens to share a field's name (a benchmark's own
result dict) counts too: the figure is an upper bound on what is left.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from io import BytesIO
from pathlib import Path

from benchmarks.common import publish, table
from trainers import contract
from trainers.records import environment

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("orchestrator", "trainers", "benchmarks")
ROWS = {"orchestrator/analysis/table.py": {"Trial", "SetScore"}, "orchestrator/analysis/serving.py": {"Saving", "BreakEven"},
        "trainers/runtime/metering.py": {"Peak", "PhaseState"}}


def contract_fields() -> set[str]:
    types = [t for t in vars(contract).values()
             if isinstance(t, type) and dataclasses.is_dataclass(t) and issubclass(t, contract.Json) and t is not contract.Json]
    return {f.name for t in types for f in dataclasses.fields(t)} - {"rest", "keys"}


def row_fields() -> set[str]:
    names = set()
    for path, classes in ROWS.items():
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.ClassDef) and node.name in classes:
                names |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return names | {"ray_overhead_seconds"}  # Trial's property


def string_keys(root: Path, names: set[str]) -> Counter:
    """Per module: string-keyed reads and writes of `names`."""
    counts: Counter = Counter()
    for top in FOLDERS:
        for p in sorted((root / top).rglob("*.py")):
            if p.relative_to(root).as_posix() == "trainers/contract.py":
                continue
            for node in ast.walk(ast.parse(p.read_text())):
                key = None
                if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                    key = node.slice.value
                elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                      and node.args and isinstance(node.args[0], ast.Constant)):
                    key = node.args[0].value
                if isinstance(key, str) and key in names:
                    counts[p.relative_to(root).as_posix()] += 1
    return counts


def tree_at(commit: str, into: Path) -> Path:
    """The source folders as they were at `commit`."""
    got = subprocess.run(["git", "archive", commit, *FOLDERS], cwd=REPO, capture_output=True)
    if got.returncode:
        print(f"error: cannot read commit {commit} here ({got.stderr.decode().strip() or 'git failed'}); "
              f"give --before a commit this checkout has (a shallow clone lacks older ones)", file=sys.stderr)
        sys.exit(2)
    blob = got.stdout
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="639a4db", help="the commit to compare with (default: before issue 31's contract)")
    ap.add_argument("--out-dir", default=str(REPO / "results" / "bench"))
    args = ap.parse_args()
    vocabularies = {"contract fields": contract_fields()}
    vocabularies["+ rows, costs, meter state"] = vocabularies["contract fields"] | row_fields()
    rows, figures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        old = tree_at(args.before, Path(tmp))
        for label, names in vocabularies.items():
            before, now = string_keys(old, names), string_keys(REPO, names)
            b, n = sum(before.values()), sum(now.values())
            figures.append({"vocabulary": label, "field_names": len(names), "before": b, "now": n, "cut": round(1 - n / b, 3),
                            "modules_before": len(before), "modules_now": len(now), "now_by_module": dict(now.most_common())})
            rows.append([label, len(names), b, n, f"{100 * (1 - n / b):.1f} %",
                         ", ".join(f"{m} {k}" for m, k in now.most_common(3))])
    command = f"python -m benchmarks.contract_count --before {args.before}"
    env = environment()  # the commit counted, when, where
    text = (f"# String-keyed reads of record and statistics fields, at {args.before} and now\n\n"
            f"    {command}\n\n" + table(["vocabulary", "field names", f"at {args.before}", "now", "cut", "most now"], rows)
            + "\n\nA subscript by a string constant or a `.get` of one, whose key names a field; see the module's docstring.\n")
    publish("contract_count", Path(args.out_dir), text, {"benchmark": "contract_count", "command": command,
                                                         "args": vars(args), "figures": figures, "env": env})


if __name__ == "__main__":
    main()
