"""The built-in criteria: random, L1, L2, LAMP, BatchNorm scale, KMeans, FPGM, activation (mean,
APoZ), HRank, and the gradient criteria Taylor and Hessian diagonal (OBD).

Each is one small :class:`~ridurre.criteria.Criterion` subclass over the numpy scores of
:mod:`ridurre.criteria.scores`, registered under its name.

Weight criteria are :class:`GroupCriterion` objects: by default they score a channel by every
layer of its group (the producers' output weights, the consumers' input weights, the
normalization scales and depthwise filters, see :meth:`~ridurre.criteria.GroupView.members`),
reduce the members with ``reduction`` and normalize each group's scores with ``normalizer`` for
global ranking, as Torch-Pruning's group importance does. ``scope="producers"`` gives ridurre
0.0.2's scores (the producing layers only), which the classic method classes keep using.
"""

from __future__ import annotations

import numpy as np

from ridurre.criteria import scores as _scores
from ridurre.criteria.base import Criterion, register_criterion

__all__ = [
    "GroupCriterion",
    "RandomCriterion",
    "L1Criterion",
    "L2Criterion",
    "LAMPCriterion",
    "BNScaleCriterion",
    "ActivationMeanCriterion",
    "APoZCriterion",
    "KMeansCriterion",
    "FPGMCriterion",
    "HRankCriterion",
    "TaylorCriterion",
    "HessianCriterion",
    "SCOPES",
]

SCOPES = ("group", "producers")
"""What a weight criterion scores: the whole coupled group, or only the producing layers (0.0.2)."""

_DEFAULT = object()


class GroupCriterion(Criterion):
    """A criterion over the weights of a group, with Torch-Pruning's group options.

    Args:
        scope: ``"group"`` (default): every layer of the group; ``"producers"``: only the
            layers producing the channels, as ridurre 0.0.2 (and the classic method classes).
        reduction: how the members' scores combine, one of
            :data:`~ridurre.criteria.scores.REDUCTIONS` (default ``"mean"`` for the group,
            ``"sum"`` for the producers, as 0.0.2).
        normalizer: how a group's scores are scaled before ``ranking="global"`` compares groups,
            one of :data:`~ridurre.criteria.scores.NORMALIZERS`, or ``None`` to compare the raw
            scores (default ``"mean"``, as 0.0.2's global ranking).
    """

    scoped = True
    group_reduction = "mean"
    group_normalizer = "mean"

    def __init__(self, scope="group", reduction=None, normalizer=_DEFAULT):
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        if reduction is not None and reduction not in _scores.REDUCTIONS:
            raise ValueError(f"reduction must be one of {_scores.REDUCTIONS}, got {reduction!r}")
        if normalizer is not _DEFAULT and normalizer is not None and normalizer not in _scores.NORMALIZERS:
            raise ValueError(f"normalizer must be one of {_scores.NORMALIZERS} or None, got {normalizer!r}")
        self.scope = scope
        self.reduction = reduction or (self.group_reduction if scope == "group" else "sum")
        self.normalizer = self.group_normalizer if normalizer is _DEFAULT else normalizer

    def matrices(self, view, roles=("producer", "consumer", "norm", "carrier"), transform=None):
        """The members' matrices this criterion scores (only the producers with ``scope="producers"``)."""
        if self.scope == "producers":
            roles = ("producer",)
        mats = [m.matrix for m in view.members(roles, transform)]
        if not mats:
            raise ValueError(f"group {view.name!r} has no layer with weights to score")
        return mats

    def __repr__(self) -> str:
        if self.scope == "group":
            return f"<criterion {self.name!r}>"
        return f"<criterion {self.name!r} scope={self.scope!r}>"


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
class L1Criterion(GroupCriterion):
    """Weight magnitude (Li et al. 2017). Over the group: the sum of ``|w|`` of each member's row
    (``|w|**2`` for L2), reduced over the members; with ``scope="producers"`` the L1 norms of the
    producing filters, summed (ridurre 0.0.2)."""

    name = "l1"
    description = "smallest L1 norm of the channel's weights over its group (Li et al. 2017)"
    score_label = "L1 norm"
    norm = 1

    def score(self, view):
        if self.scope == "producers":
            return _scores.lp_norm_scores(view.weight_matrices(), p=self.norm, reduction=self.reduction)
        return _scores.magnitude_scores(self.matrices(view), p=self.norm, reduction=self.reduction)


