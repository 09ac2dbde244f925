"""Data sources as data: every kind offline on files the tests write, the fallback order, the export."""
import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write
from trainers.data import sources, tasks
from trainers.data.data_export import export
from trainers.data.tasks import DataError, load_ood, load_task, task_definitions

HANS_RELEASE_HEADER = ["gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                       "sentence2_parse", "sentence1", "sentence2", "pairID", "heuristic", "subcase", "template"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def hans_release_file(path: Path) -> Path:
    """heuristics_evaluation_set.txt's own layout: tab-separated, MNLI-style columns, string labels."""
    rows = [["non-entailment", "( ( The doctor ) ( saw ( the lawyer ) ) )", "( ( The lawyer ) ( saw ( the doctor ) ) )",
             "(ROOT (S (NP (DT The) (NN doctor)) (VP (VBD saw) (NP (DT the) (NN lawyer)))))", "(ROOT ...)",
             "The doctor saw the lawyer .", "The lawyer saw the doctor .", "ex0", "lexical_overlap", "ln_subject/object_swap", "temp1"],
            ["entailment", "( a )", "( b )", "(ROOT a)", "(ROOT b)", "The judge \"won\" .", "The judge won .", "ex1",
             "subsequence", "sn_NP/S", "temp40"]]
    path.write_text("\n".join("\t".join(r) for r in [HANS_RELEASE_HEADER] + rows) + "\n")
    return path


def hans_sources() -> list[dict]:
    return copy.deepcopy(task_definitions()["ood_sets"]["hans"]["split"]["sources"])


def test_hans_release_tsv_through_a_url_maps_to_the_hub_schema(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.CACHE_ENV, str(tmp_path / "cache"))
    release = hans_sources()[1]
    assert release["url"].endswith("tommccoy1/hans/master/heuristics_evaluation_set.txt")
    release["url"] = hans_release_file(tmp_path / "heuristics_evaluation_set.txt").as_uri()
    rows = sources.read_source(release)
    assert rows == [
        {"premise": "The doctor saw the lawyer .", "hypothesis": "The lawyer saw the doctor .", "label": 1,
         "heuristic": "lexical_overlap", "subcase": "ln_subject/object_swap", "template": "temp1"},
        {"premise": 'The judge "won" .', "hypothesis": "The judge won .", "label": 0, "heuristic": "subsequence",
         "subcase": "sn_NP/S", "template": "temp40"}]
    (tmp_path / "heuristics_evaluation_set.txt").unlink()
    assert sources.read_source(release) == rows  # fetched once: the cached copy serves the next run


def test_paws_tsv_bytes_wrappers_are_unwrapped_and_decoded(tmp_path):
    lines = ["id\tsentence1\tsentence2\tlabel",
             "1\tb'How do I start ?'\tb'How do I begin ?'\t1",
             "2\tb\"Why ca n't we ?\"\tb'It is -\\xcf\\x80/4 ?'\t0"]
    (tmp_path / "dev_and_test.tsv").write_text("\n".join(lines) + "\n")
    source = copy.deepcopy(task_definitions()["ood_sets"]["paws_qqp"]["split"]["sources"][0])
    assert source["url"].endswith("uds-lsv/llmft/main/data/paws_qqp/dev_and_test.tsv")
    del source["url"]
    source["path"] = str(tmp_path / "dev_and_test.tsv")
    assert sources.read_source(source) == [
        {"id": 1, "sentence1": "How do I start ?", "sentence2": "How do I begin ?", "label": 1},
        {"id": 2, "sentence1": "Why ca n't we ?", "sentence2": "It is -\u03c0/4 ?", "label": 0}]


def test_parquet_path_with_renamed_columns_and_a_row_range(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"s": f"x{i}", "y": i % 2, "extra": 0} for i in range(6)]), tmp_path / "d.parquet")
    rows = sources.read_source({"path": str(tmp_path / "d.parquet"), "format": "parquet", "rows": [2, 5],
                                "columns": {"sentence": "s", "label": "y"}})
    assert rows == [{"sentence": "x2", "label": 0}, {"sentence": "x3", "label": 1}, {"sentence": "x4", "label": 0}]


