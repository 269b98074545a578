"""Choosing which channels to remove, given per-channel scores (higher = more important).

- :func:`removal_count`: how many channels of a group may go, within bounds (the one place
  where ``min_channels``, ``max_fraction`` and ``round_to`` are applied).
- :func:`select_lowest`: the channels of one group to remove, within bounds.
- :func:`allocate_global`: one budget shared by many groups, ranked globally.
- :func:`channels_to_keep`: the original ridurre's ``ceil(n * factor)`` keep count.
- :func:`define_prune_bins`: the original ridurre's per-channel-count pruning factors.

Bounds shared by the selectors:

- ``min_channels``: never leave a group with fewer channels than this.
- ``max_fraction``: never remove more than ``floor(max_fraction * n)`` channels of a group.
- ``round_to=k``: the number of channels KEPT is a multiple of ``k`` (hardware-friendly
  widths). Rounding always keeps more, never fewer: a group whose size is not a multiple
  of ``k`` may stay whole.

Ties are broken deterministically: by score, then by channel index.
"""

from __future__ import annotations

import bisect
import heapq
import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ridurre._validation import check_int, check_unit

__all__ = [
    "PruneBins",
    "allocate_global",
    "channels_to_keep",
    "define_prune_bins",
    "removal_count",
    "select_lowest",
]


# --------------------------------------------------------------------------- validation


def _check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a 1-D array of numbers, got {type(scores).__name__}") from None
    if s.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-channel scores, got shape {s.shape}")
    if s.size == 0:
        raise ValueError(f"{name} must hold at least one channel score, got an empty array")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _check_bounds(min_channels: Any, max_fraction: Any, round_to: Any) -> tuple[int, float | None, int | None]:
    min_channels = check_int(min_channels, "min_channels", 1)
    if max_fraction is not None:
        max_fraction = check_unit(max_fraction, "max_fraction")
    if round_to is not None:
        round_to = check_int(round_to, "round_to", 1)
    return min_channels, max_fraction, round_to


def _min_kept(n: int, min_channels: int, max_fraction: float | None) -> int:
    """Fewest channels a group of ``n`` may keep (``n`` itself if it may not shrink)."""
    max_removable = n - min_channels
    if max_fraction is not None:
        # The epsilon makes 0.3 * 10 count as 3, not 2.9999999999999996.
        max_removable = min(max_removable, math.floor(max_fraction * n + 1e-9))
    return n - max(0, max_removable)


