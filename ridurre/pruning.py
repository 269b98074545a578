"""The prune-and-finetune loop: :class:`BasePruning`.

Each iteration: trace the model into channel groups -> score each eligible group -> choose the
channels to remove (within the per-layer bounds and the overall limit) -> delete them in one
rebuild -> verify the new model -> ``model_compile_fn(model)`` ->
``model_finetune_fn(model, initial_epoch, end_epoch)`` -> record and checkpoint. It stops when
the iteration limit or the pruning limit is reached, or nothing more can be removed.

Which hook to implement in a subclass:

* ``score_channels(view)`` (general): return one score per channel of a group (higher = more
  important). Works for conv filters, dense units and coupled residual groups alike; the base
  class removes the lowest scores. ``view`` is a :class:`GroupView`.
* ``select_channels(view, n_remove)``: when the method picks a *set* (e.g. KMeans keeps one
  channel per cluster) rather than ranking.
* ``run_pruning_for_conv2d_layer(pruning_factor, layer, layer_weight_mtx)`` (ridurre 0.0.2):
  return the filter indices to remove from a Conv2D layer. Still supported: it is called for
  every eligible group produced by a Conv2D, and the indices apply to the whole group.
"""

from __future__ import annotations

import abc
import json
import logging
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np

import keras

from ridurre import graph as _graph
from ridurre._validation import check_int, check_unit
from ridurre import selection as _selection
from ridurre import surgeon as _surgeon
from ridurre.checkpoints import load_state, save_model_atomic, save_state, write_history
from ridurre.views import GroupView

__all__ = ["BasePruning", "IterationRecord"]

logger = logging.getLogger("ridurre")


@dataclass
class IterationRecord:
    """What one iteration did (``BasePruning.history`` holds one per iteration)."""

    iteration: int
    factor: float
    epoch: int
    removed: dict  # producer layer -> removed output channels (of the model before the step)
    channels: dict  # producer layer -> channels after the step
    filters: int
    params: int
    macs: int
    pruning_percent: float
    metric: float | None = None
    finetune: object = None
    seconds: float = 0.0

    def to_dict(self):
        return asdict(self)


def _producer_channels(trace):
    """Channels of every producer layer (Conv, Dense, ...), by path."""
    return {use.path: int(use.out_shape[-1]) for use in trace.uses.values()
            if use.rule is not None and use.rule.produces and use.out_shape}


def _prunable_filters(trace):
    """The "filters" the pruning percent counts: output channels of the producers of prunable
    groups (the classifier and other unprunable layers are left out)."""
    channels = _producer_channels(trace)
    return sum(channels.get(p, 0) for g in trace.groups() if g.prunable for p in g.producers)


def _history_summary(result):
    """A JSON-friendly view of what the finetune callback returned (e.g. a keras History)."""
    history = getattr(result, "history", None)
    if isinstance(history, dict):
        return {k: [float(v) for v in vals] for k, vals in history.items()}
    if isinstance(result, (int, float, str, bool)) or result is None:
        return result
    if isinstance(result, dict):
        return {str(k): (float(v) if isinstance(v, (int, float, np.floating)) else str(v)) for k, v in result.items()}
    return repr(result)


def _metric_from(summary):
    if isinstance(summary, dict):
        for key in ("val_accuracy", "val_acc", "accuracy", "acc", "val_loss", "loss"):
            values = summary.get(key)
            if isinstance(values, list) and values:
                return float(values[-1])
            if isinstance(values, float):
                return values
    if isinstance(summary, (int, float)) and not isinstance(summary, bool):
        return float(summary)
    return None


