from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forgellm.config.schema import SplitSection
from forgellm.data.prepare.keyindex import KeyIndex
from forgellm.data.prepare.splits import (
    SplitAssigner,
    content_key,
    hash_unit,
    parse_date,
    temporal_cutoffs,
    temporal_split,
)
from forgellm.errors import ForgeError


def test_content_key_normalizes_case_and_space():
    assert content_key("Hello   World\n") == content_key("hello world")
    assert content_key("hello world") != content_key("hello world!")
    assert 0 <= content_key("x") < 2**63


def test_random_split_is_seeded_and_proportional():
    assigner = SplitAssigner(SplitSection(), seed=1)
    counts = Counter(assigner.assign(content_key(str(i)), None) for i in range(20_000))
    assert abs(counts["train"] / 20_000 - 0.9) < 0.01 and abs(counts["val"] / 20_000 - 0.05) < 0.006
    other = SplitAssigner(SplitSection(), seed=2)
    assert [assigner.assign(content_key(str(i)), None) for i in range(50)] != [
        other.assign(content_key(str(i)), None) for i in range(50)
    ]


def test_stratified_split_has_exact_shares_per_label():
    settings_ = SplitSection(method="stratified", column="label", train=0.8, val=0.1, test=0.1)
    assigner = SplitAssigner(settings_, seed=0)
    labels = ["a"] * 100 + ["b"] * 10 + ["c"] * 30
    result = Counter((label, assigner.assign(content_key(f"{label}{i}"), label)) for i, label in enumerate(labels))
    assert (result[("a", "train")], result[("a", "val")], result[("a", "test")]) == (80, 10, 10)
    assert (result[("b", "train")], result[("b", "val")], result[("b", "test")]) == (8, 1, 1)
    assert (result[("c", "train")], result[("c", "val")], result[("c", "test")]) == (24, 3, 3)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.sampled_from(["x", "y", "z"]), min_size=1, max_size=300), cut=st.integers(1, 300))
def test_stratified_state_round_trip_equals_uninterrupted(labels, cut):
    settings_ = SplitSection(method="stratified", column="label")
    whole = SplitAssigner(settings_, seed=3)
    expected = [whole.assign(content_key(str(i)), label) for i, label in enumerate(labels)]
    first = SplitAssigner(settings_, seed=3)
    got = [first.assign(content_key(str(i)), label) for i, label in enumerate(labels[:cut])]
    resumed = SplitAssigner(settings_, seed=3)
    resumed.restore(first.state())
    got += [resumed.assign(content_key(str(i)), label) for i, label in enumerate(labels) if i >= cut]
    assert got == expected


def test_hash_unit_range():
    values = [hash_unit(k, 5) for k in range(1000)]
    assert all(0 <= v < 1 for v in values) and len(set(values)) == 1000


def test_dates_and_temporal_cutoffs():
    assert parse_date("2023-06-01") < parse_date("2023-06-01 12:15:36") < parse_date("2023-06-02")
    assert parse_date("31/12/2020") is not None and parse_date("soon") is None and parse_date("") is None
    dates = [float(d) for d in range(100)]
    cutoffs = temporal_cutoffs(dates, (0.8, 0.1, 0.1))
    splits = Counter(temporal_split(d, cutoffs) for d in dates)
    assert splits == {"train": 80, "val": 10, "test": 10}
    assert temporal_split(0.0, cutoffs) == "train" and temporal_split(99.0, cutoffs) == "test"
    with pytest.raises(ForgeError, match="needs dates"):
        temporal_cutoffs([], (0.8, 0.1, 0.1))


def test_key_index_lookup_add_forget(tmp_path):
    index = KeyIndex(tmp_path / "k.sqlite")
    index.add(0, [(1, "train", 10), (2, None, 11)])
    index.add(1, [(3, "val", 20), (1, "test", 21)])  # a repeat keeps the first occurrence
    assert index.lookup([1, 2, 3, 4]) == {1: ("train", 10), 2: (None, 11), 3: ("val", 20)}
    index.forget_from(1)
    assert index.lookup([3]) == {}
    index.close()
    assert KeyIndex(tmp_path / "k.sqlite").lookup([1]) == {1: ("train", 10)}  # persisted


@pytest.mark.parametrize("method", ["random", "stratified", "temporal"])
def test_the_synthetic_rule_puts_synthetic_rows_in_train_only(method):
    """Rows `forge expand` wrote go to train, whatever the method, and take no share of a stratified split."""
    settings_ = SplitSection(method=method, column="c", train=0.34, val=0.33, test=0.33)
    assigner = SplitAssigner(settings_, seed=0)
    assert {assigner.assign(key, "a", synthetic=True) for key in range(300)} == {"train"}
    assert assigner.counts == {}
    if method == "stratified":  # real rows keep their exact shares after the synthetic ones
        real = [assigner.assign(key, "a") for key in range(300)]
        assert (real.count("train"), real.count("val"), real.count("test")) == (102, 99, 99)


def test_is_synthetic_reads_the_mark_of_forge_expand():
    from forgellm.data.prepare.splits import is_synthetic

    assert is_synthetic({"q": "x", "synthetic": True}) and not is_synthetic({"synthetic": "true"})
    assert not is_synthetic({"q": "x"})