def removal_count(
    size: int,
    n_remove: int,
    *,
    min_channels: int = 1,
    max_removable: int | None = None,
    round_to: int | None = None,
) -> int:
    """How many of a group's ``size`` channels may go when ``n_remove`` are asked for.

    At least ``min_channels`` stay, at most ``max_removable`` go, and with ``round_to=k`` the
    number KEPT is rounded UP to a multiple of ``k`` (capped at ``size``): rounding always keeps
    more, never fewer, so a group whose size is not a multiple of ``k`` may stay whole. The
    pruning loop, the sensitivity scan and :func:`select_lowest` all count with this.

    Args:
        size: channels in the group, ``>= 1``.
        n_remove: channels asked for, ``>= 0``.
        min_channels: fewest channels to leave, ``>= 1``.
        max_removable: most channels that may go, or ``None``.
        round_to: keep a multiple of this, or ``None``.

    Returns:
        The number of channels to remove, in ``[0, n_remove]``.

    Example:
        >>> removal_count(10, 3), removal_count(10, 3, round_to=4), removal_count(10, 9, min_channels=4)
        (3, 2, 6)
        >>> removal_count(10, 1, round_to=4), removal_count(10, 5, max_removable=2)
        (0, 2)
    """
    size = check_int(size, "size", 1)
    n_remove = check_int(n_remove, "n_remove", 0)
    min_channels = check_int(min_channels, "min_channels", 1)
    limit = min(n_remove, size - min_channels)
    if max_removable is not None:
        limit = min(limit, int(max_removable))
    kept = size - max(0, limit)
    if round_to is not None:
        kept = min(size, -(-kept // check_int(round_to, "round_to", 1)) * round_to)
    return size - kept


def _ascending(scores: np.ndarray) -> np.ndarray:
    """Channel indices by increasing score, ties by index."""
    return np.argsort(scores, kind="stable")


# --------------------------------------------------------------------------- one group


def select_lowest(
    scores: Sequence[float] | np.ndarray,
    n_remove: int,
    *,
    min_channels: int = 1,
    max_fraction: float | None = None,
    round_to: int | None = None,
) -> np.ndarray:
    """Indices of the ``n_remove`` lowest-scoring channels of one group, within bounds.

    The count actually removed is ``n_remove`` clipped by the bounds: at least
    ``min_channels`` channels stay, at most ``floor(max_fraction * n)`` go, and with
    ``round_to=k`` the kept count is rounded UP to a multiple of ``k`` (capped at ``n``).

    Args:
        scores: 1-D per-channel scores, higher = more important.
        n_remove: how many channels to remove, ``>= 0`` (larger than allowed is clipped).
        min_channels: fewest channels to leave, ``>= 1``.
        max_fraction: largest fraction of the group to remove, in ``[0, 1]``, or ``None``.
        round_to: make the kept count a multiple of this, or ``None``.

    Returns:
        Sorted ``np.ndarray`` of int indices to remove (possibly empty).

    Raises:
        ValueError: non-1-D, empty or non-finite scores; negative or non-integer counts;
            ``max_fraction`` outside ``[0, 1]``.

    Example:
        >>> select_lowest([0.5, 0.1, 0.9, 0.1, 0.3], 2)
        array([1, 3])
        >>> select_lowest([0.5, 0.1, 0.9, 0.1, 0.3], 4, min_channels=2)
        array([1, 3, 4])
        >>> select_lowest([0.5, 0.1, 0.9, 0.1, 0.3, 0.2], 3, round_to=4)
        array([1, 3])
    """
    s = _check_scores(scores)
    n_remove = check_int(n_remove, "n_remove", 0)
    min_channels, max_fraction, round_to = _check_bounds(min_channels, max_fraction, round_to)
    n = len(s)
    count = removal_count(
        n,
        n_remove,
        min_channels=min(min_channels, n),
        round_to=round_to,
        max_removable=n - _min_kept(n, min_channels, max_fraction),
    )
    return np.sort(_ascending(s)[:count])


# --------------------------------------------------------------------------- many groups


def allocate_global(
    group_scores: Mapping[Hashable, Sequence[float] | np.ndarray],
    total_remove: int,
    *,
    min_channels: int = 1,
    max_fraction: float | None = None,
    round_to: int | None = None,
    normalize: bool = True,
) -> dict[Hashable, np.ndarray]:
    """Share one removal budget across groups by ranking all channels together.

    With ``normalize=True`` each group's scores are first divided by the mean of their
    absolute values, so groups are compared by relative importance and a group whose
    scores are large only because of its scale (e.g. the L1 norms of a layer with a big
    fan-in) is not spared for that reason alone.

    Channels are then removed in increasing (normalised) score order, across all groups,
    until ``total_remove`` is reached or every group hits its bounds. With ``round_to=k``
    a group loses channels in chunks that keep its width a multiple of ``k``; chunks are
    taken greedily by their mean score while they fit in the remaining budget, so the
    total may fall short of ``total_remove`` (never above it). Without ``round_to`` the
    total is exactly ``min(total_remove, total removable)``.

    Ties: by score, then by group order (the mapping's order), then by channel index.

    Args:
        group_scores: mapping group key -> 1-D scores of that group's channels.
        total_remove: channels to remove over all groups, ``>= 0``.
        min_channels: fewest channels any group may keep, ``>= 1``.
        max_fraction: largest fraction of any group to remove, or ``None``.
        round_to: keep every pruned group's width a multiple of this, or ``None``.
        normalize: divide each group's scores by their mean absolute value first.

    Returns:
        ``dict`` with the same keys in the same order -> sorted int indices to remove.

    Example:
        >>> scores = {"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 60.0]}
        >>> out = allocate_global(scores, 2)
        >>> {k: v.tolist() for k, v in out.items()}
        {'a': [0], 'b': [0]}
        >>> out = allocate_global(scores, 2, normalize=False)
        >>> {k: v.tolist() for k, v in out.items()}
        {'a': [0, 1], 'b': []}
    """
    if not isinstance(group_scores, Mapping):
        raise ValueError(f"group_scores must be a mapping group key -> 1-D scores, got {type(group_scores).__name__}")
    total_remove = check_int(total_remove, "total_remove", 0)
    min_channels, max_fraction, round_to = _check_bounds(min_channels, max_fraction, round_to)

    keys = list(group_scores)
    orders, sorted_scores, floors, removed = [], [], [], []
    for key in keys:
        s = _check_scores(group_scores[key], name=f"group_scores[{key!r}]")
        # order by the raw scores: dividing by a positive scale keeps their order, but can
        # underflow tiny scores to ties (5e-324 / 2 == 0), which would reorder them
        order = _ascending(s)
        if normalize:
            scale = float(np.mean(np.abs(s)))
            if scale > 0:
                s = s / scale
        orders.append(order)
        sorted_scores.append(s[order])
        floors.append(_min_kept(len(s), min_channels, max_fraction))
        removed.append(0)

    heap: list[tuple[float, int, int, int]] = []

    def push_next_chunk(pos: int) -> None:
        n = len(orders[pos])
        kept = n - removed[pos]
        next_kept = kept - 1 if round_to is None else ((kept - 1) // round_to) * round_to
        if next_kept < floors[pos]:
            return
        start, stop = removed[pos], n - next_kept
        cost = float(sorted_scores[pos][start:stop].mean())
        heapq.heappush(heap, (cost, pos, start, stop))

    for pos in range(len(keys)):
        push_next_chunk(pos)
    budget = total_remove
    while heap and budget > 0:
        _, pos, start, stop = heapq.heappop(heap)
        if stop - start > budget:
            continue  # later chunks of this group are no smaller: the group is done
        removed[pos] = stop
        budget -= stop - start
        push_next_chunk(pos)

    return {key: np.sort(orders[pos][: removed[pos]]) for pos, key in enumerate(keys)}


# --------------------------------------------------------------------------- original ridurre helpers


def channels_to_keep(nb_channels: int, keep_factor: float) -> tuple[int, int]:
    """Keep count of the original ridurre: ``ceil(nb_channels * keep_factor)`` in ``[1, n]``.

    The original's KMeans clustering factor is a keep factor (0.9 keeps 90 %); its random
    pruning factor is a removal factor, i.e. ``channels_to_keep(n, 1 - removal_factor)``.
    Unlike the original, ``10 * 0.7`` keeps 7 channels, not 8 (floating-point guard).

    Args:
        nb_channels: channels in the layer or group, ``>= 1``.
        keep_factor: fraction to keep, ``>= 0``; values above 1 keep everything.

    Returns:
        ``(nb_to_keep, nb_to_remove)``.

    Example:
        >>> channels_to_keep(64, 0.9)
        (58, 6)
        >>> channels_to_keep(10, 0.0)
        (1, 9)
    """
    nb_channels = check_int(nb_channels, "nb_channels", 1)
    if isinstance(keep_factor, bool) or not isinstance(keep_factor, numbers.Real) or not keep_factor >= 0:
        raise ValueError(f"keep_factor must be a number >= 0, got {keep_factor!r}")
    if math.isinf(keep_factor):
        return nb_channels, 0
    keep = math.ceil(round(nb_channels * float(keep_factor), 9))
    keep = min(nb_channels, max(1, keep))
    return keep, nb_channels - keep


@dataclass(frozen=True)
class PruneBins:
    """Pruning factors per channel-count bin (see :func:`define_prune_bins`).

    Attributes:
        channel_number_bins: increasing bin edges; bin ``i`` is
            ``[edges[i], edges[i + 1])``.
        pruning_factors_for_bins: one factor per bin.

    Example:
        >>> bins = define_prune_bins([0, 128, 513], [0.9, 0.7])
        >>> bins.factor_for(64), bins.factor_for(512), bins.factor_for(1024, default=0.95)
        (0.9, 0.7, 0.95)
    """

    channel_number_bins: tuple[int, ...]
    pruning_factors_for_bins: tuple[float, ...]

    def factor_for(self, nb_channels: int, default: float | None = None) -> float | None:
        """The factor of the bin holding ``nb_channels``, else ``default``.

        Args:
            nb_channels: current channel count of the layer or group.
            default: returned when no bin matches (the original returned its global
                pruning factor).

        Returns:
            The bin's factor, or ``default``.

        Example:
            >>> define_prune_bins([1, 64, 256], [0.5, 0.8]).factor_for(64)
            0.8
        """
        nb_channels = check_int(nb_channels, "nb_channels", 0)
        i = bisect.bisect_right(self.channel_number_bins, nb_channels) - 1
        if 0 <= i < len(self.pruning_factors_for_bins):
            return self.pruning_factors_for_bins[i]
        return default


def define_prune_bins(
    channel_number_bins: Sequence[int] | np.ndarray,
    pruning_factors_for_bins: Sequence[float] | np.ndarray,
) -> PruneBins:
    """Different pruning factors for layers of different widths (original ridurre API).

    In ridurre 0.0.2 ``BasePruning.define_prune_bins(channel_number_bins,
    pruning_factors_for_bins)`` let the user cut the channel-count axis into bins with
    ``len(pruning_factors_for_bins) + 1`` edges; at every pruning step a layer with ``c``
    channels used the factor of the bin with ``edges[i] <= c < edges[i + 1]``, and the
    global pruning factor when no bin matched. This is the same behaviour as a value:
    wide layers (usually the most redundant) can be pruned harder than narrow ones, and as
    a layer shrinks across iterations it moves to the bin of its new width.

    Args:
        channel_number_bins: strictly increasing integer bin edges, ``>= 0``.
        pruning_factors_for_bins: one factor in ``[0, 1]`` per bin (one fewer than edges).
            The factor means what the loop's factor means (a keep factor for KMeans, a
            removal factor for random pruning in the original).

    Returns:
        A :class:`PruneBins`; ``bins.factor_for(nb_channels, default)`` looks a factor up.

    Raises:
        ValueError: wrong lengths, non-increasing or negative edges, factors outside ``[0, 1]``.

    Example:
        >>> bins = define_prune_bins([0, 100, 300, 600], [0.9, 0.8, 0.6])
        >>> [bins.factor_for(c, default=1.0) for c in (64, 256, 512, 4096)]
        [0.9, 0.8, 0.6, 1.0]
    """
    edges = list(channel_number_bins)
    factors = list(pruning_factors_for_bins)
    if len(edges) - 1 != len(factors):
        raise ValueError(
            "channel_number_bins must contain exactly one more item than pruning_factors_for_bins "
            f"(bin edges vs. one factor per bin), got {len(edges)} edges and {len(factors)} factors"
        )
    if not factors:
        raise ValueError("pruning_factors_for_bins must define at least one bin, got none")
    edges = [check_int(e, f"channel_number_bins[{i}]", 0) for i, e in enumerate(edges)]
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"channel_number_bins must be strictly increasing, got {edges}")
    factors = [check_unit(f, f"pruning_factors_for_bins[{i}]") for i, f in enumerate(factors)]
    return PruneBins(tuple(edges), tuple(factors))
