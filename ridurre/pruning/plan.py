"""A saved, replayable pruning plan: the channels a run removed, step by step.

A search run (many iterations, finetuning, rollbacks) ends with a model; its
:class:`PruningPlan` records which output channels of which producing layers each accepted step
removed, and the widths it expected. :meth:`PruningPlan.apply` removes the same channels from
another copy of the same architecture (e.g. the production model, trained longer or on other
data), one surgery per step, so the result has exactly the searched widths; finetune it
yourself. ``BasePruning(output_dir=...)`` writes ``plan.json`` after every iteration.

Example::

    pruner.run_pruning(search_model)
    pruner.plan().save("plan.json")
    small = PruningPlan.load("plan.json").apply(production_model)
"""

from __future__ import annotations

import json
import os

import numpy as np

from ridurre import graph as _graph
from ridurre._io import write_text_atomic

__all__ = ["PruningPlan", "PLAN_FORMAT"]

PLAN_FORMAT = "ridurre-pruning-plan"


def _producer_widths(trace):
    return {
        use.path: int(use.out_shape[-1])
        for use in trace.uses.values()
        if use.rule is not None and use.rule.produces and use.out_shape
    }


class PruningPlan:
    """The channels removed by each step of a pruning run.

    Args:
        steps: one dict per step: ``{"removed": {producer: [output channel positions]},
            "channels": {producer: width before the step}}``; positions are those of the model
            before the step, as in :attr:`ridurre.IterationRecord.removed`.
        model_name: the name of the model the plan was made on (informative).

    Example:
        >>> import keras
        >>> x = keras.Input((8, 8, 3))
        >>> h = keras.layers.Conv2D(6, 3, name="conv")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h)))
        >>> plan = PruningPlan([{"removed": {"conv": [0, 4]}, "channels": {"conv": 6}}])
        >>> plan.apply(model).get_layer("conv").filters
        4
    """

    def __init__(self, steps, model_name=None):
        if not isinstance(steps, (list, tuple)):
            raise TypeError(f"steps must be a list of dicts, got {type(steps).__name__}")
        for i, step in enumerate(steps):
            if not isinstance(step, dict) or not isinstance(step.get("removed"), dict):
                raise ValueError(f"plan step {i} must be a dict with a 'removed' mapping, got {step!r:.80}")
        self.steps = [
            {
                "removed": {str(k): sorted(int(c) for c in v) for k, v in step["removed"].items()},
                "channels": {str(k): int(v) for k, v in (step.get("channels") or {}).items()},
            }
            for step in steps
        ]
        self.model_name = model_name

    @classmethod
    def from_history(cls, history, original_channels, model_name=None):
        """The plan of a run's history (records rolled back are left out).

        Args:
            history: ``BasePruning.history`` (:class:`ridurre.IterationRecord` objects or their dicts).
            original_channels: ``{producer: width}`` of the model the run started from.
        """
        steps, widths = [], dict(original_channels)
        for record in history:
            record = record if isinstance(record, dict) else record.to_dict()
            if record.get("rolled_back"):
                continue
            removed = record["removed"]
            steps.append({"removed": removed, "channels": {p: widths[p] for p in removed if p in widths}})
            widths = dict(record["channels"])
        return cls(steps, model_name)

    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "version": 1, "model": self.model_name, "steps": self.steps}

    def save(self, path) -> str:
        """Write the plan as JSON, atomically; returns the path."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return os.fspath(path)

    @classmethod
    def load(cls, path) -> PruningPlan:
        """Read a plan written by :meth:`save`.

        Raises:
            ValueError: not a ridurre pruning plan.
        """
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not a ridurre pruning plan (invalid JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path} is not a ridurre pruning plan (no 'format': {PLAN_FORMAT!r})")
        return cls(data.get("steps", []), data.get("model"))

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        removed = sum(len(v) for step in self.steps for v in step["removed"].values())
        return f"<PruningPlan: {len(self.steps)} steps, {removed} channels>"

    def apply(self, model, rules=None):
        """A new model with the plan's channels removed from ``model`` (never modified).

        Raises:
            ValueError: a layer of the plan missing from ``model``, a width that differs from the
                one the plan was made on, or channels of one coupled group that disagree.
        """
        from ridurre.surgery import Surgeon

        for number, step in enumerate(self.steps):
            trace = _graph.trace_model(model, rules=rules)
            widths = _producer_widths(trace)
            for path, expected in step["channels"].items():
                if path not in widths:
                    raise ValueError(f"plan step {number}: model {model.name!r} has no producing layer {path!r}")
                if widths[path] != expected:
                    raise ValueError(
                        f"plan step {number}: layer {path!r} has {widths[path]} channels, the plan expects {expected}"
                    )
            surgeon = Surgeon(model, trace=trace)
            for group in trace.groups():
                chosen = self._group_channels(group, step["removed"], number)
                if chosen is not None and len(chosen):
                    surgeon.delete_group_channels(group, chosen)
            model = surgeon.operate()
        return model

    @staticmethod
    def _group_channels(group, removed, number):
        """The group channels a step removes, checked to agree across the group's producers."""
        chosen = None
        for path in group.producers:
            if path not in removed:
                continue
            index = group.positions[path]
            positions = np.asarray(removed[path], dtype=np.int64)
            if positions.size and (positions.min() < 0 or positions.max() >= len(index)):
                raise ValueError(f"plan step {number}: channels of {path!r} out of range (it has {len(index)})")
            channels = np.unique(index[positions])
            if chosen is not None and not np.array_equal(channels, chosen):
                raise ValueError(
                    f"plan step {number}: the coupled layers {group.producers} would lose different channels"
                )
            chosen = channels
        return None if chosen is None else chosen[chosen >= 0]