@register_criterion
class L2Criterion(L1Criterion):
    """Like :class:`L1Criterion` with the (squared, over the group) L2 norm."""

    name = "l2"
    description = "smallest L2 norm of the channel's weights over its group"
    score_label = "L2 norm"
    norm = 2


@register_criterion
class LAMPCriterion(L2Criterion):
    """LAMP (Lee et al. 2021): the squared L2 magnitude, normalized so that global ranking
    compares each channel with what is left of its own group (``normalizer="lamp"``)."""

    name = "lamp"
    description = "LAMP: L2 magnitude normalized within each group, for global ranking (Lee et al. 2021)"
    score_label = "L2 norm (LAMP-normalized globally)"
    group_normalizer = "lamp"

    def __init__(self, scope="group", reduction=None, normalizer="lamp"):
        super().__init__(scope, reduction, normalizer)


@register_criterion
class BNScaleCriterion(GroupCriterion):
    """|gamma| of the normalization after each channel (Network Slimming, Liu et al. 2017): every
    BatchNormalization, LayerNormalization and GroupNormalization scale of the group, reduced;
    groups with none are ranked by their L1 magnitude. With ``scope="producers"``: the
    BatchNormalization scales, summed, and the producers' L1 norms where none follows (0.0.2)."""

    name = "bn_scale"
    aliases = ("bn",)
    description = "smallest normalization scale |gamma| (Network Slimming); L1 norm where no BN follows"
    score_label = "BN |gamma|"

    def score(self, view):
        if self.scope == "producers":
            try:
                return _scores.bn_scale_scores(view.bn_gammas(), reduction="sum")
            except ValueError:
                return _scores.lp_norm_scores(view.weight_matrices(), p=1, normalize=True)
        norms = [m.matrix for m in view.members(("norm",))]
        if norms:
            return _scores.magnitude_scores(norms, p=1, reduction=self.reduction)
        return _scores.magnitude_scores(self.matrices(view), p=1, reduction=self.reduction)


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
class HRankCriterion(ActivationMeanCriterion):
    """HRank (Lin et al. 2020): the average rank of each channel's feature maps on a data sample;
    low-rank maps carry little information. On 1-D maps and Dense units the rank is 1 for a
    non-zero map and 0 for a dead one (see :func:`ridurre.criteria.scores.hrank_scores`)."""

    name = "hrank"
    aliases = ()
    description = "lowest average rank of the channel's feature maps on a data sample (HRank, Lin et al. 2020)"
    score_label = "average feature-map rank"

    def score(self, view):
        return _scores.hrank_scores(view.feature_maps(self.data, self.batch_size), reduction="sum")


@register_criterion
class KMeansCriterion(GroupCriterion):
    """ridurre's original criterion: cluster the channels (KMeans over their flattened weights)
    and keep the channel nearest each centroid. Over the group, a channel's point is all its
    members' rows side by side, each member scaled to unit variance (``standardize``); with
    ``scope="producers"`` the producers' filters, concatenated (0.0.2). As scores (for global
    ranking), the kept channels rank above the redundant ones."""

    name = "kmeans"
    description = "KMeans over each group's channel weights: one channel kept per cluster, the redundant rest removed"
    score_label = "KMeans score"

    def _points(self, view):
        roles = ("producer", "consumer", "carrier")  # a scale (one number per channel) is no direction
        return self.matrices(view, roles), self.scope == "group"

    def select(self, view, n_remove):
        mats, standardize = self._points(view)
        keep = _scores.kmeans_keep(mats, view.size - n_remove, seed=view.seed % (2**32), standardize=standardize)
        return np.setdiff1d(np.arange(view.size), keep)

    def score(self, view):
        n_remove = view.n_remove if view.n_remove is not None else view.size // 10
        n_keep = max(1, view.size - int(n_remove))
        mats, standardize = self._points(view)
        return _scores.kmeans_scores(mats, n_keep, seed=view.seed % (2**32), standardize=standardize)


