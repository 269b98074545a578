"""Rules of raw ``keras.ops`` calls recorded in a Functional graph that move or reduce data
without mixing channels: ``split``, ``pad``, indexing (``x[:, 1:3]``), reductions over other
axes (``mean``, ``sum``, ``max``...), and unary element-wise functions.

An op's constructor arguments are its config (``Split(indices_or_sections, axis)``), which a
rebuild re-creates from, so a rule may rewrite them; the call's other arguments (the key of an
indexing) are replayed unchanged, so a rule only accepts them when they leave the channel axis
alone.
"""

from __future__ import annotations

import numbers

import numpy as np

from ridurre.rules.base import LayerRule, PassThroughRule, Unsupported, channels_last, is_last_axis, prod

__all__ = ["SplitOpRule", "PadOpRule", "GetItemOpRule", "ReduceOpRule", "ReshapeOpRule", "RepeatOpRule", "UnaryOpRule"]


def _rank(in_shapes):
    return len(in_shapes[0]) + 1  # with the batch axis


def _axes(axis, rank):
    values = axis if isinstance(axis, (list, tuple)) else [axis]
    return sorted(int(a) % rank for a in values)


class SplitOpRule(LayerRule):
    """``keras.ops.split``: on the channel axis, output k carries its section of the channels
    (the inverse of a concatenation) and the sections are recomputed from what is kept; on any
    other axis every output carries all of them.

    Example:
        >>> import numpy as np
        >>> rule = SplitOpRule()
        >>> keep = np.array([True, False, True, True, False, True])
        >>> rule.slice(None, {"indices_or_sections": 2, "axis": -1}, {}, keep, None)[0]["indices_or_sections"]
        [2]
    """

    cost = "free"

    @staticmethod
    def _bounds(sections, width):
        if isinstance(sections, numbers.Integral):
            if width % int(sections):
                raise Unsupported(f"{width} channels cannot be split in {sections} equal sections")
            step = width // int(sections)
            return list(range(step, width, step))
        return [int(b) for b in sections]

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if len(in_layouts) != 1:
            raise Unsupported("expected one input")
        lay = in_layouts[0]
        if not is_last_axis(layer.axis, len(in_shapes[0])):
            return [lay for _ in out_shapes]
        if layer.axis != -1:  # the rebuild sees the config only, where axis=3 says nothing of the rank
            raise Unsupported(f"splits the channel axis as axis={layer.axis}: write axis=-1")
        bounds = [0] + self._bounds(layer.indices_or_sections, len(lay)) + [len(lay)]
        return [lay[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def slice(self, layer, config, weights, in_keep, out_keep):
        if in_keep is None or config["axis"] != -1:
            return config, weights
        bounds = self._bounds(config["indices_or_sections"], len(in_keep))
        new = [int(np.count_nonzero(in_keep[:b])) for b in bounds]
        edges = [0] + new + [int(np.count_nonzero(in_keep))]
        empty = [k for k, (a, b) in enumerate(zip(edges[:-1], edges[1:])) if a == b]
        if empty:
            raise ValueError(
                f"deleting these channels would empty section {empty[0]} of split {config.get('name', '')!r}; "
                "keep at least one channel of every section"
            )
        return {**config, "indices_or_sections": new}, weights


class ReshapeOpRule(LayerRule):
    """``keras.ops.reshape`` that keeps the batch axis (``-1`` first) and the channel axis (the
    same last size, given explicitly), such as ``(batch, H, W, C) -> (batch, H * W, C)``: the
    channels pass through and the target's last entry follows what is kept.

    Example:
        >>> import numpy as np
        >>> keep = np.array([True, False, True, True])
        >>> ReshapeOpRule().slice(None, {"newshape": (-1, 16, 4)}, {}, keep, None)[0]["newshape"]
        (-1, 16, 3)
    """

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        newshape = tuple(layer.newshape) if isinstance(layer.newshape, (list, tuple)) else (layer.newshape,)
        src, dst = in_shapes[0], out_shapes[0]
        if len(in_layouts) != 1 or len(newshape) < 2 or newshape[0] not in (-1, None):
            raise Unsupported(f"newshape={newshape}: only a reshape that keeps the batch axis (-1 first) is followed")
        if any(d is None for d in src[:-1] + dst[:-1]) or src[-1] is None:
            raise Unsupported("dimensions are unknown")
        if newshape[-1] == -1 or dst[-1] != src[-1] or prod(src[:-1]) != prod(dst[:-1]):
            raise Unsupported(f"newshape={newshape} does not keep the {src[-1]} channels on the last axis")
        return [in_layouts[0]]

    def slice(self, layer, config, weights, in_keep, out_keep):
        if in_keep is None:
            return config, weights
        return {**config, "newshape": tuple(config["newshape"])[:-1] + (int(np.count_nonzero(in_keep)),)}, weights


class RepeatOpRule(LayerRule):
    """``keras.ops.repeat`` along an axis other than the channel axis (grouped-query attention
    repeats its key/value heads): the channels pass through.

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((5, 2, 4))
        >>> h = keras.layers.Dense(6, name="kv")(x)
        >>> y = keras.layers.Dense(2)(keras.layers.Flatten()(keras.ops.repeat(h, 2, axis=2)))
        >>> [(g.producers, g.prunable) for g in ridurre.channel_groups(keras.Model(x, y))][1]
        (('kv',), True)
    """

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if len(in_layouts) != 1:
            raise Unsupported("expected one input")
        if layer.axis is None or is_last_axis(layer.axis, len(in_shapes[0])):
            raise Unsupported(f"axis={layer.axis} repeats the channels")
        return [in_layouts[0]]


class PadOpRule(LayerRule):
    """``keras.ops.pad`` that does not pad the channel axis."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        rank = _rank(in_shapes)
        try:
            widths = np.broadcast_to(np.asarray(layer.pad_width, dtype=np.int64), (rank, 2))
        except (TypeError, ValueError):
            raise Unsupported(f"pad_width={layer.pad_width!r} is not understood") from None
        if widths[-1].any():
            raise Unsupported(f"pads the channel axis by {widths[-1].tolist()}")
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)


def _key_entries(key, rank):
    """The indexing key as one entry per input axis (batch axis included), ``None`` entries
    (new axes) kept; ``Unsupported`` for tensors, arrays and booleans in the key."""
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        plain = k is None or k is Ellipsis or isinstance(k, numbers.Integral)
        if isinstance(k, slice):
            plain = all(v is None or isinstance(v, numbers.Integral) for v in (k.start, k.stop, k.step))
        if not plain or isinstance(k, bool):
            raise Unsupported(f"the index {k!r} is not a plain slice or integer")
    consumed = sum(1 for k in key if k is not None and k is not Ellipsis)
    if key.count(Ellipsis) > 1:
        raise Unsupported("more than one Ellipsis")
    fill = (slice(None),) * max(rank - consumed, 0)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        return key[:i] + fill + key[i + 1 :]
    return key + fill


class GetItemOpRule(LayerRule):
    """Indexing a tensor (``x[:, 1:3]``, ``x[..., 0, :]``) where the channel axis is taken whole
    and stays last."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        call = getattr(ctx, "call", None)
        if call is None or len(call.args) < 2:
            raise Unsupported("the index is not known")
        entries = _key_entries(call.args[1], _rank(in_shapes))
        if not entries or entries[-1] is None:
            raise Unsupported("a new axis after the channel axis")
        last = entries[-1]
        if not (isinstance(last, slice) and last.start in (None, 0) and last.stop is None and last.step in (None, 1)):
            raise Unsupported(f"indexes the channel axis with {last!r}")
        return super().propagate(layer, in_layouts[:1], in_shapes, out_shapes, ctx)


class ReduceOpRule(LayerRule):
    """``keras.ops.mean``/``sum``/``max``/``min``/``prod`` over axes other than the channel axis
    (counted like pooling: one operation per input element)."""

    cost = "pooling"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        axis = getattr(layer, "axis", None)
        rank = _rank(in_shapes)
        if axis is None:
            raise Unsupported("reduces every axis, the channel axis too")
        if rank - 1 in _axes(axis, rank):
            raise Unsupported(f"reduces the channel axis (axis={axis!r})")
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)

    def other_ops(self, layer, in_shapes, out_shapes):
        return prod(in_shapes[0][1:])


class UnaryOpRule(PassThroughRule):
    """A unary element-wise ``keras.ops`` function (``abs``, ``exp``, ``clip``...) whose options
    are scalars (a per-channel array baked into the graph could not be sliced). Only functions
    that are finite at zero are registered, so a zeroed channel stays harmless downstream."""

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        try:
            options = dict(layer.get_config()) if hasattr(layer, "get_config") else {}
        except (NotImplementedError, TypeError, ValueError):  # Keras cannot serialize an array option
            raise Unsupported("an option is an array or cannot be read, so the op cannot be rebuilt") from None
        call = getattr(ctx, "call", None)
        values = list(options.values()) + (call.constants() if call is not None else [])
        for value in values:
            if isinstance(value, (list, tuple, np.ndarray)) and np.size(value) > 1:
                raise Unsupported("an option is an array, which cannot be sliced")
        channels_last(layer)
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)
