"""Stand-ins: composite layers whose ``call`` is recorded as an equivalent graph of layers that
ridurre has rules for, instead of the ``keras.ops`` calls it is written with.

Some composites compute a standard block by hand: MiT/SegFormer's
``SegFormerMultiheadAttention`` is multi-head attention written with ``reshape``, ``transpose``
and ``@`` on the outputs of four Dense layers. Recorded as it is, its heads and head dimensions
are hidden in raw reshapes and matrix products. Its stand-in is a ``keras.layers.MultiHeadAttention``
whose query, key, value and output kernels are the Dense kernels reshaped (head-major, as the
hand-written code splits them), with the layer's own sequence-reduction convolution and
normalization shared: the trace then sees its heads and head dimensions as groups.

A stand-in holds copies of the replaced Dense weights (the composite's other sublayers are
shared); the inliner checks it numerically against the layer's own call, and refuses the layer
when they differ. Stand-ins are keyed by class path (``module.QualName``), so nothing here
imports keras-hub.

Leaf layers that keras-hub 0.32 cannot save (so no inlined or pruned model holding them could be
saved or rebuilt) get a savable copy rebuilt from their constructor arguments
(:data:`LAYER_STANDINS`): keras-hub's rotary embeddings (Llama's ``LlamaRotaryEmbedding`` writes a config its own
``from_config`` refuses) are replaced by ridurre's :class:`~ridurre.graph.layers.RotaryEmbedding`
with the same wavelength, linear scaling and axes, whose frequencies can be listed explicitly so
that head dimensions are pruned in rotation pairs (Llama 3.1's frequency adjustment, YaRN and
dynamic scaling are refused), and Gemma's ``RMSNormalization`` (created with a dtype policy
object) by a copy created with the policy's name. Each copy is checked numerically against the
layer on its first call. Gemma's attention has a stand-in of its own (:func:`gemma_attention`).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from ridurre.graph._recording import Refused
from ridurre.graph.layers import RotaryEmbedding
from ridurre.rules.keras_hub import class_path

__all__ = ["LAYER_STANDINS", "STANDINS", "gemma_attention", "layer_standin", "segformer_attention"]


def _dense(layer, name):
    dense = getattr(layer, name, None)
    if not isinstance(dense, keras.layers.Dense) or not dense.use_bias or dense.activation.__name__ != "linear":
        raise Refused(f"its {name!r} is not a linear Dense layer with a bias")
    return dense


def segformer_attention(layer, x):
    """MiT's ``SegFormerMultiheadAttention(project_dim, num_heads, sr_ratio)`` on ``x`` of shape
    ``(batch, H * W, C)``, as ``MultiHeadAttention(query=x, value=kv, key=kv)`` followed by the
    layer's output dropout, where ``kv`` is ``x`` reshaped to ``(H, W, C)``, reduced by the layer's
    own ``sr`` convolution and normalized by its ``norm`` (when ``sr_ratio > 1``).

    Example:
        >>> import keras, numpy as np
        >>> from keras_hub.src.models.mit.mit_layers import SegFormerMultiheadAttention
        >>> layer = SegFormerMultiheadAttention(8, 2, 2)
        >>> x = keras.Input((16, 8))
        >>> _ = layer(x)
        >>> y = segformer_attention(layer, x)
        >>> xs = np.random.default_rng(0).normal(size=(2, 16, 8))
        >>> bool(np.allclose(keras.Model(x, y)(xs), layer(xs), atol=1e-5))
        True
    """
    steps, channels = x.shape[1], x.shape[-1]
    if len(x.shape) != 3 or steps is None or channels is None:
        raise Refused("its input is not (batch, known H * W, known channels)")
    side = int(math.sqrt(steps))
    heads = int(layer.num_heads)
    q, k, v, proj = (_dense(layer, n) for n in ("q", "k", "v", "proj"))
    if side * side != steps or channels % heads or any(d.units != channels for d in (q, k, v, proj)):
        raise Refused("its sizes differ from MiT's (square H * W, project_dim divisible by num_heads)")
    head_dim = channels // heads
    policy = getattr(layer.dtype_policy, "name", layer.dtype_policy)
    kv = x
    if layer.sr_ratio > 1:
        kv = keras.layers.Reshape((side, side, channels), name=f"{layer.name}_to_image", dtype=policy)(x)
        kv = layer.sr(kv)
        kv = keras.layers.Reshape((-1, channels), name=f"{layer.name}_to_sequence", dtype=policy)(kv)
        kv = layer.norm(kv)
    attention = keras.layers.MultiHeadAttention(
        heads, head_dim, dropout=float(layer.dropout.rate), name=f"{layer.name}_attention", dtype=policy
    )
    y = attention(x, kv, kv)
    shapes = {"query": q, "key": k, "value": v}
    for name, dense in shapes.items():
        einsum = getattr(attention, f"_{name}_dense")
        einsum.kernel.assign(np.reshape(dense.kernel.numpy(), (channels, heads, head_dim)))
        einsum.bias.assign(np.reshape(dense.bias.numpy(), (heads, head_dim)))
    attention._output_dense.kernel.assign(np.reshape(proj.kernel.numpy(), (heads, head_dim, channels)))
    attention._output_dense.bias.assign(proj.bias.numpy())
    return layer.proj_drop(y)


def _policy(layer):
    return getattr(layer.dtype_policy, "name", layer.dtype_policy)


def _rotary(layer, scaling_factor):
    feature_axis = layer.feature_axis
    if feature_axis != -1:
        raise Refused(f"feature_axis={feature_axis}: only rotations of the last axis are followed")
    return RotaryEmbedding(
        max_wavelength=layer.max_wavelength,
        scaling_factor=scaling_factor,
        sequence_axis=layer.sequence_axis,
        dtype=_policy(layer),
        name=layer.name,
    )


def _llama_rotary(layer):
    if layer.frequency_adjustment_factor is not None:
        raise Refused("its Llama 3.1 frequency adjustment is not followed")
    return _rotary(layer, layer.position_scaling_factor)


def _keras_hub_rotary(layer):
    if layer.rope_type not in ("linear", "default") or layer.denominator_dim is not None:
        raise Refused(f"rope_type={layer.rope_type!r} (or a denominator_dim) is not followed")
    return _rotary(layer, layer.scaling_factor if layer.rope_type == "linear" else 1.0)


def _gemma_rms_normalization(layer):
    return type(layer)(epsilon=layer.epsilon, dtype=_policy(layer), name=layer.name, trainable=layer.trainable)


LAYER_STANDINS = {
    "keras_hub.src.models.gemma.rms_normalization.RMSNormalization": _gemma_rms_normalization,
    "keras_hub.src.models.llama.llama_rotary_embedding.LlamaRotaryEmbedding": _llama_rotary,
    "keras_hub.src.layers.modeling.rotary_embedding.RotaryEmbedding": _keras_hub_rotary,
}
"""Savable copies of leaf layers by class path: ``builder(layer)`` returns an unbuilt layer that
computes the same function once the original's weights are copied into it."""


