"""Rules of einsum layers: ``keras.layers.EinsumDense`` and a raw ``keras.ops.einsum`` call.

Both are read from their equation: the channel axis is the last axis of every tensor, so what
matters is where the last letter of each operand goes and where the last letter of the output
comes from.

``EinsumDense`` (``"<input>,<kernel>-><output>"``, with ``...`` on the left or the right):

* **projection** (``"btd,dnh->btnh"``, ``"btnh,nhd->btd"``): the input's last letter is summed
  over (the layer consumes the input's channels: the kernel is sliced along that letter) and the
  output's last letter comes from the kernel only (the layer produces new channels: the kernel
  and the bias are sliced along it, and ``output_shape`` follows);
* **per-channel scale** (``"btd,d->btd"``): the input's last letter is the output's last letter
  and a kernel letter: channels pass through, the kernel and the bias are sliced with them;
* **pass-through** (``"btd,bs->std"``-like, or ``...`` on the right): the channel letter is not
  in the kernel: channels pass through (the bias is sliced when it spans them);
* anything that moves the channel axis (the input's last letter lands on another output axis,
  or the output's last letter comes from another input axis) is refused with the reason.

An ``ops.einsum`` of several tensors (``"btnh,bsnh->bnts"`` in a hand-written attention) couples
the operands whose last letters are the same letter (contracted or kept, like a product of the
two), carries them to the output when that letter is the output's last, and gives the output new
unprunable units when its last axis comes from elsewhere (positions, not channels). An operand
whose last letter is a non-channel axis elsewhere (the attention probabilities' source axis in
``"bnts,bsnh->btnh"``) keeps its channels; the other operands' may still go.

MACs: the product of the sizes of every letter of the equation, batch excepted (``T * d * n * h``
for ``"btd,dnh->btnh"``); the elided dimensions of ``...`` are counted too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ridurre.rules.base import LayerRule, Unsupported, bias_add_can_misroute, fused_activation, prod

__all__ = ["EinsumDenseRule", "EinsumOpRule", "EinsumEquation", "parse_einsum_dense"]


@dataclass(frozen=True)
class EinsumEquation:
    """An ``EinsumDense`` equation, split: ``"...btd,dh->...bth"`` is ``("btd", "dh", "bth", "left")``.

    Attributes:
        input, kernel, output: the letters of each part, without the ellipsis.
        ellipsis: ``None``, ``"left"`` or ``"right"`` (where ``...`` stands in input and output).
    """

    input: str
    kernel: str
    output: str
    ellipsis: str | None = None

    def channel_flow(self) -> str:
        """``"project"``, ``"scale"`` or ``"pass"`` (see the module docstring).

        Raises:
            Unsupported: the equation moves the channel axis.

        Example:
            >>> parse_einsum_dense("btd,dnh->btnh").channel_flow(), parse_einsum_dense("btd,d->btd").channel_flow()
            ('project', 'scale')
        """
        if self.ellipsis == "right":
            return "pass"  # the last axes are elided on both sides: untouched
        c_in, c_out = self.input[-1], self.output[-1]
        if c_in == c_out:
            return "scale" if c_in in self.kernel else "pass"
        if c_in in self.output:
            raise Unsupported(f"equation {self}: the input's channel axis {c_in!r} moves to another output axis")
        if c_out in self.input:
            raise Unsupported(f"equation {self}: the output's last axis {c_out!r} comes from a non-channel input axis")
        return "project"

    def __str__(self) -> str:
        dots = "..."
        if self.ellipsis == "left":
            return f"{dots}{self.input},{self.kernel}->{dots}{self.output}"
        if self.ellipsis == "right":
            return f"{self.input}{dots},{self.kernel}->{self.output}{dots}"
        return f"{self.input},{self.kernel}->{self.output}"


_FORMS = (
    (re.compile(r"^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$"), None),
    (re.compile(r"^0([a-zA-Z]+),([a-zA-Z]+)->0([a-zA-Z]+)$"), "left"),
    (re.compile(r"^([a-zA-Z]{2,})0,([a-zA-Z]+)->([a-zA-Z]+)0$"), "right"),
)


def parse_einsum_dense(equation: str) -> EinsumEquation:
    """Split an ``EinsumDense`` equation (the three forms Keras accepts).

    Raises:
        Unsupported: any other form.

    Example:
        >>> parse_einsum_dense("...d,dh->...h")
        EinsumEquation(input='d', kernel='dh', output='h', ellipsis='left')
    """
    text = re.sub(r"\.\.\.", "0", str(equation).replace(" ", ""))
    for pattern, ellipsis in _FORMS:
        match = pattern.match(text)
        if match:
            return EinsumEquation(*match.groups(), ellipsis=ellipsis)
    raise Unsupported(f"cannot read the einsum equation {equation!r}")


def _letter_sizes(spec, shape, ellipsis):
    """``{letter: size}`` of one operand (``shape`` with its batch axis), and the elided sizes."""
    shape = list(shape)
    elided = len(shape) - len(spec)
    if ellipsis == "left":
        sizes, rest = dict(zip(spec, shape[elided:])), shape[:elided]
    elif ellipsis == "right":
        sizes, rest = dict(zip(spec, shape[: len(spec)])), shape[len(spec) :]
    else:
        sizes, rest = dict(zip(spec, shape)), []
    return sizes, rest


def _size(value):
    return 1 if value is None else int(value)


def _bias_axis_count(eq: EinsumEquation, bias_axes: str) -> int:
    """The rank of the bias: from the first bias letter of the output to its end (+ elided ones)."""
    first = min(eq.output.find(c) for c in bias_axes)
    return len(eq.output) - first


class EinsumDenseRule(LayerRule):
    """``keras.layers.EinsumDense``, read from its equation (see the module docstring).

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((5, 8))
        >>> h = keras.layers.EinsumDense("btd,dh->bth", output_shape=(5, 12), bias_axes="h", name="up")(x)
        >>> y = keras.layers.EinsumDense("bth,hd->btd", output_shape=(5, 8), name="down")(h)
        >>> [(g.producers, g.size, g.prunable) for g in ridurre.channel_groups(keras.Model(x, y))][1]
        (('up',), 12, True)
    """

    produces = True
    channel_dependent = True
    cost = "activation"
    saved_weights = (("kernel", None), ("bias", "bias_axes"))

    @staticmethod
    def _equation(layer) -> EinsumEquation:
        return parse_einsum_dense(layer.equation)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if len(in_layouts) != 1:
            raise Unsupported("expected one input")
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise Unsupported("LoRA or quantized kernels are not pruned")
        eq = self._equation(layer)
        flow = eq.channel_flow()
        if flow == "project":
            units = ctx.new_units(out_shapes[0][-1])
            if self._bias_can_misroute(layer, eq, (None, *out_shapes[0])):
                ctx.block(
                    units,
                    "with one output channel left, its bias would be added on another axis by Keras's "
                    "TensorFlow backend (the bias's other axis is as long as the output's axis 1)",
                )
            return [units]
        if out_shapes[0][-1] != in_shapes[0][-1]:
            raise Unsupported("the channel axis changes size")
        return [in_layouts[0]]

    def _bias_can_misroute(self, layer, eq, out_shape):
        """Whether pruning the output channels down to one could leave a bias that Keras's
        TensorFlow backend adds on the wrong axis (:func:`ridurre.rules.base.bias_add_can_misroute`);
        ``out_shape`` has its batch axis."""
        bias_axes = getattr(layer, "bias_axes", None) or ""
        if eq.ellipsis or eq.output[-1] not in bias_axes or len(eq.output) != len(out_shape):
            return False
        sizes = {i: out_shape[i] for i, c in enumerate(eq.output[:-1]) if c in bias_axes}
        if any(n is None for n in sizes.values()):
            return False  # a bias axis of unknown size: not a built bias
        longer = {i: range(int(n), int(n) + 1) for i, n in sizes.items() if n > 1}
        return len(longer) == 1 and bias_add_can_misroute(len(out_shape), out_shape[1], longer)

    def _kernel_axis(self, eq, letter):
        return eq.kernel.find(letter) if letter in eq.kernel else None

    def _bias_sliced(self, layer, eq, weights):
        """Whether the bias has the output's channel axis as its last axis."""
        bias_axes = getattr(layer, "bias_axes", None) or ""
        return "bias" in weights and eq.ellipsis != "right" and eq.output[-1] in bias_axes

    def slice(self, layer, config, weights, in_keep, out_keep):
        eq = self._equation(layer)
        flow = eq.channel_flow()
        weights = dict(weights)
        kernel = weights["kernel"]
        if flow == "project":
            if in_keep is not None and self._kernel_axis(eq, eq.input[-1]) is not None:
                kernel = np.compress(in_keep, kernel, axis=self._kernel_axis(eq, eq.input[-1]))
            keep = out_keep
            if keep is not None:
                kernel = np.compress(keep, kernel, axis=self._kernel_axis(eq, eq.output[-1]))
        else:
            keep = out_keep if out_keep is not None else in_keep
            if keep is not None and flow == "scale":
                kernel = np.compress(keep, kernel, axis=self._kernel_axis(eq, eq.output[-1]))
        weights["kernel"] = kernel
        if keep is None:
            return config, weights
        if self._bias_sliced(layer, eq, weights):
            weights["bias"] = weights["bias"][..., keep]
        shape = list(config.get("output_shape") or ())
        if shape and eq.ellipsis != "right" and (flow == "project" or shape[-1] is not None):
            shape[-1] = int(np.count_nonzero(keep))
            config = {**config, "output_shape": tuple(shape)}
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        eq = self._equation(layer)
        flow = eq.channel_flow()
        weights = dict(weights)
        kernel = weights["kernel"].copy()

        def zero_axis(axis, gone):
            if axis is not None and gone is not None:
                index = [slice(None)] * kernel.ndim
                index[axis] = gone
                kernel[tuple(index)] = 0

        out = out_zero
        if flow == "project":
            zero_axis(self._kernel_axis(eq, eq.input[-1]), in_zero)
        elif out is None:
            out = in_zero
        if out is not None and flow != "pass":
            zero_axis(self._kernel_axis(eq, eq.output[-1]), out)
        weights["kernel"] = kernel
        if out is not None and self._bias_sliced(layer, eq, weights):
            bias = weights["bias"].copy()
            bias[..., out] = 0
            weights["bias"] = bias
        return weights

    def macs(self, layer, in_shapes, out_shapes):
        eq = self._equation(layer)
        sizes, rest = _letter_sizes(eq.input, in_shapes[0], eq.ellipsis)
        out_sizes, _ = _letter_sizes(eq.output, out_shapes[0], eq.ellipsis)
        kernel = getattr(layer, "kernel", None)
        kernel_sizes = dict(zip(eq.kernel, kernel.shape)) if kernel is not None else {}
        letters = set(eq.input) | set(eq.kernel) | set(eq.output)
        batch = None if eq.ellipsis == "left" else eq.input[0]
        merged = {**kernel_sizes, **out_sizes, **sizes}
        total = prod(_size(merged.get(c)) for c in letters if c != batch)
        if eq.ellipsis == "left":
            rest = rest[1:]  # the batch axis is the first elided one
        return total * prod(_size(d) for d in rest)

    def other_ops(self, layer, in_shapes, out_shapes):
        return prod(out_shapes[0][1:]) if out_shapes and fused_activation(layer) else 0

    def output_weights(self, layer, weights):
        eq = self._equation(layer)
        if eq.channel_flow() != "project":
            return None
        kernel = np.asarray(weights["kernel"])
        moved = np.moveaxis(kernel, self._kernel_axis(eq, eq.output[-1]), 0)
        return moved.reshape(moved.shape[0], -1)

    def filters(self, config, weights):
        kernel = weights.get("kernel")
        try:
            eq = parse_einsum_dense(config.get("equation", ""))
            if kernel is None or eq.channel_flow() != "project":
                return None
        except Unsupported:
            return None
        return int(np.shape(kernel)[self._kernel_axis(eq, eq.output[-1])])


