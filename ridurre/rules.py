"""Per-layer channel rules: how channels flow through a layer and how its weights are sliced.

Every layer type ridurre can prune through has exactly one :class:`LayerRule` in the registry
below. A rule answers three questions:

* ``propagate``: given the *layouts* of the layer's inputs (for each position of the channel
  axis, the id of the channel *unit* it carries), what are the layouts of its outputs, and which
  positions are coupled (must be pruned together)?
* ``slice``: given which input and output channel positions are kept, what are the new config
  and weights?
* ``zero``: given which input and output positions are pruned, what weights make the layer
  behave exactly as if they had been removed, with the same shapes?

Channels are always the last axis (``channels_last``). A layer with no rule, or whose rule
raises :class:`Unsupported`, makes every channel it touches unprunable, with the reason
recorded: ridurre never builds a silently wrong model.

Teaching ridurre a new layer type is one call::

    from ridurre.rules import register_rule, PassThroughRule
    register_rule(MyScaleLayer, PassThroughRule(per_channel_weights=("scale",)))
"""

from __future__ import annotations

import math

import numpy as np

from keras import layers as L

__all__ = [
    "Unsupported",
    "LayerRule",
    "PassThroughRule",
    "register_rule",
    "get_rule",
    "RULES",
]


class Unsupported(Exception):
    """Raised by a rule when it cannot carry channels through a layer; the message is the reason."""


def _channels_last(layer):
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise Unsupported(f"data_format={fmt!r} is not supported (channels_last only)")


def _is_last_axis(axis, rank):
    """True when ``axis`` (int or 1-element list, may be negative) is the last axis of a tensor
    whose shape WITHOUT the batch axis has ``rank`` dimensions (the traced shapes have no batch
    axis, while a layer's ``axis`` counts it: BatchNormalization(axis=3) on (H, W, C) is the
    channel axis, as in every keras.applications model)."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis == -1 or axis == rank


class LayerRule:
    """Base rule. Subclasses override what differs; the defaults describe a weightless layer
    whose single output carries its single input's channels unchanged.

    Attributes:
        produces: the layer creates new channels (Conv, Dense): its output channels are scored.
        channel_dependent: the layer's config or weights depend on the number of channels, so
            when it is shared between several calls, all calls must keep the same channels.
    """

    produces = False
    channel_dependent = False

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if len(in_layouts) != 1 or len(out_shapes) != 1:
            raise Unsupported(f"expected one input and one output, got {len(in_layouts)} and {len(out_shapes)}")
        if out_shapes[0][-1] != in_shapes[0][-1]:
            raise Unsupported("the layer changes the number of channels")
        return [in_layouts[0]]

    def slice(self, layer, config, weights, in_keep, out_keep):
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        return weights


class PassThroughRule(LayerRule):
    """Channels pass through unchanged; ``per_channel_weights`` names weights whose last axis is
    the channel axis (PReLU's ``alpha``, BatchNormalization's ``gamma``...)."""

    def __init__(self, per_channel_weights=(), zero_to=None, check=None):
        self.per_channel_weights = tuple(per_channel_weights)
        self.channel_dependent = bool(per_channel_weights)
        self.zero_to = dict(zero_to or {})
        self.check = check

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        _channels_last(layer)
        if self.check is not None:
            self.check(layer, in_shapes[0])
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)

    def slice(self, layer, config, weights, in_keep, out_keep):
        if out_keep is None:
            return config, weights
        return config, {
            k: (v[..., out_keep] if k in self.per_channel_weights and v.ndim and v.shape[-1] == len(out_keep) else v)
            for k, v in weights.items()
        }

    def zero(self, layer, weights, in_zero, out_zero):
        if out_zero is None:
            return weights
        new = dict(weights)
        for name, value in self.zero_to.items():
            if name in new and new[name].ndim and new[name].shape[-1] == len(out_zero):
                arr = new[name].copy()
                arr[..., out_zero] = value
                new[name] = arr
        return new


def _check_bn_axis(layer, in_shape):
    if not _is_last_axis(layer.axis, len(in_shape)):
        raise Unsupported(f"normalizes axis {layer.axis}, not the channel axis")


def _check_layer_norm_axis(layer, in_shape):
    if not _is_last_axis(layer.axis, len(in_shape)):
        raise Unsupported(f"normalizes axes {layer.axis}, not only the channel axis")


def _check_softmax_axis(layer, in_shape):
    axis = getattr(layer, "axis", -1)
    if _is_last_axis(axis, len(in_shape)):
        raise Unsupported("softmax over the channel axis mixes channels")


def _check_activation(layer, in_shape):
    name = getattr(layer.activation, "__name__", str(layer.activation))
    if name in ("softmax", "log_softmax"):
        raise Unsupported(f"activation {name!r} mixes channels")


class MergeRule(LayerRule):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: every input's channel i is the same
    channel, so their units are joined; inputs with one broadcast channel are left alone."""

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        width = out_shapes[0][-1]
        full = [lay for lay, shape in zip(in_layouts, in_shapes) if shape[-1] == width]
        if len(full) + sum(1 for s in in_shapes if s[-1] == 1 and width != 1) != len(in_layouts):
            raise Unsupported("inputs have different channel counts")
        for other in full[1:]:
            ctx.union(full[0], other)
        return [full[0]]


