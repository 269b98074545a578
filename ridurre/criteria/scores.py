"""Channel importance scores in numpy: per-channel scores for a group of coupled channels.

These are the functions behind the criteria of :mod:`ridurre.criteria` (which feed them from a
:class:`~ridurre.criteria.GroupView`); they take plain arrays and can be used on their own.

Convention: a HIGHER score means a MORE important channel; the pruning loop removes the
channels with the LOWEST scores (see :mod:`ridurre.pruning.selection`).

A channel *group* is a set of coupled channels (for example the output filters of two
convolutions joined by a residual ``Add``). The loop hands each criterion one array per
*member* (producing layer) of the group, all sharing the channel count ``n``:

- weight criteria (``l1``, ``l2``, ``kmeans``) take matrices of shape ``(n, f)`` whose row
  ``i`` holds the flattened weights producing channel ``i`` (Conv2D: ``kernel[..., i].ravel()``,
  Dense: ``kernel[:, i]``);
- ``bn_scale`` takes the 1-D ``gamma`` vectors of the BatchNormalization layers that follow
  the channels;
- activation criteria take recorded activations of shape ``(..., n)`` (channels last).

Per-member scores are combined with ``reduction`` in ``{"sum", "mean", "max", "prod", "first"}``
and, for ranking across groups, normalized with :func:`normalize_scores` (``"mean"``, ``"max"``,
``"sum"``, ``"gaussian"``, ``"lamp"``), as Torch-Pruning's group importance does.
Everything here is numpy (and scikit-learn for KMeans, imported lazily): no Keras or
TensorFlow, so it runs on every Keras backend.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ridurre._validation import check_int

__all__ = [
    "NORMALIZERS",
    "REDUCTIONS",
    "activation_mean_scores",
    "activation_scores",
    "apoz_scores",
    "bn_scale_scores",
    "fpgm_scores",
    "hrank_scores",
    "kmeans_keep",
    "kmeans_scores",
    "l1_scores",
    "l2_scores",
    "lp_norm_scores",
    "magnitude_scores",
    "normalize_scores",
    "random_scores",
]

REDUCTIONS = ("sum", "mean", "max", "prod", "first")
NORMALIZERS = ("mean", "max", "sum", "gaussian", "lamp")
ACTIVATION_KINDS = ("mean", "apoz")


# --------------------------------------------------------------------------- validation


def _check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _members(arrays: Any, name: str, what: str) -> list[Any]:
    """Accept one array or a non-empty list/tuple of arrays; return the list of members."""
    if isinstance(arrays, np.ndarray):
        return [arrays]
    if not isinstance(arrays, (list, tuple)):
        raise ValueError(
            f"{name} must be a list of {what} (one per member layer) or a single numpy array, "
            f"got {type(arrays).__name__}"
        )
    if len(arrays) == 0:
        raise ValueError(f"{name} must contain at least one array, got an empty {type(arrays).__name__}")
    return list(arrays)


def _numeric(array: Any, label: str, *, as_float64: bool) -> np.ndarray:
    try:
        out = np.asarray(array, dtype=np.float64) if as_float64 else np.asarray(array)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{label} must be a numeric array ({exc})") from None
    if not (np.issubdtype(out.dtype, np.number) or out.dtype == np.bool_):
        raise ValueError(f"{label} must be a numeric array, got dtype {out.dtype}")
    if np.issubdtype(out.dtype, np.complexfloating):
        raise ValueError(f"{label} must be real-valued, got dtype {out.dtype}")
    return out


def _check_finite(array: np.ndarray, label: str) -> None:
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"{label} contains NaN or infinite values")


def _check_same_channels(counts: list[int], name: str) -> int:
    for i, c in enumerate(counts[1:], start=1):
        if c != counts[0]:
            raise ValueError(
                f"{name}[{i}] has {c} channels but {name}[0] has {counts[0]}: "
                "members of a coupled group must share the channel count"
            )
    return counts[0]


def _weight_matrices(mats: Any, name: str = "mats") -> list[np.ndarray]:
    members = _members(mats, name, "2-D weight matrices of shape (n_channels, n_features)")
    out = []
    for i, m in enumerate(members):
        label = f"{name}[{i}]"
        a = _numeric(m, label, as_float64=True)
        if a.ndim != 2:
            raise ValueError(f"{label} must be a 2-D array of shape (n_channels, n_features), got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{label} must have at least one channel (row), got shape {a.shape}")
        if a.shape[1] == 0:
            raise ValueError(f"{label} must have at least one feature (column), got shape {a.shape}")
        _check_finite(a, label)
        out.append(a)
    _check_same_channels([a.shape[0] for a in out], name)
    return out


def _combine(per_member: list[np.ndarray], reduction: str) -> np.ndarray:
    stack = np.stack(per_member, axis=0)
    if reduction == "sum":
        return stack.sum(axis=0)
    if reduction == "mean":
        return stack.mean(axis=0)
    if reduction == "prod":
        return stack.prod(axis=0)
    if reduction == "first":
        return stack[0].copy()
    return stack.max(axis=0)


def _divide_by_mean(values: np.ndarray) -> np.ndarray:
    mean = float(np.mean(values))
    return values / mean if mean > 0 else values


def _ranks(values: np.ndarray) -> np.ndarray:
    """0-based ranks, ties broken by index (stable)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    return ranks


