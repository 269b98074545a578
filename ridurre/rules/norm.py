"""Rules of normalization layers and of activations that could mix channels."""

from __future__ import annotations

import numpy as np

from ridurre.rules.base import PassThroughRule, Unsupported, is_last_axis

__all__ = [
    "BatchNormRule",
    "GroupNormRule",
    "LayerNormRule",
    "RMSNormRule",
    "UnitNormRule",
    "NormalizationRule",
    "check_activation",
    "check_softmax_axis",
]


def _check_bn_axis(layer, in_shape):
    if not is_last_axis(layer.axis, len(in_shape)):
        raise Unsupported(f"normalizes axis {layer.axis}, not the channel axis")


def _check_layer_norm_axis(layer, in_shape):
    if not is_last_axis(layer.axis, len(in_shape)):
        raise Unsupported(f"normalizes axes {layer.axis}, not only the channel axis")


def check_softmax_axis(layer, in_shape):
    """Refuse a softmax over the channel axis."""
    axis = getattr(layer, "axis", -1)
    if is_last_axis(axis, len(in_shape)):
        raise Unsupported("softmax over the channel axis mixes channels")


def check_activation(layer, in_shape):
    """Refuse an ``Activation`` layer whose function mixes channels (softmax)."""
    name = getattr(layer.activation, "__name__", str(layer.activation))
    if name in ("softmax", "log_softmax"):
        raise Unsupported(f"activation {name!r} mixes channels")


class BatchNormRule(PassThroughRule):
    """BatchNormalization on the channel axis: gamma, beta and the moving statistics are sliced.
    Zeroing sets gamma and beta to 0, so the channel is exactly zero after normalization."""

    def __init__(self):
        super().__init__(
            per_channel_weights=("gamma", "beta", "moving_mean", "moving_variance"),
            zero_to={"gamma": 0.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0},
            check=_check_bn_axis,
            cost="normalization",
            in_activation=True,
            saved_weights=(("gamma", "scale"), ("beta", "center"), ("moving_mean", None), ("moving_variance", None)),
        )

    def weight_names(self, config):
        names = super().weight_names(config)
        if config.get("renorm"):
            names += ("moving_stddev", "renorm_mean", "renorm_stddev")
        return names


class LayerNormRule(PassThroughRule):
    """LayerNormalization over the channel axis only. Removing channels changes its statistics,
    so a pruned model is structurally right but not numerically equal to the zeroed one: the
    groups through it are flagged (``ChannelGroup.exact`` is False), see :attr:`LayerRule.exact`.

    Example:
        >>> LayerNormRule().exact
        False
    """

    exact = False
    inexact_reason = "normalizes over the channels: removing some changes the mean and variance of the others"

    def __init__(self):
        super().__init__(
            per_channel_weights=("gamma", "beta"),
            zero_to={"gamma": 0.0, "beta": 0.0},
            check=_check_layer_norm_axis,
            cost="normalization",
            saved_weights=(("gamma", "scale"), ("beta", "center")),
        )


class GroupNormRule(PassThroughRule):
    """GroupNormalization: channels of one group are coupled, so whole groups are removed."""

    def __init__(self):
        super().__init__(
            per_channel_weights=("gamma", "beta"), zero_to={"gamma": 0.0, "beta": 0.0}, cost="normalization"
        )

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if not is_last_axis(layer.axis, len(in_shapes[0])):
            raise Unsupported(f"normalizes axis {layer.axis}, not the channel axis")
        lay = in_layouts[0]
        size = len(lay) // layer.groups
        for g in range(layer.groups):
            ctx.union(lay[g * size : g * size + 1].repeat(size - 1), lay[g * size + 1 : (g + 1) * size])
        return [lay]

    def slice(self, layer, config, weights, in_keep, out_keep):
        config, weights = super().slice(layer, config, weights, in_keep, out_keep)
        if out_keep is not None:
            size = len(out_keep) // layer.groups
            config = {**config, "groups": int(np.count_nonzero(out_keep)) // size}
        return config, weights


class RMSNormRule(PassThroughRule):
    """RMSNormalization over the channel axis (``scale`` sliced). Like LayerNormalization, not
    exact: the root mean square is taken over the channels that remain."""

    exact = False
    inexact_reason = "normalizes over the channels: removing some changes their root mean square"

    def __init__(self):
        super().__init__(
            per_channel_weights=("scale",),
            zero_to={"scale": 0.0},
            check=_check_layer_norm_axis,
            cost="normalization",
            saved_weights=(("scale", None),),
        )


class UnitNormRule(PassThroughRule):
    """UnitNormalization over the channel axis (no weights). Not exact: a zeroed channel that is
    not exactly zero where it is normalized (after a sigmoid, say) still counts in the L2 norm."""

    exact = False
    inexact_reason = "normalizes over the channels: the L2 norm is taken over the channels that remain"

    def __init__(self):
        super().__init__(check=_check_layer_norm_axis, cost="normalization")


class NormalizationRule(PassThroughRule):
    """``keras.layers.Normalization``: its mean and variance are sliced with the channels, as
    weights and, when they were given to the constructor, in its config too (else the rebuilt
    layer would broadcast the original statistics onto fewer channels).

    Example:
        >>> import numpy as np
        >>> config = {"axis": -1, "mean": [0.0, 1.0, 2.0], "variance": [1.0, 1.0, 4.0]}
        >>> weights = {"mean": np.arange(3.0), "variance": np.ones(3), "count": np.array(9)}
        >>> config, weights = NormalizationRule().slice(None, config, weights, None, np.array([1, 0, 1], bool))
        >>> config["mean"], config["variance"], weights["mean"].tolist()
        ([0.0, 2.0], [1.0, 4.0], [0.0, 2.0])
    """

    def __init__(self):
        super().__init__(per_channel_weights=("mean", "variance"), cost="normalization")

    def slice(self, layer, config, weights, in_keep, out_keep):
        config, weights = super().slice(layer, config, weights, in_keep, out_keep)
        if out_keep is None:
            return config, weights
        config = dict(config)
        for key in ("mean", "variance"):
            value = config.get(key)
            if value is not None and np.ndim(value) and np.shape(value)[-1] == len(out_keep):
                config[key] = np.asarray(value)[..., out_keep].tolist()
        return config, weights