def _distribution_scope():
    """The active tf.distribute strategy's scope, if TensorFlow is in use and one is active."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and keras.backend.backend() == "tensorflow" and tf.distribute.has_strategy():
        return tf.distribute.get_strategy().scope()
    return nullcontext()  # a Keras distribution (JAX) is global: models built now use it


class BasePruning(abc.ABC):
    """Iterative prune-and-finetune loop; subclass it with a criterion.

    Args:
        pruning_factor: per-iteration factor (its meaning is the subclass's: a removal factor
            for random/L1 pruning, a keep factor for KMeans, as in ridurre 0.0.2).
        model_compile_fn: ``fn(model)`` compiling a rebuilt model.
        model_finetune_fn: ``fn(model, initial_epoch, end_epoch)`` or ``None`` (no finetune).
            Its return value (e.g. a keras ``History``) is recorded.
        nb_finetune_epochs: epochs per finetune; ``end_epoch = initial_epoch + nb_finetune_epochs``.
        nb_trained_for_epochs: epochs the model was trained for before pruning.
        maximum_prune_iterations: stop after this many iterations (``None``: no limit).
        maximum_pruning_percent: stop when this share of the original filters (output channels
            of the prunable layers) is removed; the last step is shrunk so it is never crossed.
        max_params_reduction, max_macs_reduction: the same limit on parameters or MACs
            (e.g. 0.5 for a 2x MAC reduction); ``target_speedup=s`` means
            ``max_macs_reduction = 1 - 1/s``.
        layers: prune only groups whose producers ALL match one of these (regular expressions on
            the layer name, matched in full, or layer objects). ``None``: every prunable group.
        exclude: leave alone every group with a producer matching one of these.
        layer_factors: ``{pattern: factor}`` overriding the factor for matching layers.
        min_channels: never leave a group with fewer channels.
        max_fraction_per_layer: never remove more than this share of a group's original channels.
        round_to: keep channel counts multiple of this (e.g. 8, for real speed-ups).
        ranking: ``"local"`` (each group loses its share) or ``"global"`` (one ranking over all
            groups, scores normalized per group).
        seed: seeds every random choice (per iteration), so runs are reproducible.
        output_dir: write ``history.json``/``history.csv`` and a ``.keras`` checkpoint after
            every iteration there (atomic writes); ``resume=True`` continues from them.
        verify: after every surgery, run the model on a few inputs and check the output shape
            and that values are finite (``"exact"`` also compares with the zeroed model).
        evaluate_fn: optional ``fn(model) -> float`` logged as the metric after each finetune.
    """

    def __init__(self, pruning_factor, model_compile_fn, model_finetune_fn, nb_finetune_epochs,
                 nb_trained_for_epochs=0, maximum_prune_iterations=None, maximum_pruning_percent=0.9, *,
                 max_params_reduction=None, max_macs_reduction=None, target_speedup=None,
                 layers=None, exclude=None, layer_factors=None, min_channels=1,
                 max_fraction_per_layer=None, round_to=None, ranking="local", seed=0,
                 output_dir=None, resume=False, verify=True, evaluate_fn=None):
        self._pruning_factor = self._check_factor(pruning_factor, "pruning_factor")
        if not callable(model_compile_fn):
            raise TypeError("model_compile_fn must be a callable fn(model)")
        if model_finetune_fn is not None and not callable(model_finetune_fn):
            raise TypeError("model_finetune_fn must be a callable fn(model, initial_epoch, end_epoch) or None")
        self._model_compile_fn = model_compile_fn
        self._model_finetune_fn = model_finetune_fn
        self._nb_finetune_epochs = self._check_int(nb_finetune_epochs, "nb_finetune_epochs", 0)
        self._current_nb_of_epochs = self._check_int(nb_trained_for_epochs, "nb_trained_for_epochs", 0)
        self._maximum_prune_iterations = (None if maximum_prune_iterations is None
                                          else self._check_int(maximum_prune_iterations, "maximum_prune_iterations", 1))
        if target_speedup is not None:
            if not isinstance(target_speedup, (int, float)) or target_speedup <= 1:
                raise ValueError(f"target_speedup must be a number > 1, got {target_speedup!r}")
            max_macs_reduction = 1.0 - 1.0 / float(target_speedup)
        self._limits = {
            "filters": self._check_fraction(maximum_pruning_percent, "maximum_pruning_percent"),
            "params": self._check_fraction(max_params_reduction, "max_params_reduction"),
            "macs": self._check_fraction(max_macs_reduction, "max_macs_reduction"),
        }
        self._include = self._patterns(layers, "layers")
        self._exclude = self._patterns(exclude, "exclude")
        self._layer_factors = {}
        for pattern, factor in (layer_factors or {}).items():
            self._layer_factors[pattern] = self._check_factor(factor, f"layer_factors[{pattern!r}]")
        self._min_channels = self._check_int(min_channels, "min_channels", 1)
        self._max_fraction = self._check_fraction(max_fraction_per_layer, "max_fraction_per_layer")
        self._round_to = None if round_to is None else self._check_int(round_to, "round_to", 1)
        if ranking not in ("local", "global"):
            raise ValueError(f"ranking must be 'local' or 'global', got {ranking!r}")
        self._ranking = ranking
        self._seed = self._check_int(seed, "seed", 0)
        self._output_dir = None if output_dir is None else os.fspath(output_dir)
        self._resume = bool(resume)
        if verify not in (True, False, "exact"):
            raise ValueError(f"verify must be True, False or 'exact', got {verify!r}")
        self._verify = verify
        self._evaluate_fn = evaluate_fn
        self._prune_bins = None
        self.history: list[IterationRecord] = []
        self._check_hooks()

    # -- validation helpers ------------------------------------------------------------------
    @staticmethod
    def _check_int(value, name, minimum):
        return check_int(value, name, minimum)

    @staticmethod
    def _check_fraction(value, name):
        return None if value is None else check_unit(value, name, lower_open=True)

    @staticmethod
    def _check_factor(value, name):
        return check_unit(value, name)

    @staticmethod
    def _patterns(values, name):
        if values is None:
            return None
        if isinstance(values, (str, keras.layers.Layer)):
            values = [values]
        out = []
        for v in values:
            if isinstance(v, keras.layers.Layer):
                out.append(re.escape(v.name))
            elif isinstance(v, str):
                try:
                    re.compile(v)
                except re.error as exc:
                    raise ValueError(f"{name}: {v!r} is not a valid regular expression: {exc}") from None
                out.append(v)
            else:
                raise TypeError(f"{name} must hold layer names, regular expressions or layers, got {v!r}")
        return out

    def _check_hooks(self):
        cls = type(self)
        overridden = [name for name in ("score_channels", "select_channels", "run_pruning_for_conv2d_layer")
                      if getattr(cls, name) is not getattr(BasePruning, name)]
        if not overridden:
            raise TypeError(f"{cls.__name__} must implement score_channels(view), select_channels(view, n_remove) "
                            "or run_pruning_for_conv2d_layer(pruning_factor, layer, layer_weight_mtx)")

    # -- hooks -------------------------------------------------------------------------------
    def score_channels(self, view: GroupView) -> np.ndarray:
        """Per-channel scores of a group, higher = more important. Override in a subclass."""
        raise NotImplementedError

    def select_channels(self, view: GroupView, n_remove: int) -> np.ndarray:
        """The ``n_remove`` channels of the group to remove (default: the lowest scores)."""
        scores = np.asarray(self.score_channels(view), dtype=np.float64)
        if scores.shape != (view.size,):
            raise ValueError(f"{type(self).__name__}.score_channels returned shape {scores.shape} "
                             f"for group {view.name!r} of {view.size} channels")
        return _selection.select_lowest(scores, n_remove)

    def run_pruning_for_conv2d_layer(self, pruning_factor, layer, layer_weight_mtx):
        """ridurre 0.0.2 hook: filter indices of a Conv2D layer to remove."""
        raise NotImplementedError

    def _after_resume(self):
        """Called once ``self.history`` holds the records of a resumed run (for subclasses that
        track filters across iterations)."""

    def removal_count(self, nb_channels, factor):
        """How many of ``nb_channels`` one step removes with ``factor`` (a removal factor here;
        KMeans overrides it with the original's keep-factor semantics)."""
        return _selection.channels_to_keep(nb_channels, 1.0 - factor)[1]

    def define_prune_bins(self, channel_number_bins, pruning_factors_for_bins):
        """Use a different factor for groups of different widths (ridurre 0.0.2 API): a group with
        ``bins[i] <= channels < bins[i + 1]`` uses ``pruning_factors_for_bins[i]``."""
        self._prune_bins = _selection.define_prune_bins(channel_number_bins, pruning_factors_for_bins)

    # -- the loop ----------------------------------------------------------------------------
    def run_pruning(self, model, prune_factor_scheduler_fn=None, custom_objects_inside_model=None):
        """Run the loop on ``model`` (never modified) and return ``(pruned_model, last_epoch)``.

        Args:
            model: a trained Functional or Sequential model.
            prune_factor_scheduler_fn: ``fn(factor, iteration) -> factor`` called before every
                iteration (see :mod:`ridurre.schedules` for ready-made ones).
            custom_objects_inside_model: custom objects needed to load checkpoints back.
        """
        _graph.check_model(model)
        self._custom_objects = custom_objects_inside_model
        original = _graph.trace_model(model)
        self._original_channels = _producer_channels(original)
        self._original_filters = _prunable_filters(original)
        self._original_sizes = {}
        for group in original.groups():
            self._original_sizes[group.producers[0]] = group.size
        self._original_cost = self._cost(model)
        factor = self._pruning_factor
        iteration = 0
        self.history = []
        if self._resume and self._output_dir:
            state = load_state(self._output_dir)
            if state is not None:
                model = keras.models.load_model(state["checkpoint"], custom_objects=custom_objects_inside_model,
                                                compile=False, safe_mode=True)
                with _distribution_scope():
                    self._model_compile_fn(model)
                iteration, factor = state["iteration"] + 1, state["factor"]
                self._current_nb_of_epochs = state["epoch"]
                self.history = [IterationRecord(**r) for r in state["history"]]
                self._after_resume()
                logger.info("resuming after iteration %d from %s", state["iteration"], state["checkpoint"])
                if state.get("finished"):
                    return model, self._current_nb_of_epochs
        while self._maximum_prune_iterations is None or iteration < self._maximum_prune_iterations:
            if prune_factor_scheduler_fn is not None:
                factor = float(prune_factor_scheduler_fn(factor, iteration))
                self._check_factor(factor, "the factor returned by prune_factor_scheduler_fn")
            started = time.perf_counter()
            new_model, removed = self._prune_step(model, factor, iteration)
            if new_model is None:
                logger.info("iteration %d: nothing left to prune within the limits; stopping", iteration)
                break
            with _distribution_scope():
                try:
                    self._model_compile_fn(new_model)
                except Exception as exc:
                    raise RuntimeError(f"model_compile_fn failed after pruning iteration {iteration}: {exc}") from exc
                result = None
                end_epoch = self._current_nb_of_epochs + self._nb_finetune_epochs
                if self._model_finetune_fn is not None:
                    try:
                        result = self._model_finetune_fn(new_model, self._current_nb_of_epochs, end_epoch)
                    except Exception as exc:
                        raise RuntimeError(f"model_finetune_fn failed in pruning iteration {iteration}: {exc}") from exc
            self._current_nb_of_epochs = end_epoch
            record = self._record(model, new_model, iteration, factor, removed, result, time.perf_counter() - started)
            model = new_model
            self.history.append(record)
            done = self._limit_reached(record)
            self._checkpoint(model, iteration, factor, finished=done)
            if done:
                logger.info("pruning limit reached after iteration %d", iteration)
                break
            iteration += 1
        return model, self._current_nb_of_epochs

    # -- one step ----------------------------------------------------------------------------
    def _eligible(self, group):
        if not group.prunable or group.size < 2:
            return False
        names = [p.rsplit("/", 1)[-1] for p in group.producers] + list(group.producers)
        # a coupled group is pruned only when every one of its producers is included
        if self._include is not None and not all(
                any(re.fullmatch(p, n) for p in self._include for n in (path, path.rsplit("/", 1)[-1]))
                for path in group.producers):
            return False
        if self._exclude is not None and any(re.fullmatch(p, n) for p in self._exclude for n in names):
            return False
        return True

    def _factor_for(self, group, factor):
        for pattern, value in self._layer_factors.items():
            if any(re.fullmatch(pattern, p) or re.fullmatch(pattern, p.rsplit("/", 1)[-1]) for p in group.producers):
                return value
        if self._prune_bins is not None:
            return self._prune_bins.factor_for(group.size, default=factor)
        return factor

    def _bounds(self, group):
        original = self._original_sizes.get(group.producers[0], group.size)
        already = original - group.size
        limit = group.size - self._min_channels
        if self._max_fraction is not None:
            limit = min(limit, int(math.floor(self._max_fraction * original)) - already)
        return max(0, limit)

    def _plan(self, model, trace, views, factor, iteration):
        """Channels to remove per group (dict group id -> group channel indices) for ``factor``."""
        legacy = type(self).run_pruning_for_conv2d_layer is not BasePruning.run_pruning_for_conv2d_layer
        if self._ranking == "global" and not legacy:
            return self._plan_global(views, factor)
        plan = {}
        for view in views:
            n_remove = min(self.removal_count(view.size, self._factor_for(view.group, factor)), self._bounds(view.group))
            if self._round_to:
                kept = view.size - n_remove
                n_remove = view.size - min(view.size, -(-kept // self._round_to) * self._round_to)
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
            raise ValueError(f"{type(self).__name__} selected channels out of range for group {view.name!r} "
                             f"of {view.size} channels: {chosen.tolist()}")
        if len(np.unique(chosen)) != len(chosen):
            raise ValueError(f"{type(self).__name__} selected some channels of group {view.name!r} twice")
        if len(chosen) > n_remove:
            raise ValueError(f"{type(self).__name__} selected {len(chosen)} channels of group {view.name!r}, "
                             f"more than the {n_remove} allowed")
        return np.sort(chosen)

    def _plan_global(self, views, factor):
        """One ranking over all groups (scores normalized per group), within per-group bounds."""
        scores = {v.group.id: np.asarray(self.score_channels(v), dtype=np.float64) for v in views}
        total = sum(self.removal_count(v.size, self._factor_for(v.group, factor)) for v in views)
        plan = _selection.allocate_global(scores, total, min_channels=self._min_channels, round_to=self._round_to)
        bounded = {}
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
        positions = view.group.positions[path]
        chosen = np.unique(positions[np.asarray(list(indices), dtype=np.int64)]) if len(indices) else np.array([], int)
        return chosen[chosen >= 0][: self._bounds(view.group)]

    def _deleted_roots(self, trace, plan):
        groups = trace.groups()
        if not plan:
            return np.array([], dtype=np.int64)
        return np.concatenate([groups[gid].roots[idx] for gid, idx in plan.items()])

    def _reductions(self, trace, deleted):
        """Share of the original filters / params / MACs gone once ``deleted`` is removed
        (MACs scale with each layer's kernel size, since spatial sizes do not change).

        Filters are counted from the channel layouts alone; the per-layer plans that params and
        MACs need (a ``get_config`` and a sliced placeholder per layer) are only made when a
        params or MACs limit is set: ``_fit_to_limits`` calls this dozens of times per step."""
        need_costs = self._limits["params"] is not None or self._limits["macs"] is not None
        plans = _surgeon.plan_layers(trace, deleted, shapes_only=True) if need_costs else None
        prunable = {p for g in trace.groups() if g.prunable for p in g.producers}
        filters = params = 0
        macs = 0.0
        for use in trace.uses.values():
            if _graph._is_model(use.layer):
                continue
            if use.path in prunable and use.out_layout is not None:
                gone = np.isin(trace.units.roots(use.out_layout), deleted).sum() if deleted.size else 0
                filters += len(use.out_layout) - int(gone)
            if plans is None:
                continue
            config, weights = plans[id(use.layer)]
            sizes = {k: int(np.prod(v.shape)) for k, v in (weights or {}).items()}
            params += sum(sizes.values())
            base = trace.cost["layer_macs"].get(use.path)
            if base:
                old = sum(int(np.prod(v)) for k, v in use.layer_weights_shapes.items() if "kernel" in k)
                new = sum(s for k, s in sizes.items() if "kernel" in k)
                macs += base["macs"] * (new / old if old else 1.0)
        reductions = {"filters": 1.0 - filters / max(1, self._original_filters), "params": 0.0, "macs": 0.0}
        if plans is not None:
            total = self._original_cost
            reductions["params"] = 1.0 - params / max(1, total["params"])
            reductions["macs"] = 1.0 - macs / max(1.0, total["macs"]) if total["macs"] else 0.0
        return reductions

    def _within_limits(self, reductions):
        return all(limit is None or reductions[name] <= limit + 1e-9 for name, limit in self._limits.items())

    def _prune_step(self, model, factor, iteration):
        trace = _graph.trace_model(model)
        trace.cost = self._cost(model) if any(self._limits.values()) else None
        for use in trace.uses.values():
            use.layer_weights_shapes = {v.name: tuple(v.shape) for v in getattr(use.layer, "weights", [])}
        views = [GroupView(g, trace, model, self._seed + iteration)
                 for g in trace.groups() if self._eligible(g)]
        if not views:
            return None, {}
        plan = self._plan(model, trace, views, factor, iteration)
        plan = self._fit_to_limits(trace, plan)
        plan = {gid: idx for gid, idx in plan.items() if len(idx)}
        if not plan:
            return None, {}
        surgeon = _surgeon.Surgeon(model)
        removed = {}
        groups = trace.groups()
        for gid, idx in plan.items():
            group = groups[gid]
            for path in group.producers:  # record every producer's removed positions
                per_channel = group.channels_of(path)
                removed[path] = sorted(int(p) for j in idx for p in per_channel[j])
            path = group.producers[0]  # one job per group: the surgeon deletes the coupled rest
            surgeon.add_job("delete_channels", _graph.resolve_layer(model, path), channels=removed[path])
        try:
            with _distribution_scope():
                new_model = surgeon.operate()
        except Exception as exc:
            raise RuntimeError(f"surgery failed in pruning iteration {iteration} "
                               f"(removing {sum(map(len, removed.values()))} channels from "
                               f"{len(removed)} groups): {exc}") from exc
        self._check_model(model, new_model, surgeon, iteration)
        return new_model, removed

    def _fit_to_limits(self, trace, plan):
        """Shrink the plan (each group's removal proportionally) until no limit is crossed."""
        if all(v is None for v in self._limits.values()) or not plan:
            return plan
        if self._within_limits(self._reductions(trace, self._deleted_roots(trace, plan))):
            return plan

        sizes = {g.id: g.size for g in trace.groups()}

        def rounded(gid, n):
            """The largest removal <= n that keeps a multiple of round_to channels."""
            if self._round_to:
                while n > 0 and (sizes[gid] - n) % self._round_to:
                    n -= 1
            return n

        def shrunk(fraction):
            return {gid: idx[: rounded(gid, int(math.floor(len(idx) * fraction)))] for gid, idx in plan.items()}

        lo, hi = 0.0, 1.0
        for _ in range(14):
            mid = (lo + hi) / 2
            if self._within_limits(self._reductions(trace, self._deleted_roots(trace, shrunk(mid)))):
                lo = mid
            else:
                hi = mid
        best = shrunk(lo)
        # top up group by group, one step (a channel, or round_to channels) at a time, while the limits hold
        step = self._round_to or 1
        for gid, idx in plan.items():
            while len(best[gid]) + step <= len(idx):
                trial = {**best, gid: idx[: len(best[gid]) + step]}
                if not self._within_limits(self._reductions(trace, self._deleted_roots(trace, trial))):
                    break
                best = trial
        return best

    def _check_model(self, old, new, surgeon, iteration):
        if not self._verify:
            return
        rng = np.random.default_rng(self._seed)
        xs = [rng.normal(size=(2,) + tuple(t.shape[1:])).astype("float32") for t in old.inputs]
        xs = xs[0] if len(xs) == 1 else xs
        out_new = keras.tree.flatten(new(xs, training=False))
        out_old = keras.tree.flatten(old(xs, training=False))
        for a, b in zip(out_new, out_old):
            a = keras.ops.convert_to_numpy(a)
            if a.shape != tuple(keras.ops.shape(b)):
                raise RuntimeError(f"iteration {iteration}: the pruned model's output shape {a.shape} differs "
                                   f"from the original's {tuple(keras.ops.shape(b))}")
            if not np.isfinite(a).all():
                raise RuntimeError(f"iteration {iteration}: the pruned model produces non-finite values")
        if self._verify == "exact":
            reference = keras.tree.flatten(surgeon._run(zero=True)(xs, training=False))
            for a, b in zip(out_new, reference):
                a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
                scale = max(1.0, float(np.abs(b).max()))
                if not np.allclose(a, b, rtol=1e-4, atol=1e-4 * scale):
                    raise RuntimeError(f"iteration {iteration}: the pruned model differs from the zeroed original "
                                       f"(max abs difference {float(np.abs(a - b).max()):.3g})")

    # -- bookkeeping -------------------------------------------------------------------------
    def _cost(self, model):
        from ridurre.metrics import model_stats

        stats = model_stats(model)
        return {
            "params": int(stats.total_params),
            "macs": float(stats.total_macs),
            "layer_macs": {row.name: {"macs": row.macs} for row in stats.layers if row.macs},
        }

    def _record(self, old, new, iteration, factor, removed, result, seconds):
        trace = _graph.trace_model(new)
        channels = _producer_channels(trace)
        filters = _prunable_filters(trace)
        cost = self._cost(new)
        summary = _history_summary(result)
        metric = float(self._evaluate_fn(new)) if self._evaluate_fn is not None else _metric_from(summary)
        percent = 1.0 - filters / max(1, self._original_filters)
        before = self.history[-1] if self.history else None
        b_filters = before.filters if before else self._original_filters
        b_params = before.params if before else self._original_cost["params"]
        b_macs = before.macs if before else self._original_cost["macs"]
        logger.info(
            "iteration %d: filters %d -> %d, params %s -> %s, MACs %s -> %s, metric %s -> %s (%.1f s)",
            iteration, b_filters, filters, _fmt(b_params), _fmt(cost["params"]), _fmt(b_macs), _fmt(cost["macs"]),
            _fmt_metric(before.metric if before else None), _fmt_metric(metric), seconds,
        )
        return IterationRecord(
            iteration=iteration, factor=float(factor), epoch=self._current_nb_of_epochs, removed=removed,
            channels=channels, filters=filters, params=cost["params"], macs=int(cost["macs"]),
            pruning_percent=percent, metric=metric, finetune=summary, seconds=seconds,
        )

    def _limit_reached(self, record):
        values = {
            "filters": record.pruning_percent,
            "params": 1.0 - record.params / max(1, self._original_cost["params"]),
            "macs": 1.0 - record.macs / max(1.0, self._original_cost["macs"]),
        }
        tolerance = 1.0 / max(1, self._original_filters)
        return any(limit is not None and values[name] >= limit - tolerance for name, limit in self._limits.items())

    def _checkpoint(self, model, iteration, factor, finished):
        if not self._output_dir:
            return
        models_dir = os.path.join(self._output_dir, "models")
        path = os.path.join(models_dir, f"iteration_{iteration:03d}.keras")
        save_model_atomic(model, path)
        history = [r.to_dict() for r in self.history]
        write_history(os.path.join(self._output_dir, "logs"), history)
        save_state(self._output_dir, {
            "iteration": iteration, "factor": factor, "epoch": self._current_nb_of_epochs,
            "checkpoint": path, "history": history, "finished": finished,
        })


def _fmt(value):
    value = float(value)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= div:
            return f"{value / div:.2f}{unit}"
    return f"{value:.0f}"


def _fmt_metric(value):
    return "n/a" if value is None else f"{value:.4f}"
