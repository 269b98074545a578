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

The loop's parts live beside it, each a base class of :class:`BasePruning`: which channels a step
removes (``ranking.py``), the limits and steps sized to them (``limits.py``), accuracy-aware
stopping and rollback (``guard.py``), the run directory and its fingerprint (``rundir.py``), the
surgery and verification of a step (``step.py``) and the records of each iteration (``records.py``).
"""

from __future__ import annotations

import logging
import os
import time
import warnings

import keras
import numpy as np

from ridurre import graph as _graph
from ridurre._validation import LayerPatterns, check_callable, check_fraction, check_int, check_unit
from ridurre.criteria import Criterion, criterion_class, make_criterion
from ridurre.criteria import selection as _selection
from ridurre.criteria.view import ActivationRecorder, GroupView
from ridurre.pruning.guard import MetricGuard, _AccuracyGuard
from ridurre.pruning.limits import Limits, _LimitSizing
from ridurre.pruning.plan import PruningPlan
from ridurre.pruning.ranking import RANKINGS, _ChannelRanking
from ridurre.pruning.records import IterationRecord, _producer_channels, _prunable_filters, _RecordKeeping, _RunOutputs
from ridurre.pruning.rundir import _RunDirectory
from ridurre.pruning.step import _SurgeryStep, check_finite_weights, distribution_scope
from ridurre.rules import HEAD_KINDS

__all__ = ["BasePruning", "Pruner", "IterationRecord"]

logger = logging.getLogger("ridurre")


class BasePruning(_RunDirectory, _LimitSizing, _AccuracyGuard, _ChannelRanking, _SurgeryStep, _RecordKeeping):
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
            the runtime you deploy to. Global (and isomorphic) ranking then divides each
            channel's (normalized) score by its group's relative time saved per channel, so
            groups that cost time go first (local ranking ignores it, with a warning), and
            ``target_speedup`` limits the latency the table predicts instead of the MACs
            (``max_macs_reduction`` still limits the MACs).
        max_metric_drop: accuracy-aware pruning: a step whose metric after finetuning falls more
            than this below the unpruned model's (``baseline_metric``, by default
            ``evaluate_fn(model)``) is undone (``history`` keeps it, ``rolled_back=True``); then
            ``on_metric_drop="rollback"`` retries with the factor times ``rollback_shrink`` (at
            most ``max_rollbacks`` times in a row) and ``"stop"`` stops. ``run_pruning`` refuses to
            start without ``evaluate_fn`` or ``baseline_metric``.
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
        if latency_table is not None and ranking == "local":
            warnings.warn(
                "latency_table ranks channels only with ranking='global' or 'isomorphic'; with ranking='local' "
                "every group loses the same share and the table only predicts the latency for target_speedup",
                UserWarning,
                stacklevel=2,
            )
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
        self._run = _RunOutputs()
        self._size_steps = bool(size_steps_to_limits)
        if self._size_steps and (self._maximum_prune_iterations is None or not self._limits.any):
            raise ValueError(
                "size_steps_to_limits needs maximum_prune_iterations and a limit (maximum_pruning_percent, "
                "max_params_reduction, max_macs_reduction or target_speedup) to size the steps from"
            )
        self._run_identity: dict = {}
        self._check_hooks()
        self._guard = None
        if max_metric_drop is not None:
            self._guard = MetricGuard(
                max_metric_drop, on_metric_drop, max_rollbacks, rollback_shrink, metric_mode, baseline_metric
            )
        self._baseline_given = baseline_metric
        self._keep_best = bool(keep_best)
        self._metric_mode = metric_mode

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

    def _overrides(self, hook) -> bool:
        """Whether this class implements the hook ``hook`` itself (rather than the criterion's default)."""
        return getattr(type(self), hook) is not getattr(BasePruning, hook)

    def _check_hooks(self):
        hooks = ("score_channels", "select_channels", "run_pruning_for_conv2d_layer")
        if not any(self._overrides(name) for name in hooks) and self._criterion is None:
            raise TypeError(
                f"{type(self).__name__} needs a criterion: pass criterion='l1' (or any name of "
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
        if criterion is not None and not self._overrides("score_channels"):
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
        self._check_metric_source()
        _graph.check_model(model)
        check_callable(prune_factor_scheduler_fn, "prune_factor_scheduler_fn", "fn(factor, iteration) -> factor")
        if self._size_steps and prune_factor_scheduler_fn is not None:
            raise ValueError("size_steps_to_limits chooses every factor itself: pass no prune_factor_scheduler_fn")
        check_finite_weights(model, "the model given to run_pruning")
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
        self._run = _RunOutputs()
        self._start_guard(model)
        state = self._open_run_directory(model)
        if state is not None:
            model = self._resumed_model(state)
            iteration, factor = state["iteration"] + 1, state["factor"]
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
            with distribution_scope():
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
                    check_finite_weights(new_model, f"iteration {iteration}: after finetuning, the model")
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