def test_hub_source_passes_config_split_and_revision(monkeypatch):
    import datasets
    calls = []

    def fake_load(name, config=None, split=None, revision=None):
        calls.append((name, config, split, revision))
        return datasets.Dataset.from_list([{"premise": "p", "hypothesis": "h", "label": 1, "heuristic": "constituent"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    rows, origin = sources.read_first(hans_sources(), "OOD set hans", "hint")
    assert calls == [("jhu-cogsci/hans", None, "validation", "refs/convert/parquet")]
    assert rows[0]["label"] == 1 and origin == "hub jhu-cogsci/hans@refs/convert/parquet [validation]"


def test_sources_are_tried_in_order_and_the_error_names_every_one(tmp_path):
    good = tmp_path / "good.jsonl"
    write(good, [{"sentence": "a", "label": 0}])
    hub = {"hub": "no-such-org/no-such-set", "split": "train"}  # offline (HF_HUB_OFFLINE): fails at once
    missing = {"url": (tmp_path / "absent.tsv").as_uri(), "format": "tsv"}
    rows, origin = sources.read_first([hub, missing, {"path": str(good), "format": "jsonl"}], "x", "hint")
    assert rows == [{"sentence": "a", "label": 0}] and origin == str(good)
    with pytest.raises(sources.SourceError) as e:
        sources.read_first([hub, missing], "OOD set x", "pass --data-dir with x.jsonl inside")
    msg = str(e.value)
    assert msg.startswith("could not load OOD set x: tried 1) hub no-such-org/no-such-set [train] (")
    assert "2) " + missing["url"] in msg and msg.endswith("pass --data-dir with x.jsonl inside")


def test_a_task_without_data_dir_reads_its_sources_and_fingerprints_match_the_local_copy(hub_schema_dir, monkeypatch):
    defs = copy.deepcopy(task_definitions())
    for split in (defs["tasks"]["qqp"]["train"], defs["tasks"]["qqp"]["eval"], defs["ood_sets"]["paws_qqp"]["split"]):
        split["sources"] = [{"hub": "unreachable/repo", "split": "train"},
                            {"path": str(hub_schema_dir / split["local"]), "format": "jsonl"}]
    monkeypatch.setattr(tasks, "task_definitions", lambda: defs)
    from_sources = load_task("qqp", None)
    from_folder = load_task("qqp", str(hub_schema_dir))
    assert from_sources.train == from_folder.train and from_sources.ood == from_folder.ood
    assert from_sources.fingerprints == from_folder.fingerprints and len(from_sources.fingerprints) == 3


def test_fingerprint_ignores_row_order_and_unused_columns_but_not_content():
    rows = [{"s": "a", "label": 0, "idx": 1}, {"s": "b", "label": 1, "idx": 2}]
    fp = sources.fingerprint(rows, ["s", "label"])
    assert fp == sources.fingerprint(rows[::-1], ["s", "label"])
    assert fp == sources.fingerprint([{**r, "idx": 9} for r in rows], ["s", "label"])
    assert fp != sources.fingerprint([rows[0], {**rows[1], "label": 0}], ["s", "label"])
    assert fp != sources.fingerprint(rows + rows[:1], ["s", "label"])  # a duplicate counts


@pytest.mark.parametrize("source,message", [
    ({"hub": "a/b", "url": "http://x", "split": "t"}, "names exactly one of hub, url, path"),
    ({"path": "x.tsv"}, "needs format: one of jsonl, parquet, tsv"),
    ({"path": "x.tsv", "format": "tsv", "colums": {}}, "unknown source option(s) ['colums']"),
])
def test_malformed_source_definitions_are_named(source, message):
    with pytest.raises(sources.SourceError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        sources.check(source, "tasks.yaml: x")


def test_export_writes_the_layout_and_a_manifest_that_matches_the_records(hub_schema_dir, tmp_path):
    out = tmp_path / "exported"
    manifest = export(out, str(hub_schema_dir), ["rte", "qqp"], log=lambda *_: None)
    assert set(manifest["splits"]) == {"glue/rte/train.jsonl", "glue/rte/validation.jsonl", "hans/validation.jsonl",
                                       "glue/qqp/train.jsonl", "glue/qqp/validation.jsonl", "paws_qqp/dev_and_test.jsonl"}
    hans = manifest["splits"]["hans/validation.jsonl"]
    assert hans["rows"] == 12 and hans["labels"] == {"0": 6, "1": 6}
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for name in ("rte", "qqp"):
        t_in, t_out = load_task(name, str(hub_schema_dir)), load_task(name, str(out))
        assert t_in.fingerprints == t_out.fingerprints
        assert all(manifest["splits"][k]["fingerprint"] == v for k, v in t_out.fingerprints.items())
    with pytest.raises(DataError, match="same folder"):
        export(hub_schema_dir, str(hub_schema_dir), ["rte"])


def test_export_command_and_a_run_on_the_export_gives_the_same_record(data_dir, tiny_opt, tmp_path):
    out = tmp_path / "exported"
    r = subprocess.run([sys.executable, "-m", "trainers", "data", "export", "--from", data_dir, "--to", str(out),
                        "--tasks", "rte"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "hans/validation.jsonl" in r.stdout and (out / "manifest.json").is_file()
    bad = subprocess.run([sys.executable, "-m", "trainers", "data", "export", "--to", str(out), "--tasks", "sst9"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown task 'sst9'" in bad.stderr
    from trainers.contract import dump
    from trainers.methods.entry import resolve, run
    base = {"method": "icl", "task": "rte", "model": tiny_opt, "shots": 4, "n_dev": 8, "n_unlabeled": 8, "eval_limit": 20}
    a, b = dump(run(resolve({**base, "data_dir": data_dir}))), dump(run(resolve({**base, "data_dir": str(out)})))
    assert a["metrics"] == b["metrics"]
    assert a["resolved"]["data_fingerprints"] == b["resolved"]["data_fingerprints"]
    assert set(a["resolved"]["data_fingerprints"]) == {"glue/rte/train.jsonl", "glue/rte/validation.jsonl", "hans/validation.jsonl"}


@pytest.mark.skipif(not (SHARED / "cola_public").is_dir(), reason="../shared/data is not beside this checkout")
def test_cola_ood_rows_of_glue_validation_are_cola_public_out_of_domain_set():
    """tasks.yaml takes CoLA-OOD as rows 527-1042 of GLUE CoLA validation: check them by content."""
    hub = task_definitions()["ood_sets"]["cola_ood"]["split"]["sources"][0]
    assert hub["hub"] == "nyu-mll/glue" and hub["config"] == "cola" and hub["rows"] == [527, 1043]
    source = {"path": str(SHARED / "glue/cola/validation.jsonl"), "format": "jsonl", "rows": hub["rows"]}
    ours = sources.read_source(source)
    theirs = sources.read_file(SHARED / "cola_public/out_of_domain_validation.jsonl", "jsonl")
    norm = lambda s: "".join(ch for ch in s.lower() if ch.isalnum())
    assert len(ours) == len(theirs) == 516
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]
    assert [norm(r["sentence"]) for r in ours] == [norm(r["sentence"]) for r in theirs]
    assert sum(a["sentence"] == b["sentence"] for a, b in zip(ours, theirs)) >= 510  # 4 differ by commas only
    shifted = sources.read_source({**source, "rows": [526, 1042]})  # the boundary one row off: no longer a match
    assert sum(norm(a["sentence"]) == norm(b["sentence"]) for a, b in zip(shifted, theirs)) < 50


def test_load_ood_records_the_split_fingerprint(hub_schema_dir):
    fps = {}
    load_ood("hans", str(hub_schema_dir), ("all",), fps)
    assert list(fps) == ["hans/validation.jsonl"] and fps["hans/validation.jsonl"].startswith("sha256:")
