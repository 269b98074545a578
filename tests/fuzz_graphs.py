"""Random Functional graphs for fuzzing the channel surgeon (``tests/surgery/test_fuzz.py``,
``bench/fuzz_surgeon.py``), drawn with hypothesis so that a failure shrinks to a minimal graph.

A *layer kind* is one entry of :data:`KINDS`: the class name its rule is registered under (what
the coverage test checks against ``ridurre.rules``), the input shapes it accepts, and a builder
``build(draw, x)`` (``build(draw, x, y)`` for a merge) returning its output tensor. To cover a new
rule, add one entry::

    Kind("Resizing", accepts=rank(4), build=lambda draw, x: keras.layers.Resizing(
        draw(st.integers(2, 6)), draw(st.integers(2, 6)))(x)),

The kinds of the newer rules (attention, recurrent layers, embeddings, einsum, the unary and
shape operations, the ``keras.applications`` and keras-hub layers) are in
``tests/fuzz_sequence_kinds.py`` and ``tests/fuzz_op_kinds.py``. Layers that normalize over the
channels (LayerNormalization, the RMS norms) are compared with the reference that deletes their
channels too (``Surgeon.operate(zero=True, delete_inexact=True)``), exactly like the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from fuzz_kinds import TABLES, Kind, any_rank, rank
from fuzz_kinds import activation as _activation
from fuzz_kinds import channels as _channels
from fuzz_kinds import dims as _dims
from fuzz_kinds import padding as _padding
from fuzz_kinds import small as _small
from fuzz_op_kinds import OP_KINDS
from fuzz_sequence_kinds import SEQUENCE_KINDS
from hypothesis import strategies as st
from keras import layers as L
from keras import ops

# ----------------------------------------------------------------------------- builders


def _conv(transpose=False):
    def build(draw, x):
        n = _dims(x)
        kernel = draw(st.integers(1, 3))
        padding = _padding(draw, x, kernel)
        cls = getattr(L, f"Conv{n}D{'Transpose' if transpose else ''}")
        kwargs = dict(strides=draw(st.integers(1, 2)), padding=padding, activation=_activation(draw))
        filters = _small(draw)
        if not transpose and kwargs["strides"] == 1 and draw(st.booleans()):
            groups = draw(st.sampled_from([g for g in (1, 2, 3) if _channels(x) % g == 0]))
            filters = groups * draw(st.integers(1, 3))
            kwargs["groups"] = groups
        return cls(filters, kernel, **kwargs)(x)

    return build


def _depthwise(draw, x):
    n = _dims(x)
    kernel = draw(st.integers(1, 3))
    layer = getattr(L, f"DepthwiseConv{n}D")(
        kernel, depth_multiplier=draw(st.integers(1, 2)), padding=_padding(draw, x, kernel)
    )
    return layer(x)


def _separable(draw, x):
    n = _dims(x)
    kernel = draw(st.integers(1, 3))
    layer = getattr(L, f"SeparableConv{n}D")(
        _small(draw),
        kernel,
        depth_multiplier=draw(st.integers(1, 2)),
        padding=_padding(draw, x, kernel),
        activation=_activation(draw),
    )
    return layer(x)


def _dense(draw, x):
    return L.Dense(_small(draw), activation=_activation(draw))(x)


def _per_dims(prefix, **kwargs):
    """A layer whose class depends on the number of spatial dimensions: ``<prefix>{1,2,3}D``."""

    def build(draw, x):
        return getattr(L, f"{prefix}{_dims(x)}D")(**{k: v(draw, x) if callable(v) else v for k, v in kwargs.items()})(x)

    return build


def _group_norm(draw, x):
    c = _channels(x)
    return L.GroupNormalization(groups=draw(st.sampled_from([g for g in (1, 2, 3) if c % g == 0])))(x)


def _normalization(draw, x):
    c = _channels(x)
    rng = np.random.default_rng(draw(st.integers(0, 100)))
    return L.Normalization(mean=rng.normal(size=c), variance=rng.uniform(0.5, 2.0, size=c))(x)


def _reshape_keep_channels(draw, x):
    if len(x.shape) == 2:
        return L.Reshape((-1,))(x)
    return L.Reshape((-1, _channels(x)))(x)


def _permute(draw, x):
    spatial = list(range(1, len(x.shape) - 1))
    order = draw(st.permutations(spatial))
    return L.Permute(tuple(order) + (len(x.shape) - 1,))(x)


def _transpose_op(draw, x):
    spatial = list(range(1, len(x.shape) - 1))
    order = draw(st.permutations(spatial))
    return ops.transpose(x, axes=(0, *order, len(x.shape) - 1))


def _expand_squeeze(draw, x):
    axis = draw(st.integers(1, len(x.shape) - 1))
    return ops.squeeze(ops.expand_dims(x, axis), axis)


def _reshape_op(draw, x):
    """Flatten the spatial axes with a raw reshape and restore them: channels stay last."""
    spatial = [int(d) for d in x.shape[1:-1]]
    flat = ops.reshape(x, (-1, math.prod(spatial), x.shape[-1]))
    return ops.reshape(flat, (-1, *spatial, x.shape[-1])) if draw(st.booleans()) else flat


def _nested(draw, x):
    """A small Functional model called as a layer: producer, normalization, activation."""
    inner_in = keras.Input(tuple(x.shape[1:]))
    h = inner_in
    if len(x.shape) >= 3:
        h = getattr(L, f"Conv{_dims(x)}D")(_small(draw), 1)(h)
    else:
        h = L.Dense(_small(draw))(h)
    if draw(st.booleans()):
        h = L.BatchNormalization()(h)
    return keras.Model(inner_in, L.ReLU()(h))(x)


def _shared(draw, x):
    """One layer called twice: on ``x`` and on its own output (same channels in and out)."""
    c = _channels(x)
    layer = getattr(L, f"Conv{_dims(x)}D")(c, 1) if len(x.shape) >= 3 else L.Dense(c)
    return layer(L.ReLU()(layer(x)))


def _merge(cls):
    return lambda draw, x, y: getattr(L, cls)()([x, y])


def _rescaling(draw, x):
    """A scalar offset, or a scale and offset per channel (sliced with the channels)."""
    if draw(st.booleans()):
        return L.Rescaling(0.5, offset=draw(st.sampled_from([0.0, 1.0])))(x)
    c = _channels(x)
    return L.Rescaling(np.linspace(0.5, 1.5, c).astype("float32"), offset=np.arange(c, dtype="float32"))(x)


def _concatenate(draw, x, y):
    """On the channel axis, or (same shapes) on the first spatial axis, where it couples like Add."""
    axis = -1
    if len(x.shape) >= 3 and tuple(x.shape) == tuple(y.shape) and draw(st.booleans()):
        axis = 1
    return L.Concatenate(axis=axis)([x, y])


def _op2(fn):
    return lambda draw, x, y: fn(x, y)


def _op1(fn):
    return lambda draw, x: fn(x)


CONV = rank(3, 4, 5)
CONV12 = rank(3, 4)

KINDS = [
    # producers
    Kind("Conv1D", rank(3), _conv()),
    Kind("Conv2D", rank(4), _conv()),
    Kind("Conv3D", rank(5), _conv()),
    Kind("Conv1DTranspose", rank(3, at_most=8), _conv(transpose=True)),
    Kind("Conv2DTranspose", rank(4, at_most=6), _conv(transpose=True)),
    Kind("Conv3DTranspose", rank(5, at_most=4), _conv(transpose=True)),
    Kind("DepthwiseConv1D", rank(3), _depthwise),
    Kind("DepthwiseConv2D", rank(4), _depthwise),
    Kind("SeparableConv1D", rank(3), _separable),
    Kind("SeparableConv2D", rank(4), _separable),
    Kind("Dense", any_rank, _dense),
    # normalizations
    Kind("BatchNormalization", any_rank, lambda draw, x: L.BatchNormalization()(x)),
    Kind("LayerNormalization", any_rank, lambda draw, x: L.LayerNormalization()(x)),
    Kind("GroupNormalization", any_rank, _group_norm),
    Kind("Normalization", any_rank, _normalization),
    # activations and element-wise layers
    Kind("ReLU", any_rank, lambda draw, x: L.ReLU(draw(st.sampled_from([None, 6.0])))(x)),
    Kind("ELU", any_rank, lambda draw, x: L.ELU()(x)),
    Kind("LeakyReLU", any_rank, lambda draw, x: L.LeakyReLU()(x)),
    Kind("PReLU", any_rank, lambda draw, x: L.PReLU()(x)),
    Kind("Activation", any_rank, lambda draw, x: L.Activation(draw(st.sampled_from(["relu", "tanh", "softmax"])))(x)),
    Kind("Softmax", rank(3, 4, 5), lambda draw, x: L.Softmax(axis=draw(st.sampled_from([1, -1])))(x)),
    Kind("Rescaling", any_rank, _rescaling),
    # regularization and identity layers (identity at inference)
    Kind("Dropout", any_rank, lambda draw, x: L.Dropout(0.3)(x), family="identity"),
    Kind("SpatialDropout1D", rank(3), lambda draw, x: L.SpatialDropout1D(0.3)(x), family="identity"),
    Kind("SpatialDropout2D", rank(4), lambda draw, x: L.SpatialDropout2D(0.3)(x), family="identity"),
    Kind("SpatialDropout3D", rank(5), lambda draw, x: L.SpatialDropout3D(0.3)(x), family="identity"),
    Kind("GaussianNoise", any_rank, lambda draw, x: L.GaussianNoise(0.1)(x), family="identity"),
    Kind("GaussianDropout", any_rank, lambda draw, x: L.GaussianDropout(0.1)(x), family="identity"),
    Kind("AlphaDropout", any_rank, lambda draw, x: L.AlphaDropout(0.1)(x), family="identity"),
    Kind("ActivityRegularization", any_rank, lambda draw, x: L.ActivityRegularization(l1=0.01)(x), family="identity"),
    Kind("Identity", any_rank, lambda draw, x: L.Identity()(x), family="identity"),
    Kind("Masking", rank(3), lambda draw, x: L.Masking(mask_value=0.0)(x)),
    # spatial layers
    Kind("ZeroPadding1D", rank(3, at_most=8), _per_dims("ZeroPadding", padding=1)),
    Kind("ZeroPadding2D", rank(4, at_most=6), _per_dims("ZeroPadding", padding=1)),
    Kind("ZeroPadding3D", rank(5, at_most=4), _per_dims("ZeroPadding", padding=1)),
    Kind("Cropping1D", rank(3, spatial=3), _per_dims("Cropping", cropping=1)),
    Kind("Cropping2D", rank(4, spatial=3), _per_dims("Cropping", cropping=1)),
    Kind("Cropping3D", rank(5, spatial=3), _per_dims("Cropping", cropping=1)),
    Kind("UpSampling1D", rank(3, at_most=8), _per_dims("UpSampling", size=2)),
    Kind("UpSampling2D", rank(4, at_most=6), _per_dims("UpSampling", size=2)),
    Kind("UpSampling3D", rank(5, at_most=3), _per_dims("UpSampling", size=2)),
    Kind("MaxPooling1D", rank(3, spatial=2), _per_dims("MaxPooling", pool_size=2)),
    Kind("MaxPooling2D", rank(4, spatial=2), _per_dims("MaxPooling", pool_size=2)),
    Kind("MaxPooling3D", rank(5, spatial=2), _per_dims("MaxPooling", pool_size=2)),
    Kind("AveragePooling1D", rank(3, spatial=2), _per_dims("AveragePooling", pool_size=2)),
    Kind("AveragePooling2D", rank(4, spatial=2), _per_dims("AveragePooling", pool_size=2)),
    Kind("AveragePooling3D", rank(5, spatial=2), _per_dims("AveragePooling", pool_size=2)),
    Kind("GlobalAveragePooling1D", rank(3), _per_dims("GlobalAveragePooling")),
    Kind("GlobalAveragePooling2D", rank(4), _per_dims("GlobalAveragePooling")),
    Kind("GlobalAveragePooling3D", rank(5), _per_dims("GlobalAveragePooling")),
    Kind("GlobalMaxPooling1D", rank(3), _per_dims("GlobalMaxPooling")),
    Kind("GlobalMaxPooling2D", rank(4), _per_dims("GlobalMaxPooling")),
    Kind("GlobalMaxPooling3D", rank(5), _per_dims("GlobalMaxPooling")),
    # shape layers
    Kind("Flatten", rank(3, 4, 5), lambda draw, x: L.Flatten()(x)),
    Kind("Reshape", rank(2, 3, 4, 5), _reshape_keep_channels),
    Kind("Permute", rank(4, 5), _permute),
    Kind("RepeatVector", rank(2), lambda draw, x: L.RepeatVector(draw(st.integers(2, 3)))(x)),
    # merges
    *(
        Kind(name, any_rank, _merge(name), arity=2, family="merge")
        for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
    ),
    Kind("Concatenate", any_rank, _concatenate, arity=2, other_channels=True),
    # raw keras.ops operations recorded in the graph
    Kind("Add", any_rank, _op2(lambda x, y: x + y), arity=2, table="op"),
    Kind("Subtract", any_rank, _op2(lambda x, y: x - y), arity=2, table="op"),
    Kind("Multiply", any_rank, _op2(lambda x, y: x * y), arity=2, table="op"),
    Kind("Maximum", any_rank, _op2(ops.maximum), arity=2, table="op"),
    Kind("Minimum", any_rank, _op2(ops.minimum), arity=2, table="op"),
    Kind("TrueDivide", any_rank, _op2(lambda x, y: x / (ops.abs(y) + 1.0)), arity=2, table="op"),
    Kind("Divide", any_rank, _op2(ops.divide), arity=2, table="op"),
    *(
        Kind(name, any_rank, _op1(fn), table="op", family="activation op")
        for name, fn in (
            ("Relu", ops.relu),
            ("Relu6", ops.relu6),
            ("Sigmoid", ops.sigmoid),
            ("Tanh", ops.tanh),
            ("Silu", ops.silu),
            ("Gelu", ops.gelu),
            ("Softplus", ops.softplus),
            ("HardSigmoid", ops.hard_sigmoid),
            ("HardSilu", ops.hard_silu),
            ("Elu", ops.elu),
            ("LeakyRelu", ops.leaky_relu),
            ("Cast", lambda x: ops.cast(x, "float32")),
        )
    ),
    Kind("ExpandDims", any_rank, _expand_squeeze, table="op"),
    Kind("Squeeze", any_rank, _expand_squeeze, table="op"),
    Kind("Transpose", rank(4, 5), _transpose_op, table="op"),
    Kind("Reshape", rank(3, 4, 5), _reshape_op, table="op"),
    Kind("Repeat", rank(3, 4, 5, at_most=8), lambda draw, x: ops.repeat(x, 2, axis=1), table="op"),
    *OP_KINDS,
    *SEQUENCE_KINDS,
]
"""Every kind of layer the generator draws from (see the module docstring to add one)."""

STRUCTURES = {"nested model": (any_rank, _nested), "shared layer": (any_rank, _shared)}
"""Structures that are not one rule: a nested model called as a layer, a layer called twice."""


def covered_rule_names():
    """``{table: names of the rules the kinds cover}`` (see :data:`fuzz_kinds.TABLES`)."""
    covered = {table: set() for table in TABLES}
    for kind in KINDS:
        covered[kind.table].add(kind.name)
    return covered


# ----------------------------------------------------------------------------- graphs


@dataclass
class Graph:
    """A drawn model and what it is made of (for the failure report)."""

    model: keras.Model
    steps: list


def _input_shape(draw):
    r = draw(st.sampled_from([2, 3, 3, 4, 4, 4, 5]))
    spatial = {2: (), 3: (draw(st.integers(3, 8)),), 4: (draw(st.integers(3, 6)),) * 2, 5: (3, 3, 3)}[r]
    return spatial + (draw(st.integers(2, 5)),)


def _partner(draw, x, pool, other_channels):
    """A second operand for a merge: a tensor of the pool with ``x``'s shape, or a new branch."""
    same = [
        t
        for t in pool
        if t is not x
        and tuple(t.shape[1:-1]) == tuple(x.shape[1:-1])
        and (other_channels or t.shape[-1] == x.shape[-1])
    ]
    if same and draw(st.booleans()):
        return draw(st.sampled_from(same)), "pool"
    c = _channels(x) if not other_channels else _small(draw)
    branch = getattr(L, f"Conv{_dims(x)}D")(c, 1) if len(x.shape) >= 3 else L.Dense(c)
    return branch(x), "branch"