# --------------------------------------------------------------------------- magnitude


def lp_norm_scores(
    mats: Sequence[np.ndarray] | np.ndarray,
    p: float = 1,
    reduction: str = "sum",
    normalize: bool = False,
) -> np.ndarray:
    """Per-channel Lp norm of the weights producing each channel (Li et al. 2017 use L1).

    Args:
        mats: one ``(n, f)`` weight matrix per member layer of the group (or a single
            2-D array); row ``i`` holds the flattened weights producing channel ``i``.
            Members may have different ``f`` but must share ``n``.
        p: order of the norm, a number ``> 0`` or ``np.inf``.
        reduction: how the members' norms are combined: ``"sum"``, ``"mean"`` or ``"max"``.
        normalize: divide each member's norms by their mean before combining, so that a
            member with a large fan-in does not dominate the group's score.

    Returns:
        ``np.ndarray`` of shape ``(n,)``, float64: higher = more important.

    Raises:
        ValueError: non-2-D or empty matrices, NaN/inf, mismatched channel counts, a bad
            ``p`` or ``reduction``.

    Example:
        >>> import numpy as np
        >>> w = np.array([[1.0, -2.0], [0.5, 0.5], [0.0, 3.0]])
        >>> lp_norm_scores([w], p=1)
        array([3., 1., 3.])
        >>> lp_norm_scores([w, 2 * w], p=1, reduction="max")
        array([6., 2., 6.])
    """
    members = _weight_matrices(mats)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (p > 0) or math.isnan(p):
        raise ValueError(f"p must be a number > 0 or np.inf, got {p!r}")
    reduction = _check_reduction(reduction)
    norms = [np.linalg.norm(m, ord=float(p), axis=1) for m in members]
    if normalize:
        norms = [_divide_by_mean(v) for v in norms]
    return _combine(norms, reduction)


def l1_scores(mats: Sequence[np.ndarray] | np.ndarray, reduction: str = "sum", normalize: bool = False) -> np.ndarray:
    """Per-channel L1 norm (sum of absolute weights), the criterion of Li et al. 2017.

    Args:
        mats: one ``(n, f)`` weight matrix per member layer (see :func:`lp_norm_scores`).
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` across members.
        normalize: divide each member's norms by their mean before combining.

    Returns:
        ``np.ndarray`` of shape ``(n,)``: higher = more important.

    Example:
        >>> import numpy as np
        >>> l1_scores([np.array([[1.0, -2.0], [0.0, 0.5]])])
        array([3. , 0.5])
    """
    return lp_norm_scores(mats, p=1, reduction=reduction, normalize=normalize)


