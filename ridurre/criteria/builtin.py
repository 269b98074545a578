"""The built-in criteria: random, L1, L2, BatchNorm scale, activation (mean, APoZ) and KMeans.

Each is one small :class:`~ridurre.criteria.Criterion` subclass over the numpy scores of
:mod:`ridurre.criteria.scores`, registered under its name.
"""

from __future__ import annotations

import numpy as np

from ridurre.criteria import scores as _scores
from ridurre.criteria.base import Criterion, register_criterion

__all__ = [
    "RandomCriterion",
    "L1Criterion",
    "L2Criterion",
    "BNScaleCriterion",
    "ActivationMeanCriterion",
    "APoZCriterion",
    "KMeansCriterion",
]


@register_criterion
class RandomCriterion(Criterion):
    """Random scores, seeded per group and iteration: the random-pruning baseline (Mittal et al. 2018)."""

    name = "random"
    description = "random scores, seeded (a baseline: channels are chosen at random)"
    score_label = "random score"
    needs = frozenset()

    def score(self, view):
        return _scores.random_scores(view.size, view.seed)


@register_criterion
class L1Criterion(Criterion):
    """The L1 norm of the weights producing each channel (Li et al. 2017), summed over the
    coupled producers of the group."""

    name = "l1"
    description = "smallest L1 norm of the filter weights (Li et al. 2017)"
    score_label = "L1 norm of the filter"
    norm = 1

    def score(self, view):
        return _scores.lp_norm_scores(view.weight_matrices(), p=self.norm, reduction="sum")


@register_criterion
class L2Criterion(L1Criterion):
    """Like :class:`L1Criterion` with the L2 norm."""

    name = "l2"
    description = "smallest L2 norm of the filter weights"
    score_label = "L2 norm of the filter"
    norm = 2


@register_criterion
class BNScaleCriterion(Criterion):
    """|gamma| of the BatchNormalization after each channel (Network Slimming, Liu et al. 2017);
    groups with no BatchNormalization are ranked by the L1 norm of their filters."""

    name = "bn_scale"
    aliases = ("bn",)
    description = "smallest BatchNormalization scale |gamma| (Network Slimming); L1 norm where no BN follows"
    score_label = "BN |gamma|"

    def score(self, view):
        try:
            return _scores.bn_scale_scores(view.bn_gammas(), reduction="sum")
        except ValueError:
            return _scores.lp_norm_scores(view.weight_matrices(), p=1, normalize=True)


@register_criterion
class ActivationMeanCriterion(Criterion):
    """Mean absolute activation of each channel on a data sample (the firing-rate score).

    Args:
        data: inputs to record activations on (a few hundred examples are enough).
        batch_size: batch size of the recording.
    """

    name = "activation_mean"
    aliases = ("activation", "mean")
    description = "least active channels on a sample of the training data (mean |activation|)"
    score_label = "activation score"
    needs = frozenset({"weights", "data"})
    kind = "mean"

    def __init__(self, data=None, batch_size=64):
        if data is None or len(data) == 0:
            raise ValueError(f"criterion {self.name!r} scores activations: pass data=<a few hundred training inputs>")
        self.data, self.batch_size = data, batch_size

    def score(self, view):
        return _scores.activation_scores(view.activations(self.data, self.batch_size), kind=self.kind)


@register_criterion
class APoZCriterion(ActivationMeanCriterion):
    """1 - the Average Percentage of Zeros of each channel on a data sample (Hu et al. 2016):
    channels that are mostly zero (dead) go first."""

    name = "apoz"
    aliases = ()
    description = "channels most often zero on a sample of the training data (APoZ, Hu et al. 2016)"
    score_label = "1 - APoZ"
    kind = "apoz"


@register_criterion
class KMeansCriterion(Criterion):
    """ridurre's original criterion: cluster the filters (KMeans over their flattened weights)
    and keep the filter nearest each centroid; coupled producers cluster on their concatenated
    weights. As scores (for global ranking), the kept filters rank above the redundant ones."""

    name = "kmeans"
    description = "KMeans over each layer's filter weights: one filter kept per cluster, the redundant rest removed"
    score_label = "KMeans score"

    def select(self, view, n_remove):
        keep = _scores.kmeans_keep(view.weight_matrices(), view.size - n_remove, seed=view.seed % (2**32))
        return np.setdiff1d(np.arange(view.size), keep)

    def score(self, view):
        n_remove = view.n_remove if view.n_remove is not None else view.size // 10
        n_keep = max(1, view.size - int(n_remove))
        return _scores.kmeans_scores(view.weight_matrices(), n_keep, seed=view.seed % (2**32))
