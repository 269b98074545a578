"""keras-hub backbones built from constructor arguments (small widths, random weights, no
download), for reach measurements, tests and examples. Needs ``pip install ridurre[hub]``.

:data:`HUB_ZOO` names one backbone per architecture family: ResNet (v1 and v2), EfficientNet (v1
blocks, and v2's fused and unfused blocks), MobileNetV3, CSPDarkNet, DenseNet, ViT, DeiT, DINOv2,
MiT and SegFormer, BERT, GPT-2, Llama (grouped-query attention) and Gemma.
:func:`hub_backbone` builds one, :func:`hub_classifier` puts a pooling and a Dense head on it
(so that the backbone's last channels are internal, as in a task model), and :func:`hub_inputs`
makes valid random inputs (token ids within the vocabulary, segment ids, padding masks).
:func:`custom_objects` lets ``keras.models.load_model`` read models holding keras-hub layers
whose own config does not load back.
"""

from __future__ import annotations

import numpy as np

from ridurre import _compat
from ridurre.rules.keras_hub import DERIVED_CONFIG_KEYS

__all__ = ["HUB_ZOO", "TEXT_MODELS", "custom_objects", "hub_backbone", "hub_classifier", "hub_inputs", "with_head"]

TEXT_MODELS = ("bert", "gpt2", "llama", "gemma")
"""The text backbones of :data:`HUB_ZOO` (token inputs)."""

HUB_ZOO = (
    "resnet_v1",
    "resnet_v2",
    "efficientnet_v1",
    "efficientnet_v2",
    "mobilenet_v3",
    "cspdarknet",
    "densenet",
    "vit",
    "deit",
    "dinov2",
    "mit",
    "segformer",
) + TEXT_MODELS
"""Names accepted by :func:`hub_backbone`."""

VOCABULARY = 50
IMAGE = (32, 32, 3)
PATCHES = (16, 16, 3)


def _keras_hub():
    try:
        import keras_hub
    except ImportError as exc:  # pragma: no cover - the [hub] extra is missing
        raise ImportError("the keras-hub zoo needs keras-hub: pip install 'ridurre[hub]'") from exc
    return keras_hub.models


def _resnet(models, pre_activation, dtype):
    return models.ResNetBackbone(
        input_conv_filters=[16],
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 16],  # keras-hub requires 64 first
        stackwise_num_blocks=[2, 2],
        stackwise_num_strides=[1, 2],
        block_type="bottleneck_block",
        use_pre_activation=pre_activation,
        image_shape=IMAGE,
        dtype=dtype,
    )


def _efficientnet(models, fused, dtype):
    common = dict(
        stackwise_kernel_sizes=[3, 3, 3],
        stackwise_num_repeats=[1, 2, 2],
        stackwise_strides=[1, 2, 2],
        stackwise_width_coefficients=[1.0] * 3,
        stackwise_depth_coefficients=[1.0] * 3,
        input_shape=IMAGE,
        num_features=64,
        dtype=dtype,
    )
    if fused:  # EfficientNetV2: FusedMBConvBlock and MBConvBlock layers
        return models.EfficientNetBackbone(
            stackwise_input_filters=[16, 16, 24],
            stackwise_output_filters=[16, 24, 32],
            stackwise_expansion_ratios=[1, 4, 4],
            stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25],
            stackwise_block_types=["fused", "fused", "unfused"],
            **common,
        )
    return models.EfficientNetBackbone(  # EfficientNet (v1): its blocks are Functional already
        stackwise_input_filters=[16, 8, 16],
        stackwise_output_filters=[8, 16, 24],
        stackwise_expansion_ratios=[1, 6, 6],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25, 0.25],
        stackwise_block_types=["v1"] * 3,
        **common,
    )


def _mit(models, dtype):
    return models.MiTBackbone(
        image_shape=IMAGE,
        num_layers=2,
        hidden_dims=[8, 16],
        layerwise_depths=[1, 1],
        layerwise_num_heads=[1, 2],
        layerwise_sr_ratios=[2, 1],
        layerwise_patch_sizes=[7, 3],
        layerwise_strides=[4, 2],
        max_drop_path_rate=0.0,
        dtype=dtype,
    )