def layer_standin(layer, key):
    """A callable standing in for ``layer``'s calls (``key`` is its class path), or ``None``
    when :data:`LAYER_STANDINS` has no builder for it. On its first call the copy is built, the
    original's weights are copied in, and both are run on random inputs of the call's shapes
    (unknown sizes as 3).

    Raises:
        Refused: the builder refuses the layer, or the copy computes something else.

    Example:
        >>> import keras
        >>> layer_standin(keras.layers.Dense(2), "my_package.layers.Dense") is None
        True
    """
    builder = LAYER_STANDINS.get(key)
    if builder is None:
        return None
    copy = builder(layer)
    checked = []

    def call(*args, **kwargs):
        outputs = copy(*args, **kwargs)
        if not checked:
            if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in layer.weights]:
                raise Refused(f"its stand-in {type(copy).__name__} has other weights")
            for new, old in zip(copy.weights, layer.weights):
                new.assign(old)
            _check_same(layer, copy, args, kwargs)
            checked.append(True)
        return outputs

    return call


def _check_same(layer, copy, args, kwargs):
    rng = np.random.default_rng(0)

    def concrete(value):
        if not isinstance(value, keras.KerasTensor):
            return value
        shape = tuple(3 if d is None else int(d) for d in value.shape)
        dtype = str(value.dtype)
        return rng.normal(size=shape).astype(dtype) if "float" in dtype else np.ones(shape, dtype)

    values = keras.tree.map_structure(concrete, (args, kwargs))
    want = keras.tree.flatten(layer.call(*values[0], **values[1]))  # its __call__ is being intercepted
    got = keras.tree.flatten(copy(*values[0], **values[1]))
    for a, b in zip(got, want):
        if not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6):
            raise Refused(f"its stand-in {type(copy).__name__} does not reproduce its output")


