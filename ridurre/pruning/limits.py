"""The loop's limits: how much of the original filters, parameters and MACs a run may remove,
what a planned deletion would remove, and shrinking a plan until no limit is crossed; the loop's
side of them (what a run has removed, steps sized to reach the limits, whether they were met)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ridurre import _compat
from ridurre.criteria.selection import removal_count
from ridurre.criteria.view import ActivationRecorder
from ridurre.rules import HEAD_KINDS
from ridurre.surgery import plan_layers

__all__ = ["Limits", "Budget", "fit_to_limits", "interim_limits", "limits_met"]

_KINDS = ("filters", "params", "macs", "latency")


@dataclass(frozen=True)
class Limits:
    """Shares of the original model a run may remove (``None``: no limit).

    Attributes:
        filters: output channels of the prunable layers (``maximum_pruning_percent``).
        params: parameters (``max_params_reduction``).
        macs: multiply-accumulates (``max_macs_reduction``, ``1 - 1/target_speedup``).
        latency: latency predicted by a measured latency table (``target_speedup`` with a
            ``latency_table``: ``1 - 1/target_speedup``).

    Example:
        >>> limits = Limits(filters=0.5)
        >>> limits.within({"filters": 0.4, "params": 0.9, "macs": 0.9}), limits.any
        (True, True)
    """

    filters: float | None = None
    params: float | None = None
    macs: float | None = None
    latency: float | None = None

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
        latency_table: optional measured table (:class:`ridurre.deploy.LatencyTable`, or any
            object with ``predicted_reduction({group key: channels})``) for the latency share.
    """

    def __init__(self, trace, stats, original_filters, original, latency_table=None):
        self.trace = trace
        self.latency_table = latency_table
        self.original_filters = original_filters
        self.original = original
        self.layer_macs = {} if stats is None else {row.name: row.macs for row in stats.layers if row.macs}
        self.with_costs = stats is not None
        # the "filters": producers of prunable groups; attention heads are not filters (their own ratio)
        self.prunable = {p for g in trace.groups() if g.prunable and g.kind not in HEAD_KINDS for p in g.producers}
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
            counted = [(use.path, use.out_layout)] + [(f"{use.path}:{k}", lay) for k, lay in use.internal.items()]
            for path, layout in counted:  # output channels, and internal units (attention heads...)
                if path in self.prunable and layout is not None:
                    gone = np.isin(trace.units.roots(layout), deleted).sum() if len(deleted) else 0
                    filters += len(layout) - int(gone)
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
        reductions = {
            "filters": 1.0 - filters / max(1, self.original_filters),
            "params": 0.0,
            "macs": 0.0,
            "latency": 0.0 if self.latency_table is None else self._latency(deleted),
        }
        if plans is not None:
            reductions["params"] = 1.0 - params / max(1, self.original["params"])
            total = self.original["macs"]
            reductions["macs"] = 1.0 - macs / max(1.0, total) if total else 0.0
        return reductions

    def _latency(self, deleted):
        sizes = {}
        for group in self.trace.groups():
            gone = int(np.isin(group.roots, deleted).sum()) if len(deleted) else 0
            sizes[group.key] = group.size - gone
        return float(self.latency_table.predicted_reduction(sizes))


