"""The loop's limits: how much of the original filters, parameters and MACs a run may remove,
what a planned deletion would remove, and shrinking a plan until no limit is crossed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ridurre import _compat
from ridurre.criteria.selection import removal_count
from ridurre.surgery import plan_layers

__all__ = ["Limits", "Budget", "fit_to_limits"]

_KINDS = ("filters", "params", "macs")


@dataclass(frozen=True)
class Limits:
    """Shares of the original model a run may remove (``None``: no limit).

    Attributes:
        filters: output channels of the prunable layers (``maximum_pruning_percent``).
        params: parameters (``max_params_reduction``).
        macs: multiply-accumulates (``max_macs_reduction``, ``1 - 1/target_speedup``).

    Example:
        >>> limits = Limits(filters=0.5)
        >>> limits.within({"filters": 0.4, "params": 0.9, "macs": 0.9}), limits.any
        (True, True)
    """

    filters: float | None = None
    params: float | None = None
    macs: float | None = None

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return any(getattr(self, k) is not None for k in _KINDS)

    @property
    def costs(self) -> bool:
        """Whether a params or MACs limit is set (they need each layer's cost)."""
        return self.params is not None or self.macs is not None

    def within(self, reductions: dict) -> bool:
        """Whether ``reductions`` (``{kind: share removed}``) crosses no limit."""
        return all(getattr(self, k) is None or reductions[k] <= getattr(self, k) + 1e-9 for k in _KINDS)

    def reached(self, reductions: dict, tolerance: float = 0.0) -> bool:
        """Whether ``reductions`` has reached some limit (within ``tolerance``)."""
        return any(getattr(self, k) is not None and reductions[k] >= getattr(self, k) - tolerance for k in _KINDS)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in _KINDS}


class Budget:
    """What deleting some channel units of a traced model removes, as shares of the original.

    Filters are counted from the channel layouts alone; params and MACs need each layer's
    planned weights (a ``get_config`` and a sliced placeholder per layer), so they are planned
    only when a params or MACs limit is set: :func:`fit_to_limits` asks dozens of times per step.
    MACs scale with each layer's kernel size, since spatial sizes do not change.

    Args:
        trace: the :class:`ridurre.graph.Trace` of the model being pruned.
        stats: its :class:`ridurre.metrics.ModelStats` (``None`` when no params/MACs limit is set).
        original_filters: filters of the original model's prunable layers.
        original: ``{"params": ..., "macs": ...}`` of the original model.
    """

    def __init__(self, trace, stats, original_filters, original):
        self.trace = trace
        self.original_filters = original_filters
        self.original = original
        self.layer_macs = {} if stats is None else {row.name: row.macs for row in stats.layers if row.macs}
        self.with_costs = stats is not None
        self.prunable = {p for g in trace.groups() if g.prunable for p in g.producers}
        self.kernel_sizes = {}
        for use in trace.uses.values():
            weights = getattr(use.layer, "weights", [])  # raw keras.ops operations have none
            self.kernel_sizes[use.path] = sum(int(np.prod(v.shape)) for v in weights if "kernel" in v.name)

    def deleted_units(self, plan) -> np.ndarray:
        """The unit roots of ``plan`` (``{group id: group channel indices}``)."""
        groups = self.trace.groups()
        if not plan:
            return np.array([], dtype=np.int64)
        return np.concatenate([groups[gid].roots[idx] for gid, idx in plan.items()])

    def reductions(self, deleted) -> dict:
        """``{"filters", "params", "macs": share of the original removed}`` once ``deleted`` goes."""
        trace = self.trace
        plans = plan_layers(trace, deleted, shapes_only=True) if self.with_costs else None
        filters = params = 0
        macs = 0.0
        for use in trace.uses.values():
            if _compat.is_graph_model(use.layer):
                continue
            if use.path in self.prunable and use.out_layout is not None:
                gone = np.isin(trace.units.roots(use.out_layout), deleted).sum() if len(deleted) else 0
                filters += len(use.out_layout) - int(gone)
            if plans is None:
                continue
            _, weights = plans[id(use.layer)]
            sizes = {k: int(np.prod(v.shape)) for k, v in (weights or {}).items()}
            params += sum(sizes.values())
            base = self.layer_macs.get(use.path)
            if base:
                old = self.kernel_sizes.get(use.path, 0)
                new = sum(s for k, s in sizes.items() if "kernel" in k)
                macs += base * (new / old if old else 1.0)
        reductions = {"filters": 1.0 - filters / max(1, self.original_filters), "params": 0.0, "macs": 0.0}
        if plans is not None:
            reductions["params"] = 1.0 - params / max(1, self.original["params"])
            total = self.original["macs"]
            reductions["macs"] = 1.0 - macs / max(1.0, total) if total else 0.0
        return reductions


def fit_to_limits(plan, budget, limits, round_to=None):
    """Shrink ``plan`` (each group's removal proportionally) until no limit is crossed.

    Args:
        plan: ``{group id: group channel indices to remove, in removal order}``.
        budget: a :class:`Budget` of the model.
        limits: the :class:`Limits`.
        round_to: keep each group's width a multiple of this.

    Returns:
        The largest proportional shrink of ``plan`` within the limits, topped up group by group.
    """
    if not limits.any or not plan:
        return plan

    def within(candidate):
        return limits.within(budget.reductions(budget.deleted_units(candidate)))

    if within(plan):
        return plan
    sizes = {g.id: g.size for g in budget.trace.groups()}

    def shrunk(fraction):
        return {
            gid: idx[: removal_count(sizes[gid], int(math.floor(len(idx) * fraction)), round_to=round_to)]
            for gid, idx in plan.items()
        }

    lo, hi = 0.0, 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        if within(shrunk(mid)):
            lo = mid
        else:
            hi = mid
    best = shrunk(lo)
    # top up group by group, one step (a channel, or round_to channels) at a time, while the limits hold
    step = round_to or 1
    for gid, idx in plan.items():
        while len(best[gid]) + step <= len(idx):
            trial = {**best, gid: idx[: len(best[gid]) + step]}
            if not within(trial):
                break
            best = trial
    return best
