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
dynamic scaling are refused). Each copy is checked numerically against the layer on its first
call.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ridurre.graph._recording import Refused
from ridurre.graph.layers import RotaryEmbedding

__all__ = ["LAYER_STANDINS", "STANDINS", "layer_standin", "segformer_attention"]


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


LAYER_STANDINS = {
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


STANDINS = {
    "keras_hub.src.models.mit.mit_layers.SegFormerMultiheadAttention": segformer_attention,
}
"""Stand-in builders by class path: ``builder(layer, *call_args, **call_kwargs)`` returns the
outputs, or raises :class:`~ridurre.graph._recording.Refused`."""
