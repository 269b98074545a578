"""Which channels one step removes: the groups a run may prune (``layers``/``exclude``), each
group's bounds and factor, and the ranking of their channels (``"local"``: each group loses its
share; ``"global"``: one ranking over all groups; ``"isomorphic"``: one over each set of
structurally identical groups), fitted to the limits."""

from __future__ import annotations

import math

import keras
import numpy as np

from ridurre import graph as _graph
from ridurre.criteria import selection as _selection
from ridurre.criteria.scores import normalize_scores
from ridurre.criteria.view import ActivationRecorder, GroupView
from ridurre.rules import HEAD_KINDS

RANKINGS = ("local", "global", "isomorphic")


def _per_time_saved(scores, views, table):
    """Scores normalized per group, divided by the group's time saved per channel relative to the
    mean over the groups (a group missing from the table counts as the mean)."""
    saved = {v.group.id: table.saved_per_channel(v.group) for v in views}
    known = [max(s, 0.0) for s in saved.values() if s is not None]
    mean = float(np.mean(known)) if known and np.mean(known) > 0 else 1.0
    out = {}
    for gid, s in scores.items():
        scale = float(np.mean(np.abs(s)))
        weight = mean if saved[gid] is None else max(saved[gid], 1e-3 * mean)
        out[gid] = (s / scale if scale > 0 else s) / (weight / mean)
    return out


