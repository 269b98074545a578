"""The prune-and-finetune loop: :class:`BasePruning`.

Each iteration: trace the model into channel groups -> score each eligible group -> choose the
channels to remove (within the per-layer bounds and the overall limit) -> delete them in one
rebuild -> verify the new model -> ``model_compile_fn(model)`` ->
``model_finetune_fn(model, initial_epoch, end_epoch)`` -> record and checkpoint. It stops when
the iteration limit or the pruning limit is reached, or nothing more can be removed.

Which hook to implement in a subclass:

* nothing: pass ``criterion="l1"`` (any name of :mod:`ridurre.criteria`, a Criterion class or
  instance) to :class:`Pruner` or to ``BasePruning(..., criterion=...)``.
* ``score_channels(view)`` (general): return one score per channel of a group (higher = more
  important). Works for conv filters, dense units and coupled residual groups alike; the base
  class removes the lowest scores. ``view`` is a :class:`~ridurre.criteria.GroupView`.
* ``select_channels(view, n_remove)``: when the method picks a *set* (e.g. KMeans keeps one
  channel per cluster) rather than ranking.
* ``run_pruning_for_conv2d_layer(pruning_factor, layer, layer_weight_mtx)`` (ridurre 0.0.2):
  return the filter indices to remove from a Conv2D layer. Still supported: it is called for
  every eligible group produced by a Conv2D, and the indices apply to the whole group.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import keras
import numpy as np

from ridurre import graph as _graph
from ridurre._io import save_model_atomic
from ridurre._validation import LayerPatterns, check_callable, check_fraction, check_int, check_unit
from ridurre.criteria import make_criterion
from ridurre.criteria import selection as _selection
from ridurre.criteria.view import ActivationRecorder, GroupView
from ridurre.pruning.checkpoints import load_state, save_state, write_history
from ridurre.pruning.limits import Budget, Limits, fit_to_limits
from ridurre.surgery import Surgeon

__all__ = ["BasePruning", "Pruner", "IterationRecord"]

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
    return {
        use.path: int(use.out_shape[-1])
        for use in trace.uses.values()
        if use.rule is not None and use.rule.produces and use.out_shape
    }


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


class BasePruning:
    """Iterative prune-and-finetune loop; give it a criterion or subclass it with one.

    Args:
        pruning_factor: per-iteration factor (its meaning is the subclass's: a removal factor
            for random/L1 pruning, a keep factor for KMeans, as in ridurre 0.0.2).
        model_compile_fn: ``fn(model)`` compiling a rebuilt model.
        model_finetune_fn: ``fn(model, initial_epoch, end_epoch)`` or ``None`` (no finetune).
            Its return value (e.g. a keras ``History``) is recorded.
        nb_finetune_epochs: epochs per finetune; ``end_epoch = initial_epoch + nb_finetune_epochs``.
        nb_trained_for_epochs: epochs the model was trained for before pruning. Its position
            (5th) is ridurre 0.0.2's ``BasePruning`` order; the method classes take
            ``maximum_prune_iterations`` there, so a 5th positional argument here warns: pass it
            by keyword.
        maximum_prune_iterations: stop after this many iterations (``None``: no limit).
        maximum_pruning_percent: stop when this share of the original filters (output channels
            of the prunable layers) is removed; the last step is shrunk so it is never crossed.
        max_params_reduction, max_macs_reduction: the same limit on parameters or MACs
            (e.g. 0.5 for a 2x MAC reduction); ``target_speedup=s`` means
            ``max_macs_reduction = 1 - 1/s``.
        criterion: how channels are ranked, when the class does not say it itself: a name of
            :mod:`ridurre.criteria` (``"l1"``, ``"kmeans"``, ``"apoz"``...), a
            :class:`~ridurre.criteria.Criterion` class or instance.
        criterion_options: arguments for the criterion (``{"data": x}`` for activation criteria).
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
        rules: extra layer rules (see :mod:`ridurre.rules`) for the layers of this model.
        inline_composites: first replace the composite layers of the model (subclassed layers
            made of other layers, such as keras-hub's blocks) by the layers of their ``call``
            (:func:`ridurre.graph.inline_composites`), so that their inner channels are pruned
            too; the pruned model is then a Functional model without those classes.
    """

    criterion = None
    """The criterion of a method class (a name, Criterion class or instance); ``criterion=`` overrides it."""

    def __init__(
        self,
        pruning_factor,
        model_compile_fn,
        model_finetune_fn,
        nb_finetune_epochs,
        *args,
        nb_trained_for_epochs=0,
        maximum_prune_iterations=None,
        maximum_pruning_percent=0.9,
        max_params_reduction=None,
        max_macs_reduction=None,
        target_speedup=None,
        criterion=None,
        criterion_options=None,
        layers=None,
        exclude=None,
        layer_factors=None,
        min_channels=1,
        max_fraction_per_layer=None,
        round_to=None,
        ranking="local",
        seed=0,
        output_dir=None,
        resume=False,
        verify=True,
        evaluate_fn=None,
        rules=None,
        inline_composites=True,
    ):
        if args:
            nb_trained_for_epochs, maximum_prune_iterations, maximum_pruning_percent = _legacy_positional(
                args, nb_trained_for_epochs, maximum_prune_iterations, maximum_pruning_percent
            )
        self._pruning_factor = self._check_factor(pruning_factor, "pruning_factor")
        check_callable(model_compile_fn, "model_compile_fn", "fn(model)", optional=False)
        check_callable(model_finetune_fn, "model_finetune_fn", "fn(model, initial_epoch, end_epoch)")
        self._model_compile_fn = model_compile_fn
        self._model_finetune_fn = model_finetune_fn
        self._nb_finetune_epochs = check_int(nb_finetune_epochs, "nb_finetune_epochs", 0)
        self._current_nb_of_epochs = check_int(nb_trained_for_epochs, "nb_trained_for_epochs", 0)
        self._maximum_prune_iterations = (
            None
            if maximum_prune_iterations is None
            else check_int(maximum_prune_iterations, "maximum_prune_iterations", 1)
        )
        if target_speedup is not None:
            if (
                isinstance(target_speedup, bool)
                or not isinstance(target_speedup, (int, float))
                or not target_speedup > 1
            ):
                raise ValueError(f"target_speedup must be a number > 1, got {target_speedup!r}")
            max_macs_reduction = 1.0 - 1.0 / float(target_speedup)
        self._limits = Limits(
            filters=check_fraction(maximum_pruning_percent, "maximum_pruning_percent"),
            params=check_fraction(max_params_reduction, "max_params_reduction"),
            macs=check_fraction(max_macs_reduction, "max_macs_reduction"),
        )
        self._include = LayerPatterns.parse(layers, "layers")
        self._exclude = LayerPatterns.parse(exclude, "exclude")
        self._layer_factors = {}
        for pattern, factor in (layer_factors or {}).items():
            LayerPatterns(pattern, "layer_factors")
            self._layer_factors[pattern] = self._check_factor(factor, f"layer_factors[{pattern!r}]")
        self._factor_patterns = {p: LayerPatterns(p, "layer_factors") for p in self._layer_factors}
        self._min_channels = check_int(min_channels, "min_channels", 1)
        self._max_fraction = check_fraction(max_fraction_per_layer, "max_fraction_per_layer")
        self._round_to = None if round_to is None else check_int(round_to, "round_to", 1)
        if ranking not in ("local", "global"):
            raise ValueError(f"ranking must be 'local' or 'global', got {ranking!r}")
        self._ranking = ranking
        self.seed = self._seed = check_int(seed, "seed", 0)
        self._output_dir = None if output_dir is None else os.fspath(output_dir)
        self._resume = bool(resume)
        if verify not in (True, False, "exact"):
            raise ValueError(f"verify must be True, False or 'exact', got {verify!r}")
        self._verify = verify
        self._evaluate_fn = check_callable(evaluate_fn, "evaluate_fn", "fn(model) -> float")
        self._rules = rules
        self._inline = bool(inline_composites)
        self._prune_bins = None
        spec = criterion if criterion is not None else type(self).criterion
        self._criterion = None if spec is None else make_criterion(spec, **(criterion_options or {}))
        self.history: list[IterationRecord] = []
        self._check_hooks()

    # -- validation helpers ------------------------------------------------------------------
    @staticmethod
    def _check_int(value, name, minimum):
        return check_int(value, name, minimum)

    @staticmethod
    def _check_fraction(value, name):
        return check_fraction(value, name)

    @staticmethod
    def _check_factor(value, name):
        return check_unit(value, name)

    def _check_hooks(self):
        cls = type(self)
        overridden = [
            name
            for name in ("score_channels", "select_channels", "run_pruning_for_conv2d_layer")
            if getattr(cls, name) is not getattr(BasePruning, name)
        ]
        if not overridden and self._criterion is None:
            raise TypeError(
                f"{cls.__name__} needs a criterion: pass criterion='l1' (or any name of "
                "ridurre.criteria), or it must implement score_channels(view), select_channels(view, "
                "n_remove) or run_pruning_for_conv2d_layer(pruning_factor, layer, layer_weight_mtx)"
            )

    # -- hooks -------------------------------------------------------------------------------
    @property
    def criterion_object(self):
        """The :class:`~ridurre.criteria.Criterion` ranking channels, or ``None`` for a subclass
        that scores channels itself."""
        return self._criterion

    def score_channels(self, view: GroupView) -> np.ndarray:
        """Per-channel scores of a group, higher = more important (default: the criterion's)."""
        if self._criterion is None:
            raise NotImplementedError(f"{type(self).__name__} implements no score_channels(view)")
        return self._criterion.score(view)

    def select_channels(self, view: GroupView, n_remove: int) -> np.ndarray:
        """The ``n_remove`` channels of the group to remove (default: the criterion's choice, or
        the lowest scores of ``score_channels``)."""
        if self._criterion is not None and type(self).score_channels is BasePruning.score_channels:
            return self._criterion.select(view, n_remove)
        scores = np.asarray(self.score_channels(view), dtype=np.float64)
        if scores.shape != (view.size,):
            raise ValueError(
                f"{type(self).__name__}.score_channels returned shape {scores.shape} "
                f"for group {view.name!r} of {view.size} channels"
            )
        return _selection.select_lowest(scores, n_remove)

    def run_pruning_for_conv2d_layer(self, pruning_factor: float, layer, layer_weight_mtx: np.ndarray):
        """ridurre 0.0.2 hook: filter indices of a Conv2D layer to remove."""
        raise NotImplementedError

    def _after_resume(self):
        """Called once ``self.history`` holds the records of a resumed run (for subclasses that
        track filters across iterations)."""

    def removal_count(self, nb_channels: int, factor: float) -> int:
        """How many of ``nb_channels`` one step removes with ``factor`` (a removal factor here;
        KMeans overrides it with the original's keep-factor semantics)."""
        return _selection.channels_to_keep(nb_channels, 1.0 - factor)[1]

    def define_prune_bins(self, channel_number_bins, pruning_factors_for_bins) -> None:
        """Use a different factor for groups of different widths (ridurre 0.0.2 API): a group with
        ``bins[i] <= channels < bins[i + 1]`` uses ``pruning_factors_for_bins[i]``."""
        self._prune_bins = _selection.define_prune_bins(channel_number_bins, pruning_factors_for_bins)

    def eligible(self, group) -> bool:
        """Whether the loop prunes ``group`` (prunable, two channels or more, selected by
        ``layers``/``exclude``: a coupled group only when every producer is included)."""
        if not group.prunable or group.size < 2:
            return False
        if self._include is not None and not all(self._include.matches(p) for p in group.producers):
            return False
        if self._exclude is not None and any(self._exclude.matches(p) for p in group.producers):
            return False
        return True

    def score_groups(self, model: keras.Model) -> list:
        """``[(group, scores)]`` of the eligible groups of ``model`` by this method's criterion
        (what the first iteration ranks; groups the criterion cannot score are left out)."""
        model = self._inlined(model)
        trace = _graph.trace_model(model, rules=self._rules)
        recorder = ActivationRecorder(model, trace)
        out = []
        for group in trace.groups():
            if not self.eligible(group):
                continue
            view = GroupView(
                group,
                trace,
                model,
                self._seed,
                activations=recorder,
                n_remove=self.removal_count(group.size, self._factor_for(group, self._pruning_factor)),
            )
            try:
                out.append((group, np.asarray(self.score_channels(view), dtype=float)))
            except (ValueError, NotImplementedError) as exc:
                logger.debug("no scores for group %s: %s", group.producers, exc)
        return out

    # -- the loop ----------------------------------------------------------------------------
    def run_pruning(
        self, model: keras.Model, prune_factor_scheduler_fn=None, custom_objects_inside_model: dict | None = None
    ) -> tuple[keras.Model, int]:
        """Run the loop on ``model`` (never modified) and return ``(pruned_model, last_epoch)``.

        Args:
            model: a trained Functional or Sequential model.
            prune_factor_scheduler_fn: ``fn(factor, iteration) -> factor`` called before every
                iteration (see :mod:`ridurre.pruning.schedules` for ready-made ones).
            custom_objects_inside_model: custom objects needed to load checkpoints back.
        """
        _graph.check_model(model)
        check_callable(prune_factor_scheduler_fn, "prune_factor_scheduler_fn", "fn(factor, iteration) -> factor")
        self._custom_objects = custom_objects_inside_model
        self._cache = None
        given, model = model, self._inlined(model)
        original = self._trace(model)
        self._original_channels = _producer_channels(original)
        self._original_filters = _prunable_filters(original)
        self._original_sizes = {group.producers[0]: group.size for group in original.groups()}
        self._original_cost = self._cost(model)
        factor = self._pruning_factor
        iteration = 0
        self.history = []
        if self._resume and self._output_dir:
            state = load_state(self._output_dir)
            if state is not None:
                model = keras.models.load_model(
                    state["checkpoint"], custom_objects=custom_objects_inside_model, compile=False, safe_mode=True
                )
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
            record = self._record(new_model, iteration, factor, removed, result, time.perf_counter() - started)
            model = new_model
            self.history.append(record)
            done = self._limit_reached(record)
            self._checkpoint(model, iteration, factor, finished=done)
            if done:
                logger.info("pruning limit reached after iteration %d", iteration)
                break
            iteration += 1
        return (model if self.history else given), self._current_nb_of_epochs

    # -- one step ----------------------------------------------------------------------------
    def _inlined(self, model):
        """``model`` with its composite layers inlined (when asked for), the refusals logged."""
        if not self._inline:
            return model
        result = _graph.inline(model, self._rules)
        for refusal in result.refused:
            logger.info("composite layer %s (%s) kept whole: %s", refusal.path, refusal.layer_class, refusal.reason)
        return result.model

    def _trace(self, model):
        """The trace of ``model``, reused when the last step already traced it."""
        if self._cache is None or self._cache[0] is not model:
            self._cache = (model, _graph.trace_model(model, rules=self._rules), None)
        return self._cache[1]

    def _factor_for(self, group, factor):
        for pattern, value in self._layer_factors.items():
            if any(self._factor_patterns[pattern].matches(p) for p in group.producers):
                return value
        if self._prune_bins is not None:
            return self._prune_bins.factor_for(group.size, default=factor)
        return factor

    def _bounds(self, group):
        """Most channels the group may still lose (``min_channels``, ``max_fraction_per_layer``
        of its ORIGINAL channels, counting what earlier iterations removed)."""
        original = self._original_sizes.get(group.producers[0], group.size)
        already = original - group.size
        limit = group.size - self._min_channels
        if self._max_fraction is not None:
            limit = min(limit, int(math.floor(self._max_fraction * original)) - already)
        return max(0, limit)

    def _step_count(self, group, factor):
        """Channels this step removes from ``group``, within its bounds and ``round_to``."""
        wanted = self.removal_count(group.size, self._factor_for(group, factor))
        return _selection.removal_count(group.size, wanted, max_removable=self._bounds(group), round_to=self._round_to)

    def _plan(self, views, factor):
        """Channels to remove per group (dict group id -> group channel indices) for ``factor``."""
        legacy = type(self).run_pruning_for_conv2d_layer is not BasePruning.run_pruning_for_conv2d_layer
        if self._ranking == "global" and not legacy:
            return self._plan_global(views, factor)
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

    def _prune_step(self, model, factor, iteration):
        trace = self._trace(model)
        recorder = ActivationRecorder(model, trace)
        views = [
            GroupView(
                g,
                trace,
                model,
                self._seed + iteration,
                activations=recorder,
                n_remove=self.removal_count(g.size, self._factor_for(g, factor)),
            )
            for g in trace.groups()
            if self.eligible(g)
        ]
        if not views:
            return None, {}
        plan = self._plan(views, factor)
        if self._limits.any and plan:
            budget = Budget(
                trace,
                self._model_stats(model) if self._limits.costs else None,
                self._original_filters,
                self._original_cost,
            )
            plan = fit_to_limits(plan, budget, self._limits, self._round_to)
        plan = {gid: idx for gid, idx in plan.items() if len(idx)}
        if not plan:
            return None, {}
        surgeon = Surgeon(model, trace=trace)
        removed = {}
        groups = trace.groups()
        for gid, idx in plan.items():
            group = groups[gid]
            for path in group.producers:  # record every producer's removed positions
                per_channel = group.channels_of(path)
                removed[path] = sorted(int(p) for j in idx for p in per_channel[j])
            surgeon.delete_group_channels(group, idx)
        try:
            with _distribution_scope():
                new_model = surgeon.operate()
        except Exception as exc:
            raise RuntimeError(
                f"surgery failed in pruning iteration {iteration} "
                f"(removing {sum(map(len, removed.values()))} channels from "
                f"{len(removed)} groups): {exc}"
            ) from exc
        self._check_model(model, new_model, surgeon, iteration)
        return new_model, removed

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
                raise RuntimeError(
                    f"iteration {iteration}: the pruned model's output shape {a.shape} differs "
                    f"from the original's {tuple(keras.ops.shape(b))}"
                )
            if not np.isfinite(a).all():
                raise RuntimeError(f"iteration {iteration}: the pruned model produces non-finite values")
        if self._verify == "exact":
            reference = keras.tree.flatten(surgeon.operate(zero=True)(xs, training=False))
            for a, b in zip(out_new, reference):
                a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
                scale = max(1.0, float(np.abs(b).max()))
                if not np.allclose(a, b, rtol=1e-4, atol=1e-4 * scale):
                    raise RuntimeError(
                        f"iteration {iteration}: the pruned model differs from the zeroed original "
                        f"(max abs difference {float(np.abs(a - b).max()):.3g})"
                    )

    # -- bookkeeping -------------------------------------------------------------------------
    def _model_stats(self, model):
        """``model_stats(model)``, computed once per model (the record of a step and the next
        step's budget share it)."""
        from ridurre.metrics import model_stats

        self._trace(model)
        if self._cache[2] is None:
            self._cache = (model, self._cache[1], model_stats(model, rules=self._rules))
        return self._cache[2]

    def _cost(self, model):
        stats = self._model_stats(model)
        return {"params": int(stats.total_params), "macs": float(stats.total_macs)}

    def _record(self, new, iteration, factor, removed, result, seconds):
        trace = self._trace(new)
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
            iteration,
            b_filters,
            filters,
            _fmt(b_params),
            _fmt(cost["params"]),
            _fmt(b_macs),
            _fmt(cost["macs"]),
            _fmt_metric(before.metric if before else None),
            _fmt_metric(metric),
            seconds,
        )
        return IterationRecord(
            iteration=iteration,
            factor=float(factor),
            epoch=self._current_nb_of_epochs,
            removed=removed,
            channels=channels,
            filters=filters,
            params=cost["params"],
            macs=int(cost["macs"]),
            pruning_percent=percent,
            metric=metric,
            finetune=summary,
            seconds=seconds,
        )

    def _limit_reached(self, record):
        values = {
            "filters": record.pruning_percent,
            "params": 1.0 - record.params / max(1, self._original_cost["params"]),
            "macs": 1.0 - record.macs / max(1.0, self._original_cost["macs"]),
        }
        return self._limits.reached(values, tolerance=1.0 / max(1, self._original_filters))

    def _checkpoint(self, model, iteration, factor, finished):
        if not self._output_dir:
            return
        models_dir = os.path.join(self._output_dir, "models")
        path = os.path.join(models_dir, f"iteration_{iteration:03d}.keras")
        save_model_atomic(model, path)
        history = [r.to_dict() for r in self.history]
        write_history(os.path.join(self._output_dir, "logs"), history)
        save_state(
            self._output_dir,
            {
                "iteration": iteration,
                "factor": factor,
                "epoch": self._current_nb_of_epochs,
                "checkpoint": path,
                "history": history,
                "finished": finished,
            },
        )


class Pruner(BasePruning):
    """The loop with a criterion chosen by name: no subclass needed.

    Args:
        criterion: a name of :mod:`ridurre.criteria` (``"l1"``, ``"bn"``, ``"kmeans"``, ``"apoz"``,
            or one you registered), a Criterion class or an instance.
        model_compile_fn, model_finetune_fn, nb_finetune_epochs: as for :class:`BasePruning`.
        pruning_factor: share of each group's channels removed per iteration (for every
            criterion, KMeans included).
        criterion_options: arguments of the criterion (``{"data": x_sample}`` for activations).
        **options: every keyword option of :class:`BasePruning` (limits, ``layers``,
            ``round_to``, ``ranking``, ``output_dir``...).

    Example:
        >>> import ridurre
        >>> pruner = ridurre.Pruner("l1", lambda m: m.compile("adam", "mse"), None, 0, pruning_factor=0.2,
        ...                         maximum_prune_iterations=2)
        >>> pruner.criterion_object
        <criterion 'l1'>
    """

    def __init__(
        self,
        criterion,
        model_compile_fn,
        model_finetune_fn=None,
        nb_finetune_epochs=0,
        *,
        pruning_factor=0.1,
        criterion_options=None,
        **options,
    ):
        if criterion is None:
            raise ValueError("criterion must name a criterion (e.g. 'l1'); see ridurre.criteria.criterion_names()")
        super().__init__(
            pruning_factor,
            model_compile_fn,
            model_finetune_fn,
            nb_finetune_epochs,
            criterion=criterion,
            criterion_options=criterion_options,
            **options,
        )


def _legacy_positional(args, nb_trained_for_epochs, maximum_prune_iterations, maximum_pruning_percent):
    """Positional arguments after the 4th, in ridurre 0.0.2's ``BasePruning`` order, with a warning:
    the method classes (``L1FilterPruning``...) take ``maximum_prune_iterations`` 5th instead."""
    names = ("nb_trained_for_epochs", "maximum_prune_iterations", "maximum_pruning_percent")
    if len(args) > len(names):
        raise TypeError(f"BasePruning takes at most 7 positional arguments, got {4 + len(args)}")
    given = dict(zip(names, args))
    warnings.warn(
        "BasePruning: positional arguments after nb_finetune_epochs follow ridurre 0.0.2's BasePruning order "
        f"({', '.join(names)}), not the method classes' (maximum_prune_iterations first); read as "
        + ", ".join(f"{k}={v!r}" for k, v in given.items())
        + ". Pass them by keyword.",
        UserWarning,
        stacklevel=3,
    )
    values = {
        "nb_trained_for_epochs": nb_trained_for_epochs,
        "maximum_prune_iterations": maximum_prune_iterations,
        "maximum_pruning_percent": maximum_pruning_percent,
        **given,
    }
    return values["nb_trained_for_epochs"], values["maximum_prune_iterations"], values["maximum_pruning_percent"]


def _fmt(value):
    value = float(value)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= div:
            return f"{value / div:.2f}{unit}"
    return f"{value:.0f}"


def _fmt_metric(value):
    return "n/a" if value is None else f"{value:.4f}"