def _label(kind):
    return kind.name if kind.table == "layer" else f"{kind.table} {kind.name.rsplit('.', 1)[-1]}"


ATTENTION = ("MultiHeadAttention", "GroupedQueryAttention")
"""The kinds a graph starts with one time in four (on a sequence), so that the fuzzer deletes
attention heads and head dimensions (internal units) often, not only channels."""


def _step(draw, x, pool, used, kinds, structures=True):
    """Apply one of ``kinds`` (or of the structures) accepting ``x``: ``(output, label)``."""
    shape = tuple(x.shape[1:])
    kinds = [k for k in kinds if k.accepts(shape)]
    structures = [s for s, (ok, _) in STRUCTURES.items() if ok(shape)] if structures else []
    choice = draw(st.sampled_from(sorted({k.family for k in kinds}) + structures))
    if choice in STRUCTURES:
        return STRUCTURES[choice][1](draw, x), choice
    choice = draw(st.sampled_from([k for k in kinds if k.family == choice]))
    if choice.arity == 2:
        y, how = _partner(draw, x, pool, choice.other_channels)
        used.add(id(y))
        return choice.build(draw, x, y), f"{_label(choice)} ({how})"
    return choice.build(draw, x), _label(choice)


def draw_graph(draw, max_steps=8):
    """Draw a random Functional model: one or two inputs, ``1..max_steps`` layers drawn from
    :data:`KINDS` and :data:`STRUCTURES` (one graph in four starting with :data:`ATTENTION`), and
    a Dense head."""
    attention = draw(st.integers(0, 3)) == 0
    inputs = [keras.Input((draw(st.integers(3, 6)), draw(st.integers(2, 5))) if attention else _input_shape(draw))]
    if draw(st.integers(0, 3)) == 0:
        inputs.append(keras.Input(tuple(inputs[0].shape[1:])))
    stem = _conv()(draw, inputs[0]) if len(inputs[0].shape) >= 3 else _dense(draw, inputs[0])
    pool = [*inputs, stem]
    stem_name = f"Conv{_dims(inputs[0])}D" if len(inputs[0].shape) >= 3 else "Dense"
    steps, used = [f"stem {stem_name}: -> {tuple(stem.shape[1:])}"], set()
    used.add(id(inputs[0]))
    for i in range(draw(st.integers(1, max_steps))):
        x = stem if attention and i == 0 else draw(st.sampled_from(pool))
        used.add(id(x))
        first = attention and i == 0
        kinds = [k for k in KINDS if k.name in ATTENTION] if first else KINDS
        out, label = _step(draw, x, pool, used, kinds, structures=not first)
        steps.append(f"{label}: {tuple(x.shape[1:])} -> {tuple(out.shape[1:])}")
        pool.append(out)
    heads = [t for t in pool if id(t) not in used]  # every branch reaches the output
    heads = [L.Flatten()(t) if len(t.shape) > 2 else t for t in heads]
    head = heads[0] if len(heads) == 1 else L.Concatenate()(heads)
    outputs = L.Dense(3, name="head")(head)
    return Graph(keras.Model(inputs, outputs), steps)