def hub_backbone(name: str, dtype: str | None = None):
    """A small keras-hub backbone of the family ``name`` (see :data:`HUB_ZOO`), random weights.

    Args:
        name: one of :data:`HUB_ZOO`.
        dtype: the backbone's dtype policy (``"float64"`` for exactness checks), default Keras's.

    Raises:
        ValueError: an unknown name.
        ImportError: keras-hub is not installed.
    """
    if name not in HUB_ZOO:
        raise ValueError(f"name must be one of {HUB_ZOO}, got {name!r}")
    models = _keras_hub()
    vision = dict(dtype=dtype)
    text = dict(vocabulary_size=VOCABULARY, num_layers=2, hidden_dim=16, intermediate_dim=32, dtype=dtype)
    if name in ("resnet_v1", "resnet_v2"):
        return _resnet(models, name == "resnet_v2", dtype)
    if name in ("efficientnet_v1", "efficientnet_v2"):
        return _efficientnet(models, name == "efficientnet_v2", dtype)
    if name == "mobilenet_v3":
        return models.MobileNetBackbone(
            stackwise_expansion=[[16, 24], [32, 48]],
            stackwise_num_blocks=[2, 2],
            stackwise_num_filters=[[8, 8], [16, 16]],
            stackwise_kernel_size=[[3, 3], [5, 5]],
            stackwise_num_strides=[[2, 1], [2, 1]],
            stackwise_se_ratio=[[None, None], [0.25, 0.25]],
            stackwise_activation=[["relu", "relu"], ["hard_swish", "hard_swish"]],
            stackwise_padding=[[1, 1], [2, 2]],
            output_num_filters=32,
            last_layer_filter=32,
            depthwise_filters=8,
            depthwise_stride=2,
            depthwise_residual=False,
            squeeze_and_excite=0.5,
            input_num_filters=8,
            input_activation="hard_swish",
            output_activation="hard_swish",
            image_shape=IMAGE,
            **vision,
        )
    if name == "cspdarknet":
        return models.CSPNetBackbone(
            stem_filters=8,
            stem_kernel_size=3,
            stem_strides=1,
            stackwise_depth=[1, 2],
            stackwise_strides=[2, 2],
            stackwise_num_filters=[8, 16],
            block_type="dark_block",
            stage_type="csp",
            expand_ratio=[2.0, 2.0],
            block_ratio=[1.0, 1.0],
            bottle_ratio=[0.5, 0.5],
            down_growth=True,
            image_shape=IMAGE,
            **vision,
        )
    if name == "densenet":
        return models.DenseNetBackbone(stackwise_num_repeats=[2, 2], growth_rate=8, image_shape=IMAGE, **vision)
    if name == "vit":
        return models.ViTBackbone(
            image_shape=PATCHES, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, **vision
        )
    if name == "deit":
        return models.DeiTBackbone(
            image_shape=PATCHES, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, **vision
        )
    if name == "dinov2":
        return models.DINOV2Backbone(
            patch_size=4,
            num_layers=2,
            hidden_dim=16,
            num_heads=2,
            intermediate_dim=32,
            image_shape=PATCHES,
            position_embedding_shape=PATCHES[:2],
            **vision,
        )
    if name == "mit":
        return _mit(models, dtype)
    if name == "segformer":
        return models.SegFormerBackbone(image_encoder=_mit(models, dtype), projection_filters=16, **vision)
    if name == "bert":
        return models.BertBackbone(num_heads=2, max_sequence_length=16, **text)
    if name == "gpt2":
        return models.GPT2Backbone(num_heads=2, max_sequence_length=16, **text)
    if name == "llama":
        return models.LlamaBackbone(num_query_heads=4, num_key_value_heads=2, **text)
    return models.GemmaBackbone(num_query_heads=4, num_key_value_heads=2, head_dim=4, **text)


def hub_classifier(name: str, num_classes: int = 3, dtype: str | None = None):
    """``inputs -> backbone -> global average pooling -> Dense(num_classes)`` as one Functional
    model (the backbone's layers appear as a nested model).

    Example:
        >>> model = hub_classifier("densenet")  # doctest: +SKIP
        >>> model.output.shape  # doctest: +SKIP
        (None, 3)
    """
    return with_head(hub_backbone(name, dtype=dtype), num_classes, dtype=dtype, name=f"{name}_classifier")


