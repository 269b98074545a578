"""Rules of the layers that produce channels from weights: convolutions (plain, grouped,
transposed, depthwise, separable) and Dense.

MACs are counted per example (see :mod:`ridurre.metrics`): a convolution costs
``prod(output spatial) * filters * prod(kernel) * in_channels / groups``, a transposed one
``prod(input spatial) * in_channels * prod(kernel) * filters / groups``, a depthwise one
``prod(output spatial) * in_channels * depth_multiplier * prod(kernel)``, a separable one its
depthwise part plus ``prod(output spatial) * in_channels * depth_multiplier * filters``, and a
Dense layer ``in_units * units`` for every position of its input. An Embedding is a lookup: no
MACs.
"""

from __future__ import annotations

import numpy as np

from ridurre.rules.base import LayerRule, Unsupported, channels_last, fused_activation, prod

__all__ = ["ConvRule", "DenseRule", "DepthwiseRule", "SeparableRule", "EmbeddingRule"]

_KERNEL_AND_BIAS = (("kernel", None), ("bias", "use_bias"))


def _spatial(shape, layer):
    """``(spatial dims, channels)`` of a shape with its batch axis, for either data format."""
    axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else len(shape) - 1
    return [d for i, d in enumerate(shape) if i not in (0, axis)], shape[axis]


class _WeightedRule(LayerRule):
    """Shared by the rules of layers with a kernel: a fused activation counts as activation work."""

    cost = "activation"

    def other_ops(self, layer, in_shapes, out_shapes):
        return prod(out_shapes[0][1:]) if out_shapes and fused_activation(layer) else 0