def fit_to_limits(plan, budget, limits, round_to=None):
    """Shrink ``plan`` (each group's removal proportionally) until no limit is crossed.

    Args:
        plan: ``{group id: group channel indices to remove, in removal order}``.
        budget: a :class:`Budget` of the model.
        limits: the :class:`Limits`.
        round_to: keep each group's width a multiple of this (heads excepted).

    Returns:
        The largest proportional shrink of ``plan`` within the limits, topped up group by group.
    """
    if not limits.any or not plan:
        return plan

    def within(candidate):
        return limits.within(budget.reductions(budget.deleted_units(candidate)))

    if within(plan):
        return plan
    groups = budget.trace.groups()
    sizes = {g.id: g.size for g in groups}
    rounding = {g.id: None if g.kind in HEAD_KINDS else round_to for g in groups}  # heads are not rounded

    def shrunk(fraction):
        return {
            gid: idx[: removal_count(sizes[gid], int(math.floor(len(idx) * fraction)), round_to=rounding[gid])]
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
    for gid, idx in plan.items():
        step = rounding[gid] or 1
        while len(best[gid]) + step <= len(idx):
            trial = {**best, gid: idx[: len(best[gid]) + step]}
            if not within(trial):
                break
            best = trial
    return best


def interim_limits(limits, done, remaining):
    """The limits of the next step when the way left to each limit is divided evenly over the
    ``remaining`` iterations: each step keeps the same share of what it starts with.

    Args:
        limits: the run's :class:`Limits`.
        done: ``{kind: share of the original removed so far}``.
        remaining: iterations left, this one included.

    Example:
        >>> step = interim_limits(Limits(macs=0.75), {"filters": 0.0, "params": 0.0, "macs": 0.0}, 2)
        >>> round(step.macs, 6), step.filters   # keep half, then half again: 1/4 of the MACs at the end
        (0.5, None)
    """
    remaining = max(1, int(remaining))
    interim = {}
    for kind in _KINDS:
        limit = getattr(limits, kind)
        if limit is None:
            continue
        kept_now, kept_at_limit = 1.0 - done[kind], 1.0 - limit
        kept_next = kept_now * (kept_at_limit / kept_now) ** (1.0 / remaining) if kept_now > 0 else 0.0
        interim[kind] = min(limit, max(done[kind], 1.0 - kept_next))
    return Limits(**interim)


def limits_met(limits, reached, finest, iterations=None, max_iterations=None):
    """Whether a run met each of its limits, and if not, why.

    Args:
        limits: the run's :class:`Limits`.
        reached: ``{kind: share of the original removed}`` at the end.
        finest: ``{kind: the smallest share one more step could remove}`` (``inf``: no step left).
        iterations: iterations the run made; max_iterations: its iteration limit.

    Returns:
        ``{kind: {"limit", "reached", "met", "why"}}`` for every kind with a limit: met when the
        limit is reached, or the distance left is smaller than the finest further step; ``why``
        says what stopped the run short otherwise.

    Example:
        >>> limits_met(Limits(macs=0.5), {"filters": 0.3, "params": 0.4, "macs": 0.42},
        ...            {"filters": 0.01, "params": 0.01, "macs": 0.02}, 4, 4)["macs"]["why"]
        'the iterations ran out (4 of 4)'
        >>> limits_met(Limits(macs=0.5), {"filters": 0.3, "params": 0.4, "macs": 0.49},
        ...            {"filters": 0.01, "params": 0.01, "macs": 0.02})["macs"]["met"]
        True
    """
    met = {}
    for kind in _KINDS:
        limit = getattr(limits, kind)
        if limit is not None:
            met[kind] = reached[kind] >= limit - 1e-9 or reached[kind] + finest[kind] > limit + 1e-9
    out = {}
    for kind, ok in met.items():
        why = None
        if not ok:
            first = [k for k, v in met.items() if v and k != kind]
            if first:
                why = f"the {first[0]} limit was reached first"
            elif math.isinf(finest[kind]):
                why = "no channel group could lose more channels (min_channels, max_fraction_per_layer, layers/exclude)"
            elif max_iterations is not None and iterations is not None and iterations >= max_iterations:
                why = f"the iterations ran out ({iterations} of {max_iterations})"
            else:
                why = f"a step of this factor removed no channel after {iterations} iteration(s)"
        out[kind] = {"limit": getattr(limits, kind), "reached": float(reached[kind]), "met": bool(ok), "why": why}
    return out


class _LimitSizing:
    """The loop's side of the limits (a base of :class:`~ridurre.pruning.BasePruning`): what a
    run has removed, steps sized to reach the limits, and whether they were met."""

    def _check_latency_target(self, trace):
        """Refuse a latency target the table says cannot be met: pruning would otherwise go on
        until every eligible group is down to ``min_channels`` (as a table of noise does)."""
        floor = {g.key: self._min_channels for g in trace.groups() if self.eligible(g)}
        best = float(self._latency_table.predicted_reduction(floor))
        if best < self._limits.latency - 1e-9:
            raise ValueError(
                f"the latency table predicts at most {1.0 / max(1e-9, 1.0 - best):.2f}x speed-up even with every "
                f"eligible group down to {self._min_channels} channel(s), short of target_speedup="
                f"{1.0 / (1.0 - self._limits.latency):.2f}: measure the table again (on a quiet machine) or lower "
                "the target"
            )

    def _reductions(self, record=None) -> dict:
        """Shares of the original filters, parameters and MACs removed after ``record`` (none: 0),
        and of the latency a latency table predicts for the model last traced."""
        if record is None:
            return {"filters": 0.0, "params": 0.0, "macs": 0.0, "latency": 0.0}
        values = {
            "filters": record.pruning_percent,
            "params": 1.0 - record.params / max(1, self._original_cost["params"]),
            "macs": 1.0 - record.macs / max(1.0, self._original_cost["macs"]),
            "latency": 0.0,
        }
        if self._latency_table is not None and self._cache is not None:  # the last step traced the new model
            sizes = {g.key: g.size for g in self._cache[1].groups()}
            values["latency"] = float(self._latency_table.predicted_reduction(sizes))
        return values

    def _sized_factor(self, model, iteration):
        """The factor of iteration ``iteration`` when steps are sized to the limits: the largest
        whose step keeps every limit's reduction within this iteration's share of the way (what
        is left is divided evenly over the iterations left, geometrically)."""
        done = self._reductions(self.history[-1] if self.history else None)
        interim = interim_limits(self._limits, done, self._maximum_prune_iterations - iteration)
        removes_more = self.removal_count(1000, 0.9) >= self.removal_count(1000, 0.1)

        def factor_at(share):  # share in [0, 1]: how hard to prune, whatever the method's factor means
            return 0.95 * share if removes_more else 1.0 - 0.95 * share

        recorder = ActivationRecorder(model, self._trace(model))

        def step(share):  # (within this iteration's share, removes anything)
            _, plan, budget = self._plan_step(model, factor_at(share), iteration, recorder)
            if not plan:
                return True, False
            return interim.within(budget.reductions(budget.deleted_units(plan))), True

        if step(1.0)[0]:
            return factor_at(1.0)
        lo, hi, lo_prunes = 0.0, 1.0, False
        for _ in range(10):
            mid = (lo + hi) / 2
            within, prunes = step(mid)
            if within:
                lo, lo_prunes = mid, prunes
            else:
                hi = mid
        # when even the smallest step that removes anything goes beyond this iteration's share, take
        # it: the limits themselves are never crossed (the plan is fitted to them)
        return factor_at(lo if lo_prunes else hi)

    def limits_report(self, model) -> dict:
        """Whether the run that returned ``model`` met each limit it was given.

        Returns:
            ``{kind: {"limit", "reached", "met", "why"}}`` for each of ``filters``, ``params``,
            ``macs`` and ``latency`` (with a latency table) that has a limit (shares of the original
            removed). A limit is met when the
            distance left is smaller than the finest further step (one channel, or ``round_to``
            channels, of some group); otherwise ``why`` says what stopped the run short.
        """
        reached = self._reductions(self.history[-1] if self.history else None)
        return limits_met(
            self._limits, reached, self._finest_steps(model), len(self.history), self._maximum_prune_iterations
        )

    def _finest_steps(self, model) -> dict:
        """For each kind, the smallest share of the original that one more step of one group
        (one channel, or ``round_to`` channels) of ``model`` would remove; ``inf`` when none can."""
        trace = self._trace(model)
        budget = self._budget(model, trace)
        now = budget.reductions(np.array([], dtype=np.int64))
        step = self._round_to or 1
        finest = {"filters": math.inf, "params": math.inf, "macs": math.inf, "latency": math.inf}
        for group in trace.groups():
            if not self.eligible(group) or self._bounds(group) < step:
                continue
            after = budget.reductions(budget.deleted_units({group.id: np.arange(step)}))
            for kind in finest:
                finest[kind] = min(finest[kind], after[kind] - now[kind])
        return finest

    def _budget(self, model, trace):
        """The :class:`Budget` of ``model`` (traced as ``trace``), as shares of the original model."""
        stats = self._model_stats(model) if self._limits.costs else None
        return Budget(trace, stats, self._original_filters, self._original_cost, self._latency_table)

    def _fit_to_limits(self, model, trace, plan):
        """``(plan, budget)``: ``plan`` (group id -> channels) of a step of ``model`` shrunk until it
        crosses no limit, and its budget (``None`` when no limit is set or nothing is planned)."""
        if not (self._limits.any and plan):
            return plan, None
        budget = self._budget(model, trace)
        return fit_to_limits(plan, budget, self._limits, self._round_to), budget

    def _limit_reached(self, record):
        return self._limits.reached(self._reductions(record), tolerance=1.0 / max(1, self._original_filters))