class ElementwiseOpRule(MergeRule):
    """A raw ``keras.ops`` element-wise operation in a functional graph (``x + 3.0`` in
    hard-swish, ``x * y``; division is not registered): like a merge, provided every operand that is not a traced tensor is
    a scalar (a per-channel constant baked into the graph could not be sliced)."""

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        node = getattr(ctx, "node", None)
        if node is not None:
            for arg in list(node.arguments.args) + list(node.arguments.kwargs.values()):
                if hasattr(arg, "_keras_history"):
                    continue
                if np.ndim(arg) > 0 and np.size(arg) > 1:
                    raise Unsupported("an operand is a constant array, which cannot be sliced")
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)


class ConcatenateRule(LayerRule):
    """Concatenate on the channel axis maps channels by offset; on another axis it is a merge."""

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if _is_last_axis(layer.axis, len(in_shapes[0])):
            return [np.concatenate(in_layouts)]
        return MergeRule().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)


class FlattenRule(LayerRule):
    """Flatten of a channels_last tensor: flat index = position * C + c."""

    channel_dependent = False

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        _channels_last(layer)
        spatial = in_shapes[0][:-1]
        if any(d is None for d in spatial):
            raise Unsupported("spatial dimensions are unknown")
        return [np.tile(in_layouts[0], int(np.prod(spatial, dtype=np.int64)))]


class ReshapeRule(LayerRule):
    """Reshape where the channel mapping is determined: the last axis is kept, or everything is
    flattened into one axis (then like Flatten)."""

    channel_dependent = True

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        src, dst = in_shapes[0], out_shapes[0]
        if any(d is None for d in src[:-1] + dst[:-1]):
            raise Unsupported("dimensions are unknown")
        if dst[-1] == src[-1] and math.prod(src[:-1]) == math.prod(dst[:-1]):
            return [in_layouts[0]]
        if len(dst) == 1 and dst[0] == math.prod(src):
            return [np.tile(in_layouts[0], math.prod(src[:-1]))]
        raise Unsupported(f"the mapping of channels from {src} to {dst} is not determined")

    def slice(self, layer, config, weights, in_keep, out_keep):
        if in_keep is None:
            return config, weights
        target = list(config["target_shape"])
        new_channels = int(np.count_nonzero(in_keep))
        if len(target) == 1 and target[0] != len(in_keep):
            # flattened: the old target is spatial * old channels
            if target[0] != -1:
                target[0] = target[0] // len(in_keep) * new_channels
        elif target[-1] != -1:
            target[-1] = new_channels
        return {**config, "target_shape": tuple(target)}, weights


class PermuteRule(LayerRule):
    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if tuple(layer.dims)[-1] != len(layer.dims):
            raise Unsupported(f"dims={tuple(layer.dims)} moves the channel axis")
        return [in_layouts[0]]


class GroupNormRule(PassThroughRule):
    """GroupNormalization: channels of one group are coupled, so whole groups are removed."""

    def __init__(self):
        super().__init__(per_channel_weights=("gamma", "beta"), zero_to={"gamma": 0.0, "beta": 0.0})

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if not _is_last_axis(layer.axis, len(in_shapes[0])):
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


def _keep_index(mask):
    return np.flatnonzero(mask)