def l2_scores(mats: Sequence[np.ndarray] | np.ndarray, reduction: str = "sum", normalize: bool = False) -> np.ndarray:
    """Per-channel L2 (Euclidean) norm of the weights producing each channel.

    Args:
        mats: one ``(n, f)`` weight matrix per member layer (see :func:`lp_norm_scores`).
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` across members.
        normalize: divide each member's norms by their mean before combining.

    Returns:
        ``np.ndarray`` of shape ``(n,)``: higher = more important.

    Example:
        >>> import numpy as np
        >>> l2_scores([np.array([[3.0, 4.0], [0.0, 1.0]])])
        array([5., 1.])
    """
    return lp_norm_scores(mats, p=2, reduction=reduction, normalize=normalize)


def magnitude_scores(mats: Sequence[np.ndarray] | np.ndarray, p: float = 1, reduction: str = "mean") -> np.ndarray:
    """Group magnitude: per member the sum of ``|w| ** p`` over each channel's row, combined.

    This is Torch-Pruning's group magnitude importance: the rows of every member of a group
    (producers' output weights, consumers' input weights, normalization scales) are scored
    alike and reduced; with ``p=2`` a row scores its *squared* L2 norm. Use it on products
    (``w * dL/dw``) for first-order Taylor scores.

    Args:
        mats: one ``(n, f)`` matrix per member (or a single 2-D array).
        p: exponent, a number ``> 0``.
        reduction: how members combine: one of :data:`REDUCTIONS`.

    Returns:
        ``np.ndarray`` of shape ``(n,)``: higher = more important.

    Example:
        >>> import numpy as np
        >>> conv = np.array([[1.0, -1.0], [0.5, 0.0]])        # 2 channels, 2 weights each
        >>> gamma = np.array([[2.0], [0.1]])                  # the BatchNorm scale of each channel
        >>> magnitude_scores([conv, gamma], p=1, reduction="sum")
        array([4. , 0.6])
        >>> magnitude_scores([conv, gamma], p=2, reduction="first")
        array([2.  , 0.25])
    """
    members = _weight_matrices(mats)
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not (p > 0) or math.isinf(p) or math.isnan(p):
        raise ValueError(f"p must be a finite number > 0, got {p!r}")
    reduction = _check_reduction(reduction)
    return _combine([np.sum(np.abs(m) ** float(p), axis=1) for m in members], reduction)


def normalize_scores(scores: Sequence[float] | np.ndarray, normalizer: str | None = "mean") -> np.ndarray:
    """Scale one group's scores so that groups can be ranked together (``ranking="global"``).

    - ``"mean"``, ``"max"``, ``"sum"``: divide by the mean, max or sum (when it is > 0);
    - ``"gaussian"``: subtract the mean and divide by the standard deviation;
    - ``"lamp"``: LAMP (Lee et al. 2021): each score divided by the sum of the scores not
      smaller than it, so the weakest channel of a group scores its share of what is left;
    - ``None``: unchanged.

    The order within the group never changes, so local ranking is unaffected.

    Example:
        >>> normalize_scores([1.0, 2.0, 3.0, 2.0], "mean")
        array([0.5, 1. , 1.5, 1. ])
        >>> normalize_scores([1.0, 3.0, 4.0], "lamp")
        array([0.125     , 0.42857143, 1.        ])
    """
    if normalizer is not None and normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS} or None, got {normalizer!r}")
    s = _numeric(scores, "scores", as_float64=True)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    _check_finite(s, "scores")
    if normalizer is None:
        return s.copy()
    if normalizer == "gaussian":
        sd = float(s.std())
        return (s - s.mean()) / sd if sd > 0 else s - s.mean()
    if normalizer == "lamp":
        order = np.argsort(s, kind="stable")
        tail = np.cumsum(s[order][::-1])[::-1]  # sum of the scores from this one up
        out = np.empty_like(s)
        out[order] = np.divide(s[order], tail, out=np.zeros_like(tail), where=tail > 0)
        return out
    scale = float({"mean": np.mean, "max": np.max, "sum": np.sum}[normalizer](s))
    return s / scale if scale > 0 else s.copy()


