"""What the loop records of each iteration: :class:`IterationRecord`, the channels and filters of
a traced model, the metric a finetune reported, and the log line of a step."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from ridurre.pruning.guard import _fmt_metric
from ridurre.rules import HEAD_KINDS

__all__ = ["IterationRecord"]

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


@dataclass
class _RunOutputs:
    """What a run of the loop produces besides its model (``BasePruning`` reads them through
    properties, so that they never pass for options in the fingerprint of its settings)."""

    history: list = field(default_factory=list)
    """One :class:`IterationRecord` per iteration, undone steps included."""
    baseline_metric: float | None = None
    """The unpruned model's metric that accuracy-aware pruning compared each step with."""
    best_iteration: int | None = None
    """With ``keep_best``: the iteration of the model the run returned."""


def _fmt(value):
    value = float(value)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= div:
            return f"{value / div:.2f}{unit}"
    return f"{value:.0f}"


class _RecordKeeping:
    """The records of a :class:`~ridurre.pruning.BasePruning` run (a base of that class): the
    costs of each model, computed once, and one :class:`IterationRecord` per step."""

    @property
    def history(self) -> list:
        """One :class:`IterationRecord` per iteration of the last run, undone steps included."""
        return self._run.history

    @property
    def baseline_metric(self) -> float | None:
        """The unpruned model's metric that ``max_metric_drop`` compared each step with (``None``
        without ``max_metric_drop``, or before a run)."""
        return self._run.baseline_metric

    @property
    def best_iteration(self) -> int | None:
        """With ``keep_best``: the iteration whose model ``run_pruning`` returned (``None`` when no
        accepted step reported a metric: the last model was returned)."""
        return self._run.best_iteration

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
