"""docs/measured.md: every figure this project has measured, each with the commit and date it was
measured on, regenerated from the files that hold them.

    python -m benchmarks.measured            # rewrites docs/measured.md from results/bench and results/acceptance

Sources: each `results/bench/<name>.json` (its `env`: commit, time, host, load) with its `.md`
table; each `results/acceptance/<run>/` folder's records (their `env`: commit and time, first to
last) with the summary the records give, and the folder's `NOTES.md` (what the run was for and
what it shows) when it has one. A figure whose record holds no commit is dated by the git commit
that added its file, and says so. Nothing here is typed by hand but the notes.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from trainers.contract import Record, load

REPO = Path(__file__).resolve().parents[1]
BENCH, ACCEPTANCE, OUT = REPO / "results" / "bench", REPO / "results" / "acceptance", REPO / "docs" / "measured.md"

HEAD = """# Measured here

Every figure below was measured by this project on its own machines: a 2-core CPU box with no GPU
unless a section says otherwise. Each section names the commit and the date of its measurement;
a figure measured before a change that would move it is stale — check its commit against
`git log` before quoting it. Regenerate this file with `python -m benchmarks.measured`; rerun a
benchmark with the command it shows (it rewrites its `results/bench/` files), an acceptance run with
the command in its notes.
"""


def _added_in(path: Path) -> str:
    out = subprocess.run(["git", "log", "--diff-filter=A", "--format=%h %ad", "--date=short", "--", str(path)],
                         cwd=REPO, capture_output=True, text=True).stdout.split("\n")
    return out[-2] if len(out) > 1 else "uncommitted"


def _short(commit: str | None) -> str:
    if not commit:
        return "unknown"
    return commit[:7] + ("-dirty" if commit.endswith("-dirty") else "")


def bench_section(json_path: Path) -> str:
    record = json.loads(json_path.read_text())
    env = record.get("env") or {}
    md = json_path.with_suffix(".md")
    body = md.read_text().strip() if md.exists() else "(no table)"
    body = body.split("\n", 1)[1].strip() if body.startswith("# ") else body  # its own title is ours below
    if env.get("git_commit"):
        when = f"Measured at commit {_short(env['git_commit'])}, {env.get('time', '?')[:16]}, host {env.get('host', '?')}"
    else:
        when = f"Its record holds no commit; its file was added in commit {_added_in(json_path)}"
    notes = json_path.with_name(f"{json_path.stem}.notes.md")
    notes = "\n\n" + _demote(notes.read_text().strip()) if notes.exists() else ""
    return f"## Benchmark: {json_path.stem}\n\n_{when}._\n\n{_demote(body)}{notes}\n"


def _demote(text: str) -> str:
    """Headings of an included file sit below this file's own sections."""
    return "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())


def _records(folder: Path) -> list[dict]:
    files = sorted((folder / "trials").glob("*.json")) if (folder / "trials").is_dir() else sorted(folder.glob("*.json"))
    out = []
    for f in files:
        try:
            rec = json.loads(f.read_text())
        except ValueError:
            continue
        if isinstance(rec, dict) and "status" in rec and "config" in rec:
            out.append(load(Record, rec))
    return out


def acceptance_section(folder: Path) -> str | None:
    records = _records(folder)
    if not records:
        return None
    commits = sorted({_short(r.env.git_commit) for r in records})
    times = sorted(r.env.time for r in records if r.env.time)
    span = f"{times[0][:16]} to {times[-1][:16]}" if times else "unknown dates"
    notes = _demote((folder / "NOTES.md").read_text().strip()) + "\n\n" if (folder / "NOTES.md").exists() else ""
    from orchestrator.analysis.results import cell_stats, summary_table, to_markdown
    from orchestrator.analysis.table import trials
    cells = cell_stats(trials(records))
    summary = "Summary, derived from the records by the current code:\n\n" + to_markdown(summary_table(cells))
    report = folder / "report" / "report.md"
    link = f"\nReport: `{report.relative_to(REPO)}`.\n" if report.exists() else ""
    return (f"## Acceptance run: {folder.name}\n\n_{len(records)} records, commit(s) {', '.join(commits)}, "
            f"{span}. Folder: `{folder.relative_to(REPO)}`._\n\n{notes}{summary}\n{link}")


def main() -> None:
    parts = [HEAD, "## Contents\n"]
    benches = sorted(BENCH.glob("*.json"))
    runs = [f for f in sorted(ACCEPTANCE.iterdir()) if f.is_dir()] if ACCEPTANCE.is_dir() else []
    sections = [(f"Acceptance run: {f.name}", acceptance_section(f)) for f in runs]
    sections = [s for s in sections if s[1]] + [(f"Benchmark: {b.stem}", bench_section(b)) for b in benches]
    parts += [f"- {title}" for title, _ in sections] + [""]
    parts += [text for _, text in sections]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(parts))
    print(f"{OUT.relative_to(REPO)}: {len(sections)} sections, {len(OUT.read_text().splitlines())} lines")


if __name__ == "__main__":
    main()
