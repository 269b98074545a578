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

Attention layers add groups of more kinds (``ChannelGroup.kind``): ``"head_dims"`` (one
dimension of every head) are pruned like channels, with the channel factor and ``round_to``;
``"heads"`` (whole heads; a key/value head of grouped-query attention with its query heads) only
with ``head_pruning_factor``, their own share per iteration, without ``round_to``, ranked by
``head_criterion`` when given (else by the criterion). ``"query_heads"`` (the query heads
sharing a key/value head) are left to the sensitivity pruning and the surgeon, so that a head
factor removes about that share of a grouped-query layer's heads, not more.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import keras
import numpy as np

from ridurre import _compat
from ridurre import graph as _graph
from ridurre._io import save_model_atomic
from ridurre._loading import load_keras_model
from ridurre._validation import LayerPatterns, check_callable, check_fraction, check_int, check_unit
from ridurre.criteria import Criterion, criterion_class, make_criterion
from ridurre.criteria import selection as _selection
from ridurre.criteria.scores import normalize_scores
from ridurre.criteria.view import ActivationRecorder, GroupView
from ridurre.pruning.checkpoints import (
    check_same_run,
    checkpoint_path,
    describe,
    load_state,
    prepare_run_directory,
    run_fingerprint,
    save_state,
    write_history,
)
from ridurre.pruning.guard import BestKeeper, MetricGuard
from ridurre.pruning.limits import Budget, Limits, fit_to_limits, interim_limits, limits_met
from ridurre.pruning.plan import PruningPlan
from ridurre.rules import HEAD_KINDS
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
    inexact: list = field(default_factory=list)
    """Groups pruned in this step (by first producer) whose channels pass through a
    normalization over the channel axis (``ChannelGroup.exact`` False): the pruned model is
    structurally right there, but not numerically the model with those channels zeroed."""
    rolled_back: bool = False  # the step cost more than max_metric_drop and was undone

    def to_dict(self):
        return asdict(self)


def _producer_channels(trace):
    """Channels of every producer layer (Conv, Dense, ...), by path, and of every set of internal
    units (attention heads and head dimensions, ``"mha:heads"``)."""
    channels = {
        use.path: int(use.out_shape[-1])
        for use in trace.uses.values()
        if use.rule is not None and use.rule.produces and use.out_shape
    }
    for use in trace.uses.values():
        if use.rule is not None:
            channels.update({f"{use.path}:{name}": len(units) for name, units in use.internal.items()})
    return channels


def _prunable_filters(trace):
    """The "filters" the pruning percent counts: output channels of the producers of prunable
    groups (the classifier and other unprunable layers are left out), head dimensions included.
    Attention heads are not filters: they go by their own ratio (``head_pruning_factor``)."""
    channels = _producer_channels(trace)
    return sum(
        channels.get(p, 0) for g in trace.groups() if g.prunable and g.kind not in HEAD_KINDS for p in g.producers
    )


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


