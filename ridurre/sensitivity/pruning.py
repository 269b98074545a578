"""Prune every layer to the ratio a sensitivity scan chose for it: :class:`SensitivityPruning`."""

from __future__ import annotations

import numbers

from ridurre import graph as _graph
from ridurre.criteria import selection as _selection
from ridurre.pruning.loop import BasePruning
from ridurre.rules import HEAD_KINDS
from ridurre.sensitivity.scan import ChannelChooser, criterion_for, group_of

__all__ = ["SensitivityPruning"]


class SensitivityPruning(BasePruning):
    """Prune every layer to its own ratio of its ORIGINAL channels (e.g. from :func:`choose_ratios`).

    In one step or over ``nb_steps`` iterations of the loop; each step removes an equal share
    of what remains to reach the target, and each step is compiled and fine-tuned by the loop's
    callbacks. The criterion chooses which channels go, on the current weights.

    The positional arguments follow the methods of :mod:`ridurre.pruning.methods` (``nb_steps`` where
    they take ``maximum_prune_iterations``).

    Args:
        ratios: ``{layer: ratio}``; a layer is the label (first producer) of a channel group, or
            any of its producers; ratio in [0, 1). Layers left out are not pruned.
        model_compile_fn, model_finetune_fn, nb_finetune_epochs, nb_trained_for_epochs: as in
            :class:`ridurre.pruning.BasePruning`.
        nb_steps: number of pruning iterations.
        maximum_pruning_percent: an overall limit, as in ``BasePruning`` (default: none).
        criterion: as in :func:`scan`.
        data: input sample for the activation criteria.
        **options: the keyword options of ``BasePruning`` (``min_channels``, ``round_to``,
            ``output_dir``, ``resume``, ``seed``, ``max_macs_reduction``, ...); ``ranking``
            must stay ``"local"``. The factor recorded in the history is ``1 / nb_steps``.

    Example:
        >>> import ridurre
        >>> from ridurre.sensitivity import SensitivityPruning
        >>> pruning = SensitivityPruning({"conv1": 0.5, "conv2": 0.25}, lambda m: m.compile("adam", "mse"),
        ...                              None, 0, nb_steps=2)
    """

    def __init__(
        self,
        ratios,
        model_compile_fn,
        model_finetune_fn,
        nb_finetune_epochs,
        nb_steps=1,
        maximum_pruning_percent=None,
        nb_trained_for_epochs=0,
        *,
        criterion="l1",
        data=None,
        **options,
    ):
        if not isinstance(ratios, dict):
            raise TypeError(f"ratios must be a dict {{layer: ratio}}, got {type(ratios).__name__}")
        for layer, ratio in ratios.items():
            if not isinstance(layer, str):
                raise TypeError(f"ratios: keys must be layer names, got {layer!r}")
            if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= ratio < 1.0:
                raise ValueError(f"ratios[{layer!r}] must be a number in [0, 1), got {ratio!r}")
        nb_steps = self._check_int(nb_steps, "nb_steps", 1)
        if options.get("ranking", "local") != "local":
            raise ValueError("SensitivityPruning prunes each layer to its own ratio: ranking must be 'local'")
        if "maximum_prune_iterations" in options:
            raise ValueError("SensitivityPruning runs nb_steps iterations: pass nb_steps, not maximum_prune_iterations")
        super().__init__(
            1.0 / nb_steps,
            model_compile_fn,
            model_finetune_fn,
            nb_finetune_epochs,
            nb_trained_for_epochs=nb_trained_for_epochs,
            maximum_prune_iterations=nb_steps,
            maximum_pruning_percent=maximum_pruning_percent,
            criterion=criterion_for(criterion, data),
            **options,
        )
        self.ratios = {k: float(v) for k, v in ratios.items()}
        self.nb_steps, self.data = nb_steps, data
        self._targets, self._iteration = {}, 0
        self._pruned_head_kinds = HEAD_KINDS  # head groups named in ratios ("mha:heads") go to their ratio

    def run_pruning(self, model, prune_factor_scheduler_fn=None, custom_objects_inside_model=None):
        """As :meth:`BasePruning.run_pruning`; first checks that every layer of ``ratios`` is prunable."""
        trace = _graph.trace_model(model, rules=self._rules)
        self._targets = {}
        for layer, ratio in self.ratios.items():
            group = group_of(trace, layer)
            if not group.prunable:
                raise ValueError(f"ratios: the channels of layer {layer!r} cannot be pruned: {group.reason}")
            self._targets[group.producers[0]] = _selection.channels_to_keep(group.size, 1.0 - ratio)[0]
        return super().run_pruning(model, prune_factor_scheduler_fn, custom_objects_inside_model)

    def _prune_step(self, model, factor, iteration):
        self._iteration = iteration
        return super()._prune_step(model, factor, iteration)

    def removal_count(self, nb_channels, factor):
        return nb_channels - 1  # an upper bound: select_channels picks each group's own count

    def head_removal_count(self, nb_heads, factor):
        return nb_heads - 1

    def _target_count(self, view):
        """This step's share of what the group still has to lose to reach its ratio."""
        keep = self._targets.get(view.name)
        if keep is None or view.size <= keep:
            return 0
        steps_left = max(1, self.nb_steps - self._iteration)
        round_to = None if view.group.kind in HEAD_KINDS else self._round_to
        return _selection.removal_count(view.size, -(-(view.size - keep) // steps_left), round_to=round_to)

    def select_channels(self, view, n_remove):
        n = min(self._target_count(view), n_remove)
        return ChannelChooser(view, self.criterion_object)(n)
