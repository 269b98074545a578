"""The surgeon fuzzer's kinds for sequence and transformer layers (``tests/fuzz_graphs.py``):
attention (self and cross, masks, heads and head sizes), the recurrent layers and their wrappers,
Embedding, EinsumDense, the RMS and unit norms, Resizing, and the layers ``keras.applications``
and keras-hub define for themselves (those only when keras-hub is installed).

The attention layers' heads and head dimensions are internal units: the fuzzer deletes them by
their groups' producers (``"mha:heads"``), like channels.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
from fuzz_kinds import Kind, any_rank, rank
from fuzz_kinds import activation as _activation
from fuzz_kinds import channels as _channels
from fuzz_kinds import dims as _dims
from fuzz_kinds import small as _small
from hypothesis import strategies as st
from keras import layers as L
from keras import ops

# ----------------------------------------------------------------------------- attention


def _mask(draw, x, y):
    """No mask, a causal mask, or a constant ``(target, source)`` mask (each row keeps a position)."""
    if len(x.shape) != 3:
        return {}
    how = draw(st.sampled_from(["none", "causal", "mask"]))
    if how == "causal" and x.shape[1] == y.shape[1]:
        return {"use_causal_mask": True}
    if how == "mask":
        rng = np.random.default_rng(draw(st.integers(0, 100)))
        mask = rng.random((int(x.shape[1]), int(y.shape[1]))) < 0.6
        mask[:, 0] = True
        return {"attention_mask": mask}
    return {}


def _multi_head(draw, x, y=None):
    cross = y is not None
    y = x if y is None else y
    key_dim = draw(st.integers(1, 3))
    layer = L.MultiHeadAttention(
        num_heads=draw(st.integers(1, 3)),
        key_dim=key_dim,
        value_dim=draw(st.sampled_from([None, key_dim, draw(st.integers(1, 3))])),
        use_bias=draw(st.booleans()),
        output_shape=draw(st.sampled_from([None, _small(draw)])),
    )
    kwargs = _mask(draw, x, y)
    if cross and draw(st.booleans()):
        kwargs["key"] = y
    if draw(st.integers(0, 5)) == 0:  # the scores are returned: the heads stay
        return layer(x, y, return_attention_scores=True, **kwargs)[0]
    return layer(x, y, **kwargs)


def _grouped_query(draw, x, y=None):
    kv_heads = draw(st.integers(1, 2))
    layer = L.GroupQueryAttention(
        head_dim=draw(st.integers(1, 3)),
        num_query_heads=kv_heads * draw(st.integers(1, 2)),
        num_key_value_heads=kv_heads,
        use_bias=draw(st.booleans()),
    )
    y = x if y is None else y
    return layer(x, y, **_mask(draw, x, y))


# ----------------------------------------------------------------------------- recurrent layers

_RNN = {"SimpleRNN": L.SimpleRNN, "GRU": L.GRU, "LSTM": L.LSTM}


def _recurrent(draw, cls, go_backwards=True):
    kwargs = dict(return_sequences=draw(st.booleans()), go_backwards=go_backwards and draw(st.booleans()))
    if cls is L.GRU:
        kwargs["reset_after"] = draw(st.booleans())
    return cls(draw(st.integers(1, 4)), **kwargs)


def _rnn(name):
    return lambda draw, x: _recurrent(draw, _RNN[name])(x)


def _bidirectional(draw, x):
    # Keras 3.15 refuses a wrapped layer with go_backwards=True (its backward copy goes backwards too)
    inner = _recurrent(draw, _RNN[draw(st.sampled_from(sorted(_RNN)))], go_backwards=False)
    return L.Bidirectional(inner, merge_mode=draw(st.sampled_from(["concat", "sum", "mul", "ave"])))(x)


def _time_distributed(draw, x):
    """A Dense on every step, or a convolution over the remaining spatial axes of every step."""
    if len(x.shape) == 3 or draw(st.booleans()):
        inner = L.Dense(_small(draw), activation=_activation(draw))
    else:
        inner = getattr(L, f"Conv{_dims(x) - 1}D")(_small(draw), draw(st.integers(1, 2)), padding="same")
    return L.TimeDistributed(inner)(x)


def _conv_lstm(n):
    """ConvLSTM{n}D over the first spatial axis as time (ConvLSTM3D: a time axis of one step)."""

    def build(draw, x):
        layer = getattr(L, f"ConvLSTM{n}D")(
            draw(st.integers(1, 3)),
            draw(st.integers(1, 2)),
            padding="same",
            return_sequences=draw(st.booleans()) if n < 3 else False,
        )
        return layer(ops.expand_dims(x, 1) if n == 3 else x)

    return build


# ----------------------------------------------------------------------------- embeddings, einsum


def _embedding(draw, x):
    """Token ids made from the values of ``x`` (its last axis becomes the embedding's positions)."""
    vocabulary = draw(st.integers(2, 5))
    ids = ops.cast(ops.clip(ops.floor(ops.absolute(x) * 2.0), 0, vocabulary - 1), "int32")
    return L.Embedding(vocabulary, _small(draw))(ids)


def _reversible_embedding(module):
    """An embedding (token ids from ``x``'s values) whose table, transposed, may also project its own
    output back onto the vocabulary (``reverse=True``: tied or untied)."""

    def build(draw, x):
        vocabulary = draw(st.integers(2, 5))
        ids = ops.cast(ops.clip(ops.floor(ops.absolute(x) * 2.0), 0, vocabulary - 1), "int32")
        layer_class = L.ReversibleEmbedding if module is None else _hub(module)
        layer = layer_class(vocabulary, _small(draw), tie_weights=draw(st.booleans()))
        hidden = layer(ids)
        return layer(hidden, reverse=True) if draw(st.booleans()) else hidden

    return build


def _einsum_dense(draw, x):
    """Equations that keep the leading axes and replace the channels, add an axis, contract a
    position axis too, or move the channel axis (refused)."""
    n, d = len(x.shape), _small(draw)
    s = "abcde"[:n]
    options = [(f"{s},{s[-1]}z->{s[:-1]}z", (*x.shape[1:-1], d), "z")]
    if n <= 4:
        options.append((f"{s},{s[-1]}yz->{s[:-1]}yz", (*x.shape[1:-1], 2, d), "yz"))
    if n == 3:
        options.append(("abc,bcz->az", (d,), "z"))
        options.append(("abc,cz->azb", (d, x.shape[1]), "z"))  # the positions become the last axis
    equation, output_shape, bias_axes = draw(st.sampled_from(options))
    layer = L.EinsumDense(
        equation,
        output_shape=output_shape,
        bias_axes=draw(st.sampled_from([None, bias_axes])),
        activation=_activation(draw),
    )
    return layer(x)


# ----------------------------------------------------------------------------- keras.applications, keras-hub


def _application(module, name):
    return getattr(importlib.import_module(f"keras.src.applications.{module}"), name)


def _layer_scale(draw, x):
    return _application("convnext", "LayerScale")(init_values=0.5, projection_dim=_channels(x))(x)


def _custom_scale(draw, x, y):
    return _application("inception_resnet_v2", "CustomScaleLayer")(scale=draw(st.sampled_from([0.2, 1.0])))([x, y])


_HUB_MODELS = "keras_hub.src.models"


def _hub(path):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _patches(draw, x):
    """A patch size dividing the image, and the image size (square images only)."""
    size = int(x.shape[1])
    return draw(st.sampled_from([p for p in (1, 2, 3) if size % p == 0])), size


def _hub_kinds():
    if importlib.util.find_spec("keras_hub") is None:
        return []
    llama = f"{_HUB_MODELS}.llama.llama_layernorm.LlamaLayerNorm"
    gemma = f"{_HUB_MODELS}.gemma.rms_normalization.RMSNormalization"
    dinov2_scale = f"{_HUB_MODELS}.dinov2.dinov2_layers.DINOV2LayerScale"
    drop_path = f"{_HUB_MODELS}.mit.mit_layers.DropPath"
    positions = "keras_hub.src.layers.modeling.position_embedding.PositionEmbedding"
    vit = f"{_HUB_MODELS}.vit.vit_layers.ViTPatchingAndEmbedding"
    deit = f"{_HUB_MODELS}.deit.deit_layers.DeiTEmbeddings"
    dinov2 = f"{_HUB_MODELS}.dinov2.dinov2_layers.DINOV2Embedding"
    reversible = "keras_hub.src.layers.modeling.reversible_embedding.ReversibleEmbedding"

    def vit_build(draw, x):
        patch, size = _patches(draw, x)
        layer = _hub(vit)((size, size), (patch, patch), _small(draw), num_channels=_channels(x))
        return layer(x)

    def deit_build(draw, x):
        patch, size = _patches(draw, x)
        return _hub(deit)((size, size), (patch, patch), _small(draw), num_channels=_channels(x))(x)

    def dinov2_build(draw, x):
        patch, size = _patches(draw, x)
        layer = _hub(dinov2)(
            _small(draw), patch, (size, size, _channels(x)), position_embedding_shape=(size, size), use_mask_token=False
        )
        return layer(x)

    square = rank(4)
    return [
        Kind(llama, any_rank, lambda draw, x: _hub(llama)(epsilon=1e-6)(x), table="keras_hub"),
        Kind(gemma, any_rank, lambda draw, x: _hub(gemma)(epsilon=1e-6)(x), table="keras_hub"),
        Kind(
            dinov2_scale,
            any_rank,
            lambda draw, x: _hub(dinov2_scale)(hidden_dim=_channels(x), init_values=0.5)(x),
            table="keras_hub",
        ),
        Kind(drop_path, any_rank, lambda draw, x: _hub(drop_path)(rate=0.3)(x), table="keras_hub"),
        Kind(
            positions,
            rank(3),
            lambda draw, x: L.Add()([x, _hub(positions)(sequence_length=int(x.shape[1]))(x)]),
            table="keras_hub",
        ),
        Kind(reversible, rank(2, 3), _reversible_embedding(reversible), table="keras_hub"),
        Kind(vit, lambda s: square(s) and s[0] == s[1], vit_build, table="keras_hub"),
        Kind(deit, lambda s: square(s) and s[0] == s[1], deit_build, table="keras_hub"),
        Kind(dinov2, lambda s: square(s) and s[0] == s[1], dinov2_build, table="keras_hub"),
    ]


SEQUENCE_KINDS = [
    Kind("MultiHeadAttention", rank(3, 4), _multi_head),
    Kind("MultiHeadAttention", rank(3, 4), _multi_head, arity=2, other_channels=True),
    Kind("GroupedQueryAttention", rank(3), _grouped_query),
    Kind("GroupedQueryAttention", rank(3), _grouped_query, arity=2),
    *(Kind(name, rank(3), _rnn(name)) for name in sorted(_RNN)),
    Kind("Bidirectional", rank(3), _bidirectional),
    Kind("TimeDistributed", rank(3, 4, 5), _time_distributed),
    Kind("ConvLSTM1D", rank(4), _conv_lstm(1)),
    Kind("ConvLSTM2D", rank(5), _conv_lstm(2)),
    Kind("ConvLSTM3D", rank(5), _conv_lstm(3)),
    Kind("Embedding", rank(2, 3), _embedding),
    Kind("ReversibleEmbedding", rank(2, 3), _reversible_embedding(None), family="Embedding"),
    Kind("EinsumDense", rank(2, 3, 4), _einsum_dense),
    Kind("RMSNormalization", any_rank, lambda draw, x: L.RMSNormalization()(x)),
    Kind("UnitNormalization", any_rank, lambda draw, x: L.UnitNormalization()(x)),
    Kind("Resizing", rank(4), lambda draw, x: L.Resizing(draw(st.integers(2, 6)), draw(st.integers(2, 6)))(x)),
    Kind("LayerScale", any_rank, _layer_scale, table="application"),
    Kind(
        "StochasticDepth",
        any_rank,
        lambda draw, x: _application("convnext", "StochasticDepth")(drop_path_rate=0.3)(x),
        table="application",
    ),
    Kind("CustomScaleLayer", any_rank, _custom_scale, arity=2, table="application"),
    *_hub_kinds(),
]
"""Kinds for the attention, recurrent, embedding and einsum layers, the RMS and unit norms, and
the layers of ``keras.applications`` and keras-hub."""
