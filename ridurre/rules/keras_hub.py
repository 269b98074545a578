"""Rules of keras-hub's own layers that are not composites (``pip install ridurre[hub]``).

keras-hub's internal classes are not registered under unique names (it has two
``RMSNormalization`` classes), so the table is keyed by the class's full import path
(``module.QualName``). Nothing here imports keras-hub: the registry matches a layer's class
against the table when it meets one, and a class that keras-hub moves or renames is simply not
matched, so its channels stay unprunable (never wrongly pruned). Classes are matched exactly.

Covered: the RMS norms of Llama (``x * scale``) and Gemma (``x * (1 + scale)``), DINOv2's
``LayerScale``, MiT's ``DropPath``, ``PositionEmbedding``, ``ReversibleEmbedding`` (tied or
untied: the hidden dimension is one group with the input of its reverse call), and the
patch-embedding stems of ViT, DeiT and DINOv2 (every weight ends with the hidden size).
:class:`RotaryRule` serves ridurre's own ``RotaryEmbedding``, which stands in for keras-hub's
rotary embeddings (head dimensions pruned in rotation pairs). MiT's hand-written attention is
recorded as a ``MultiHeadAttention`` stand-in (:mod:`ridurre.graph.standins`);
``CachedMultiHeadAttention`` and Llama's attention are composites: inlining reaches their
``EinsumDense`` and einsum internals. Gemma's ``RMSNormalization`` (which cannot be saved as
created) and its attention are replaced by stand-ins, so its decoder blocks are inlined too.
"""

from __future__ import annotations

import numpy as np

from ridurre.rules.base import LayerRule, PassThroughRule, Unsupported, channels_last, prod
from ridurre.rules.conv import EmbeddingRule

__all__ = [
    "DERIVED_CONFIG_KEYS",
    "KERAS_HUB_RULES",
    "KerasHubLayerScaleRule",
    "PatchEmbeddingRule",
    "KerasHubRMSNormRule",
    "ReversibleEmbeddingRule",
    "RotaryRule",
    "class_path",
]


def class_path(cls: type) -> str:
    """The key of a class in :data:`KERAS_HUB_RULES`: ``module.QualName``.

    Example:
        >>> class_path(PatchEmbeddingRule)
        'ridurre.rules.keras_hub.PatchEmbeddingRule'
    """
    return f"{cls.__module__}.{cls.__qualname__}"


class KerasHubRMSNormRule(PassThroughRule):
    """An RMS normalization over the channel axis with a per-channel ``scale`` (``x * scale``,
    or ``x * (1 + scale)`` with ``offset=1``). Like LayerNormalization, removing channels changes
    the statistics of the others: pruned and zeroed models agree in structure, not in value.

    Example:
        >>> import numpy as np
        >>> weights = KerasHubRMSNormRule(offset=1.0).zero(None, {"scale": np.ones(3)}, None, np.array([0, 1, 0], bool))
        >>> weights["scale"].tolist()
        [1.0, -1.0, 1.0]
    """

    exact = False
    inexact_reason = "normalizes over the channels: removing some changes their root mean square"

    def __init__(self, offset: float = 0.0):
        super().__init__(
            per_channel_weights=("scale",),
            zero_to={"scale": -float(offset)},
            cost="normalization",
            saved_weights=(("scale", None),),
        )
        self.offset = float(offset)


class KerasHubLayerScaleRule(PassThroughRule):
    """A learned per-channel scale (``x * gamma``) whose config records the number of channels.

    Example:
        >>> rule = KerasHubLayerScaleRule("lambda1", size_key="hidden_dim")
        >>> keep = np.array([1, 0, 1], bool)
        >>> config, weights = rule.slice(None, {"hidden_dim": 3}, {"lambda1": np.ones(3)}, None, keep)
        >>> config["hidden_dim"], weights["lambda1"].shape
        (2, (2,))
    """

    def __init__(self, weight: str, size_key: str | None = None):
        super().__init__(per_channel_weights=(weight,), zero_to={weight: 0.0}, cost="elementwise")
        self.size_key = size_key

    def slice(self, layer, config, weights, in_keep, out_keep):
        config, weights = super().slice(layer, config, weights, in_keep, out_keep)
        if out_keep is not None and self.size_key is not None:
            config = {**config, self.size_key: int(np.count_nonzero(out_keep))}
        return config, weights