@register_criterion
class FPGMCriterion(GroupCriterion):
    """Filter Pruning via Geometric Median (He et al. 2019): the channels whose weights lie
    nearest the geometric median of their layer's channels are the most replaceable; over the
    group, each producer's and consumer's rows are scored and reduced."""

    name = "fpgm"
    description = "channels nearest the geometric median of their layer (FPGM, He et al. 2019): the most replaceable"
    score_label = "distance to the other channels"

    def score(self, view):
        return _scores.fpgm_scores(self.matrices(view, ("producer", "consumer", "carrier")), reduction=self.reduction)


def _check_data(name, data, labels=None, need_labels=False):
    examples = len(data[0]) if isinstance(data, (list, tuple)) and len(data) else (0 if data is None else len(data))
    if examples == 0:
        what = "data=<a few hundred training inputs>" + (", labels=<their targets>" if need_labels else "")
        raise ValueError(f"criterion {name!r} needs a sample of the training data: pass {what}")
    if need_labels and (labels is None or len(labels) != examples):
        raise ValueError(
            f"criterion {name!r} takes loss gradients: pass labels=<one target per example of data> "
            f"({examples} examples), got {None if labels is None else len(labels)}"
        )


@register_criterion
class TaylorCriterion(GroupCriterion):
    """First-order Taylor importance (Molchanov et al. 2019): the loss change of removing a
    weight is about ``|w * dL/dw|``; a channel scores the sum over its group's weights.

    Gradients are the mean over batches of user data through the model's compiled loss (or
    ``loss``), in inference mode, on every Keras backend (see
    :func:`ridurre.criteria.gradients.accumulate_gradients`).

    Args:
        data, labels: inputs and their targets (a few hundred examples are enough).
        batch_size: examples per gradient; max_batches: use at most this many batches.
        loss: a Keras loss used instead of the model's compiled one.
        scope, reduction, normalizer: see :class:`GroupCriterion`.
    """

    name = "taylor"
    description = "smallest first-order Taylor importance |w * dL/dw| on user data (Molchanov et al. 2019)"
    score_label = "|w * dL/dw|"
    needs = frozenset({"weights", "data", "gradients"})
    kind = "mean"

    def __init__(
        self,
        data=None,
        labels=None,
        batch_size=32,
        max_batches=None,
        loss=None,
        scope="group",
        reduction=None,
        normalizer=_DEFAULT,
    ):
        _check_data(self.name, data, labels, need_labels=True)
        super().__init__(scope, reduction, normalizer)
        self.data, self.labels, self.batch_size, self.max_batches, self.loss = (
            data,
            labels,
            batch_size,
            max_batches,
            loss,
        )

    def _saliency(self, weights, grads):
        return {k: np.asarray(w, dtype=np.float64) * grads[k] for k, w in weights.items()}

    def score(self, view):
        gradients = view.gradients(self.data, self.labels, self.batch_size, self.max_batches, self.loss)

        def transform(layer, weights):
            return self._saliency(weights, view.layer_gradients(layer, gradients, self.kind))

        return _scores.magnitude_scores(self.matrices(view, transform=transform), p=1, reduction=self.reduction)


@register_criterion
class HessianCriterion(TaylorCriterion):
    """Optimal Brain Damage (LeCun et al. 1990): removing a weight costs about
    ``h * w**2 / 2``, with the Hessian diagonal ``h`` estimated by the mean squared batch
    gradient (empirical Fisher); a channel scores the sum over its group's weights."""

    name = "hessian"
    aliases = ("obd",)
    description = "smallest Hessian-diagonal saliency h * w^2 / 2 on user data (OBD, empirical Fisher)"
    score_label = "h * w^2 / 2"
    kind = "square"

    def _saliency(self, weights, grads):
        return {k: 0.5 * grads[k] * np.asarray(w, dtype=np.float64) ** 2 for k, w in weights.items()}