def gemma_attention(layer, x, attention_mask=None, cache=None, cache_update_index=0, training=None):
    """Gemma's ``CachedGemmaAttention`` on ``x`` of shape ``(batch, T, hidden)``, without a cache,
    computed as the layer does with one step left out: after the rotary embedding the layer
    interleaves the two halves of every query and key head (``reshape(stack(split(x, 2), -1))``),
    which is the same permutation of the head dimensions of both, and the query-key product sums
    over them, so the attention is the same without it. Left out, a head dimension stays one
    channel (a rotation pair) from the projections through the product. The rotary embedding is
    its savable copy (:data:`LAYER_STANDINS`). The layer zeroes the output of a query whose mask
    row is all zeros; here the attention probabilities are multiplied by ``mask != 0``, which is
    the same for a mask of whole numbers (Gemma's decoder blocks pass the minimum of a padding and
    a causal mask). A cache, a sliding window, a floating-point or a missing mask are refused.

    Example:
        >>> import keras, numpy as np
        >>> from keras_hub.src.models.gemma.gemma_attention import CachedGemmaAttention
        >>> layer = CachedGemmaAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)
        >>> x, mask = keras.Input((None, 8)), keras.Input((None, None), dtype="int32")
        >>> _ = layer(x, attention_mask=mask)
        >>> y = gemma_attention(layer, x, attention_mask=mask)
        >>> xs = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
        >>> masks = np.tril(np.ones((2, 5, 5), "int32"))
        >>> masks[1, :2] = 0  # two positions that attend to nothing
        >>> got, want = keras.Model([x, mask], y)([xs, masks]), layer(xs, attention_mask=masks)
        >>> bool(np.allclose(got, want, atol=1e-5))
        True
    """
    if cache is not None or attention_mask is None:
        raise Refused("only a call without a cache and with an attention mask is followed")
    if "float" in str(attention_mask.dtype):
        raise Refused("its attention mask is not of whole numbers (a padding or causal mask)")
    if layer.use_sliding_window_attention:
        raise Refused("its sliding-window attention is not followed")
    rotary = layer_standin(layer.rope_layer, class_path(type(layer.rope_layer)))
    if rotary is None:
        raise Refused(f"its rotary embedding {type(layer.rope_layer).__name__} has no savable stand-in")
    heads, groups, head_dim = int(layer.num_query_heads), int(layer.num_key_value_heads), int(layer.head_dim)
    width = head_dim if layer.query_head_dim_normalize else layer.hidden_dim // heads
    policy = _policy(layer)
    query = rotary(layer.query_dense(x), start_index=cache_update_index)
    query = query * ops.cast(1 / np.sqrt(width), dtype=query.dtype)
    query = keras.layers.Reshape((-1, groups, heads // groups, head_dim), name=f"{layer.name}_groups", dtype=policy)(
        query
    )
    key = rotary(layer.key_dense(x), start_index=cache_update_index)
    logits = ops.einsum("btkgh,bskh->bkgts", query, key)
    if layer.logit_soft_cap is not None:
        logits = ops.multiply(ops.tanh(ops.divide(logits, layer.logit_soft_cap)), layer.logit_soft_cap)
    mask = attention_mask[:, None, None, :, :]
    probabilities = ops.cast(layer.softmax(logits, mask=mask), logits.dtype)
    if layer.dropout:
        probabilities = layer.dropout_layer(probabilities, training=training)
    # the layer zeroes the output of a query that attends to nothing; with a whole-number mask, the
    # positions it hides already have probability exactly 0 in any other row (-1e9 before exp)
    probabilities = probabilities * ops.cast(ops.not_equal(mask, 0), probabilities.dtype)
    heads_out = ops.einsum("bkgts,bskh->btkgh", probabilities, layer.value_dense(x))
    return layer.output_dense(
        keras.layers.Reshape((-1, heads, head_dim), name=f"{layer.name}_heads", dtype=policy)(heads_out)
    )


STANDINS = {
    "keras_hub.src.models.mit.mit_layers.SegFormerMultiheadAttention": segformer_attention,
    "keras_hub.src.models.gemma.gemma_attention.CachedGemmaAttention": gemma_attention,
}
"""Stand-in builders by class path: ``builder(layer, *call_args, **call_kwargs)`` returns the
outputs, or raises :class:`~ridurre.graph._recording.Refused`."""
