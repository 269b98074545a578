"""Soft pruning: zero a layer's filters instead of removing them, without TensorFlow.

A *filter* is one output channel of a layer whose rule (:mod:`ridurre.rules`) says it has
filters: the last kernel axis of ``Conv*``/``Dense``; the second-last of ``Conv*Transpose``; the
pointwise kernel's last axis of ``SeparableConv*``; and for ``DepthwiseConv*`` the
``(in_channel c, multiplier m)`` slice of the kernel, whose flattened output index is
``c * depth_multiplier + m``. Zeroing a filter is the rule's own ``zero`` (its kernel slice and
its bias entry), so with a linear or ReLU activation that channel outputs exactly zero. A
BatchNormalization called on the layer's output would still add its shift (``beta`` and the
moving mean) to the zeroed channel, so mask mode zeroes that channel of it too
(:func:`following_normalizations`, the BatchNormalization rule's own ``zero``): then the masked
model computes what the model with those filters removed computes.

Only :func:`apply_pruned_weights` needs Keras, and imports it lazily.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from ridurre.rules import BUILTIN_LAYER_RULES, ConfigView, LayerRule, rule_for_class_name

__all__ = [
    "filter_layer_classes",
    "has_filters",
    "num_filters",
    "zero_filters",
    "following_normalizations",
    "zero_normalization_channels",
    "apply_pruned_weights",
]


def filter_layer_classes() -> list[str]:
    """The built-in layer classes whose filters mask mode can zero.

    Example:
        >>> "Conv2D" in filter_layer_classes(), "BatchNormalization" in filter_layer_classes()
        (True, False)
    """
    return sorted(name for name, rule in BUILTIN_LAYER_RULES.items() if type(rule).filters is not LayerRule.filters)


def has_filters(class_name: str) -> bool:
    """Whether mask mode can zero filters of a layer of this class (its rule knows its filters).

    Example:
        >>> has_filters("Dense"), has_filters("ReLU")
        (True, False)
    """
    rule = rule_for_class_name(class_name)
    return rule is not None and type(rule).filters is not LayerRule.filters


def _filter_rule(class_name, weights, config):
    rule = rule_for_class_name(class_name)
    if not has_filters(class_name):
        raise ValueError(
            f"{class_name} layers have no filters ridurre can zero (supported: {', '.join(filter_layer_classes())})"
        )
    total = rule.filters(dict(config or {}), weights)
    if total is None:
        raise ValueError(f"{class_name} layer has no kernel weight (weights: {sorted(weights)})")
    return rule, total


def num_filters(class_name: str, weights: Mapping[str, np.ndarray], config: Mapping | None = None) -> int:
    """Number of filters (output channels) of a layer, from its class name and weights.

    Example:
        >>> import numpy as np
        >>> num_filters("DepthwiseConv2D", {"kernel": np.ones((3, 3, 4, 2))})
        8
    """
    return _filter_rule(class_name, weights, config)[1]


def zero_filters(
    class_name: str, weights: Mapping[str, np.ndarray], filters: Iterable[int], config: Mapping | None = None
) -> dict[str, np.ndarray]:
    """Return copies of a layer's weights with the given filters' kernel slices and biases zeroed.

    Args:
        class_name: the Keras class (``"Conv2D"``, ``"Dense"``, ``"SeparableConv2D"``,
            ``"DepthwiseConv2D"``, ``"Conv2DTranspose"``...; see :func:`filter_layer_classes`).
        weights: weight name -> array, e.g. ``{"kernel": k, "bias": b}``. Other weights (a
            separable layer's depthwise kernel) are copied unchanged.
        filters: output channel indices (for depthwise layers ``c * depth_multiplier + m``).
        config: the layer's saved config, when known.

    Returns:
        A new dict with the same keys; the input arrays are not modified.

    Raises:
        ValueError: the class has no filters, or an index is out of range.

    Example:
        >>> import numpy as np
        >>> w = zero_filters("Conv2D", {"kernel": np.ones((3, 3, 2, 4)), "bias": np.ones(4)}, [1, 3])
        >>> w["bias"].tolist(), bool(w["kernel"][..., 1].any()), bool(w["kernel"][..., 0].all())
        ([1.0, 0.0, 1.0, 0.0], False, True)
    """
    named = {
        ("kernel" if k == "depthwise_kernel" and class_name.startswith("DepthwiseConv") else k): v
        for k, v in weights.items()
    }  # Keras 2 files call the depthwise kernel depthwise_kernel
    rule, total = _filter_rule(class_name, named, config)
    idx = sorted({int(f) for f in filters})
    bad = [f for f in idx if not 0 <= f < total]
    if bad:
        raise ValueError(
            f"filter indices {bad} out of range for a {class_name} layer with {total} filters (0..{total - 1})"
        )
    copies = {k: np.array(v, copy=True) for k, v in named.items()}
    if idx:
        gone = np.zeros(total, dtype=bool)
        gone[idx] = True
        copies = rule.zero(ConfigView(class_name, config or {}), copies, None, gone)
    return {original: copies[new] for original, new in zip(weights, named)}


def following_normalizations(model_file, layer: str) -> list:
    """The BatchNormalization layers of a saved model called directly on the output of ``layer``
    (a path); their channels are the layer's filters.

    Args:
        model_file: a :class:`~ridurre.scorefile.ModelFile`.
        layer: the path of a layer with filters.

    Example:
        >>> from ridurre.scorefile import LayerInfo, ModelFile
        >>> conv = LayerInfo("conv", "conv", "Conv2D", {})
        >>> bn = LayerInfo("bn", "bn", "BatchNormalization", {}, inputs=("conv",))
        >>> [l.path for l in following_normalizations(ModelFile("m.keras", "keras", "Sequential", [conv, bn],
        ...                                                         [conv, bn]), "conv")]
        ['bn']
    """
    return [
        info
        for info in model_file.consumers(layer)
        if info.class_name == "BatchNormalization" and info.inputs == (model_file.layer(layer).path,)
    ]


def zero_normalization_channels(
    class_name: str, weights: Mapping[str, np.ndarray], channels: Iterable[int], config: Mapping | None = None
) -> dict[str, np.ndarray]:
    """Copies of a normalization layer's weights in which ``channels`` output exactly zero (its
    rule's ``zero``: for BatchNormalization gamma, beta and the moving mean 0, the variance 1).

    Example:
        >>> import numpy as np
        >>> w = {"gamma": np.ones(3), "beta": np.ones(3), "moving_mean": np.ones(3), "moving_variance": np.ones(3)}
        >>> zero_normalization_channels("BatchNormalization", w, [1])["beta"].tolist()
        [1.0, 0.0, 1.0]
    """
    rule = rule_for_class_name(class_name)
    sizes = {np.shape(v)[-1] for v in weights.values() if np.ndim(v)}
    if rule is None or len(sizes) != 1:
        raise ValueError(f"cannot zero channels of a {class_name} layer with weights {sorted(weights)}")
    gone = np.zeros(sizes.pop(), dtype=bool)
    gone[sorted({int(c) for c in channels})] = True
    copies = {k: np.array(v, copy=True) for k, v in weights.items()}
    return rule.zero(ConfigView(class_name, dict(config or {})), copies, None, gone)


# ----------------------------------------------------------------------------- Keras side


def _find_layer(model, path):
    layer = model
    for part in path.split("/"):
        try:
            layer = layer.get_layer(part)
        except (ValueError, AttributeError):
            return None
    return layer


def apply_pruned_weights(model, npz_path: str | os.PathLike):
    """Load a ``pruned_weights.npz`` into a copy of a Keras model.

    Keys are ``"<layer path>/<weight name>"`` (``"temporal_conv/kernel"``,
    ``"sub_model/dense/bias"``); the weight name is the Keras variable name. Layers not in the
    file keep their weights. The argument is never modified.

    Args:
        model: a built Functional or Sequential Keras model.
        npz_path: the ``.npz`` written by ``ridurre prune-scores`` (or :func:`ridurre._io.save_npz_atomic`).

    Returns:
        A new model (``keras.models.clone_model``) with the original weights and the file's
        weights applied. It is compiled with the original compile configuration if the
        original was compiled (fresh optimizer state).

    Raises:
        ValueError: a layer or weight of the file is not in the model, or a shape differs
            (the message names the layer and both shapes).

    Example:
        >>> import keras, numpy as np, os, tempfile
        >>> from ridurre._io import save_npz_atomic
        >>> m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> npz = os.path.join(tempfile.mkdtemp(), "pruned_weights.npz")
        >>> save_npz_atomic(npz, {"d/bias": np.array([1.0, 2.0])})
        >>> new = apply_pruned_weights(m, npz)
        >>> keras.ops.convert_to_numpy(new.get_layer("d").bias).tolist()
        [1.0, 2.0]
        >>> new is m, keras.ops.convert_to_numpy(m.get_layer("d").bias).tolist()
        (False, [0.0, 0.0])
    """
    import keras  # lazily: the rest of this module works without it

    from ridurre.graph import layer_weights, set_layer_weights

    with np.load(npz_path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    per_layer: dict[str, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        lpath, _, wname = key.rpartition("/")
        if not lpath:
            raise ValueError(f"{npz_path}: key {key!r} is not '<layer>/<weight>'")
        per_layer.setdefault(lpath, {})[wname] = array
    # Validate everything against the original before building anything.
    for lpath, named in per_layer.items():
        layer = _find_layer(model, lpath)
        if layer is None:
            raise ValueError(f"{npz_path}: layer {lpath!r} is not in model {model.name!r}")
        current = layer_weights(layer)
        for wname, array in named.items():
            if wname not in current:
                raise ValueError(f"{npz_path}: layer {lpath!r} has no weight {wname!r} (it has {sorted(current)})")
            want = tuple(current[wname].shape)
            if tuple(array.shape) != want:
                raise ValueError(
                    f"{npz_path}: shape mismatch for layer {lpath!r} weight "
                    f"{wname!r}: file has {tuple(array.shape)}, model has {want}"
                )
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    for lpath, named in per_layer.items():
        layer = _find_layer(new, lpath)
        current = layer_weights(layer)
        set_layer_weights(
            layer, {k: np.asarray(named[k], dtype=v.dtype) if k in named else v for k, v in current.items()}
        )
    if getattr(model, "compiled", False):
        try:
            new.compile_from_config(model.get_compile_config())
        except Exception as exc:  # e.g. a custom loss that does not deserialize
            warnings.warn(
                f"apply_pruned_weights: the new model could not be compiled like the "
                f"original ({exc}); compile it yourself",
                stacklevel=2,
            )
    return new