def _check_finite_weights(model, what):
    """Raise ``RuntimeError`` naming the first layer of ``model`` with a NaN or infinite weight."""
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise RuntimeError(
                f"{what} has non-finite weights (NaN or infinity) in {weight.path!r}: "
                "check that the training data are finite and the learning rate is not too high"
            )


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
            of the prunable layers and head dimensions; attention heads go by ``head_pruning_factor``) is
            removed; the last step is shrunk so it is never crossed.
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
        ranking: ``"local"`` (each group loses its share), ``"global"`` (one ranking over all
            groups, scores normalized per group by the criterion's ``normalizer``) or
            ``"isomorphic"`` (one ranking over each set of structurally identical groups, such
            as the same block repeated in a stage; see ``GroupView.structure``).
        seed: seeds every random choice (per iteration), so runs are reproducible.
        output_dir: write ``history.json``/``history.csv`` and a ``.keras`` checkpoint after
            every iteration there (atomic writes). A new run (``resume=False``) first removes
            the checkpoints and state an earlier run left there.
        resume: continue the run recorded in ``output_dir`` (if any). The directory records the
            fingerprint of its input model and settings; resuming it with another model or
            other settings raises ``ValueError`` saying what differs.
        size_steps_to_limits: choose each iteration's factor so that the limits are reached at
            the last of ``maximum_prune_iterations`` iterations, in even steps (each removes the
            same share of what is left to remove), instead of using ``pruning_factor`` as is.
        verify: after every surgery, run the model on a few inputs and check the output shape
            and that values are finite (``"exact"`` also compares with the zeroed model; the
            channels of groups through a LayerNormalization or RMS norm, whose statistics
            change, are deleted in that reference too and reported in ``IterationRecord.inexact``
            and a warning).
        evaluate_fn: optional ``fn(model) -> float`` logged as the metric after each finetune.
        rules: extra layer rules (see :mod:`ridurre.rules`) for the layers of this model;
            ``RuleSet(exact_only=True)`` leaves the groups through such normalizations alone.
        head_pruning_factor: share of the heads of every attention layer removed per iteration
            (groups of kind ``"heads"``; at least one head stays). ``None`` (the default): heads
            are kept, while head dimensions are pruned like channels.
        head_criterion: how heads are ranked (a criterion name, class or instance; default: the
            criterion). ``"l1"``/``"l2"`` score a head by its query, key, value and output
            weights, ``"activation_mean"`` by its mean contribution to the attention output.
        head_criterion_options: arguments of the head criterion (``{"data": x}``).
        latency_table: a measured :class:`ridurre.deploy.LatencyTable` of the original model in
            the runtime you deploy to. Global ranking then divides each channel's (normalized)
            score by its group's relative time saved per channel, so groups that cost time go
            first, and ``target_speedup`` limits the latency the table predicts instead of the
            MACs.
        max_metric_drop: accuracy-aware pruning: a step whose metric after finetuning falls more
            than this below the unpruned model's (``baseline_metric``, by default
            ``evaluate_fn(model)``) is undone (``history`` keeps it, ``rolled_back=True``); then
            ``on_metric_drop="rollback"`` retries with the factor times ``rollback_shrink`` (at
            most ``max_rollbacks`` times in a row) and ``"stop"`` stops.
        keep_best: return the accepted model with the best metric rather than the last one
            (``best_iteration`` says which).
        metric_mode: ``"max"`` when a higher metric is better (accuracy), ``"min"`` (a loss).
        inline_composites: first replace the composite layers of the model (subclassed layers
            made of other layers, such as keras-hub's blocks) by the layers of their ``call``
            (:func:`ridurre.graph.inline_composites`), so that their inner channels are pruned
            too; the pruned model is then a Functional model without those classes.
    """

    criterion = None
    """The criterion of a method class (a name, Criterion class or instance); ``criterion=`` overrides it."""

    criterion_scope = None
    """The ``scope`` a method class gives its criterion unless asked otherwise (the classic
    classes: ``"producers"``, ridurre 0.0.2's scores); ``None``: the criterion's default (the group)."""

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
        head_pruning_factor=None,
        head_criterion=None,
        head_criterion_options=None,
        latency_table=None,
        max_metric_drop=None,
        on_metric_drop="rollback",
        max_rollbacks=3,
        rollback_shrink=0.5,
        keep_best=False,
        baseline_metric=None,
        metric_mode="max",
        size_steps_to_limits=False,
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
        if latency_table is not None and not all(
            callable(getattr(latency_table, m, None)) for m in ("predicted_reduction", "saved_per_channel")
        ):
            raise TypeError(
                "latency_table must be a ridurre.deploy.LatencyTable (predicted_reduction, saved_per_channel), "
                f"got {type(latency_table).__name__}"
            )
        self._latency_table = latency_table
        latency_limit = None
        if target_speedup is not None:
            if latency_table is None:
                max_macs_reduction = 1.0 - 1.0 / float(target_speedup)
            else:
                latency_limit = 1.0 - 1.0 / float(target_speedup)
        self._limits = Limits(
            filters=check_fraction(maximum_pruning_percent, "maximum_pruning_percent"),
            params=check_fraction(max_params_reduction, "max_params_reduction"),
            macs=check_fraction(max_macs_reduction, "max_macs_reduction"),
            latency=latency_limit,
        )
        self._include = LayerPatterns.parse(layers, "layers")
        self._exclude = LayerPatterns.parse(exclude, "exclude")
        self._layer_factors = [  # (pattern, factor), first match wins
            (LayerPatterns(pattern, "layer_factors"), self._check_factor(factor, f"layer_factors[{pattern!r}]"))
            for pattern, factor in (layer_factors or {}).items()
        ]
        self._min_channels = check_int(min_channels, "min_channels", 1)
        self._max_fraction = check_fraction(max_fraction_per_layer, "max_fraction_per_layer")
        self._round_to = None if round_to is None else check_int(round_to, "round_to", 1)
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        self._ranking = ranking
        self._seed = check_int(seed, "seed", 0)
        self._output_dir = None if output_dir is None else os.fspath(output_dir)
        self._resume = bool(resume)
        if verify not in (True, False, "exact"):
            raise ValueError(f"verify must be True, False or 'exact', got {verify!r}")
        self._verify = verify
        self._evaluate_fn = check_callable(evaluate_fn, "evaluate_fn", "fn(model) -> float")
        self._rules = rules
        self._inline = bool(inline_composites)
        self._prune_bins = None
        self._inexact_pruned: list[str] = []  # groups through a normalization pruned in the current step
        spec = criterion if criterion is not None else type(self).criterion
        self._criterion = _make_criterion(spec, criterion_options, type(self).criterion_scope)
        self._head_factor = (
            None if head_pruning_factor is None else check_unit(head_pruning_factor, "head_pruning_factor")
        )
        self._pruned_head_kinds = () if self._head_factor is None else ("heads",)
        self._head_criterion = (
            None if head_criterion is None else make_criterion(head_criterion, **(head_criterion_options or {}))
        )
        self.history: list[IterationRecord] = []
        self._size_steps = bool(size_steps_to_limits)
        if self._size_steps and (self._maximum_prune_iterations is None or not self._limits.any):
            raise ValueError(
                "size_steps_to_limits needs maximum_prune_iterations and a limit (maximum_pruning_percent, "
                "max_params_reduction, max_macs_reduction or target_speedup) to size the steps from"
            )
        self.run_identity: dict = {}
        """Anything else the run depends on (e.g. its data), recorded in the fingerprint of ``output_dir``."""
        self._check_hooks()
        self._guard = None
        if max_metric_drop is not None:
            self._guard = MetricGuard(
                max_metric_drop, on_metric_drop, max_rollbacks, rollback_shrink, metric_mode, baseline_metric
            )
            if self._evaluate_fn is None and baseline_metric is None:
                raise ValueError(
                    "max_metric_drop compares the metric after each finetune with the unpruned model's: "
                    "pass evaluate_fn=fn(model) -> float (or baseline_metric=, the unpruned model's value "
                    "of the metric your finetune callback reports)"
                )
        self._baseline_given = baseline_metric
        self._keep_best = bool(keep_best)
        self._metric_mode = metric_mode
        self.best_iteration = None

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

    def _criterion_of(self, view):
        """The criterion ranking ``view``'s group: the head criterion for heads, when given."""
        if self._head_criterion is not None and view.group.kind in HEAD_KINDS:
            return self._head_criterion
        return self._criterion

    def score_channels(self, view: GroupView) -> np.ndarray:
        """Per-channel scores of a group, higher = more important (default: the criterion's)."""
        criterion = self._criterion_of(view)
        if criterion is None:
            raise NotImplementedError(f"{type(self).__name__} implements no score_channels(view)")
        return criterion.score(view)

    def select_channels(self, view: GroupView, n_remove: int) -> np.ndarray:
        """The ``n_remove`` channels of the group to remove (default: the criterion's choice, or
        the lowest scores of ``score_channels``)."""
        criterion = self._criterion_of(view)
        if criterion is not None and type(self).score_channels is BasePruning.score_channels:
            return criterion.select(view, n_remove)
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

    def plan(self) -> PruningPlan:
        """The :class:`~ridurre.pruning.plan.PruningPlan` of the last run: the channels each
        accepted step removed, replayable on another copy of the model."""
        if not hasattr(self, "_original_channels"):
            raise ValueError("plan(): run_pruning has not run yet")
        return PruningPlan.from_history(self.history, self._original_channels)

    def _after_resume(self):
        """Called once ``self.history`` holds the records of a resumed run (for subclasses that
        track filters across iterations)."""

    def removal_count(self, nb_channels: int, factor: float) -> int:
        """How many of ``nb_channels`` one step removes with ``factor`` (a removal factor here;
        KMeans overrides it with the original's keep-factor semantics)."""
        return _selection.channels_to_keep(nb_channels, 1.0 - factor)[1]

    def head_removal_count(self, nb_heads: int, factor: float) -> int:
        """How many of an attention layer's ``nb_heads`` one step removes with the head factor
        (always a removal share, whatever the method's channel factor means)."""
        return _selection.channels_to_keep(nb_heads, 1.0 - factor)[1]

    def _wanted(self, group, factor) -> int:
        """Channels (or heads) the step's factor asks of ``group``, before bounds and rounding."""
        if group.kind in HEAD_KINDS:
            return self.head_removal_count(group.size, self._factor_for(group, self._head_factor))
        return self.removal_count(group.size, self._factor_for(group, factor))

    def define_prune_bins(self, channel_number_bins, pruning_factors_for_bins) -> None:
        """Use a different factor for groups of different widths (ridurre 0.0.2 API): a group with
        ``bins[i] <= channels < bins[i + 1]`` uses ``pruning_factors_for_bins[i]``."""
        self._prune_bins = _selection.define_prune_bins(channel_number_bins, pruning_factors_for_bins)

    def eligible(self, group) -> bool:
        """Whether the loop prunes ``group`` (prunable, two channels or more, selected by
        ``layers``/``exclude``: a coupled group only when every producer is included)."""
        if not group.prunable or group.size < 2:
            return False
        if group.kind in HEAD_KINDS and group.kind not in self._pruned_head_kinds:
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
                n_remove=self._wanted(group, self._pruning_factor),
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
        if self._size_steps and prune_factor_scheduler_fn is not None:
            raise ValueError("size_steps_to_limits chooses every factor itself: pass no prune_factor_scheduler_fn")
        _check_finite_weights(model, "the model given to run_pruning")
        self._custom_objects = custom_objects_inside_model
        self._cache = None
        given, model = model, self._inlined(model)
        original = self._trace(model)
        self._check_layer_selection(model, original)
        self._original_channels = _producer_channels(original)
        self._original_filters = _prunable_filters(original)
        self._original_sizes = {group.producers[0]: group.size for group in original.groups()}
        self._original_cost = self._cost(model)
        if self._limits.latency is not None:
            self._check_latency_target(original)
        factor = self._pruning_factor
        iteration = 0
        self.history = []
        self._start_guard(model)
        self._fingerprint = run_fingerprint(model, self._settings())
        state = prepare_run_directory(self._output_dir, self._resume, self._fingerprint) if self._output_dir else None
        if state is not None:
            path = checkpoint_path(self._output_dir, state)
            model = load_keras_model(path, custom_objects=custom_objects_inside_model, compile=False)
            with _distribution_scope():
                self._model_compile_fn(model)
            iteration, factor = state["iteration"] + 1, state["factor"]
            self._current_nb_of_epochs = state["epoch"]
            self.history = [IterationRecord(**r) for r in state["history"]]
            if self._guard is not None:
                self._guard.restore(state.get("guard"))
            self._after_resume()
            logger.info("resuming after iteration %d from %s", state["iteration"], path)
            if state.get("finished"):
                return model, self._current_nb_of_epochs
        while self._maximum_prune_iterations is None or iteration < self._maximum_prune_iterations:
            if prune_factor_scheduler_fn is not None:
                factor = float(prune_factor_scheduler_fn(factor, iteration))
                self._check_factor(factor, "the factor returned by prune_factor_scheduler_fn")
            if self._size_steps:
                factor = self._sized_factor(model, iteration)
            started = time.perf_counter()
            step_factor = factor * (self._guard.scale if self._guard is not None else 1.0)
            new_model, removed = self._prune_step(model, step_factor, iteration)
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
                    _check_finite_weights(new_model, f"iteration {iteration}: after finetuning, the model")
            self._current_nb_of_epochs = end_epoch
            record = self._record(new_model, iteration, step_factor, removed, result, time.perf_counter() - started)
            verdict = self._judge_step(record)
            self.history.append(record)
            if verdict != "accept":
                self._checkpoint(model, iteration, factor, finished=verdict == "stop")
                if verdict == "stop":
                    break
                iteration += 1
                continue
            model = new_model
            self._offer_best(model, record)
            done = self._limit_reached(record)
            self._checkpoint(model, iteration, factor, finished=done)
            if done:
                logger.info("pruning limit reached after iteration %d", iteration)
                break
            iteration += 1
        return self._returned_model(model if self.history else given), self._current_nb_of_epochs

    # -- accuracy-aware pruning --------------------------------------------------------------
    def _start_guard(self, model):
        """The baseline metric of the unpruned model, and a fresh best-model keeper."""
        self._best = BestKeeper(self._metric_mode) if self._keep_best else None
        self.best_iteration = None
        self.baseline_metric = None
        if self._guard is not None:
            self._guard.scale, self._guard.rollbacks_in_a_row = 1.0, 0
            given = self._baseline_given
            self._guard.baseline = float(self._evaluate_fn(model)) if given is None else float(given)
            self.baseline_metric = self._guard.baseline
            logger.info(
                "accuracy-aware pruning: baseline metric %.4f, a step may not leave less than %.4f",
                self._guard.baseline,
                self._guard.floor(),
            )

    def _judge_step(self, record):
        """``"accept"``, ``"rollback"`` or ``"stop"`` for a finetuned step (always accept without a guard)."""
        if self._guard is None:
            return "accept"
        verdict = self._guard.judge(record.metric)
        if verdict != "accept":
            record.rolled_back = True
            logger.warning(
                "iteration %d: metric %s is below the allowed %.4f: step undone%s",
                record.iteration,
                _fmt_metric(record.metric),
                self._guard.floor(),
                f"; retrying with a {self._guard.scale:.3g}x smaller step" if verdict == "rollback" else "; stopping",
            )
        return verdict

    def _offer_best(self, model, record):
        if self._best is not None and self._best.offer(model, record.metric, record.iteration):
            self.best_iteration = record.iteration

    def _returned_model(self, model):
        if self._best is not None and self._best.model is not None:
            if self._best.model is not model:
                best = self._best
                logger.info("keep_best: returning the model of iteration %d (metric %.4f)", best.iteration, best.metric)
            return self._best.model
        return model

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

    # -- the run directory and what it belongs to ------------------------------------------------
    def _settings(self) -> dict:
        """Everything that decides what this run does, for the fingerprint of its output directory:
        the method, its criterion and options, the factor, limits, selection and bounds, and the
        public attributes a subclass adds (``data``, ``ratios``...). Subclasses whose options
        live in private attributes extend it. The iteration limit is left out unless the steps
        are sized from it: resuming with a higher one extends a run."""
        own = {"seed", "history", "run_identity", "baseline_metric", "best_iteration"}  # run outputs
        settings = describe(
            {
                "method": type(self).__qualname__,
                "criterion": self._criterion,
                "pruning_factor": self._pruning_factor,
                "nb_finetune_epochs": self._nb_finetune_epochs,
                "start_epoch": self._current_nb_of_epochs,
                "maximum_prune_iterations": self._maximum_prune_iterations,
                "limits": self._limits.to_dict(),
                "size_steps_to_limits": self._size_steps,
                "layers": self._include,
                "exclude": self._exclude,
                "layer_factors": self._layer_factors,
                "prune_bins": self._prune_bins,
                "min_channels": self._min_channels,
                "max_fraction_per_layer": self._max_fraction,
                "round_to": self._round_to,
                "ranking": self._ranking,
                "seed": self._seed,
                "verify": self._verify,
                "head_pruning_factor": self._head_factor,
                "head_criterion": self._head_criterion,
                "latency_table": self._latency_table,
                "guard": None
                if self._guard is None
                else {k: getattr(self._guard, k) for k in ("max_drop", "on_drop", "max_rollbacks", "shrink", "mode")},
                "keep_best": self._keep_best,
                "inline_composites": self._inline,
                "options": {k: v for k, v in vars(self).items() if not k.startswith("_") and k not in own},
                "run_identity": self.run_identity,
            }
        )
        if not self._size_steps:  # more iterations do not change the first ones: a run may be extended
            del settings["maximum_prune_iterations"]
        return settings

    def resume_state(self, model) -> dict | None:
        """The saved state ``run_pruning(model)`` would resume from (``None``: it would start
        afresh), checked against ``model`` and these settings without writing anything.

        Raises:
            ValueError: ``output_dir`` holds a run of another model or other settings (the message
                says what differs), or its state is unreadable or its checkpoint missing.
        """
        if not (self._resume and self._output_dir):
            return None
        state = load_state(self._output_dir)
        if state is not None:
            check_same_run(state.get("fingerprint"), run_fingerprint(model, self._settings()), self._output_dir)
        return state

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

    # -- sizing the steps to the limits ----------------------------------------------------------
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
        budget = Budget(
            trace,
            self._model_stats(model) if self._limits.costs else None,
            self._original_filters,
            self._original_cost,
            latency_table=self._latency_table,
        )
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
        legacy = type(self).run_pruning_for_conv2d_layer is not BasePruning.run_pruning_for_conv2d_layer
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
        if type(self).score_channels is not BasePruning.score_channels:
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
        plan = self._plan(views, factor)
        budget = None
        if self._limits.any and plan:
            budget = Budget(
                trace,
                self._model_stats(model) if self._limits.costs else None,
                self._original_filters,
                self._original_cost,
                self._latency_table,
            )
            plan = fit_to_limits(plan, budget, self._limits, self._round_to)
        return trace, {gid: idx for gid, idx in plan.items() if len(idx)}, budget

    def _prune_step(self, model, factor, iteration):
        trace, plan, _ = self._plan_step(model, factor, iteration)
        if not plan:
            return None, {}
        surgeon = Surgeon(model, trace=trace)
        removed = {}
        groups = trace.groups()
        self._inexact_pruned = sorted(groups[gid].producers[0] for gid in plan if not groups[gid].exact)
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
        xs = [
            rng.integers(0, 2, size=(2,) + tuple(t.shape[1:])).astype(t.dtype)  # token ids
            if "int" in str(t.dtype)
            else rng.normal(size=(2,) + tuple(t.shape[1:])).astype("float32")
            for t in old.inputs
        ]
        structure = _compat.inputs_structure(old)
        if isinstance(structure, dict):  # a keras-hub text model: token ids, segment ids, padding mask
            xs = keras.tree.pack_sequence_as(structure, xs)
        else:
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
            # Channels through a LayerNormalization are deleted in the reference too (zeroing
            # them would change its statistics): the check stays exact for every other channel.
            reference = keras.tree.flatten(surgeon.operate(zero=True, delete_inexact=True)(xs, training=False))
            if self._inexact_pruned:
                logger.warning(
                    "iteration %d: %d pruned groups (%s) pass through a normalization over the channels: "
                    "the pruned model is not the zeroed one there, so verify='exact' checks them structurally "
                    "(deleted in the reference too) and every other group exactly",
                    iteration,
                    len(self._inexact_pruned),
                    ", ".join(self._inexact_pruned[:5]) + (", ..." if len(self._inexact_pruned) > 5 else ""),
                )
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
        before = next((r for r in reversed(self.history) if not r.rolled_back), None)
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
            inexact=list(self._inexact_pruned),
        )

    def _limit_reached(self, record):
        return self._limits.reached(self._reductions(record), tolerance=1.0 / max(1, self._original_filters))

    def _checkpoint(self, model, iteration, factor, finished):
        if not self._output_dir:
            return
        models_dir = os.path.join(self._output_dir, "models")
        path = os.path.join(models_dir, f"iteration_{iteration:03d}.keras")
        save_model_atomic(model, path)
        history = [r.to_dict() for r in self.history]
        write_history(os.path.join(self._output_dir, "logs"), history)
        self.plan().save(os.path.join(self._output_dir, "plan.json"))
        save_state(
            self._output_dir,
            {
                "iteration": iteration,
                "factor": factor,
                "epoch": self._current_nb_of_epochs,
                "checkpoint": os.path.relpath(path, self._output_dir),  # resumable from any working directory
                "history": history,
                "finished": finished,
                "guard": None if self._guard is None else self._guard.state(),
                "fingerprint": self._fingerprint,
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


RANKINGS = ("local", "global", "isomorphic")


def _make_criterion(spec, options, scope):
    """The criterion object of ``spec`` with ``options``; a method class's ``scope`` is given to
    a scoped criterion made by name or class unless the options say otherwise."""
    if spec is None:
        return None
    options = dict(options or {})
    if scope is not None and "scope" not in options and not isinstance(spec, Criterion):
        cls = criterion_class(spec) if isinstance(spec, str) else spec
        if getattr(cls, "scoped", False):
            options["scope"] = scope
    return make_criterion(spec, **options)


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


def _fmt(value):
    value = float(value)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= div:
            return f"{value / div:.2f}{unit}"
    return f"{value:.0f}"


def _fmt_metric(value):
    return "n/a" if value is None else f"{value:.4f}"