class ConvRule(_WeightedRule):
    """Conv1D/2D/3D (kernel ``(..., in, out)``), Conv*Transpose (kernel ``(..., out, in)``).

    Grouped convolutions keep their group structure: channel i of every input group is one
    unit, and so is output channel j of every output group, so each group loses the same ones.
    A grouped convolution with ONE input channel per group (``Conv2D(groups=C)`` on C channels,
    how ConvNeXt writes its depthwise convolutions) is a depthwise convolution: output channel
    ``g * m + k`` carries input channel g (m = filters / groups), and removing channel g removes
    its group (``groups`` shrinks with it).

    Example:
        >>> import numpy as np
        >>> rule = ConvRule()
        >>> class DepthwiseLike:  # Conv2D(filters=8, groups=4) on 4 channels
        ...     groups = 4
        >>> keep_in = np.array([True, False, True, True])
        >>> config, weights = rule.slice(DepthwiseLike(), {"filters": 8, "groups": 4},
        ...     {"kernel": np.ones((3, 3, 1, 8)), "bias": np.arange(8.0)}, keep_in, np.repeat(keep_in, 2))
        >>> config, weights["kernel"].shape, weights["bias"].tolist()
        ({'filters': 6, 'groups': 3}, (3, 3, 1, 6), [0.0, 1.0, 4.0, 5.0, 6.0, 7.0])
    """

    produces = True
    channel_dependent = True
    saved_weights = _KERNEL_AND_BIAS

    def __init__(self, size_key="filters", transpose=False):
        self.size_key = size_key
        self.transpose = transpose

    def _groups(self, layer):
        return int(getattr(layer, "groups", 1) or 1)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
        if len(in_layouts) != 1:
            raise Unsupported("expected one input")
        groups = self._groups(layer)
        lay = in_layouts[0]
        n_in = len(lay) // groups
        if groups > 1 and n_in == 1 and not self.transpose:  # depthwise: one input channel per group
            return [np.repeat(lay, out_shapes[0][-1] // groups)]
        for g in range(1, groups):
            ctx.union(lay[:n_in], lay[g * n_in : (g + 1) * n_in])
        n_out = out_shapes[0][-1] // groups
        units = ctx.new_units(n_out)
        return [np.tile(units, groups)]

    def _axes(self, kernel):
        # (input axis, output axis) of the kernel
        return (kernel.ndim - 1, kernel.ndim - 2) if self.transpose else (kernel.ndim - 2, kernel.ndim - 1)

    def _depthwise(self, layer, kernel):
        """One input channel per group: the grouped convolution is a depthwise one."""
        return not self.transpose and self._groups(layer) > 1 and kernel.shape[self._axes(kernel)[0]] == 1

    def slice(self, layer, config, weights, in_keep, out_keep):
        weights = dict(weights)
        kernel = weights["kernel"]
        in_axis, out_axis = self._axes(kernel)
        groups = self._groups(layer)
        if self._depthwise(layer, kernel):
            if in_keep is not None:
                out_keep = np.repeat(in_keep, kernel.shape[out_axis] // groups)
                config = {**config, "groups": int(np.count_nonzero(in_keep))}
            in_keep = None  # the kernel's input axis is the single channel of each group
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
        if self._depthwise(layer, kernel) and in_zero is not None:
            by_input = np.repeat(in_zero, kernel.shape[out_axis] // groups)
            out_zero = by_input if out_zero is None else (out_zero | by_input)
            in_zero = None
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

    def macs(self, layer, in_shapes, out_shapes):
        kernel = prod(getattr(layer, "kernel_size", ()))
        groups = self._groups(layer)
        in_spatial, in_ch = _spatial(in_shapes[0], layer)
        out_spatial, out_ch = _spatial(out_shapes[0], layer)
        if self.transpose:
            return prod(in_spatial) * in_ch * kernel * out_ch // groups
        return prod(out_spatial) * out_ch * kernel * in_ch // groups

    def output_weights(self, layer, weights):
        kernel = np.asarray(weights["kernel"])
        out_axis = self._axes(kernel)[1]
        return np.moveaxis(kernel, out_axis, 0).reshape(kernel.shape[out_axis], -1)

    def input_weights(self, layer, weights):
        """Row ``c`` = the kernel slice reading input channel ``c``: for a grouped convolution,
        channel ``c`` of group ``g`` only feeds that group's outputs.

        Example:
            >>> import numpy as np
            >>> from types import SimpleNamespace
            >>> kernel = np.arange(2 * 4 * 6.0).reshape(1, 2, 4, 6)  # 1x2 kernel, 4 inputs, 6 outputs
            >>> ConvRule().input_weights(SimpleNamespace(groups=2), {"kernel": kernel[:, :, :2]}).shape
            (4, 6)
        """
        kernel = np.asarray(weights["kernel"])
        in_axis, out_axis = self._axes(kernel)
        groups = self._groups(layer)
        per_group = np.moveaxis(kernel, (in_axis, out_axis), (-2, -1))  # (..., in per group, out)
        spatial = per_group.shape[:-2]
        n_in, n_out = per_group.shape[-2], per_group.shape[-1]
        split = per_group.reshape(*spatial, n_in, groups, n_out // groups)
        rows = np.moveaxis(split, (-3, -2), (1, 0)) if spatial else np.moveaxis(split, -2, 0)
        return rows.reshape(groups * n_in, -1)

    def filters(self, config, weights):
        kernel = weights.get("kernel")
        if kernel is None:
            return None
        return int(np.shape(kernel)[self._axes(np.asarray(kernel))[1]])


class DenseRule(ConvRule):
    """Dense: a 1x1 convolution over the last axis, applied at every position of its input."""

    def __init__(self):
        super().__init__("units")

    def macs(self, layer, in_shapes, out_shapes):
        return prod(in_shapes[0][1:]) * int(layer.units)


class DepthwiseRule(_WeightedRule):
    """DepthwiseConv1D/2D: output channel ``c * m + k`` comes from input channel c, so it carries
    input channel c's unit (m = depth_multiplier)."""

    channel_dependent = True
    saved_weights = _KERNEL_AND_BIAS

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
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
        """Zero whole input channels (``in_zero``) or single outputs ``c * m + k`` (``out_zero``,
        what mask mode asks for)."""
        if in_zero is None and out_zero is None:
            return weights
        weights = dict(weights)
        kernel = weights["kernel"].copy()
        gone = np.zeros(kernel.shape[-2] * kernel.shape[-1], dtype=bool)
        if in_zero is not None:
            gone |= np.repeat(np.asarray(in_zero, dtype=bool), kernel.shape[-1])
        if out_zero is not None:
            gone |= np.asarray(out_zero, dtype=bool)
        gone = gone.reshape(kernel.shape[-2], kernel.shape[-1])
        kernel[..., gone] = 0
        weights["kernel"] = kernel
        if "bias" in weights:
            bias = weights["bias"].copy()
            bias[gone.ravel()] = 0
            weights["bias"] = bias
        return weights

    def macs(self, layer, in_shapes, out_shapes):
        out_spatial, out_ch = _spatial(out_shapes[0], layer)
        return prod(out_spatial) * out_ch * prod(getattr(layer, "kernel_size", ()))

    def input_weights(self, layer, weights):
        """Row ``c`` = the ``depth_multiplier`` spatial filters applied to input channel ``c``."""
        kernel = np.asarray(weights["kernel"])
        return np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1)

    def filters(self, config, weights):
        kernel = weights.get("kernel", weights.get("depthwise_kernel"))
        if kernel is None:
            return None
        shape = np.shape(kernel)
        return int(shape[-2] * shape[-1])


class SeparableRule(_WeightedRule):
    """SeparableConv1D/2D: a depthwise part carrying input channels, then a pointwise producer."""

    produces = True
    channel_dependent = True
    saved_weights = (("depthwise_kernel", None), ("pointwise_kernel", None), ("bias", "use_bias"))

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
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

    def macs(self, layer, in_shapes, out_shapes):
        kernel = prod(getattr(layer, "kernel_size", ()))
        _, in_ch = _spatial(in_shapes[0], layer)
        out_spatial, out_ch = _spatial(out_shapes[0], layer)
        mid = in_ch * int(layer.depth_multiplier)
        return prod(out_spatial) * mid * (kernel + out_ch)

    def output_weights(self, layer, weights):
        pointwise = np.asarray(weights["pointwise_kernel"])
        return np.moveaxis(pointwise, -1, 0).reshape(pointwise.shape[-1], -1)

    def input_weights(self, layer, weights):
        """Row ``c`` = input channel ``c``'s depthwise filters and the pointwise weights reading them."""
        depthwise = np.asarray(weights["depthwise_kernel"])
        n_in = depthwise.shape[-2]
        pointwise = np.asarray(weights["pointwise_kernel"]).reshape(n_in, -1)  # (in * m, out) -> (in, m * out)
        return np.concatenate([np.moveaxis(depthwise, -2, 0).reshape(n_in, -1), pointwise], axis=1)

    def filters(self, config, weights):
        pointwise = weights.get("pointwise_kernel")
        return None if pointwise is None else int(np.shape(pointwise)[-1])


class EmbeddingRule(LayerRule):
    """Embedding: its output dimension is a producer (column j of the ``(input_dim, output_dim)``
    table makes channel j); its rows are token ids, not channels, and are left alone.

    Example:
        >>> import numpy as np
        >>> config, weights = EmbeddingRule().slice(None, {"output_dim": 3}, {"embeddings": np.eye(5, 3)},
        ...                                         None, np.array([True, False, True]))
        >>> config["output_dim"], weights["embeddings"].shape
        (2, (5, 2))
    """

    produces = True
    channel_dependent = True
    cost = "free"
    saved_weights = (("embeddings", None),)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if getattr(layer, "lora_enabled", False):
            raise Unsupported("LoRA weights are not sliced")
        if len(in_layouts) != 1 or len(out_shapes) != 1:
            raise Unsupported("expected one input and one output")
        if in_layouts[0] is not None:  # token ids computed from channels: those become positions
            ctx.block(in_layouts[0], "its input holds token ids, whose last axis becomes the output's positions")
        return [ctx.new_units(int(out_shapes[0][-1]))]

    def slice(self, layer, config, weights, in_keep, out_keep):
        if out_keep is None:
            return config, weights
        weights = {**weights, "embeddings": weights["embeddings"][:, out_keep]}
        return {**config, "output_dim": int(np.count_nonzero(out_keep))}, weights

    def zero(self, layer, weights, in_zero, out_zero):
        if out_zero is None:
            return weights
        table = weights["embeddings"].copy()
        table[:, out_zero] = 0
        return {**weights, "embeddings": table}

    def output_weights(self, layer, weights):
        return np.asarray(weights["embeddings"]).T

    def filters(self, config, weights):
        table = weights.get("embeddings")
        return None if table is None else int(np.shape(table)[-1])