def fpgm_scores(mats: Sequence[np.ndarray] | np.ndarray, reduction: str = "mean") -> np.ndarray:
    """Filter Pruning via Geometric Median (He et al. 2019): a channel whose weights lie near the
    geometric median of the member's rows is replaceable by the others.

    Per member, each row scores the sum of its Euclidean distances to the other rows (the
    rows nearest the geometric median score lowest); members are combined with ``reduction``.

    Example:
        >>> import numpy as np
        >>> w = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 3.0]])
        >>> int(np.argmin(fpgm_scores([w])))    # the row at the centre of the others
        0
    """
    from sklearn.metrics.pairwise import euclidean_distances

    members = _weight_matrices(mats)
    reduction = _check_reduction(reduction)
    return _combine([euclidean_distances(m).sum(axis=1) for m in members], reduction)


def hrank_scores(feature_maps: Sequence[np.ndarray] | np.ndarray, reduction: str = "mean") -> np.ndarray:
    """HRank (Lin et al. 2020): the average rank of each channel's feature maps on a data sample.

    A map of shape ``(H, W)`` (2-D convolutions) has its matrix rank; a map of one spatial axis
    ``(L,)`` is read as an ``L x 1`` matrix and a single value (Dense) as ``1 x 1``, so there
    the rank is 1 for a non-zero map and 0 for a dead one; more axes are folded into the
    second one.

    Args:
        feature_maps: one array of shape ``(samples, *spatial, n)`` per member (channels last).
        reduction: how members combine.

    Example:
        >>> import numpy as np
        >>> maps = np.zeros((2, 3, 3, 2))
        >>> maps[:, :, :, 0] = np.eye(3)          # full rank
        >>> maps[:, 0, :, 1] = 1.0                # rank 1
        >>> hrank_scores([maps])
        array([3., 1.])
    """
    members = _members(feature_maps, "feature_maps", "arrays of shape (samples, *spatial, n_channels)")
    reduction = _check_reduction(reduction)
    values = []
    for i, fm in enumerate(members):
        label = f"feature_maps[{i}]"
        a = _numeric(fm, label, as_float64=True)
        if a.ndim < 2 or a.shape[0] == 0 or a.shape[-1] == 0:
            raise ValueError(f"{label} must have shape (samples, *spatial, n_channels), got {a.shape}")
        _check_finite(a, label)
        maps = np.moveaxis(a, -1, 1)  # (samples, n, *spatial)
        rows = maps.shape[2] if a.ndim > 2 else 1
        maps = maps.reshape(maps.shape[0], maps.shape[1], rows, -1)
        values.append(np.linalg.matrix_rank(maps).mean(axis=0).astype(np.float64))
    _check_same_channels([len(v) for v in values], "feature_maps")
    return _combine(values, reduction)


# --------------------------------------------------------------------------- random


