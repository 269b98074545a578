"""The surgeon fuzzer's kinds for raw ``keras.ops`` calls beyond the basic arithmetic and
activations (``tests/fuzz_graphs.py``): comparisons and logic, the unary families, reductions,
split / pad / indexing / resize / concatenate, and ``einsum``.

Unary functions that grow fast (exp, sinh, square...) are applied to ``tanh(x)`` so that a chain of
them stays finite: the property compares values, and an overflow would compare nothing.
"""

from __future__ import annotations

from fuzz_kinds import Kind, any_rank, rank
from fuzz_kinds import dims as _dims
from hypothesis import strategies as st
from keras import ops
from keras.src.ops import numpy as _numpy_ops


def _float(t):
    return ops.cast(t, "float32")


def _comparison(fn):
    return lambda draw, x, y: _float(fn(x, y))


def _logical(fn):
    return lambda draw, x, y: _float(fn(ops.greater(x, 0.0), ops.greater(y, 0.0)))


def _bounded(fn):
    return lambda x: fn(ops.tanh(x))


_UNARY = {
    # activations
    "Selu": ops.selu,
    "Celu": ops.celu,
    "Softsign": ops.softsign,
    "LogSigmoid": ops.log_sigmoid,
    "HardTanh": ops.hard_tanh,
    "SoftShrink": lambda x: ops.soft_shrink(x, 0.2),
    "HardShrink": lambda x: ops.hard_shrink(x, 0.2),
    "TanhShrink": ops.tanh_shrink,
    "Squareplus": ops.squareplus,
    "SparsePlus": ops.sparse_plus,
    "SparseSigmoid": ops.sparse_sigmoid,
    "Threshold": lambda x: ops.threshold(x, 0.1, -0.5),
    # math (``ops.abs`` records Absolute: Abs is the class keras.ops' alias does not use)
    "Abs": lambda x: _numpy_ops.Abs()(x),
    "Absolute": ops.absolute,
    "Fabs": ops.fabs,
    "Negative": ops.negative,
    "Square": _bounded(ops.square),
    "Sqrt": lambda x: ops.sqrt(ops.absolute(x)),
    "Cbrt": ops.cbrt,
    "Exp": _bounded(ops.exp),
    "Exp2": _bounded(ops.exp2),
    "Expm1": _bounded(ops.expm1),
    "Log1p": lambda x: ops.log1p(ops.absolute(x)),
    "Erf": ops.erf,
    "Erfc": ops.erfc,
    "Sign": ops.sign,
    "Floor": lambda x: ops.floor(3.0 * x),
    "Ceil": lambda x: ops.ceil(3.0 * x),
    "Round": lambda x: ops.round(3.0 * x),
    "Trunc": lambda x: ops.trunc(3.0 * x),
    "Sin": ops.sin,
    "Cos": ops.cos,
    "Sinh": _bounded(ops.sinh),
    "Cosh": _bounded(ops.cosh),
    "Arctan": ops.arctan,
    "Arcsinh": ops.arcsinh,
    "Sinc": ops.sinc,
    "Clip": lambda x: ops.clip(x, -0.5, 0.7),
    "NanToNum": ops.nan_to_num,
    "StopGradient": ops.stop_gradient,
    "Copy": ops.copy,
}
"""Unary element-wise functions by the operation class each records."""


def _split(draw, x):
    """Split the channel axis (or the first spatial axis) in equal parts and join them back in
    another order (or add them)."""
    axes = [a for a in range(1, len(x.shape)) if x.shape[a] % 2 == 0 and a in (1, len(x.shape) - 1)]
    axis = draw(st.sampled_from(axes))
    spatial = axis != len(x.shape) - 1
    parts = ops.split(x, 2, axis=axis if spatial else -1)
    if not spatial and draw(st.booleans()):
        return parts[0] + parts[1]
    return ops.concatenate(parts[::-1], axis=axis if spatial else -1)


def _splittable(shape):  # no batch axis: the first spatial axis or the channel axis is even
    return shape[-1] % 2 == 0 or shape[0] % 2 == 0


def _pad(draw, x):
    widths = [(0, 0)] + [(draw(st.integers(0, 1)), draw(st.integers(0, 1))) for _ in range(_dims(x))] + [(0, 0)]
    if draw(st.integers(0, 7)) == 0:  # the channel axis too: refused, never sliced
        widths[-1] = (0, 1)
    return ops.pad(x, widths, constant_values=draw(st.sampled_from([0.0, 0.5])))


