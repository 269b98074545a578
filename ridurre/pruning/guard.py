"""Accuracy-aware pruning: judge each finetuned step by its validation metric.

:class:`MetricGuard` compares the metric after every finetune with the unpruned model's and says
whether to keep the step, undo it and try a smaller one, or stop; :class:`BestKeeper`
remembers the best model seen. The loop (:class:`ridurre.pruning.BasePruning`) uses both when
given ``max_metric_drop`` or ``keep_best``, through its base class ``_AccuracyGuard`` below.
"""

from __future__ import annotations

import logging
import math
import numbers

__all__ = ["MetricGuard", "BestKeeper", "ON_DROP"]

logger = logging.getLogger("ridurre")

ON_DROP = ("rollback", "stop")
"""What to do when a step costs too much: undo it and retry smaller, or undo it and stop."""


def _fmt_metric(value):
    return "n/a" if value is None else f"{value:.4f}"


def _check_mode(mode):
    if mode not in ("max", "min"):
        raise ValueError(f"metric_mode must be 'max' (accuracy) or 'min' (a loss), got {mode!r}")
    return mode


class MetricGuard:
    """Accept a step only while the metric stays within ``max_drop`` of the baseline.

    Args:
        max_drop: largest allowed fall of the metric below the unpruned model's (absolute, in
            the metric's units: 0.01 = one accuracy point), ``>= 0``.
        on_drop: ``"rollback"``: undo the step and retry with the factor times ``shrink``
            (at most ``max_rollbacks`` times in a row, then stop); ``"stop"``: undo it and stop.
        max_rollbacks: retries in a row before giving up.
        shrink: factor multiplying the step after each rollback, in ``(0, 1)``.
        mode: ``"max"`` when higher is better (accuracy), ``"min"`` for a loss.

    Example:
        >>> guard = MetricGuard(0.02, baseline=0.95)
        >>> guard.judge(0.94), guard.judge(0.90), guard.scale
        ('accept', 'rollback', 0.5)
        >>> guard.judge(0.935), guard.scale      # a step that passes keeps the smaller scale
        ('accept', 0.5)
    """

    def __init__(self, max_drop, on_drop="rollback", max_rollbacks=3, shrink=0.5, mode="max", baseline=None):
        if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or not max_drop >= 0:
            raise ValueError(f"max_metric_drop must be a number >= 0, got {max_drop!r}")
        if on_drop not in ON_DROP:
            raise ValueError(f"on_metric_drop must be one of {ON_DROP}, got {on_drop!r}")
        if isinstance(max_rollbacks, bool) or not isinstance(max_rollbacks, int) or max_rollbacks < 0:
            raise ValueError(f"max_rollbacks must be an integer >= 0, got {max_rollbacks!r}")
        if isinstance(shrink, bool) or not isinstance(shrink, numbers.Real) or not 0 < shrink < 1:
            raise ValueError(f"rollback_shrink must be a number in (0, 1), got {shrink!r}")
        self.max_drop, self.on_drop = float(max_drop), on_drop
        self.max_rollbacks, self.shrink, self.mode = max_rollbacks, float(shrink), _check_mode(mode)
        self.baseline = None if baseline is None else float(baseline)
        self.scale = 1.0
        self.rollbacks_in_a_row = 0

    def floor(self):
        """The worst metric a step may leave (``baseline - max_drop`` for accuracy)."""
        return self.baseline - self.max_drop if self.mode == "max" else self.baseline + self.max_drop

    def acceptable(self, metric) -> bool:
        """Whether ``metric`` is within the allowed drop (a missing or NaN metric is not)."""
        if metric is None or (isinstance(metric, float) and math.isnan(metric)):
            return False
        return metric >= self.floor() if self.mode == "max" else metric <= self.floor()

    def judge(self, metric) -> str:
        """``"accept"``, ``"rollback"`` (retry smaller: :attr:`scale` has shrunk) or ``"stop"``."""
        if self.baseline is None:
            raise ValueError("MetricGuard.judge needs the baseline metric of the unpruned model")
        if self.acceptable(metric):
            self.rollbacks_in_a_row = 0
            return "accept"
        if self.on_drop == "stop" or self.rollbacks_in_a_row >= self.max_rollbacks:
            return "stop"
        self.rollbacks_in_a_row += 1
        self.scale *= self.shrink
        return "rollback"

    def state(self) -> dict:
        """What a checkpoint keeps to resume the guard."""
        return {"baseline": self.baseline, "scale": self.scale, "rollbacks_in_a_row": self.rollbacks_in_a_row}

    def restore(self, state) -> None:
        """Continue from :meth:`state`."""
        if state:
            self.baseline = state.get("baseline", self.baseline)
            self.scale = float(state.get("scale", 1.0))
            self.rollbacks_in_a_row = int(state.get("rollbacks_in_a_row", 0))


class BestKeeper:
    """The model with the best metric among the accepted steps (ties: the later, smaller one).

    Example:
        >>> keeper = BestKeeper()
        >>> for it, (model, metric) in enumerate([("m0", 0.97), ("m1", 0.71), ("m2", 0.95)]):
        ...     _ = keeper.offer(model, metric, it)
        >>> keeper.model, keeper.iteration
        ('m0', 0)
    """

    def __init__(self, mode="max"):
        self.mode = _check_mode(mode)
        self.model, self.metric, self.iteration = None, None, None

    def offer(self, model, metric, iteration) -> bool:
        """Keep ``model`` if its metric is at least as good as the best so far; returns whether it was kept."""
        if metric is None or (isinstance(metric, float) and math.isnan(metric)):
            return False
        better = self.metric is None or (metric >= self.metric if self.mode == "max" else metric <= self.metric)
        if better:
            self.model, self.metric, self.iteration = model, float(metric), iteration
        return better


class _AccuracyGuard:
    """The loop's side of accuracy-aware pruning (a base of :class:`~ridurre.pruning.BasePruning`):
    the baseline metric, judging each finetuned step, and the best model kept."""

    def _check_metric_source(self):
        """Accuracy-aware pruning needs the unpruned model's metric: checked when a run starts, so
        that a pruner only asked questions (``check_layers``, ``resume_state``) needs none."""
        if self._guard is not None and self._evaluate_fn is None and self._baseline_given is None:
            raise ValueError(
                "max_metric_drop compares the metric after each finetune with the unpruned model's: "
                "pass evaluate_fn=fn(model) -> float (or baseline_metric=, the unpruned model's value "
                "of the metric your finetune callback reports)"
            )

    def _start_guard(self, model):
        """The baseline metric of the unpruned model, and a fresh best-model keeper."""
        self._best = BestKeeper(self._metric_mode) if self._keep_best else None
        if self._guard is not None:
            self._guard.scale, self._guard.rollbacks_in_a_row = 1.0, 0
            given = self._baseline_given
            self._guard.baseline = float(self._evaluate_fn(model)) if given is None else float(given)
            self._run.baseline_metric = self._guard.baseline
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
            self._run.best_iteration = record.iteration

    def _returned_model(self, model):
        if self._best is not None and self._best.model is not None:
            if self._best.model is not model:
                best = self._best
                logger.info("keep_best: returning the model of iteration %d (metric %.4f)", best.iteration, best.metric)
            return self._best.model
        return model
