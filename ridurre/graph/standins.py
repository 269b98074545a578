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
"""

from __future__ import annotations

import math

import keras
import numpy as np

from ridurre.graph._recording import Refused

__all__ = ["STANDINS", "segformer_attention"]


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


STANDINS = {
    "keras_hub.src.models.mit.mit_layers.SegFormerMultiheadAttention": segformer_attention,
}
"""Stand-in builders by class path: ``builder(layer, *call_args, **call_kwargs)`` returns the
outputs, or raises :class:`~ridurre.graph._recording.Refused`."""