class PatchEmbeddingRule(LayerRule):
    """A vision transformer's stem: patches -> convolution, plus class/distillation/register
    tokens and position embeddings, all ending with the hidden size. The output channels are
    new (``produces``); every weight is sliced on its last axis, the patch convolution's kernel
    also on its input-channel axis. The layer must keep ``size_key`` (``hidden_dim``) in its
    config, and every weight must end with that size (otherwise the layer is refused).

    Example:
        >>> rule = PatchEmbeddingRule()
        >>> weights = {"kernel": np.ones((2, 2, 3, 4)), "class_token": np.ones((1, 1, 4))}
        >>> config, sliced = rule.slice(None, {"hidden_dim": 4}, weights, None, np.array([1, 0, 1, 1], bool))
        >>> config["hidden_dim"], sliced["kernel"].shape, sliced["class_token"].shape
        (3, (2, 2, 3, 3), (1, 1, 3))
    """

    produces = True
    channel_dependent = True
    cost = "free"

    def __init__(self, size_key: str = "hidden_dim", kernel: str = "kernel"):
        self.size_key = size_key
        self.kernel = kernel

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
        if len(in_layouts) != 1 or len(out_shapes) != 1:
            raise Unsupported("expected one image input and one output")
        width = out_shapes[0][-1]
        bad = [w.path for w in layer.weights if not w.shape or int(w.shape[-1]) != width]
        if bad or getattr(layer, self.size_key, None) != width:
            raise Unsupported(f"not every weight ends with the {width} output channels ({bad[:2]})")
        return [ctx.new_units(width)]

    def _is_kernel(self, name, value):
        return name.split(":")[-1] == self.kernel and np.ndim(value) == 4

    def slice(self, layer, config, weights, in_keep, out_keep):
        new = {}
        for name, value in weights.items():
            if in_keep is not None and self._is_kernel(name, value):
                value = value[..., in_keep, :]
            new[name] = value if out_keep is None else value[..., out_keep]
        if out_keep is not None:
            config = {**config, self.size_key: int(np.count_nonzero(out_keep))}
        return config, new

    def zero(self, layer, weights, in_zero, out_zero):
        new = {}
        for name, value in weights.items():
            value = np.array(value, copy=True)
            if in_zero is not None and self._is_kernel(name, value):
                value[..., in_zero, :] = 0
            if out_zero is not None:
                value[..., out_zero] = 0
            new[name] = value
        return new

    def macs(self, layer, in_shapes, out_shapes):
        # non-overlapping patches: every input value meets every output channel once
        return prod(in_shapes[0][1:]) * int(out_shapes[0][-1])

    def output_weights(self, layer, weights):
        width = int(getattr(layer, self.size_key))
        rows = [np.asarray(v).reshape(-1, width).T for v in weights.values()]
        return np.concatenate(rows, axis=1)


class ReversibleEmbeddingRule(EmbeddingRule):
    """keras-hub's (and Keras's) ``ReversibleEmbedding``: an embedding whose table, transposed,
    is also the output projection of a language model (``layer(hidden, reverse=True)`` gives the
    vocabulary logits). The hidden dimension is one group for both uses: the forward call
    produces it, the reverse call consumes it (its input is joined to those channels), so
    pruning hidden channel j removes column j of ``embeddings`` (and row j of an untied
    ``reverse_embeddings``). The logits are blocked: they are the vocabulary, not channels.
    The forward call must come first (the surgeon slices a shared layer by its first call);
    quantized layers are refused.

    Example:
        >>> keep = np.array([True, False, True])
        >>> weights = {"embeddings": np.ones((5, 3)), "reverse_embeddings": np.ones((3, 5))}
        >>> config, sliced = ReversibleEmbeddingRule().slice(None, {"output_dim": 3}, weights, None, keep)
        >>> config["output_dim"], sliced["embeddings"].shape, sliced["reverse_embeddings"].shape
        (2, (5, 2), (2, 5))
    """

    saved_weights = None  # reverse_embeddings exists only when the weights are not tied

    @staticmethod
    def _reverse(ctx) -> bool:
        call = getattr(ctx, "call", None)
        if call is None:
            return False
        try:
            return bool(call.arguments().get("reverse", False))
        except TypeError as exc:
            raise Unsupported(f"its call arguments do not fit its signature ({exc})") from None

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if getattr(layer, "quantization_mode", None):
            raise Unsupported(f"quantized ({layer.quantization_mode}) tables are not sliced")
        if len(in_layouts) != 1 or len(out_shapes) != 1:
            raise Unsupported("expected one input and one output")
        hidden = ctx.new_units(int(layer.output_dim))
        if not self._reverse(ctx):
            if in_layouts[0] is not None:  # token ids computed from channels: those become positions
                ctx.block(in_layouts[0], "its input holds token ids, whose last axis becomes the output's positions")
            return [hidden]
        if getattr(ctx, "call_number", 1) == 1:
            raise Unsupported("its reverse call (the output projection) comes before its embedding call")
        ctx.union(in_layouts[0], hidden)
        logits = ctx.new_units(int(out_shapes[0][-1]), internal="logits")
        ctx.block(logits, "the vocabulary logits of the output projection are not channels")
        return [logits]

    def slice(self, layer, config, weights, in_keep, out_keep):
        config, weights = super().slice(layer, config, weights, in_keep, out_keep)
        if out_keep is not None and "reverse_embeddings" in weights:
            weights = {**weights, "reverse_embeddings": weights["reverse_embeddings"][out_keep, :]}
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        weights = super().zero(layer, weights, in_zero, out_zero)
        if out_zero is not None and "reverse_embeddings" in weights:
            table = np.array(weights["reverse_embeddings"], copy=True)
            table[out_zero, :] = 0
            weights = {**weights, "reverse_embeddings": table}
        return weights

    def macs(self, layer, in_shapes, out_shapes):
        if len(in_shapes[0]) != len(out_shapes[0]):
            return 0  # the embedding lookup
        return prod(d if d is not None else 1 for d in in_shapes[0][1:]) * int(out_shapes[0][-1])

    def output_weights(self, layer, weights):
        rows = [np.asarray(weights["embeddings"]).T]
        if "reverse_embeddings" in weights:
            rows.append(np.asarray(weights["reverse_embeddings"]))
        return np.concatenate(rows, axis=1)


