"""Tests for ridurre.selection: bounds (property-based), global allocation, prune bins."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ridurre.criteria import selection as sel

# Small integer scores make ties frequent, which exercises the tie-breaking.
scores_st = st.lists(st.integers(0, 6).map(float), min_size=1, max_size=40)
fraction_st = st.one_of(st.none(), st.floats(0.0, 1.0))
round_st = st.one_of(st.none(), st.integers(1, 8))
FAST = settings(max_examples=150, deadline=None)


def _max_feasible_removal(n, n_remove, min_channels, max_fraction, round_to):
    """Brute force: the largest removal count satisfying every bound."""
    best = 0
    for r in range(n + 1):
        kept = n - r
        if r > n_remove or kept < min_channels:
            continue
        if max_fraction is not None and r > math.floor(max_fraction * n + 1e-9):
            continue
        if round_to is not None and r > 0 and kept % round_to != 0:
            continue
        best = max(best, r)
    return best


# --------------------------------------------------------------------------- select_lowest


def test_select_lowest_hand_examples():
    s = [0.5, 0.1, 0.9, 0.1, 0.3]
    np.testing.assert_array_equal(sel.select_lowest(s, 2), [1, 3])
    np.testing.assert_array_equal(sel.select_lowest(s, 0), [])
    np.testing.assert_array_equal(sel.select_lowest(s, 99), [0, 1, 3, 4])  # keeps min_channels=1
    np.testing.assert_array_equal(sel.select_lowest(s, 4, max_fraction=0.4), [1, 3])
    np.testing.assert_array_equal(sel.select_lowest(s, 4, min_channels=3), [1, 3])
    # ties broken by index: the first of the equal scores goes first
    np.testing.assert_array_equal(sel.select_lowest([1.0, 1.0, 1.0], 1), [0])
    # round_to: 10 channels, remove 3 -> keep 7 -> rounded up to 8 -> remove 2
    np.testing.assert_array_equal(sel.select_lowest(np.arange(10.0), 3, round_to=4), [0, 1])
    # group smaller than round_to: stays whole
    np.testing.assert_array_equal(sel.select_lowest(np.arange(3.0), 2, round_to=4), [])
    # max_fraction 0.29 of 100 is 29, although 0.29 * 100 == 28.999999999999996
    assert len(sel.select_lowest(np.arange(100.0), 50, max_fraction=0.29)) == 29


@FAST
@given(scores_st, st.integers(0, 50), st.integers(1, 45), fraction_st, round_st)
def test_select_lowest_properties(scores, n_remove, min_channels, max_fraction, round_to):
    s = np.asarray(scores)
    n = len(s)
    out = sel.select_lowest(s, n_remove, min_channels=min_channels, max_fraction=max_fraction, round_to=round_to)
    r, kept = len(out), n - len(out)
    assert out.dtype.kind == "i" and np.all(np.diff(out) > 0) and (r == 0 or (out[0] >= 0 and out[-1] < n))
    assert r <= n_remove
    assert kept >= min(n, min_channels)
    if max_fraction is not None:
        assert r <= math.floor(max_fraction * n + 1e-9)
    if round_to is not None and r > 0:
        assert kept % round_to == 0
    # removes exactly as many as the bounds allow, no fewer
    assert r == _max_feasible_removal(n, n_remove, min_channels, max_fraction, round_to)
    # and they are the lowest, ties by index: a prefix of the stable ascending order
    np.testing.assert_array_equal(out, np.sort(np.argsort(s, kind="stable")[:r]))


@FAST
@given(scores_st, st.integers(0, 50))
def test_select_lowest_exact_count_when_unconstrained(scores, n_remove):
    out = sel.select_lowest(scores, n_remove)
    assert len(out) == min(n_remove, len(scores) - 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"scores": [[1.0, 2.0]], "n_remove": 1}, "1-D"),
        ({"scores": [], "n_remove": 1}, "at least one"),
        ({"scores": [1.0, np.nan], "n_remove": 1}, "NaN"),
        ({"scores": ["a"], "n_remove": 1}, "1-D array of numbers"),
        ({"scores": [1.0, 2.0], "n_remove": -1}, "n_remove must be an integer >= 0"),
        ({"scores": [1.0, 2.0], "n_remove": 1.5}, "n_remove must be"),
        ({"scores": [1.0, 2.0], "n_remove": 1, "min_channels": 0}, "min_channels must be"),
        ({"scores": [1.0, 2.0], "n_remove": 1, "max_fraction": 1.5}, r"max_fraction must be a number in \[0, 1\]"),
        ({"scores": [1.0, 2.0], "n_remove": 1, "round_to": 0}, "round_to must be"),
    ],
)
def test_select_lowest_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sel.select_lowest(**kwargs)


# --------------------------------------------------------------------------- allocate_global


def _reference_global(groups, total, min_channels, max_fraction):
    """Brute force: all channels sorted by (score, group position, index), bounded per group."""
    items = []
    caps = []
    for pos, s in enumerate(groups):
        n = len(s)
        cap = n - min_channels
        if max_fraction is not None:
            cap = min(cap, math.floor(max_fraction * n + 1e-9))
        caps.append(max(0, cap))
        items += [(float(v), pos, i) for i, v in enumerate(s)]
    taken = [[] for _ in groups]
    for _, pos, i in sorted(items):
        if sum(map(len, taken)) == total:
            break
        if len(taken[pos]) < caps[pos]:
            taken[pos].append(i)
    return [sorted(t) for t in taken], sum(caps)


def test_allocate_global_hand_example_normalization():
    groups = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 60.0]}
    out = sel.allocate_global(groups, 2)
    assert list(out) == ["a", "b"]
    assert out["a"].tolist() == [0] and out["b"].tolist() == [0]
    raw = sel.allocate_global(groups, 2, normalize=False)
    assert raw["a"].tolist() == [0, 1] and raw["b"].tolist() == []


def test_allocate_global_respects_per_group_bounds():
    groups = {0: np.zeros(4), 1: np.ones(10)}
    out = sel.allocate_global(groups, 8, min_channels=2, normalize=False)
    assert len(out[0]) == 2 and len(out[1]) == 6
    out = sel.allocate_global(groups, 8, max_fraction=0.5, normalize=False)
    assert len(out[0]) == 2 and len(out[1]) == 5  # 7 <= 8: bounded everywhere


@FAST
@given(st.lists(scores_st, min_size=1, max_size=5), st.integers(0, 120), st.integers(1, 6), fraction_st)
def test_allocate_global_matches_bruteforce_without_rounding(groups, total, min_channels, max_fraction):
    out = sel.allocate_global(
        {f"g{i}": s for i, s in enumerate(groups)},
        total,
        min_channels=min_channels,
        max_fraction=max_fraction,
        normalize=False,
    )
    expected, removable = _reference_global(groups, total, min_channels, max_fraction)
    assert [v.tolist() for v in out.values()] == expected
    assert sum(map(len, out.values())) == min(total, removable)


@FAST
@given(
    st.lists(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30), min_size=1, max_size=5),
    st.integers(0, 100),
    st.integers(1, 6),
    fraction_st,
    st.integers(1, 8),
    st.booleans(),
)
def test_allocate_global_with_rounding_bounds_and_greedy_fill(groups, total, min_channels, max_fraction, k, normalize):
    keyed = {("g", i): s for i, s in enumerate(groups)}
    out = sel.allocate_global(
        keyed, total, min_channels=min_channels, max_fraction=max_fraction, round_to=k, normalize=normalize
    )
    assert list(out) == list(keyed)
    removed_total = sum(map(len, out.values()))
    assert removed_total <= total
    leftover = total - removed_total
    for key, s in keyed.items():
        n, idx = len(s), out[key]
        kept = n - len(idx)
        assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)
        assert kept >= min(n, min_channels)
        if max_fraction is not None:
            assert len(idx) <= math.floor(max_fraction * n + 1e-9)
        if len(idx):
            assert kept % k == 0
            # removed channels are the group's lowest (prefix of the stable order)
            np.testing.assert_array_equal(idx, np.sort(np.argsort(np.asarray(s), kind="stable")[: len(idx)]))
        # greedy fill: the group's next admissible chunk does not fit the leftover budget
        next_kept = ((kept - 1) // k) * k
        floor_kept = max(min_channels, n - (math.floor(max_fraction * n + 1e-9) if max_fraction is not None else n))
        if next_kept >= max(floor_kept, 1):
            assert kept - next_kept > leftover


def test_allocate_global_normalize_handles_zero_and_negative_scales():
    out = sel.allocate_global({"z": np.zeros(3), "neg": np.array([-1.0, -2.0, -3.0])}, 2)
    assert np.isfinite(np.concatenate([v.astype(float) for v in out.values()])).all()
    assert sum(map(len, out.values())) == 2
    # negative scores keep their order: -3 (index 2) is the least important of "neg"
    assert 2 in out["neg"]


def test_allocate_global_empty_and_errors():
    assert sel.allocate_global({}, 5) == {}
    with pytest.raises(ValueError, match="group_scores must be a mapping"):
        sel.allocate_global([np.ones(3)], 1)
    with pytest.raises(ValueError, match=r"group_scores\['conv2'\] contains NaN"):
        sel.allocate_global({"conv1": np.ones(3), "conv2": np.array([1.0, np.nan])}, 1)
    with pytest.raises(ValueError, match="total_remove must be"):
        sel.allocate_global({"a": np.ones(3)}, -1)


# --------------------------------------------------------------------------- original helpers


@pytest.mark.parametrize(
    "n, factor, expected",
    [
        (64, 0.9, (58, 6)),
        (10, 0.7, (7, 3)),
        (10, 0.0, (1, 9)),
        (10, 1.0, (10, 0)),
        (10, 1.5, (10, 0)),
        (1, 0.5, (1, 0)),
    ],
)
def test_channels_to_keep(n, factor, expected):
    assert sel.channels_to_keep(n, factor) == expected


@pytest.mark.parametrize("args", [(0, 0.5), (10, -0.1), (10, float("nan")), (10, "0.5")])
def test_channels_to_keep_rejects_bad_input(args):
    with pytest.raises(ValueError):
        sel.channels_to_keep(*args)


def test_define_prune_bins_lookup_like_the_original():
    bins = sel.define_prune_bins([16, 64, 256, 1024], [0.9, 0.8, 0.6])
    assert bins.factor_for(16) == 0.9  # lower edge inclusive
    assert bins.factor_for(63) == 0.9
    assert bins.factor_for(64) == 0.8  # upper edge exclusive
    assert bins.factor_for(512) == 0.6
    assert bins.factor_for(1024, default=0.95) == 0.95  # no bin: the default factor
    assert bins.factor_for(8) is None
    assert bins.channel_number_bins == (16, 64, 256, 1024)


@pytest.mark.parametrize(
    "edges, factors, match",
    [
        ([0, 64], [0.9, 0.8], "exactly one more item"),
        ([0], [], "at least one bin"),
        ([64, 64, 128], [0.9, 0.8], "strictly increasing"),
        ([0, 64], [1.5], r"pruning_factors_for_bins\[0\] must be a number in \[0, 1\]"),
        ([-1, 64], [0.5], r"channel_number_bins\[0\] must be an integer >= 0"),
    ],
)
def test_define_prune_bins_rejects_bad_input(edges, factors, match):
    with pytest.raises(ValueError, match=match):
        sel.define_prune_bins(edges, factors)


def test_docstring_examples_run():
    result = doctest.testmod(sel, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5 and result.failed == 0


def test_allocate_global_normalize_keeps_the_order_of_tiny_scores():
    # found by hypothesis: 5e-324 / mean underflows to 0.0, tying it with the true 0.0 score;
    # the channel removed must still be the lowest raw score, not the first of the tie
    out = sel.allocate_global({"g": [6.0, 5e-324, 0.0]}, 1, normalize=True)
    assert out["g"].tolist() == [2]
