import pytest

from conftest import write
from trainers.data.tasks import DataError, Example, eval_subset, load_task


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
    xs = [Example(f"t{i}", None, i % 2) for i in range(100)]
    a, b = eval_subset(xs, 10), eval_subset(xs, 10)
    assert a == b and len(a) == 10 and eval_subset(xs, None) == xs
    assert [xs.index(e) for e in a] == sorted(xs.index(e) for e in a)


def test_eval_subset_is_stratified_so_one_class_scores_one_half():
    # 70/30 labels, two groups: a plain random subset would rarely be balanced
    xs = [Example(f"t{i}", None, int(i % 10 >= 7), group="ab"[i % 2]) for i in range(400)]
    sub = eval_subset(xs, 64)
    counts = {(g, y): sum(e.group == g and e.label == y for e in sub) for g in "ab" for y in (0, 1)}
    assert set(counts.values()) == {16}
    assert sum(e.label == 0 for e in sub) / len(sub) == 0.5  # "always class 0" scores exactly 0.5


def test_eval_subset_gives_a_short_stratum_all_it_has_and_the_rest_to_the_others():
    xs = [Example(f"t{i}", None, 0) for i in range(50)] + [Example(f"u{i}", None, 1) for i in range(5)]
    sub = eval_subset(xs, 20)
    assert len(sub) == 20 and sum(e.label == 1 for e in sub) == 5
