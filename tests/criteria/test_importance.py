"""Tests for ridurre.importance: hand-computed scores, KMeans redundancy, validation."""

from __future__ import annotations

import doctest
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ridurre.criteria import scores as imp

W = np.array([[1.0, -2.0, 2.0], [0.0, 0.0, 0.0], [3.0, 0.0, -4.0]])


# --------------------------------------------------------------------------- Lp norms


def test_l1_l2_linf_hand_computed():
    np.testing.assert_allclose(imp.l1_scores([W]), [5.0, 0.0, 7.0])
    np.testing.assert_allclose(imp.l2_scores([W]), [3.0, 0.0, 5.0])
    np.testing.assert_allclose(imp.lp_norm_scores([W], p=np.inf), [2.0, 0.0, 4.0])
    np.testing.assert_allclose(imp.lp_norm_scores([W], p=3), [17 ** (1 / 3), 0.0, 91 ** (1 / 3)])


def test_single_array_is_one_member():
    np.testing.assert_allclose(imp.l1_scores(W), imp.l1_scores([W]))


def test_conv_kernel_layout_matches_per_filter_l1():
    kernel = np.random.default_rng(0).normal(size=(3, 3, 4, 5))
    mats = np.stack([kernel[..., i].ravel() for i in range(5)])
    np.testing.assert_allclose(imp.l1_scores([mats]), np.abs(kernel).sum(axis=(0, 1, 2)))


def test_reductions_across_members():
    a = np.array([[1.0], [3.0]])
    b = np.array([[4.0, 4.0], [0.0, 1.0]])  # L1 = [8, 1]
    np.testing.assert_allclose(imp.l1_scores([a, b], reduction="sum"), [9.0, 4.0])
    np.testing.assert_allclose(imp.l1_scores([a, b], reduction="mean"), [4.5, 2.0])
    np.testing.assert_allclose(imp.l1_scores([a, b], reduction="max"), [8.0, 3.0])


def test_normalize_stops_a_wide_member_dominating():
    narrow = np.array([[1.0], [3.0], [2.0]])  # norms [1, 3, 2], mean 2
    wide = np.tile(np.array([[30.0], [10.0], [20.0]]), (1, 100))  # norms [3000, 1000, 2000]
    raw = imp.l1_scores([narrow, wide])
    assert np.argmin(raw) == 1  # dominated by the wide member
    norm = imp.l1_scores([narrow, wide], normalize=True)
    np.testing.assert_allclose(norm, [0.5 + 1.5, 1.5 + 0.5, 1.0 + 1.0])


def test_normalize_with_all_zero_member_gives_no_nan():
    out = imp.l1_scores([np.zeros((3, 2)), W], normalize=True)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, np.array([5.0, 0.0, 7.0]) / 4.0)


@pytest.mark.parametrize(
    "mats, match",
    [
        ([np.ones(3)], r"mats\[0\] must be a 2-D array"),
        ([np.ones((2, 2, 2))], r"mats\[0\] must be a 2-D array"),
        ([np.ones((0, 3))], r"at least one channel"),
        ([np.ones((3, 0))], r"at least one feature"),
        ([np.ones((3, 2)), np.ones((4, 2))], r"mats\[1\] has 4 channels but mats\[0\] has 3"),
        ([np.array([[1.0, np.nan]])], r"NaN"),
        ([np.array([[1.0, np.inf]])], r"NaN or infinite"),
        ([], r"at least one array"),
        ({"a": np.ones((2, 2))}, r"must be a list"),
        ([np.array([["a", "b"]])], r"numeric"),
    ],
)
def test_lp_norm_rejects_bad_matrices(mats, match):
    with pytest.raises(ValueError, match=match):
        imp.l1_scores(mats)


@pytest.mark.parametrize("p", [0, -1, "1", True, float("nan")])
def test_lp_norm_rejects_bad_p(p):
    with pytest.raises(ValueError, match="p must be"):
        imp.lp_norm_scores([W], p=p)