def with_head(backbone, num_classes: int = 3, dtype: str | None = None, name: str | None = None, sequence_length=None):
    """``inputs -> backbone -> global average pooling -> Dense(num_classes)`` for any keras-hub
    backbone (a text backbone's ``sequence_output`` is pooled), so that the backbone's last
    channels are internal, as in a task model. ``sequence_length`` fixes the inputs' unknown
    sequence axis (then the MACs of one example are defined).

    Example:
        >>> import keras
        >>> x = keras.Input((4, 4, 3))
        >>> backbone = keras.Model(x, keras.layers.Conv2D(5, 1)(x))
        >>> with_head(backbone, 2).output.shape
        (None, 2)
    """
    import keras

    def shape(t):
        return (t.shape[0],) + tuple(sequence_length if d is None else d for d in t.shape[1:])

    inputs = {k: keras.Input(batch_shape=shape(t), dtype=t.dtype, name=k) for k, t in _named_inputs(backbone)}
    structure = _compat.inputs_structure(backbone)
    if isinstance(structure, dict):  # by name: packing a list into a dict would follow the sorted keys
        outputs = backbone({k: inputs[k] for k in structure})
    else:
        outputs = backbone(keras.tree.pack_sequence_as(structure, list(inputs.values())))
    if isinstance(outputs, dict):
        outputs = outputs["sequence_output"]
    if len(outputs.shape) == 4:
        pooled = keras.layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(outputs)
    else:
        pooled = keras.layers.GlobalAveragePooling1D(name="pool", dtype=dtype)(outputs)
    head = keras.layers.Dense(num_classes, name="head", dtype=dtype)(pooled)
    model_inputs = inputs if len(inputs) > 1 else next(iter(inputs.values()))
    return keras.Model(model_inputs, head, name=name or f"{backbone.name}_classifier")


def _named_inputs(model):
    import keras

    structure = _compat.inputs_structure(model)
    if isinstance(structure, dict):
        return list(structure.items())
    return [(f"{model.name}_input_{i}", t) for i, t in enumerate(keras.tree.flatten(structure))]


def hub_inputs(model, batch: int = 2, sequence_length: int = 8, seed: int = 0):
    """Random inputs valid for a zoo model (images, or token ids, segment ids and padding masks),
    in the structure of ``model.input``.

    Example:
        >>> import keras
        >>> x = {"token_ids": keras.Input((None,), dtype="int32", name="token_ids")}
        >>> hub_inputs(keras.Model(x, x["token_ids"]), batch=1, sequence_length=4)["token_ids"].shape
        (1, 4)
    """
    import keras

    rng = np.random.default_rng(seed)

    def one(path, tensor):
        shape = (batch,) + tuple(sequence_length if d is None else int(d) for d in tensor.shape[1:])
        name = "/".join(str(p) for p in path) + tensor.name
        if "int" not in str(tensor.dtype) and "bool" not in str(tensor.dtype):
            return rng.normal(size=shape).astype(str(tensor.dtype))
        if "padding_mask" in name:
            return np.ones(shape, dtype=str(tensor.dtype))
        high = 2 if "segment" in name else VOCABULARY
        return rng.integers(0, high, size=shape).astype(str(tensor.dtype))

    structure = model.input
    values = [one(path, tensor) for path, tensor in keras.tree.flatten_with_path(structure)]
    return keras.tree.pack_sequence_as(structure, values)


def custom_objects() -> dict:
    """``custom_objects`` for ``keras.models.load_model`` of a saved model that holds keras-hub
    layers whose saved config their own ``from_config`` refuses (keras-hub 0.32's ViT and DeiT
    patch embeddings list the derived ``num_patches`` and ``num_positions``): subclasses that
    drop those values, so that an inlined or pruned ViT or DeiT loads back; and ridurre's own
    :class:`~ridurre.graph.layers.CausalMask` and :class:`~ridurre.graph.layers.RotaryEmbedding`,
    which inlining puts in keras-hub's decoder blocks.

    Example:
        >>> sorted(custom_objects())  # doctest: +SKIP
        ['DeiTEmbeddings', 'ViTPatchingAndEmbedding', 'ridurre>CausalMask', 'ridurre>RotaryEmbedding']
    """
    import importlib

    from ridurre.graph.layers import CausalMask, RotaryEmbedding

    _keras_hub()
    objects = {"ridurre>CausalMask": CausalMask, "ridurre>RotaryEmbedding": RotaryEmbedding}
    for path, derived in DERIVED_CONFIG_KEYS.items():
        module, name = path.rsplit(".", 1)
        try:
            base = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):  # another keras-hub version: nothing to work around
            continue

        def from_config(cls, config, _derived=derived):
            return super(cls, cls).from_config({k: v for k, v in config.items() if k not in _derived})

        objects[name] = type(name, (base,), {"from_config": classmethod(from_config), "__module__": module})
    return objects
