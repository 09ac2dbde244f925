import pytest

from trainers.data.sampling import SamplingError, draw, without_overlap
from trainers.data.tasks import Example


def pool(n=200, classes=2):
    return [Example(f"premise {i}", f"hypothesis {i}", i % classes) for i in range(n)]


def keys(exs):
    return [e.key() for e in exs]


def test_same_seed_same_draw_and_different_seed_differs():
    a, b, c = draw(pool(), 2, 16, data_seed=3), draw(pool(), 2, 16, data_seed=3), draw(pool(), 2, 16, data_seed=4)
    assert keys(a.labelled) == keys(b.labelled) and keys(a.dev) == keys(b.dev) and keys(a.unlabeled) == keys(b.unlabeled)
    assert set(keys(a.labelled)) != set(keys(c.labelled))


def test_balanced_and_disjoint():
    d = draw(pool(300, 3), 3, 12, data_seed=0, n_dev=9, n_unlabeled=30)
    assert [sum(e.label == c for e in d.labelled) for c in range(3)] == [4, 4, 4]
    assert [sum(e.label == c for e in d.dev) for c in range(3)] == [3, 3, 3]
    sets = [set(keys(d.labelled)), set(keys(d.dev)), set(keys(d.unlabeled))]
    assert len(sets[0]) == 12 and len(sets[1]) == 9 and len(sets[2]) == 30
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])


def test_labelled_order_is_shuffled_not_grouped_by_class():
    labels = [e.label for e in draw(pool(), 2, 32, data_seed=0).labelled]
    assert labels != sorted(labels) and labels != sorted(labels, reverse=True)


def test_dev_does_not_change_with_shots_and_larger_draw_contains_smaller():
    small, large = draw(pool(), 2, 8, data_seed=1), draw(pool(), 2, 32, data_seed=1)
    assert keys(small.dev) == keys(large.dev)
    assert set(keys(small.labelled)) <= set(keys(large.labelled))


def test_labelled_draw_does_not_change_with_n_dev():
    a, b = draw(pool(), 2, 16, data_seed=5, n_dev=32), draw(pool(), 2, 16, data_seed=5, n_dev=16)
    assert keys(a.labelled) == keys(b.labelled)
    assert set(keys(b.dev)) <= set(keys(a.dev))


def test_large_draws_borrow_from_the_other_half_and_stay_disjoint():
    d = draw(pool(60), 2, 40, data_seed=2, n_dev=16, n_unlabeled=0)  # 20 of 30 per class are shots
    assert len(d.labelled) == 40 and len(d.dev) == 16 and not set(keys(d.labelled)) & set(keys(d.dev))


def test_duplicate_texts_count_once():
    dup = [Example("same", "text", 0)] * 50 + pool(100)
    d = draw(dup, 2, 8, data_seed=0, n_dev=8, n_unlabeled=60)
    all_keys = keys(d.labelled) + keys(d.dev) + keys(d.unlabeled)
    assert all_keys.count(("same", "text")) <= 1


def test_zero_shots_is_allowed():
    assert draw(pool(), 2, 0, data_seed=0).labelled == []


def test_unbalanceable_or_too_large_draws_fail_clearly():
    with pytest.raises(SamplingError, match="shots=15 cannot be split evenly over 2 classes"):
        draw(pool(), 2, 15, data_seed=0)
    with pytest.raises(SamplingError, match="fewer than"):
        draw(pool(20), 2, 16, data_seed=0, n_dev=16)
    with pytest.raises(SamplingError, match="unlabelled"):
        draw(pool(60), 2, 16, data_seed=0, n_dev=16, n_unlabeled=100)


def test_without_overlap_drops_shown_examples():
    shown = pool(4)
    kept, n = without_overlap(pool(10), shown)
    assert n == 4 and not set(keys(kept)) & set(keys(shown))
