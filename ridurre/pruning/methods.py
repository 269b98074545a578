"""Ready-made pruning methods: one small :class:`~ridurre.pruning.BasePruning` subclass each.

Their positional arguments follow ridurre 0.0.2's classes::

    Method(factor, model_compile_fn, model_finetune_fn, nb_finetune_epochs,
           maximum_prune_iterations=None, maximum_pruning_percent=0.9, nb_trained_for_epochs=0,
           **options)

where ``options`` are the keyword-only options of :class:`~ridurre.pruning.BasePruning`
(``layers``, ``exclude``, ``round_to``, ``ranking``, ``output_dir``, ``seed``, ...).

Each class only names its criterion (:mod:`ridurre.criteria`); ``ridurre.Pruner(criterion, ...)``
runs any registered criterion without a class of its own.
"""

from __future__ import annotations

import numpy as np

from ridurre.criteria import scores as _scores
from ridurre.criteria import selection as _selection
from ridurre.pruning.loop import BasePruning

__all__ = [
    "RandomFilterPruning",
    "KMeansFilterPruning",
    "L1FilterPruning",
    "L2FilterPruning",
    "BNScaleFilterPruning",
    "ActivationFilterPruning",
    "ScoreFilterPruning",
    "METHODS",
]


class _Method(BasePruning):
    criterion_scope = "producers"  # ridurre 0.0.2's scores unless criterion_options says scope="group"

    def __init__(
        self,
        factor,
        model_compile_fn,
        model_finetune_fn,
        nb_finetune_epochs,
        maximum_prune_iterations=None,
        maximum_pruning_percent=0.9,
        nb_trained_for_epochs=0,
        **options,
    ):
        super().__init__(
            factor,
            model_compile_fn,
            model_finetune_fn,
            nb_finetune_epochs,
            nb_trained_for_epochs=nb_trained_for_epochs,
            maximum_prune_iterations=maximum_prune_iterations,
            maximum_pruning_percent=maximum_pruning_percent,
            **options,
        )


class RandomFilterPruning(_Method):
    """Remove a random ``removal_factor`` share of each group's channels every iteration.

    A baseline (Mittal et al., "Recovering from Random Pruning", 2018): surprisingly strong.

    Example:
        >>> import ridurre
        >>> pruning = ridurre.RandomFilterPruning(0.2, lambda m: m.compile("adam", "mse"), None, 0,
        ...                                       maximum_prune_iterations=1)
    """

    criterion = "random"


class KMeansFilterPruning(_Method):
    """The original ridurre method: keep ``ceil(n * clustering_factor)`` channels, one per cluster
    of a KMeans over the flattened filter weights (the filter nearest each centroid).

    Coupled groups cluster on the concatenated weights of all their producers. Seeded
    (``seed=``) and fast (see ``bench/kmeans_scoring.py``).

    Example:
        >>> import ridurre
        >>> pruning = ridurre.KMeansFilterPruning(0.9, lambda m: m.compile("adam", "mse"), None, 0,
        ...                                       maximum_pruning_percent=0.4, maximum_prune_iterations=12)
    """

    criterion = "kmeans"

    def removal_count(self, nb_channels, factor):
        return _selection.channels_to_keep(nb_channels, factor)[1]


class L1FilterPruning(_Method):
    """Remove the channels whose filters have the smallest L1 norm (Li et al., "Pruning Filters
    for Efficient ConvNets", 2017). Norms of coupled producers are summed.

    Example:
        >>> import ridurre
        >>> pruning = ridurre.L1FilterPruning(0.1, lambda m: m.compile("adam", "mse"), None, 0)
    """

    criterion = "l1"


class L2FilterPruning(L1FilterPruning):
    """Like :class:`L1FilterPruning` with the L2 norm."""

    criterion = "l2"


class BNScaleFilterPruning(_Method):
    """Remove the channels with the smallest BatchNormalization scale |gamma| (Network Slimming,
    Liu et al. 2017). Groups with no BatchNormalization fall back to the L1 norm."""

    criterion = "bn_scale"