def random_scores(n: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """Uniform random scores in ``[0, 1)``: the random-pruning baseline.

    Args:
        n: number of channels, ``>= 1``.
        seed: anything :func:`numpy.random.default_rng` accepts (``None`` = fresh entropy).

    Returns:
        ``np.ndarray`` of shape ``(n,)``.

    Example:
        >>> s = random_scores(4, seed=0)
        >>> s.shape, bool(((s >= 0) & (s < 1)).all())
        ((4,), True)
        >>> bool((random_scores(4, seed=0) == s).all())
        True
    """
    n = check_int(n, "n", 1)
    return np.random.default_rng(seed).random(n)


# --------------------------------------------------------------------------- batch norm


def bn_scale_scores(gammas: Sequence[np.ndarray] | np.ndarray, reduction: str = "sum") -> np.ndarray:
    """``|gamma|`` of the BatchNormalization layers after the channels (Liu et al. 2017).

    Network Slimming trains with an L1 penalty on the BN scale factors and prunes the
    channels whose ``|gamma|`` is small: the normalised activation is multiplied by gamma,
    so a near-zero gamma silences the channel.

    Args:
        gammas: one 1-D array of length ``n`` per BatchNormalization layer of the group
            (or a single 1-D array).
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` across members.

    Returns:
        ``np.ndarray`` of shape ``(n,)``: higher = more important.

    Example:
        >>> import numpy as np
        >>> bn_scale_scores([np.array([0.5, -2.0, 0.0])])
        array([0.5, 2. , 0. ])
        >>> bn_scale_scores([np.array([1.0, 0.0]), np.array([-1.0, 4.0])], reduction="mean")
        array([1., 2.])
    """
    members = _members(gammas, "gammas", "1-D BatchNormalization gamma vectors")
    reduction = _check_reduction(reduction)
    values = []
    for i, g in enumerate(members):
        label = f"gammas[{i}]"
        a = _numeric(g, label, as_float64=True)
        if a.ndim != 1:
            raise ValueError(f"{label} must be a 1-D array of length n_channels, got shape {a.shape}")
        if a.shape[0] == 0:
            raise ValueError(f"{label} must have at least one channel, got an empty array")
        _check_finite(a, label)
        values.append(np.abs(a))
    _check_same_channels([len(v) for v in values], "gammas")
    return _combine(values, reduction)


# --------------------------------------------------------------------------- activations


def activation_scores(
    activations: Sequence[np.ndarray] | np.ndarray,
    kind: str = "mean",
    reduction: str = "sum",
    threshold: float = 0.0,
) -> np.ndarray:
    """Data-driven scores from activations recorded on a sample of user data.

    - ``kind="mean"``: mean absolute activation per channel over every batch and spatial
      position: the firing-rate / "spike activity" score (for binary spike maps this is
      the firing frequency).
    - ``kind="apoz"``: ``1 - APoZ`` where APoZ is the Average Percentage of Zeros of the
      channel (Hu et al. 2016). A value counts as zero when it is ``<= threshold``, so the
      output of a ReLU and its pre-activation give the same score. A dead channel scores 0.

    Args:
        activations: one array of shape ``(..., n)`` per member layer (batch and spatial
            axes first, channels last), or a single such array. A 1-D array is one
            observation.
        kind: ``"mean"`` or ``"apoz"``.
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` across members.
        threshold: zero threshold for ``"apoz"`` (ignored by ``"mean"``).

    Returns:
        ``np.ndarray`` of shape ``(n,)``: higher = more important.

    Raises:
        ValueError: empty arrays, NaN/inf, mismatched channel counts, unknown ``kind``.

    Example:
        >>> import numpy as np
        >>> a = np.array([[0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 4.0, 1.0], [0.0, 2.0, 2.0]])
        >>> activation_scores([a], kind="mean")
        array([0., 2., 1.])
        >>> activation_scores([a], kind="apoz")
        array([0.  , 0.75, 0.75])
    """
    if kind not in ACTIVATION_KINDS:
        raise ValueError(f"kind must be one of {ACTIVATION_KINDS}, got {kind!r}")
    reduction = _check_reduction(reduction)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or math.isnan(threshold):
        raise ValueError(f"threshold must be a real number, got {threshold!r}")
    members = _members(activations, "activations", "arrays of shape (..., n_channels)")
    values = []
    for i, act in enumerate(members):
        label = f"activations[{i}]"
        a = _numeric(act, label, as_float64=False)
        if a.ndim == 0:
            raise ValueError(f"{label} must have a channel axis (shape (..., n_channels)), got a scalar")
        if a.shape[-1] == 0:
            raise ValueError(f"{label} must have at least one channel, got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"{label} holds no observations (shape {a.shape}): record at least one sample")
        _check_finite(a, label)
        flat = a.reshape(-1, a.shape[-1])
        if kind == "mean":
            values.append(np.mean(np.abs(flat), axis=0, dtype=np.float64))
        else:
            values.append(1.0 - np.mean(flat <= threshold, axis=0, dtype=np.float64))
    _check_same_channels([len(v) for v in values], "activations")
    return _combine(values, reduction)


def activation_mean_scores(activations: Sequence[np.ndarray] | np.ndarray, reduction: str = "sum") -> np.ndarray:
    """Mean absolute activation per channel: ``activation_scores(..., kind="mean")``.

    Args:
        activations: one ``(..., n)`` array per member layer.
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` across members.

    Returns:
        ``np.ndarray`` of shape ``(n,)``.

    Example:
        >>> import numpy as np
        >>> activation_mean_scores([np.array([[1.0, -3.0], [0.0, 1.0]])])
        array([0.5, 2. ])
    """
    return activation_scores(activations, kind="mean", reduction=reduction)


def apoz_scores(
    activations: Sequence[np.ndarray] | np.ndarray, reduction: str = "sum", threshold: float = 0.0
) -> np.ndarray:
    """``1 - APoZ`` per channel: ``activation_scores(..., kind="apoz")`` (dead channel = 0).

    Args:
        activations: one ``(..., n)`` array per member layer.
        reduction: ``"sum"``, ``"mean"`` or ``"max"`` across members.
        threshold: values ``<= threshold`` count as zeros.

    Returns:
        ``np.ndarray`` of shape ``(n,)``.

    Example:
        >>> import numpy as np
        >>> apoz_scores([np.array([[0.0, 1.0], [0.0, 0.0]])])
        array([0. , 0.5])
    """
    return activation_scores(activations, kind="apoz", reduction=reduction, threshold=threshold)


# --------------------------------------------------------------------------- kmeans


def _kmeans_features(
    members: list[np.ndarray], standardize: bool, max_features: int | None = None, seed: Any = 0
) -> np.ndarray:
    """Concatenate the members along features, then reduce the dimension.

    Exact (distance-preserving) down to ``n`` dimensions; approximate (top principal
    components) below that, when both ``n`` and ``f`` exceed ``max_features``.
    """
    blocks = []
    for m in members:
        if standardize:
            # Centre every feature and scale the member to unit total variance, so that each
            # member weighs the same in the Euclidean distance whatever its fan-in.
            m = m - m.mean(axis=0)
            total_sd = math.sqrt(float((m * m).sum()) / m.shape[0])
            if total_sd > 0:
                m = m / total_sd
        blocks.append(m)
    x = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
    n, f = x.shape
    if max_features is not None and min(n, f) > max_features:
        from sklearn.utils.extmath import randomized_svd

        # Keep the max_features directions of largest variance: distances are approximated
        # (the discarded variance is the smallest), and clustering n points into k ~ 0.9 n
        # clusters stays O(n^2 * max_features) instead of O(n^3).
        u, sv, _ = randomized_svd(x - x.mean(axis=0), max_features, random_state=seed)
        x = u * sv
    elif f > n:
        # The n points span at most n dimensions: with X^T = QR, the rows of R^T have the same
        # pairwise distances as the rows of X (Q has orthonormal columns). KMeans is driven by
        # distances only, so this is an exact (isometric) reduction that makes a 512 x 4608
        # conv kernel a 512 x 512 problem.
        x = np.linalg.qr((x - x.mean(axis=0)).T, mode="r").T
    return np.ascontiguousarray(x)


def _fit_kmeans(x: np.ndarray, n_clusters: int, seed: Any, n_init: int, max_iter: int):
    # MiniBatchKMeans does not help here: with n_clusters ~ 0.9 n the cost is the k-means++
    # seeding, not the Lloyd passes (measured: 224 s for 4096 channels vs about 20 s with the
    # max_features projection and plain KMeans).
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # Duplicate filters give fewer distinct points than clusters: handled by the
        # distinct-nearest assignment below, not worth a warning.
        warnings.simplefilter("ignore", ConvergenceWarning)
        km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
        km.fit(x)
    return km.cluster_centers_, km.labels_


def _distinct_nearest(centers: np.ndarray, x: np.ndarray) -> np.ndarray:
    """For each centre the nearest point, every point used at most once.

    Centres claim their nearest point in order of increasing distance (ties: centre index);
    a centre whose nearest point is taken gets its nearest unused point (ties: point index).
    """
    from sklearn.metrics import pairwise_distances_argmin_min
    from sklearn.metrics.pairwise import euclidean_distances

    nearest, dist = pairwise_distances_argmin_min(centers, x)
    k, n = len(centers), len(x)
    chosen = np.full(k, -1, dtype=np.intp)
    used = np.zeros(n, dtype=bool)
    losers = []
    for c in np.lexsort((np.arange(k), dist)):
        j = nearest[c]
        if used[j]:
            losers.append(c)
        else:
            chosen[c] = j
            used[j] = True
    if losers:
        d = euclidean_distances(centers[losers], x)
        for row, c in enumerate(losers):
            candidates = np.where(used, np.inf, d[row])
            j = int(np.argmin(candidates))
            chosen[c] = j
            used[j] = True
    return chosen


def _single_threaded_blas():
    """BLAS limited to one thread (scikit-learn's own OpenMP threads are untouched).

    k-means++ makes hundreds of small matrix products that gain nothing from BLAS threads
    and collapse when the CPU is shared: on a loaded 2-core machine a 512 x 4608 kernel took
    6-11 s with the default BLAS threads and 0.8-1.4 s with one.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _kmeans_validate(
    mats: Any, n_keep: Any, n_init: Any, max_iter: Any, max_features: Any
) -> tuple[list[np.ndarray], int]:
    members = _weight_matrices(mats)
    n = members[0].shape[0]
    n_keep = check_int(n_keep, "n_keep", 1)
    if n_keep > n:
        raise ValueError(f"n_keep must be between 1 and the number of channels ({n}), got {n_keep}")
    check_int(n_init, "n_init", 1)
    check_int(max_iter, "max_iter", 1)
    if max_features is not None:
        check_int(max_features, "max_features", 1)
    return members, n_keep


def kmeans_keep(
    mats: Sequence[np.ndarray] | np.ndarray,
    n_keep: int,
    seed: int | None = 0,
    n_init: int = 1,
    standardize: bool = False,
    max_iter: int = 300,
    max_features: int | None = 512,
) -> np.ndarray:
    """The original ridurre KMeans method: keep one representative channel per cluster.

    The filters (rows) of the members are concatenated along features and clustered
    into ``n_keep`` clusters; for each cluster the channel nearest to the centroid is kept
    (Filter Level Pruning Based on Similar Feature Extraction, Li et al. 2018). When two
    clusters share their nearest channel (duplicate filters, empty clusters) the later one
    takes its next nearest unused channel, so exactly ``n_keep`` distinct channels are kept
    and no random fuzz is needed.

    Fast by construction: when ``f > n`` the rows are first mapped isometrically to ``n``
    dimensions (QR, exact), KMeans runs with ``n_init=1`` by default and BLAS runs
    single-threaded (robust when the CPU is shared). VGG16-CIFAR10's largest kernel
    (512 x 4608) takes about half a second on a 2-core CPU. Only when both ``n`` and ``f``
    exceed ``max_features`` are the rows projected on their ``max_features`` principal
    components (approximate distances; e.g. 2048-channel ResNet50 layers).

    Args:
        mats: one ``(n, f)`` weight matrix per member layer (or a single 2-D array).
        n_keep: number of channels to keep (= number of clusters), ``1 <= n_keep <= n``.
            The original's clustering factor ``c`` gives ``n_keep = ceil(n * c)``
            (:func:`ridurre.selection.channels_to_keep`).
        seed: ``random_state`` of KMeans: same seed, same result.
        n_init: KMeans restarts (more = slower, slightly better clusters).
        standardize: centre each member's features and scale each member to unit total
            variance before concatenating, so that members weigh equally.
        max_iter: maximum Lloyd iterations.
        max_features: dimension cap for very wide groups (see above); ``None`` = always
            exact.

    Returns:
        Sorted ``np.ndarray`` of ``n_keep`` distinct kept channel indices (int).

    Example:
        >>> import numpy as np
        >>> w = np.random.default_rng(0).normal(size=(6, 9))
        >>> w[5] = w[2]                      # channel 5 duplicates channel 2
        >>> kept = kmeans_keep([w], n_keep=5, seed=0)
        >>> len(kept), (2 in kept) != (5 in kept)
        (5, True)
    """
    members, n_keep = _kmeans_validate(mats, n_keep, n_init, max_iter, max_features)
    n = members[0].shape[0]
    if n_keep == n:
        return np.arange(n, dtype=np.intp)
    with _single_threaded_blas():
        x = _kmeans_features(members, standardize, max_features, seed)
        centers, _ = _fit_kmeans(x, n_keep, seed, n_init, max_iter)
        return np.sort(_distinct_nearest(centers, x))


def kmeans_scores(
    mats: Sequence[np.ndarray] | np.ndarray,
    n_keep: int,
    seed: int | None = 0,
    n_init: int = 1,
    standardize: bool = False,
    max_iter: int = 300,
    max_features: int | None = 512,
) -> np.ndarray:
    """KMeans redundancy as scores, so the loop can treat KMeans like any other criterion.

    Removing the ``n - n_keep`` lowest scores gives exactly :func:`kmeans_keep`'s result
    (same arguments, same seed). The scores also order the channels beyond that cut:

    - kept channels score in ``(1, 2]``: ``1 + (rank + 1) / n_keep`` where the rank is
      over the distance to the nearest other kept channel (the more unique, the higher);
    - removed channels score in ``[0, 1)``: ``rank / (n - n_keep)`` over the distance to
      their cluster's centroid (a channel sitting on a centroid is the most redundant).

    Args:
        mats: one ``(n, f)`` weight matrix per member layer (or a single 2-D array).
        n_keep: number of clusters / channels kept, ``1 <= n_keep <= n``.
        seed: ``random_state`` of KMeans.
        n_init: KMeans restarts.
        standardize: per-member standardisation (see :func:`kmeans_keep`).
        max_iter: maximum Lloyd iterations.
        max_features: dimension cap for very wide groups (see :func:`kmeans_keep`).

    Returns:
        ``np.ndarray`` of shape ``(n,)``: higher = more important.

    Example:
        >>> import numpy as np
        >>> w = np.random.default_rng(0).normal(size=(6, 9))
        >>> s = kmeans_scores([w], n_keep=4, seed=0)
        >>> int((s >= 1).sum())
        4
        >>> bool((np.sort(np.argsort(s, kind="stable")[2:]) == kmeans_keep([w], 4, seed=0)).all())
        True
    """
    from sklearn.metrics.pairwise import euclidean_distances

    members, n_keep = _kmeans_validate(mats, n_keep, n_init, max_iter, max_features)
    n = members[0].shape[0]
    scores = np.empty(n, dtype=np.float64)
    with _single_threaded_blas():
        x = _kmeans_features(members, standardize, max_features, seed)
        if n_keep == n:
            kept = np.arange(n)
        else:
            centers, labels = _fit_kmeans(x, n_keep, seed, n_init, max_iter)
            kept = np.sort(_distinct_nearest(centers, x))
            removed = np.setdiff1d(np.arange(n), kept)
            dist = np.linalg.norm(x[removed] - centers[labels[removed]], axis=1)
            scores[removed] = _ranks(dist) / len(removed)
        if len(kept) > 1:
            d = euclidean_distances(x[kept])
            np.fill_diagonal(d, np.inf)
            uniqueness = d.min(axis=1)
        else:
            uniqueness = np.zeros(1)
    scores[kept] = 1.0 + (_ranks(uniqueness) + 1.0) / len(kept)
    return scores
