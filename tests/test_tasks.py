import json

import pytest

from trainers.tasks import DataError, eval_subset, load_task


def write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def hub_schema_dir(tmp_path):
    """Small files with the hub's columns and label ids, in ../shared/data's layout."""
    nli = lambda n, labels: [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": labels[i % len(labels)], "idx": i} for i in range(n)]
    write(tmp_path / "glue/mnli/train.jsonl", nli(30, [0, 1, 2]))
    write(tmp_path / "glue/mnli/validation_matched.jsonl", nli(9, [0, 1, 2]))
    hans = [{"premise": f"hp{i}", "hypothesis": f"hh{i}", "label": i % 2, "heuristic": h}
            for i, h in enumerate(["lexical_overlap", "subsequence", "constituent"] * 4)]
    write(tmp_path / "hans/validation.jsonl", hans)
    write(tmp_path / "glue/cola/train.jsonl", [{"sentence": f"s{i}", "label": i % 2, "idx": i} for i in range(10)])
    write(tmp_path / "glue/cola/validation.jsonl", [{"sentence": f"in{i}", "label": 1, "idx": i} for i in range(3)]
          + [{"sentence": f"out{i}", "label": 0, "idx": 3 + i} for i in range(2)])
    write(tmp_path / "cola_public/in_domain_validation.jsonl", [{"sentence": f"in{i}", "label": 1, "idx": i, "source": "x"} for i in range(3)])
    write(tmp_path / "cola_public/out_of_domain_validation.jsonl", [{"sentence": f"out{i}", "label": 0, "idx": i, "source": "y"} for i in range(2)])
    write(tmp_path / "glue/qqp/train.jsonl", [{"question1": f"q{i}", "question2": f"r{i}", "label": i % 2, "idx": i} for i in range(6)])
    write(tmp_path / "glue/qqp/validation.jsonl", [{"question1": "a", "question2": "b", "label": 1, "idx": 0}])
    write(tmp_path / "paws_qqp/dev_and_test.jsonl", [{"id": 1, "sentence1": "x", "sentence2": "y", "label": 0}])
    return tmp_path


def test_mnli_binary_drops_neutral_and_relabels_contradiction(hub_schema_dir):
    t = load_task("mnli", str(hub_schema_dir))
    assert len(t.train) == 20  # 10 of 30 were neutral
    assert {e.label for e in t.train} == {0, 1}
    # hub label 2 (contradiction) became 1; hub label 0 stayed 0
    assert all(e.label == (0 if int(e.text1[1:]) % 3 == 0 else 1) for e in t.train)


def test_mnli_merge_neutral_variant_keeps_neutral_as_class_1(hub_schema_dir):
    t = load_task("mnli_merge_neutral", str(hub_schema_dir))
    assert len(t.train) == 30 and sum(e.label == 1 for e in t.train) == 20


def test_hans_default_is_lexical_overlap_and_all_is_available(hub_schema_dir):
    t = load_task("mnli", str(hub_schema_dir))
    assert {e.group for e in t.ood["hans"]} == {"lexical_overlap"} and len(t.ood["hans"]) == 4
    t = load_task("mnli", str(hub_schema_dir), hans_heuristics=("all",))
    assert len(t.ood["hans"]) == 12
    with pytest.raises(DataError, match="unknown hans heuristic"):
        load_task("mnli", str(hub_schema_dir), hans_heuristics=("nope",))


def test_cola_in_domain_excludes_the_ood_sentences(hub_schema_dir):
    t = load_task("cola", str(hub_schema_dir))
    in_domain = {e.text1 for e in t.eval}
    assert in_domain == {"in0", "in1", "in2"}
    assert not in_domain & {e.text1 for e in t.ood["cola_ood"]}


def test_qqp_uses_paws(hub_schema_dir):
    t = load_task("qqp", str(hub_schema_dir))
    assert list(t.ood) == ["paws_qqp"] and t.ood["paws_qqp"][0].text2 == "y"


def test_missing_file_names_path_and_layout(hub_schema_dir):
    (hub_schema_dir / "glue/qqp/validation.jsonl").unlink()
    with pytest.raises(DataError, match=r"glue/qqp/validation.jsonl not found: .*hub's schema"):
        load_task("qqp", str(hub_schema_dir))


def test_missing_column_names_file_and_columns(hub_schema_dir):
    write(hub_schema_dir / "glue/qqp/train.jsonl", [{"question1": "q", "label": 0, "idx": 0}])
    with pytest.raises(DataError, match=r"train.jsonl: row 0 lacks column\(s\) \['question2'\]"):
        load_task("qqp", str(hub_schema_dir))


def test_missing_data_dir_and_unknown_task(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_task("rte", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="valid tasks: cola, mnli"):
        load_task("sst2", str(tmp_path))


def test_eval_subset_is_fixed_and_ordered():
    xs = list(range(100))
    a, b = eval_subset(xs, 10), eval_subset(xs, 10)
    assert a == b == sorted(a) and len(a) == 10 and eval_subset(xs, None) == xs
