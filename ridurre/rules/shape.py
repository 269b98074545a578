"""Rules of the layers that move data without weights: reshaping, pooling, padding and the like."""

from __future__ import annotations

import math

import numpy as np

from ridurre.rules.base import LayerRule, PassThroughRule, Unsupported, channels_last, prod

__all__ = ["FlattenRule", "ReshapeRule", "PermuteRule", "TransposeOpRule", "PoolingRule", "SequenceMaskRule"]


class FlattenRule(LayerRule):
    """Flatten of a channels_last tensor: flat index = position * C + c."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
        spatial = in_shapes[0][:-1]
        if any(d is None for d in spatial):
            raise Unsupported("spatial dimensions are unknown")
        return [np.tile(in_layouts[0], int(np.prod(spatial, dtype=np.int64)))]


class ReshapeRule(LayerRule):
    """Reshape where the channel mapping is determined: the last axis is kept, or everything is
    flattened into one axis (then like Flatten).

    A reshape that keeps the size of the last axis keeps every channel where it was, whatever it
    does to the other axes (flat index ``position * C + c`` on both sides), so other axes may
    have unknown sizes (a recorded attention's ``(batch, T, heads, h) -> (batch, T, groups,
    heads per group, h)``); the target's last entry follows what is kept.

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((None, 2, 8))
        >>> h = keras.layers.Reshape((-1, 1, 2, 4))(keras.layers.Dense(4, name="heads")(x))
        >>> y = keras.layers.Dense(2)(keras.layers.Reshape((-1, 2, 4))(h))
        >>> [(g.producers, g.prunable) for g in ridurre.channel_groups(keras.Model(x, y))][1]
        (('heads',), True)
    """

    channel_dependent = True
    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        src, dst = in_shapes[0], out_shapes[0]
        if src[-1] is not None and dst[-1] == src[-1]:
            return [in_layouts[0]]
        if any(d is None for d in src[:-1] + dst[:-1]):
            raise Unsupported("dimensions are unknown")
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
    """Permute keeping the channel axis last."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if tuple(layer.dims)[-1] != len(layer.dims):
            raise Unsupported(f"dims={tuple(layer.dims)} moves the channel axis")
        return [in_layouts[0]]


class TransposeOpRule(LayerRule):
    """A raw ``keras.ops.transpose`` that keeps the last axis last."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        axes = getattr(layer, "axes", None)
        rank = len(in_shapes[0]) + 1  # with the batch axis
        if axes is None or [a % rank for a in axes][-1] != rank - 1:
            raise Unsupported(f"axes={axes} moves the channel axis")
        return [in_layouts[0]]


class PoolingRule(PassThroughRule):
    """Pooling: channels pass through; the work counted is the output times the pool window
    (the input, for global pooling)."""

    def __init__(self, global_pooling=False):
        super().__init__(cost="pooling")
        self.global_pooling = global_pooling

    def other_ops(self, layer, in_shapes, out_shapes):
        if self.global_pooling:
            return prod(in_shapes[0][1:])
        return prod(out_shapes[0][1:]) * prod(getattr(layer, "pool_size", ()))


class SequenceMaskRule(LayerRule):
    """A layer that reads only the shape of its input and returns a mask over sequence positions
    (ridurre's ``CausalMask``): the input's channels pass untouched, and the mask's last axis is
    positions, never pruned."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        mask = ctx.new_units(out_shapes[0][-1] or 1)  # positions: the length may be unknown
        ctx.block(mask, "a mask over sequence positions")
        return [mask]