class ActivationFilterPruning(_Method):
    """Remove the channels that are least active on a data sample.

    ``kind="mean"``: mean absolute activation (the "spike activity" / firing-rate score);
    ``kind="apoz"``: 1 - Average Percentage of Zeros (Hu et al. 2016), so dead channels go first.
    Activations are read after the BatchNormalization and nonlinearity that follow each producer.

    Args:
        data: inputs to record activations on (a few hundred examples are enough).
        kind: ``"mean"`` or ``"apoz"``.
    """

    def __init__(
        self,
        removal_factor,
        model_compile_fn,
        model_finetune_fn,
        nb_finetune_epochs,
        maximum_prune_iterations=None,
        maximum_pruning_percent=0.9,
        nb_trained_for_epochs=0,
        *,
        data,
        kind="mean",
        **options,
    ):
        if kind not in _scores.ACTIVATION_KINDS:
            raise ValueError(f"kind must be one of {_scores.ACTIVATION_KINDS}, got {kind!r}")
        if data is None or len(data) == 0:
            raise ValueError("data must hold at least one input example to record activations on")
        options.setdefault("criterion", "apoz" if kind == "apoz" else "activation_mean")
        options.setdefault("criterion_options", {"data": data})
        super().__init__(
            removal_factor,
            model_compile_fn,
            model_finetune_fn,
            nb_finetune_epochs,
            maximum_prune_iterations,
            maximum_pruning_percent,
            nb_trained_for_epochs,
            **options,
        )
        self.data = data
        self.kind = kind


class ScoreFilterPruning(_Method):
    """Prune by externally computed per-filter scores (e.g. SSVEP frequency-response scores).

    Args:
        scores: ``{layer_name: per-filter scores}`` for the ORIGINAL model (higher = keep), or a
            callable ``fn(layer_name, layer) -> scores`` recomputed each iteration (e.g.
            :func:`ridurre.ssvep.frequency_response_scores` on the layer's kernel). Fixed scores
            follow their filters across iterations as indices shift.
    """

    def __init__(
        self,
        removal_factor,
        model_compile_fn,
        model_finetune_fn,
        nb_finetune_epochs,
        maximum_prune_iterations=None,
        maximum_pruning_percent=0.9,
        nb_trained_for_epochs=0,
        *,
        scores,
        **options,
    ):
        if not callable(scores) and not isinstance(scores, dict):
            raise TypeError("scores must be a dict {layer_name: scores} or a callable fn(layer_name, layer)")
        super().__init__(
            removal_factor,
            model_compile_fn,
            model_finetune_fn,
            nb_finetune_epochs,
            maximum_prune_iterations,
            maximum_pruning_percent,
            nb_trained_for_epochs,
            **options,
        )
        self._scores = scores
        self._alive = {}  # layer -> original indices of the filters still present

    def _fixed_scores(self, name):
        """The given scores of layer ``name`` (original filter order), or None."""
        if callable(self._scores):
            return None
        key = name if name in self._scores else name.rsplit("/", 1)[-1]
        return np.asarray(self._scores[key], dtype=np.float64) if key in self._scores else None

    def _current_scores(self, name, layer, n):
        if callable(self._scores):
            return np.asarray(self._scores(name, layer), dtype=np.float64)
        original = self._fixed_scores(name)
        if original is None:
            return None
        alive = self._alive.setdefault(name, np.arange(len(original)))
        if len(alive) != n:
            raise ValueError(f"scores for layer {name!r} track {len(alive)} filters but the layer has {n}")
        return original[alive]

    def _summed_scores(self, view):
        """Scores of the group's channels summed over its scored producers, or None if none is."""
        total = np.zeros(view.size)
        found = False
        for path, layer in view.producer_layers():
            index = view.output_index(path)
            scores = self._current_scores(path, layer, len(index))
            if scores is None:
                continue
            found = True
            np.add.at(total, index[index >= 0], scores[index >= 0])
        return total if found else None

    def score_channels(self, view):
        total = self._summed_scores(view)
        if total is None:
            raise ValueError(f"no scores given for any producer of group {view.name!r} ({view.group.producers})")
        return total

    def run_pruning(self, model, prune_factor_scheduler_fn=None, custom_objects_inside_model=None):
        self._alive = {}
        return super().run_pruning(model, prune_factor_scheduler_fn, custom_objects_inside_model)

    def _forget(self, removed):
        for path, positions in removed.items():  # keep the original indices of surviving filters
            original = self._fixed_scores(path)
            if original is not None:
                alive = self._alive.setdefault(path, np.arange(len(original)))
                self._alive[path] = np.delete(alive, np.asarray(positions, dtype=np.int64))

    def _after_resume(self):
        for record in self.history:
            self._forget(record.removed)

    def _prune_step(self, model, factor, iteration):
        new_model, removed = super()._prune_step(model, factor, iteration)
        self._forget(removed)
        return new_model, removed


METHODS = {
    "random": RandomFilterPruning,
    "kmeans": KMeansFilterPruning,
    "l1": L1FilterPruning,
    "l2": L2FilterPruning,
    "bn": BNScaleFilterPruning,
    "activation": ActivationFilterPruning,
    "scores": ScoreFilterPruning,
}
"""The classic method classes by their 1.0.0.dev names (any criterion name also works with
:class:`ridurre.pruning.Pruner`)."""