def test_rejects_bad_reduction():
    with pytest.raises(ValueError, match="reduction must be one of"):
        imp.l1_scores([W], reduction="median")


# --------------------------------------------------------------------------- random


def test_random_scores_deterministic_and_uniform():
    a = imp.random_scores(1000, seed=3)
    np.testing.assert_array_equal(a, imp.random_scores(1000, seed=3))
    assert not np.array_equal(a, imp.random_scores(1000, seed=4))
    assert a.shape == (1000,) and a.min() >= 0 and a.max() < 1
    assert 0.4 < a.mean() < 0.6


@pytest.mark.parametrize("n", [0, -2, 2.5, True, "3"])
def test_random_scores_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        imp.random_scores(n, seed=0)


# --------------------------------------------------------------------------- batch norm


def test_bn_scale_hand_computed():
    np.testing.assert_allclose(imp.bn_scale_scores([np.array([0.5, -2.0, 0.0])]), [0.5, 2.0, 0.0])
    g = [np.array([1.0, -3.0]), np.array([-2.0, 1.0])]
    np.testing.assert_allclose(imp.bn_scale_scores(g), [3.0, 4.0])
    np.testing.assert_allclose(imp.bn_scale_scores(g, reduction="max"), [2.0, 3.0])
    np.testing.assert_allclose(imp.bn_scale_scores(np.array([-1.0, 2.0])), [1.0, 2.0])


@pytest.mark.parametrize(
    "gammas, match",
    [
        ([np.ones((2, 2))], r"gammas\[0\] must be a 1-D array"),
        ([np.ones(2), np.ones(3)], r"gammas\[1\] has 3 channels"),
        ([np.array([1.0, np.nan])], "NaN"),
        ([np.array([])], "at least one channel"),
    ],
)
def test_bn_scale_rejects_bad_input(gammas, match):
    with pytest.raises(ValueError, match=match):
        imp.bn_scale_scores(gammas)


# --------------------------------------------------------------------------- activations


def _known_activations():
    # batch 2, spatial 2, channels 3 (channels last)
    return np.array(
        [
            [[0.0, 1.0, -1.0], [0.0, 0.0, 2.0]],
            [[0.0, 3.0, 0.5], [0.0, 0.0, -0.5]],
        ]
    )


def test_activation_mean_hand_computed():
    a = _known_activations()
    np.testing.assert_allclose(imp.activation_scores([a], kind="mean"), [0.0, 1.0, 1.0])
    np.testing.assert_allclose(imp.activation_mean_scores([a]), [0.0, 1.0, 1.0])


def test_apoz_hand_computed():
    a = _known_activations()
    # zeros (<= 0): channel 0: 4/4, channel 1: 2/4, channel 2: 2/4 (-1 and -0.5)
    np.testing.assert_allclose(imp.activation_scores([a], kind="apoz"), [0.0, 0.5, 0.5])
    np.testing.assert_allclose(imp.apoz_scores([a]), [0.0, 0.5, 0.5])
    # threshold 0.75: channel 2 has only 2.0 above it
    np.testing.assert_allclose(imp.apoz_scores([a], threshold=0.75), [0.0, 0.5, 0.25])


def test_apoz_relu_output_equals_pre_activation():
    pre = np.random.default_rng(1).normal(size=(8, 4, 4, 6))
    np.testing.assert_allclose(imp.apoz_scores([pre]), imp.apoz_scores([np.maximum(pre, 0)]))


