"""Rules of the layers that join tensors: element-wise merges, raw ``keras.ops`` arithmetic and
concatenation."""

from __future__ import annotations

import numpy as np

from ridurre.rules.base import LayerRule, Unsupported, is_last_axis, prod

__all__ = ["MergeRule", "ElementwiseOpRule", "ConcatenateRule", "DivisionRule"]


class MergeRule(LayerRule):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: every input's channel i is the same
    channel, so their units are joined; inputs with one broadcast channel are left alone."""

    cost = "elementwise"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        width = out_shapes[0][-1]
        full = [lay for lay, shape in zip(in_layouts, in_shapes) if shape[-1] == width]
        if len(full) + sum(1 for s in in_shapes if s[-1] == 1 and width != 1) != len(in_layouts):
            raise Unsupported("inputs have different channel counts")
        for other in full[1:]:
            ctx.union(full[0], other)
        return [full[0]]

    def other_ops(self, layer, in_shapes, out_shapes):
        return prod(out_shapes[0][1:]) * max(len(in_shapes) - 1, 1) if out_shapes else 0


class ElementwiseOpRule(MergeRule):
    """A raw ``keras.ops`` element-wise operation in a functional graph (``x + 3.0`` in
    hard-swish, ``x * y``): like a merge, provided every operand that is not a traced tensor is
    a scalar (a per-channel constant baked into the graph could not be sliced)."""

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        call = getattr(ctx, "call", None)
        if call is not None:
            for value in call.constants():
                if np.ndim(value) > 0 and np.size(value) > 1:
                    raise Unsupported("an operand is a constant array, which cannot be sliced")
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)


class DivisionRule(MergeRule):
    """A raw ``keras.ops`` division: its cost is counted, but its channels are not pruned through
    it (``c / x`` turns a zeroed channel into inf, so zeroed would no longer equal deleted)."""

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        raise Unsupported("division by a channel: a zeroed channel would become inf")


class ConcatenateRule(LayerRule):
    """Concatenate on the channel axis maps channels by offset; on another axis it is a merge."""

    cost = "free"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if is_last_axis(layer.axis, len(in_shapes[0])):
            return [np.concatenate(in_layouts)]
        return MergeRule().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)