class EinsumOpRule(LayerRule):
    """A raw ``keras.ops.einsum`` of tensors in a functional graph (see the module docstring).

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((5, 8))
        >>> q = keras.layers.Dense(6, name="q")(x)
        >>> k = keras.layers.Dense(6, name="k")(x)
        >>> scores = keras.ops.einsum("btd,bsd->bts", q, k)
        >>> y = keras.layers.Dense(2, name="out")(keras.layers.Flatten()(scores))
        >>> [(g.producers, g.size, g.prunable) for g in ridurre.channel_groups(keras.Model(x, y))][1]
        (('q', 'k'), 6, True)
    """

    cost = "other"

    @staticmethod
    def _specs(layer):
        text = str(getattr(layer, "subscripts", "")).replace(" ", "")
        if "..." in text or "->" not in text:
            raise Unsupported(f"einsum {text!r}: only explicit equations without '...' are followed")
        inputs, output = text.split("->")
        return inputs.split(","), output

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        call = getattr(ctx, "call", None)
        if call is not None and any(np.ndim(v) > 0 for v in call.constants()):
            raise Unsupported("an operand is a constant array, which cannot be sliced")
        specs, output = self._specs(layer)
        if len(specs) != len(in_layouts):
            raise Unsupported(f"{len(specs)} operands in the equation, {len(in_layouts)} tensors given")
        last = {}
        for spec, layout in zip(specs, in_layouts):
            letter = spec[-1]
            if any(letter in other[:-1] for other in specs) or letter in output[:-1]:
                # this operand's last axis meets a non-channel axis: its channels stay (the others may go)
                ctx.block(layout, f"einsum {layer.subscripts!r}: axis {letter!r} is not a channel axis everywhere")
                continue
            if letter in last:
                ctx.union(last[letter], layout)
            else:
                last[letter] = layout
        if output[-1] in last:
            return [last[output[-1]]]
        units = ctx.new_units(_size(out_shapes[0][-1]))  # positions, possibly of unknown length
        ctx.block(units, f"einsum {layer.subscripts!r}: its last axis holds positions, not channels")
        return [units]

    def macs(self, layer, in_shapes, out_shapes):
        specs, _ = self._specs(layer)
        sizes = {}
        for spec, shape in zip(specs, in_shapes):
            sizes.update({c: _size(d) for c, d in zip(spec, shape)})
        batch = {spec[0] for spec, shape in zip(specs, in_shapes) if shape and shape[0] is None}
        return prod(s for c, s in sizes.items() if c not in batch)

    def other_ops(self, layer, in_shapes, out_shapes):
        return 0  # all of its work is multiply-accumulates