def test_activation_spike_maps_int_and_bool_and_members():
    spikes = np.array([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=np.int8)
    np.testing.assert_allclose(imp.activation_mean_scores([spikes]), [0.75, 0.25])
    np.testing.assert_allclose(imp.activation_mean_scores([spikes.astype(bool)]), [0.75, 0.25])
    np.testing.assert_allclose(imp.activation_mean_scores([spikes, 2 * spikes], reduction="mean"), [1.125, 0.375])
    # a 1-D array is one observation
    np.testing.assert_allclose(imp.activation_mean_scores(np.array([1.0, -2.0])), [1.0, 2.0])


@pytest.mark.parametrize(
    "acts, kw, match",
    [
        ([np.ones((4, 3)), np.ones((4, 2))], {}, r"activations\[1\] has 2 channels"),
        ([np.zeros((0, 3))], {}, "no observations"),
        ([np.ones((2, 0))], {}, "at least one channel"),
        ([np.array(1.0)], {}, "channel axis"),
        ([np.array([[np.nan, 1.0]])], {}, "NaN"),
        ([np.ones((2, 2))], {"kind": "max"}, "kind must be one of"),
        ([np.ones((2, 2))], {"threshold": float("nan")}, "threshold must be"),
    ],
)
def test_activation_rejects_bad_input(acts, kw, match):
    with pytest.raises(ValueError, match=match):
        imp.activation_scores(acts, **kw)


# --------------------------------------------------------------------------- kmeans


def _random_filters(n, f, seed=0):
    return np.random.default_rng(seed).normal(size=(n, f))


def test_kmeans_planted_duplicate_is_removed():
    w = _random_filters(16, 20)
    w[7] = w[3]
    kept = imp.kmeans_keep([w], n_keep=15, seed=0)
    assert len(kept) == 15 and len(set(kept.tolist())) == 15
    assert (3 in kept) != (7 in kept), "exactly one of the two identical filters must go"


def test_kmeans_several_planted_duplicates_multi_member():
    a, b = _random_filters(24, 27, seed=1), _random_filters(24, 9, seed=2)
    pairs = [(0, 5), (10, 20), (3, 23)]
    for i, j in pairs:
        a[j], b[j] = a[i], b[i]
    kept = imp.kmeans_keep([a, b], n_keep=21, seed=0)
    removed = set(range(24)) - set(kept.tolist())
    assert len(removed) == 3
    assert all(len(removed & {i, j}) == 1 for i, j in pairs)


@pytest.mark.parametrize("n, factor", [(10, 0.9), (64, 0.9), (64, 0.5), (37, 0.31), (5, 0.01), (128, 0.75)])
def test_kmeans_keeps_exactly_ceil_n_factor(n, factor):
    n_keep = math.ceil(round(n * factor, 9))
    kept = imp.kmeans_keep([_random_filters(n, 18, seed=n)], n_keep, seed=1)
    assert len(kept) == n_keep == len(np.unique(kept))
    assert np.all(np.diff(kept) > 0) and kept.min() >= 0 and kept.max() < n


def test_kmeans_all_identical_filters_still_keeps_n_keep_distinct():
    w = np.ones((10, 4))
    kept = imp.kmeans_keep([w], n_keep=4, seed=0)
    assert len(np.unique(kept)) == 4
    s = imp.kmeans_scores([w], n_keep=4, seed=0)
    assert (s >= 1).sum() == 4


def test_kmeans_deterministic_with_seed():
    w = _random_filters(64, 36, seed=5)
    np.testing.assert_array_equal(imp.kmeans_keep([w], 40, seed=7), imp.kmeans_keep([w], 40, seed=7))
    np.testing.assert_array_equal(imp.kmeans_scores([w], 40, seed=7), imp.kmeans_scores([w], 40, seed=7))


def test_kmeans_keep_all_and_keep_one():
    w = _random_filters(6, 3)
    np.testing.assert_array_equal(imp.kmeans_keep([w], 6), np.arange(6))
    assert len(imp.kmeans_keep([w], 1)) == 1


def test_kmeans_wide_matrix_reduction_is_exact():
    # f > n triggers the isometric QR reduction: distances must be preserved.
    w = _random_filters(20, 300, seed=3)
    x = imp._kmeans_features([w], standardize=False)
    assert x.shape == (20, 20)
    d = lambda m: np.linalg.norm(m[:, None] - m[None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(d(x), d(w), atol=1e-9)


def test_kmeans_max_features_projection_path():
    # n and f both above max_features: rows are projected on their top principal components
    w = _random_filters(40, 50, seed=4)
    w[9] = w[30]
    x = imp._kmeans_features([w], standardize=False, max_features=8, seed=0)
    assert x.shape == (40, 8)
    kept = imp.kmeans_keep([w], 39, seed=0, max_features=8)
    assert len(np.unique(kept)) == 39 and (9 in kept) != (30 in kept)
    np.testing.assert_array_equal(kept, imp.kmeans_keep([w], 39, seed=0, max_features=8))
    with pytest.raises(ValueError, match="max_features must be"):
        imp.kmeans_keep([w], 39, max_features=0)


def test_kmeans_standardize_makes_member_scale_irrelevant():
    a, b = _random_filters(30, 12, seed=8), _random_filters(30, 40, seed=9)
    ref = imp.kmeans_keep([a, b], 20, seed=0, standardize=True)
    # a power-of-two scale is exact in floating point, so the standardised features are equal
    np.testing.assert_array_equal(imp.kmeans_keep([a, 1024.0 * b], 20, seed=0, standardize=True), ref)
    assert not np.array_equal(imp.kmeans_keep([a, 1024.0 * b], 20, seed=0), ref)


def test_kmeans_scores_agree_with_kmeans_keep():
    w = _random_filters(50, 27, seed=11)
    w[4] = w[40]
    s = imp.kmeans_scores([w], 45, seed=0)
    kept = imp.kmeans_keep([w], 45, seed=0)
    lowest = np.sort(np.argsort(s, kind="stable")[:5])
    np.testing.assert_array_equal(lowest, np.setdiff1d(np.arange(50), kept))
    assert ((s[kept] > 1) & (s[kept] <= 2)).all()
    removed = np.setdiff1d(np.arange(50), kept)
    assert ((s[removed] >= 0) & (s[removed] < 1)).all()
    assert len(np.unique(s)) == 50
    # the planted duplicate sits on a centroid: it is the first to go
    assert np.argmin(s) in (4, 40)


def test_kmeans_scores_all_kept():
    s = imp.kmeans_scores([_random_filters(5, 3)], 5)
    assert ((s > 1) & (s <= 2)).all() and len(np.unique(s)) == 5
    np.testing.assert_allclose(imp.kmeans_scores([np.ones((1, 3))], 1), [2.0])


@pytest.mark.parametrize("n_keep", [0, 7, -1, 2.0, True])
def test_kmeans_rejects_bad_n_keep(n_keep):
    with pytest.raises(ValueError, match="n_keep must be"):
        imp.kmeans_keep([_random_filters(6, 3)], n_keep)


def test_kmeans_rejects_bad_matrices_and_params():
    with pytest.raises(ValueError, match=r"mats\[1\] has 5 channels"):
        imp.kmeans_keep([np.ones((6, 2)), np.ones((5, 2))], 3)
    with pytest.raises(ValueError, match="n_init must be"):
        imp.kmeans_keep([np.ones((6, 2))], 3, n_init=0)


def test_kmeans_on_vgg16s_largest_kernel_keeps_the_asked_count():
    # 512 x 4608 is VGG16-CIFAR10's largest kernel; its speed is measured in bench/kmeans_scoring.py
    w = _random_filters(512, 4608, seed=0).astype(np.float32)
    kept = imp.kmeans_keep([w], 461, seed=0)
    assert len(kept) == 461 and len(np.unique(kept)) == 461


# --------------------------------------------------------------------------- hygiene


def test_no_keras_or_tensorflow_import():
    root = Path(__file__).resolve().parents[2]
    code = (
        "import importlib.util, sys\n"
        "for name in ('criteria/scores', 'criteria/selection', 'pruning/schedules'):\n"
        f"    spec = importlib.util.spec_from_file_location(name, r'{root}/ridurre/' + name + '.py')\n"
        "    mod = sys.modules[name] = importlib.util.module_from_spec(spec)\n"
        "    spec.loader.exec_module(mod)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow', 'jax', 'torch')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples_run():
    result = doctest.testmod(imp, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0
