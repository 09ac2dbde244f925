"""Every committed acceptance report and summary is the current code's reading of its records: each
folder is copied, rebuilt from its records alone, and compared with what is committed."""
import shutil
from pathlib import Path

import pytest

from orchestrator.analysis.report import write_report
from orchestrator.analysis.results import write_tables

ACCEPTANCE = Path(__file__).resolve().parents[1] / "results" / "acceptance"
SUMMARIES = sorted(p.parent for p in ACCEPTANCE.glob("*/summary.md"))
REPORTS = sorted(p.parent.parent for p in ACCEPTANCE.glob("*/report/report.md"))


@pytest.mark.parametrize("folder", SUMMARIES, ids=lambda p: p.name)
def test_a_committed_summary_rebuilds_identically_from_its_records(folder, tmp_path):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("report", "*.png", "*.svg"))
    title = (folder / "summary.md").read_text().splitlines()[0][2:]
    write_tables(copy, title)
    assert (copy / "summary.md").read_text() == (folder / "summary.md").read_text(), (
        f"{folder} is stale: rebuild it with python -m orchestrator summarize {folder} --title '{title}'")


@pytest.mark.parametrize("folder", REPORTS, ids=lambda p: p.name)
def test_a_committed_report_rebuilds_identically_from_its_records(folder, tmp_path):
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.png", "*.svg"))
    write_report(copy)
    assert (copy / "report" / "report.md").read_text() == (folder / "report" / "report.md").read_text(), (
        f"{folder} is stale: rebuild it with python -m orchestrator report {folder}")


def test_there_are_committed_reports_to_check():
    assert len(REPORTS) >= 3 and len(SUMMARIES) >= len(REPORTS)


def test_every_committed_sweep_records_key_is_what_the_current_code_computes_for_it():
    """A resumed old folder re-runs nothing: each record's trial key, recomputed by the current code
    from the record's own config and content identity, is the key it was written under."""
    import json

    from orchestrator.planning import plan
    recs = [json.loads(p.read_text()) for p in sorted(ACCEPTANCE.glob("*/trials/*.json"))]
    keyed = [r for r in recs if r.get("trial_key") and r.get("identity") is not None]
    assert len(keyed) >= 150
    stale = [r["trial_key"] for r in keyed if plan.trial_key(r["config"], r["identity"]) != r["trial_key"]]
    assert not stale, f"{len(stale)} of {len(keyed)} trial keys changed, e.g. {stale[:3]}"


def test_every_committed_record_and_summary_loads_into_the_contract_and_writes_back_unchanged():
    """Records and summaries written by every earlier version load as the typed contract, and the
    keys its types do not declare are kept: written again, each file's JSON is what it was."""
    import json

    from trainers.contract import CellStats, Comparison, Record, dump, load
    files = [p for p in sorted(ACCEPTANCE.rglob("*.json")) if "report" not in p.parts]
    records = [(p, json.loads(p.read_text())) for p in files]
    records = [(p, d) for p, d in records if isinstance(d, dict) and "status" in d and "config" in d]
    assert len(records) >= 200
    for p, d in records:
        r = load(Record, d)
        assert isinstance(r.resources.phases, dict) and r.status == d["status"]
        assert json.dumps(dump(r)) == json.dumps(d), p
    for p in sorted(ACCEPTANCE.glob("*/summary.json")):
        saved = json.loads(p.read_text())
        assert [dump(load(CellStats, c)) for c in saved["cells"]] == saved["cells"], p
        assert [dump(load(Comparison, c)) for c in saved["comparisons"]] == saved["comparisons"], p