def _get_item(draw, x):
    how = draw(st.sampled_from(["slice", "index", "ellipsis", "step", "channels"]))
    if how == "slice":
        return x[:, 1:]
    if how == "index":
        return x[:, 0]
    if how == "ellipsis":
        return x[..., 1:, :] if len(x.shape) >= 3 else x[...]
    if how == "step":
        return x[:, ::2]
    return x[..., :1]  # part of the channel axis: refused


def _reduction(fn):
    def build(draw, x):
        axis = draw(st.sampled_from([*range(1, len(x.shape) - 1), -1]))
        if len(x.shape) >= 4 and draw(st.booleans()):
            axis = (1, 2)
        return fn(x, axis=axis, keepdims=draw(st.booleans()))

    return build


def _resize(draw, x):
    size = tuple(draw(st.integers(2, 6)) for _ in range(2))
    return ops.image.resize(x, size, interpolation=draw(st.sampled_from(["bilinear", "nearest"])))


def _concatenate(draw, x, y):
    axis = -1
    if len(x.shape) >= 3 and tuple(x.shape) == tuple(y.shape) and draw(st.booleans()):
        axis = 1
    return ops.concatenate([x, y], axis=axis)


_LETTERS = "abcde"


def _einsum(draw, x, y):
    """Two operands of one shape: element-wise, attention-like (scores over the positions, then
    the positions mixed), or the product summed over the last spatial axis."""
    n = len(x.shape)
    s = _LETTERS[:n]
    how = ["elementwise"] + (["attention"] if n == 3 else []) + (["pooled"] if n >= 3 else [])
    how = draw(st.sampled_from(how))
    if how == "elementwise":
        return ops.einsum(f"{s},{s}->{s}", x, y)
    if how == "attention":  # (b, t, c) x (b, s, c) -> (b, t, s); then (b, t, s) x (b, s, c) -> (b, t, c)
        scores = ops.softmax(ops.einsum("abc,adc->abd", x, y), axis=-1)
        return ops.einsum("abd,adc->abc", scores, y)
    return ops.einsum(f"{s},{s}->{s[:-2]}{s[-1]}", x, y)


OP_KINDS = [
    *(
        Kind(name, any_rank, _comparison(fn), arity=2, table="op", family="comparison")
        for name, fn in (
            ("Equal", ops.equal),
            ("NotEqual", ops.not_equal),
            ("Greater", ops.greater),
            ("GreaterEqual", ops.greater_equal),
            ("Less", ops.less),
            ("LessEqual", ops.less_equal),
        )
    ),
    *(
        Kind(name, any_rank, _logical(fn), arity=2, table="op", family="logic")
        for name, fn in (
            ("LogicalAnd", ops.logical_and),
            ("LogicalOr", ops.logical_or),
            ("LogicalXor", ops.logical_xor),
        )
    ),
    Kind(
        "LogicalNot", any_rank, lambda draw, x: _float(ops.logical_not(ops.greater(x, 0.0))), table="op", family="logic"
    ),
    *(Kind(name, any_rank, lambda draw, x, fn=fn: fn(x), table="op", family="unary") for name, fn in _UNARY.items()),
    *(
        Kind(name, rank(3, 4, 5), _reduction(fn), table="op", family="reduction")
        for name, fn in (
            ("Mean", ops.mean),
            ("Sum", ops.sum),
            ("Max", ops.max),
            ("Min", ops.min),
            ("Prod", lambda x, **kw: ops.prod(ops.tanh(x), **kw)),
            ("Amax", ops.amax),
            ("Amin", ops.amin),
        )
    ),
    Kind("Split", _splittable, _split, table="op"),
    Kind("Concatenate", any_rank, _concatenate, arity=2, other_channels=True, table="op"),
    Kind("Pad", rank(3, 4, 5, at_most=6), _pad, table="op"),
    Kind("GetItem", rank(3, 4, 5, spatial=2), _get_item, table="op"),
    Kind("Resize", rank(4), _resize, table="op"),
    Kind("Einsum", rank(2, 3, 4), _einsum, arity=2, table="op"),
]
"""Kinds for the operation table's comparisons, logic, unary functions, reductions and shape ops."""