class RotaryRule(LayerRule):
    """Rotary position embedding over the last axis (ridurre's
    :class:`~ridurre.graph.layers.RotaryEmbedding`, the stand-in for keras-hub's): feature ``j``
    and ``j + d/2`` are rotated together, so they are one channel (head dimensions are pruned in
    rotation pairs), and the kept pairs keep their own frequencies (the config's
    ``inverse_frequencies`` is sliced). Zeroed pairs stay zero: the rotation mixes only a pair.

    Example:
        >>> class Layer:
        ...     def frequencies(self, width):
        ...         return [1.0, 0.1, 0.01]
        >>> keep = np.array([True, False, True] * 2)
        >>> RotaryRule().slice(Layer(), {}, {}, keep, keep)[0]["inverse_frequencies"]
        [1.0, 0.01]
    """

    channel_dependent = True
    cost = "other"

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        if len(in_layouts) != 1 or len(out_shapes) != 1:
            raise Unsupported("expected one input and one output")
        shape = in_shapes[0]
        width = shape[-1]
        if width is None or width % 2 or layer.sequence_axis % (len(shape) + 1) in (0, len(shape)):
            raise Unsupported("expected an even number of features on the last axis, positions on another")
        layout = np.asarray(in_layouts[0])
        ctx.union(layout[: width // 2], layout[width // 2 :])
        return [layout]

    def slice(self, layer, config, weights, in_keep, out_keep):
        keep = in_keep if in_keep is not None else out_keep
        if keep is None:
            return config, weights
        half = len(keep) // 2
        if not np.array_equal(keep[:half], keep[half:]):
            raise Unsupported("the two features of a rotation pair are kept or removed together")
        frequencies = layer.frequencies(len(keep))
        return {**config, "inverse_frequencies": [f for f, k in zip(frequencies, keep[:half]) if k]}, weights


_MODELS = "keras_hub.src.models"
_LAYERS = "keras_hub.src.layers.modeling"

KERAS_HUB_RULES: dict[str, LayerRule] = {
    f"{_LAYERS}.reversible_embedding.ReversibleEmbedding": ReversibleEmbeddingRule(),
    f"{_MODELS}.llama.llama_layernorm.LlamaLayerNorm": KerasHubRMSNormRule(),
    f"{_MODELS}.gemma.rms_normalization.RMSNormalization": KerasHubRMSNormRule(offset=1.0),
    f"{_MODELS}.dinov2.dinov2_layers.DINOV2LayerScale": KerasHubLayerScaleRule("lambda1", size_key="hidden_dim"),
    f"{_MODELS}.mit.mit_layers.DropPath": PassThroughRule(cost="free"),
    f"{_LAYERS}.position_embedding.PositionEmbedding": PassThroughRule(
        per_channel_weights=("embeddings",), zero_to={"embeddings": 0.0}, cost="free"
    ),
    f"{_MODELS}.vit.vit_layers.ViTPatchingAndEmbedding": PatchEmbeddingRule(),
    f"{_MODELS}.deit.deit_layers.DeiTEmbeddings": PatchEmbeddingRule(),
    f"{_MODELS}.dinov2.dinov2_layers.DINOV2Embedding": PatchEmbeddingRule(),
}
"""Rules of keras-hub layers, by :func:`class_path`."""

DERIVED_CONFIG_KEYS: dict[str, tuple] = {
    f"{_MODELS}.vit.vit_layers.ViTPatchingAndEmbedding": ("num_patches", "num_positions"),
    f"{_MODELS}.deit.deit_layers.DeiTEmbeddings": ("num_patches", "num_positions"),
}
"""keras-hub 0.32 layers whose ``get_config()`` lists values derived from the others, which their
constructor refuses (so even ``keras.models.clone_model`` fails on them): the rebuild and
:func:`ridurre.zoo.keras_hub.custom_objects` leave these keys out."""