class _ChannelRanking:
    """The channel selection of :class:`~ridurre.pruning.BasePruning` (a base of that class)."""

    def check_layers(self, model) -> None:
        """Raise ``ValueError`` when a ``layers`` pattern matches no layer of ``model`` or the
        selection leaves no prunable channel group (``run_pruning`` checks it first)."""
        self._check_layer_selection(model, _graph.trace_model(model, rules=self._rules))

    def _check_layer_selection(self, model, trace):
        """``layers`` patterns must each match a layer of ``model`` and select a prunable group."""
        if self._include is None:
            return
        paths = [use.path for use in trace.uses.values()]
        unmatched = [p for p, found in self._include.matching(paths).items() if not found]
        if unmatched:
            raise ValueError(
                f"layers: {', '.join(map(repr, unmatched))} match(es) no layer of model {model.name!r} "
                f"(its layers: {', '.join(paths[:20])}{', ...' if len(paths) > 20 else ''})"
            )
        if not any(self.eligible(g) for g in trace.groups()):
            prunable = sorted({p for g in trace.groups() if g.prunable and g.size > 1 for p in g.producers})
            raise ValueError(
                f"layers: {', '.join(map(repr, self._include.patterns))} select(s) no prunable channel group of "
                f"model {model.name!r} (a coupled group is pruned only when all its producers are selected; "
                f"prunable producers: {', '.join(prunable) or 'none'})"
            )

    def _factor_for(self, group, factor):
        for patterns, value in self._layer_factors:
            if any(patterns.matches(p) for p in group.producers):
                return value
        if self._prune_bins is not None and group.kind not in HEAD_KINDS:
            return self._prune_bins.factor_for(group.size, default=factor)
        return factor

    def _bounds(self, group):
        """Most channels the group may still lose (``min_channels``, ``max_fraction_per_layer``
        of its ORIGINAL channels, counting what earlier iterations removed)."""
        original = self._original_sizes.get(group.producers[0], group.size)
        already = original - group.size
        # head dimensions keep 2: with one, Keras's TensorFlow backend adds the (heads, 1) biases of
        # attention projections along the wrong axis when the sequence is as long as there are heads
        limit = group.size - max(self._min_channels, 2 if group.kind == "head_dims" else 1)
        if self._max_fraction is not None:
            limit = min(limit, int(math.floor(self._max_fraction * original)) - already)
        return max(0, limit)

    def _step_count(self, group, factor):
        """Channels this step removes from ``group``, within its bounds and ``round_to``."""
        round_to = None if group.kind in HEAD_KINDS else self._round_to
        return _selection.removal_count(
            group.size, self._wanted(group, factor), max_removable=self._bounds(group), round_to=round_to
        )

    def _plan(self, views, factor):
        """Channels to remove per group (dict group id -> group channel indices) for ``factor``."""
        legacy = self._overrides("run_pruning_for_conv2d_layer")
        if self._ranking == "global" and not legacy:
            return self._plan_global(views, factor)
        if self._ranking == "isomorphic" and not legacy:
            return self._plan_isomorphic(views, factor)
        plan = {}
        for view in views:
            n_remove = self._step_count(view.group, factor)
            if n_remove <= 0:
                continue
            if legacy:
                chosen = self._legacy_select(view, factor)
            else:
                chosen = self._checked_selection(view, self.select_channels(view, n_remove), n_remove)
            if chosen is not None and len(chosen):
                plan[view.group.id] = chosen
        return plan

    def _checked_selection(self, view, chosen, n_remove):
        chosen = np.asarray(chosen, dtype=np.int64).ravel()
        if chosen.size and (chosen.min() < 0 or chosen.max() >= view.size):
            raise ValueError(
                f"{type(self).__name__} selected channels out of range for group {view.name!r} "
                f"of {view.size} channels: {chosen.tolist()}"
            )
        if len(np.unique(chosen)) != len(chosen):
            raise ValueError(f"{type(self).__name__} selected some channels of group {view.name!r} twice")
        if len(chosen) > n_remove:
            raise ValueError(
                f"{type(self).__name__} selected {len(chosen)} channels of group {view.name!r}, "
                f"more than the {n_remove} allowed"
            )
        return np.sort(chosen)

    def _plan_isomorphic(self, views, factor):
        """One ranking over each set of structurally identical groups (``GroupView.structure``)."""
        classes = {}
        for view in views:
            classes.setdefault(view.structure(), []).append(view)
        plan = {}
        for members in classes.values():
            plan.update(self._plan_global(members, factor))
        return plan

    def _global_scores(self, views):
        """Scores comparable across groups, and whether ``allocate_global`` must still normalize
        them: normalized by the criterion's ``normalizer``, or, for a subclass scoring channels
        itself, left to ``allocate_global`` (divided by their mean absolute value, as 0.0.2)."""
        scores = {v.group.id: np.asarray(self.score_channels(v), dtype=np.float64) for v in views}
        if self._overrides("score_channels"):
            return scores, True
        normalizer = self._criterion.normalizer
        return {gid: normalize_scores(s, normalizer) for gid, s in scores.items()}, False

    def _plan_global(self, views, factor):
        """One ranking over all groups (scores normalized per group by the criterion's normalizer,
        or weighted by the time a channel saves with a latency table), within per-group bounds;
        heads are not ranked against channels: each attention layer loses its share."""
        heads = [v for v in views if v.group.kind in HEAD_KINDS]
        views = [v for v in views if v.group.kind not in HEAD_KINDS]
        bounded = {}
        for view in heads:
            n_remove = self._step_count(view.group, factor)
            if n_remove > 0:
                bounded[view.group.id] = self._checked_selection(view, self.select_channels(view, n_remove), n_remove)
        if not views:
            return bounded
        scores, normalize = self._global_scores(views)
        total = sum(self._wanted(v.group, factor) for v in views)
        if self._latency_table is not None:
            scores, normalize = _per_time_saved(scores, views, self._latency_table), False
        plan = _selection.allocate_global(
            scores, total, min_channels=self._min_channels, round_to=self._round_to, normalize=normalize
        )
        for view in views:
            idx = np.asarray(plan.get(view.group.id, []), dtype=np.int64)
            cap = self._bounds(view.group)
            if len(idx) > cap:  # keep the lowest-scored within the bound
                idx = np.sort(idx[np.argsort(scores[view.group.id][idx], kind="stable")[:cap]])
            if len(idx):
                bounded[view.group.id] = idx
        return bounded

    def _legacy_select(self, view, factor):
        conv = next(((p, lay) for p, lay in view.producer_layers() if isinstance(lay, keras.layers.Conv2D)), None)
        if conv is None:
            return None
        path, layer = conv
        indices = self.run_pruning_for_conv2d_layer(self._factor_for(view.group, factor), layer, layer.get_weights()[0])
        positions = view.output_index(path)
        chosen = np.unique(positions[np.asarray(list(indices), dtype=np.int64)]) if len(indices) else np.array([], int)
        return chosen[chosen >= 0][: self._bounds(view.group)]

    def _plan_step(self, model, factor, iteration, recorder=None):
        """``(trace, plan, budget)`` of one step: the channels to remove per group (group id ->
        group channel indices) for ``factor``, fitted to the limits; ``budget`` is ``None`` when
        no limit is set."""
        trace = self._trace(model)
        recorder = recorder or ActivationRecorder(model, trace)
        views = [
            GroupView(
                g,
                trace,
                model,
                self._seed + iteration,
                activations=recorder,
                n_remove=self._wanted(g, factor),
            )
            for g in trace.groups()
            if self.eligible(g)
        ]
        if not views:
            return trace, {}, None
        plan, budget = self._fit_to_limits(model, trace, self._plan(views, factor))
        return trace, {gid: idx for gid, idx in plan.items() if len(idx)}, budget