class ConvRule(LayerRule):
    """Conv1D/2D/3D and Dense (kernel ``(..., in, out)``), Conv*Transpose (kernel ``(..., out, in)``).

    Grouped convolutions keep their group structure: channel i of every input group is one
    unit, and so is output channel j of every output group, so each group loses the same ones.
    """

    produces = True
    channel_dependent = True

    def __init__(self, size_key, transpose=False):
        self.size_key = size_key
        self.transpose = transpose

    def _groups(self, layer):
        return int(getattr(layer, "groups", 1) or 1)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        _channels_last(layer)
        if len(in_layouts) != 1:
            raise Unsupported("expected one input")
        groups = self._groups(layer)
        lay = in_layouts[0]
        n_in = len(lay) // groups
        for g in range(1, groups):
            ctx.union(lay[:n_in], lay[g * n_in : (g + 1) * n_in])
        n_out = out_shapes[0][-1] // groups
        units = ctx.new_units(n_out)
        return [np.tile(units, groups)]

    def _axes(self, kernel):
        # (input axis, output axis) of the kernel
        return (kernel.ndim - 1, kernel.ndim - 2) if self.transpose else (kernel.ndim - 2, kernel.ndim - 1)

    def slice(self, layer, config, weights, in_keep, out_keep):
        weights = dict(weights)
        kernel = weights["kernel"]
        in_axis, out_axis = self._axes(kernel)
        groups = self._groups(layer)
        if in_keep is not None:
            per_group = in_keep[: len(in_keep) // groups]
            kernel = np.compress(per_group, kernel, axis=in_axis)
        if out_keep is not None:
            kernel = np.compress(out_keep, kernel, axis=out_axis)
            if "bias" in weights:
                weights["bias"] = weights["bias"][out_keep]
            config = {**config, self.size_key: int(np.count_nonzero(out_keep))}
        weights["kernel"] = kernel
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        weights = dict(weights)
        kernel = weights["kernel"].copy()
        in_axis, out_axis = self._axes(kernel)
        groups = self._groups(layer)
        if in_zero is not None:
            index = [slice(None)] * kernel.ndim
            index[in_axis] = in_zero[: len(in_zero) // groups]
            kernel[tuple(index)] = 0
        if out_zero is not None:
            index = [slice(None)] * kernel.ndim
            index[out_axis] = out_zero
            kernel[tuple(index)] = 0
            if "bias" in weights:
                bias = weights["bias"].copy()
                bias[out_zero] = 0
                weights["bias"] = bias
        weights["kernel"] = kernel
        return weights


class DepthwiseRule(LayerRule):
    """DepthwiseConv1D/2D: output channel ``c * m + k`` comes from input channel c, so it carries
    input channel c's unit (m = depth_multiplier)."""

    channel_dependent = True

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        _channels_last(layer)
        return [np.repeat(in_layouts[0], layer.depth_multiplier)]

    def slice(self, layer, config, weights, in_keep, out_keep):
        if in_keep is None:
            return config, weights
        weights = dict(weights)
        kernel = weights["kernel"]
        weights["kernel"] = kernel[..., in_keep, :]
        if "bias" in weights:
            weights["bias"] = weights["bias"].reshape(len(in_keep), -1)[in_keep].ravel()
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        if in_zero is None:
            return weights
        weights = dict(weights)
        kernel = weights["kernel"].copy()
        kernel[..., in_zero, :] = 0
        weights["kernel"] = kernel
        if "bias" in weights:
            bias = weights["bias"].reshape(len(in_zero), -1).copy()
            bias[in_zero] = 0
            weights["bias"] = bias.ravel()
        return weights


class SeparableRule(LayerRule):
    """SeparableConv1D/2D: a depthwise part carrying input channels, then a pointwise producer."""

    produces = True
    channel_dependent = True

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        _channels_last(layer)
        return [ctx.new_units(out_shapes[0][-1])]

    def slice(self, layer, config, weights, in_keep, out_keep):
        weights = dict(weights)
        if in_keep is not None:
            weights["depthwise_kernel"] = weights["depthwise_kernel"][..., in_keep, :]
            mid = np.repeat(in_keep, layer.depth_multiplier)
            weights["pointwise_kernel"] = weights["pointwise_kernel"][..., mid, :]
        if out_keep is not None:
            weights["pointwise_kernel"] = weights["pointwise_kernel"][..., out_keep]
            if "bias" in weights:
                weights["bias"] = weights["bias"][out_keep]
            config = {**config, "filters": int(np.count_nonzero(out_keep))}
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        weights = dict(weights)
        pointwise = weights["pointwise_kernel"].copy()
        if in_zero is not None:
            pointwise[..., np.repeat(in_zero, layer.depth_multiplier), :] = 0
        if out_zero is not None:
            pointwise[..., out_zero] = 0
            if "bias" in weights:
                bias = weights["bias"].copy()
                bias[out_zero] = 0
                weights["bias"] = bias
        weights["pointwise_kernel"] = pointwise
        return weights


class BatchNormRule(PassThroughRule):
    """BatchNormalization on the channel axis: gamma, beta and the moving statistics are sliced.
    Zeroing sets gamma and beta to 0, so the channel is exactly zero after normalization."""

    def __init__(self):
        super().__init__(
            per_channel_weights=("gamma", "beta", "moving_mean", "moving_variance"),
            zero_to={"gamma": 0.0, "beta": 0.0, "moving_mean": 0.0, "moving_variance": 1.0},
            check=_check_bn_axis,
        )


RULES: dict[type, LayerRule] = {}


def register_rule(layer_class, rule):
    """Register (or replace) the rule for ``layer_class`` (matched exactly, not by subclass).

    Args:
        layer_class: a Keras layer class.
        rule: a :class:`LayerRule` instance.

    Example:
        >>> import keras
        >>> from ridurre.rules import register_rule, get_rule, PassThroughRule
        >>> class Swish(keras.layers.Layer):
        ...     def call(self, x):
        ...         return x * keras.ops.sigmoid(x)
        >>> register_rule(Swish, PassThroughRule())
        >>> isinstance(get_rule(Swish()), PassThroughRule)
        True
    """
    if not isinstance(layer_class, type):
        raise TypeError(f"layer_class must be a class, got {layer_class!r}")
    if not isinstance(rule, LayerRule):
        raise TypeError(f"rule must be a ridurre.rules.LayerRule, got {type(rule).__name__}")
    RULES[layer_class] = rule


def get_rule(layer):
    """The rule for ``layer``, or ``None`` when ridurre does not know its type."""
    return RULES.get(type(layer))


def _register_builtin_rules():
    passthrough = PassThroughRule()
    for name in (
        "ReLU", "ELU", "LeakyReLU", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
        "ActivityRegularization", "Identity", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
        "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "GlobalAveragePooling1D",
        "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
        "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D",
        "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D",
        "UpSampling2D", "UpSampling3D", "Rescaling",
    ):
        if hasattr(L, name):
            register_rule(getattr(L, name), passthrough)
    register_rule(L.Activation, PassThroughRule(check=_check_activation))
    register_rule(L.Softmax, PassThroughRule(check=_check_softmax_axis))
    register_rule(L.PReLU, PassThroughRule(per_channel_weights=("alpha",)))
    register_rule(L.Normalization, PassThroughRule(per_channel_weights=("mean", "variance")))
    register_rule(L.BatchNormalization, BatchNormRule())
    register_rule(
        L.LayerNormalization,
        PassThroughRule(per_channel_weights=("gamma", "beta"), zero_to={"gamma": 0.0, "beta": 0.0},
                        check=_check_layer_norm_axis),
    )
    register_rule(L.GroupNormalization, GroupNormRule())
    merge = MergeRule()
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        register_rule(getattr(L, name), merge)
    register_rule(L.Concatenate, ConcatenateRule())
    from keras.src.ops import numpy as ops_numpy

    elementwise = ElementwiseOpRule()
    # not Divide: ``c / x`` turns a zeroed channel into inf, so zeroed would no longer equal deleted
    for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum"):
        if hasattr(ops_numpy, name):
            register_rule(getattr(ops_numpy, name), elementwise)
    register_rule(L.Flatten, FlattenRule())
    register_rule(L.Reshape, ReshapeRule())
    register_rule(L.Permute, PermuteRule())
    for name in ("Conv1D", "Conv2D", "Conv3D"):
        register_rule(getattr(L, name), ConvRule("filters"))
    for name in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
        register_rule(getattr(L, name), ConvRule("filters", transpose=True))
    register_rule(L.Dense, ConvRule("units"))
    for name in ("DepthwiseConv1D", "DepthwiseConv2D"):
        register_rule(getattr(L, name), DepthwiseRule())
    for name in ("SeparableConv1D", "SeparableConv2D"):
        register_rule(getattr(L, name), SeparableRule())


_register_builtin_rules()
