"""Soft pruning: zero a layer's filters instead of removing them, without TensorFlow.

This module reads a saved Keras model with nothing but ``zipfile``, ``json``, ``h5py`` and
``numpy``, so score-based pruning runs on machines where TensorFlow (or any Keras backend)
is not installed. Only :func:`apply_pruned_weights` needs Keras, and imports it lazily.

Two file formats are understood:

* ``.keras`` archives (Keras 3): a zip with ``config.json`` and ``model.weights.h5``. Each layer
  of ``model.layers`` stores its own variables under ``layers/<key>/vars/0, 1, ...``, where
  ``<key>`` is the snake-cased class name made unique by a counter in ``model.layers`` order
  (``conv2d``, ``conv2d_1``, ...); Keras 3.15 also records the layer name in the ``name``
  attribute of the ``vars`` group. A nested model keeps its layers under
  ``layers/<key>/layers/<inner key>/vars``. Variable *names* are not stored, so they are
  recovered from each layer class's creation order (:data:`WEIGHT_ORDER`).
* legacy HDF5 ``.h5`` files (Keras 2 and Keras 3's ``model.save("m.h5")``): a
  ``model_config`` JSON attribute, and ``model_weights/<layer>/`` groups whose
  ``weight_names`` attribute lists the layer's weights in order (``conv/kernel``,
  ``seq/conv/kernel``, ``conv/kernel:0``...). The last component names the variable.

Layers are addressed by *path*: a top-level layer's path is its name; a layer inside a nested
model is ``"<model name>/<layer name>"``. Layer positions (integer layer IDs) are indices into
``model.layers``: the layers of the saved config in order, without the ``InputLayer`` of a
``Sequential`` model (Keras leaves it out of ``Sequential.layers``).

A *filter* is one output channel: the last kernel axis of ``Conv*``/``Dense``; the second-last
of ``Conv*Transpose``; the pointwise kernel's last axis of ``SeparableConv*``; and for
``DepthwiseConv*`` the ``(in_channel c, multiplier m)`` slice of the kernel, whose flattened
output index is ``c * depth_multiplier + m``. Zeroing a filter zeroes its kernel slice and its
bias entry, so with a linear or ReLU activation that channel outputs exactly zero.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

import h5py
import numpy as np

__all__ = [
    "ModelFileError",
    "LayerInfo",
    "ModelFile",
    "read_model_file",
    "WEIGHT_ORDER",
    "FILTER_LAYERS",
    "num_filters",
    "zero_filters",
    "atomic_writer",
    "save_npz_atomic",
    "apply_pruned_weights",
]


class ModelFileError(ValueError):
    """The file is missing, unreadable, or not a saved Keras model; the message names the file."""


# Weight order of built-in layers, as created in ``build()`` (Keras 3 names). ``None`` entries
# are flags read from the layer config: (name, config key that must be true).
WEIGHT_ORDER: dict[str, tuple[tuple[str, str | None], ...]] = {}
for _cls in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose",
             "Conv3DTranspose", "Dense", "DepthwiseConv1D", "DepthwiseConv2D"):
    WEIGHT_ORDER[_cls] = (("kernel", None), ("bias", "use_bias"))
for _cls in ("SeparableConv1D", "SeparableConv2D"):
    WEIGHT_ORDER[_cls] = (("depthwise_kernel", None), ("pointwise_kernel", None),
                          ("bias", "use_bias"))
WEIGHT_ORDER["BatchNormalization"] = (("gamma", "scale"), ("beta", "center"),
                                      ("moving_mean", None), ("moving_variance", None))
WEIGHT_ORDER["LayerNormalization"] = (("gamma", "scale"), ("beta", "center"))
WEIGHT_ORDER["Embedding"] = (("embeddings", None),)
WEIGHT_ORDER["PReLU"] = (("alpha", None),)

# How filters sit in each prunable class: (kernel weight names accepted, kind).
# kind "last": kernel[..., f]; "transpose": kernel[..., f, :]; "depthwise": kernel[..., c, m].
FILTER_LAYERS: dict[str, tuple[tuple[str, ...], str]] = {}
for _cls in ("Conv1D", "Conv2D", "Conv3D", "Dense"):
    FILTER_LAYERS[_cls] = (("kernel",), "last")
for _cls in ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"):
    FILTER_LAYERS[_cls] = (("kernel",), "transpose")
for _cls in ("SeparableConv1D", "SeparableConv2D"):
    FILTER_LAYERS[_cls] = (("pointwise_kernel",), "last")
for _cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
    # Keras 3 calls the depthwise kernel "kernel"; Keras 2 files call it "depthwise_kernel".
    FILTER_LAYERS[_cls] = (("kernel", "depthwise_kernel"), "depthwise")
del _cls

_MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a saved model.

    Attributes:
        name: the layer's name.
        path: ``name`` for a top-level layer, ``"<model>/<name>"`` inside a nested model.
        class_name: the Keras class name (``"Conv2D"``).
        config: the layer's config dict, as saved.
        weight_names: names of its variables, in Keras order (``("kernel", "bias")``).
    """

    name: str
    path: str
    class_name: str
    config: dict
    weight_names: tuple[str, ...] = ()


@dataclass
class ModelFile:
    """A saved Keras model read without Keras: its layers, their configs and weights.

    Attributes:
        path: the file that was read.
        format: ``"keras"`` (zip archive) or ``"h5"`` (legacy HDF5).
        model_class: class name of the top-level model (``"Functional"``, ``"Sequential"``).
        layers: the top-level layers, in ``model.layers`` order.
        all_layers: every layer, nested ones included, depth first.
        weights: layer path -> list of numpy arrays, in Keras order (as ``get_weights()``).
        keras_version: the version recorded in the file, if any.
    """

    path: str
    format: str
    model_class: str
    layers: list[LayerInfo]
    all_layers: list[LayerInfo]
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)
    keras_version: str | None = None

    @property
    def layer_names(self) -> list[str]:
        """Names of the top-level layers, in ``model.layers`` order."""
        return [layer.name for layer in self.layers]

    @property
    def class_names(self) -> list[str]:
        """Class names of the top-level layers, in ``model.layers`` order."""
        return [layer.class_name for layer in self.layers]

    @property
    def configs(self) -> dict[str, dict]:
        """Layer path -> layer config, for every layer."""
        return {layer.path: layer.config for layer in self.all_layers}

    def layer(self, name: str) -> LayerInfo:
        """The layer with this path, or this name if only one layer has it; KeyError if none."""
        for layer in self.all_layers:
            if layer.path == name:
                return layer
        matches = [layer for layer in self.all_layers if layer.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise KeyError(f"layer name {name!r} is ambiguous: use one of "
                           f"{[m.path for m in matches]}")
        raise KeyError(name)

    def named_weights(self, name: str) -> dict[str, np.ndarray]:
        """Weight name -> array for one layer (``{"kernel": ..., "bias": ...}``)."""
        layer = self.layer(name)
        return dict(zip(layer.weight_names, self.weights.get(layer.path, [])))

    def num_filters(self, name: str) -> int:
        """Number of filters (output channels) of a prunable layer; ValueError otherwise."""
        layer = self.layer(name)
        return num_filters(layer.class_name, self.named_weights(layer.path))


# ----------------------------------------------------------------------------- reading


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a ``.keras`` archive or a legacy ``.h5`` Keras model without importing Keras.

    Args:
        path: the model file. The format is detected from the content, not the extension.

    Returns:
        A :class:`ModelFile`.

    Raises:
        ModelFileError: the file does not exist, or is not a saved Keras model (for instance a
            weights-only file, or a model whose top level is not Functional or Sequential).

    Example:
        >>> import os, tempfile, keras
        >>> model = keras.Sequential([keras.Input((1, 128, 1)),
        ...     keras.layers.Conv2D(8, (1, 64), use_bias=False, name="temporal_conv"),
        ...     keras.layers.BatchNormalization(name="bn")])
        >>> path = os.path.join(tempfile.mkdtemp(), "eeg.keras")
        >>> model.save(path)
        >>> mf = read_model_file(path)                 # Keras is not used from here on
        >>> mf.layer_names, mf.class_names
        (['temporal_conv', 'bn'], ['Conv2D', 'BatchNormalization'])
        >>> mf.named_weights("temporal_conv")["kernel"].shape, mf.num_filters("temporal_conv")
        ((1, 64, 1, 8), 8)
        >>> mf.layer("bn").weight_names
        ('gamma', 'beta', 'moving_mean', 'moving_variance')
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such file")
    if zipfile.is_zipfile(path):
        return _read_keras_archive(path)
    if h5py.is_hdf5(path):
        return _read_legacy_h5(path)
    raise ModelFileError(f"{path}: not a Keras model (neither a .keras zip archive nor an HDF5 file)")


def _model_layers_config(path, config):
    """(model class, list of layer configs in model.layers order) of a model config dict."""
    if not isinstance(config, dict) or "config" not in config:
        raise ModelFileError(f"{path}: not a Keras model (the config has no model entry)")
    cls = config.get("class_name")
    layers = config["config"].get("layers") if isinstance(config["config"], dict) else None
    if cls not in _MODEL_CLASSES or not isinstance(layers, list):
        raise ModelFileError(f"{path}: the model is a {cls!r}; only Functional and Sequential "
                             f"models can be read without Keras")
    if cls == "Sequential":  # Sequential.layers leaves the InputLayer out
        layers = [lc for lc in layers if lc.get("class_name") != "InputLayer"]
    return cls, layers


def _expected_weight_names(class_name, config, n):
    order = WEIGHT_ORDER.get(class_name)
    if order is not None:
        names = tuple(w for w, flag in order if flag is None or config.get(flag, True))
        if class_name == "BatchNormalization" and config.get("renorm"):
            names += ("moving_stddev", "renorm_mean", "renorm_stddev")
        if len(names) == n:
            return names
    return tuple(str(i) for i in range(n))  # unknown layout: name variables by position


def _snake_case(name):  # keras.src.utils.naming.to_snake_case
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_vars(group):
    if group is None or "vars" not in group:
        return []
    vars_ = group["vars"]
    keys = sorted((k for k in vars_.keys() if k.isdigit()), key=int)
    return [_to_numpy(vars_[k]) for k in keys]


def _to_numpy(dataset):
    array = dataset[()]
    if dataset.attrs.get("dtype") == "bfloat16":  # stored as raw 16-bit words: widen to float32
        array = (np.asarray(array).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array)


def _read_keras_archive(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(f"{path}: not a Keras model (zip archive without config.json)")
            if "model.weights.h5" not in names:
                raise ModelFileError(f"{path}: the archive has no model.weights.h5 "
                                     f"(sharded or missing weights are not supported)")
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a Keras model ({exc})") from None
    model_class, layer_configs = _model_layers_config(path, config)
    top, every, weights = [], [], {}
    try:
        with h5py.File(io.BytesIO(weights_bytes), "r") as store:
            _walk_keras_layers(path, store.get("layers"), layer_configs, "", top, every, weights)
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: corrupt model.weights.h5 in the archive ({exc!r})") from None
    return ModelFile(path, "keras", model_class, top, every, weights,
                     metadata.get("keras_version"))


def _walk_keras_layers(path, group, layer_configs, prefix, top, every, weights):
    used = {}
    by_name = {}
    if group is not None:
        for key in group.keys():
            vars_ = group[key].get("vars")
            if vars_ is not None and "name" in vars_.attrs:
                by_name.setdefault(str(vars_.attrs["name"]), key)
    for lc in layer_configs:
        cls = lc.get("class_name", "")
        cfg = lc.get("config", {}) or {}
        name = cfg.get("name") or lc.get("name")
        base = _snake_case(cls.split(">")[-1])
        if base in used:  # keras.src.saving.saving_lib._get_unique_name
            used[base] += 1
            key = f"{base}_{used[base]}"
        else:
            used[base] = 0
            key = base
        key = by_name.get(name, key)
        sub = group.get(key) if group is not None else None
        arrays = _read_vars(sub)
        info = LayerInfo(name, prefix + name, cls, cfg,
                         _expected_weight_names(cls, cfg, len(arrays)))
        every.append(info)
        if top is not None:
            top.append(info)
        if arrays:
            weights[info.path] = arrays
        if cls in _MODEL_CLASSES and isinstance(cfg.get("layers"), list):
            _, inner = _model_layers_config(path, lc)
            _walk_keras_layers(path, sub.get("layers") if sub is not None else None, inner,
                               info.path + "/", None, every, weights)


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy_h5(path):
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelFileError(f"{path}: not a Keras model (HDF5 file without a "
                                     f"model_config attribute; a weights-only file?)")
            config = json.loads(_decode(f.attrs["model_config"]))
            version = _decode(f.attrs["keras_version"]) if "keras_version" in f.attrs else None
            model_class, layer_configs = _model_layers_config(path, config)
            root = f["model_weights"] if "model_weights" in f else f
            top, every, weights = [], [], {}
            for lc in layer_configs:
                _read_h5_layer(path, root, lc, "", top, every, weights)
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:  # truncated file, bad JSON...
        raise ModelFileError(f"{path}: unreadable or corrupt Keras HDF5 file ({exc!r})") from None
    return ModelFile(path, "h5", model_class, top, every, weights, version)


def _h5_layer_weights(group):
    """[(weight path components, array)] of one ``model_weights/<layer>`` group, in order."""
    out = []
    for raw in group.attrs.get("weight_names", []):
        wname = _decode(raw)
        out.append(([c.split(":")[0] for c in wname.split("/")], _to_numpy(group[wname])))
    return out


def _read_h5_layer(path, root, lc, prefix, top, every, weights, pool=None):
    cls = lc.get("class_name", "")
    cfg = lc.get("config", {}) or {}
    name = cfg.get("name") or lc.get("name")
    if pool is None:  # a top-level layer owns the whole group
        pool = _h5_layer_weights(root[name]) if name in root else []
        own = [a for _, a in pool]
        names = tuple(parts[-1] for parts, _ in pool)
    else:  # inside a nested model: weights named ".../<layer>/<weight>"
        mine = [(parts, a) for parts, a in pool if len(parts) >= 2 and parts[-2] == name]
        own = [a for _, a in mine]
        names = tuple(parts[-1] for parts, _ in mine)
    if cls.startswith("DepthwiseConv"):  # Keras 2 called it depthwise_kernel, Keras 3 kernel
        names = tuple("kernel" if n == "depthwise_kernel" else n for n in names)
    is_model = cls in _MODEL_CLASSES and isinstance(cfg.get("layers"), list)
    if is_model:
        own, names = [], ()
    info = LayerInfo(name, prefix + name, cls, cfg, names)
    every.append(info)
    if top is not None:
        top.append(info)
    if own:
        weights[info.path] = own
    if is_model:
        _, inner = _model_layers_config(path, lc)
        for inner_lc in inner:
            _read_h5_layer(path, root, inner_lc, info.path + "/", None, every, weights, pool)


# ----------------------------------------------------------------------------- zeroing


def _filter_rule(class_name, weights):
    if class_name not in FILTER_LAYERS:
        raise ValueError(f"{class_name} layers have no filters ridurre can zero "
                         f"(supported: {', '.join(sorted(FILTER_LAYERS))})")
    candidates, kind = FILTER_LAYERS[class_name]
    for kname in candidates:
        if kname in weights:
            return kname, kind
    raise ValueError(f"{class_name} layer has no {' or '.join(candidates)} weight "
                     f"(weights: {sorted(weights)})")


def num_filters(class_name: str, weights: Mapping[str, np.ndarray]) -> int:
    """Number of filters (output channels) of a layer, from its class name and weights.

    Example:
        >>> import numpy as np
        >>> num_filters("DepthwiseConv2D", {"kernel": np.ones((3, 3, 4, 2))})
        8
    """
    kname, kind = _filter_rule(class_name, weights)
    shape = np.shape(weights[kname])
    if kind == "transpose":
        return int(shape[-2])
    if kind == "depthwise":
        return int(shape[-2] * shape[-1])
    return int(shape[-1])


def zero_filters(class_name: str, weights: Mapping[str, np.ndarray],
                 filters: Iterable[int]) -> dict[str, np.ndarray]:
    """Return copies of a layer's weights with the given filters' kernel slices and biases zeroed.

    Args:
        class_name: the Keras class (``"Conv2D"``, ``"Dense"``, ``"SeparableConv2D"``,
            ``"DepthwiseConv2D"``, ``"Conv2DTranspose"``...; see :data:`FILTER_LAYERS`).
        weights: weight name -> array, e.g. ``{"kernel": k, "bias": b}``. Other weights (a
            separable layer's depthwise kernel) are copied unchanged.
        filters: output channel indices (for depthwise layers ``c * depth_multiplier + m``).

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
    kname, kind = _filter_rule(class_name, weights)
    total = num_filters(class_name, weights)
    idx = sorted({int(f) for f in filters})
    bad = [f for f in idx if not 0 <= f < total]
    if bad:
        raise ValueError(f"filter indices {bad} out of range for a {class_name} layer with "
                         f"{total} filters (0..{total - 1})")
    out = {k: np.array(v, copy=True) for k, v in weights.items()}
    if idx:
        kernel = out[kname]
        if kind == "last":
            kernel[..., idx] = 0
        elif kind == "transpose":
            kernel[..., idx, :] = 0
        else:
            mult = kernel.shape[-1]
            for f in idx:
                kernel[..., f // mult, f % mult] = 0
        if "bias" in out:
            out["bias"][idx] = 0
    return out


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "scores.csv")
        >>> with atomic_writer(target) as f:
        ...     _ = f.write("layer,filter,score\\n")
        >>> open(target).read()
        'layer,filter,score\\n'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                    compressed: bool = False) -> None:
    """Save arrays to an ``.npz`` file atomically (a temporary file, then ``os.replace``).

    The path is used as given (no ``.npz`` is appended).

    Example:
        >>> import numpy as np, os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "pruned_weights.npz")
        >>> save_npz_atomic(target, {"conv/kernel": np.zeros((3, 3, 1, 2))})
        >>> sorted(np.load(target).files)
        ['conv/kernel']
    """
    save = np.savez_compressed if compressed else np.savez
    with atomic_writer(path, "wb") as f:
        save(f, **{k: np.asarray(v) for k, v in arrays.items()})


# ----------------------------------------------------------------------------- Keras side


def _var_name(variable):
    """Short name of a Keras variable: ``"kernel"`` (also for Keras 2 style ``"conv/kernel:0"``)."""
    return variable.name.split("/")[-1].split(":")[0]


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
        npz_path: the ``.npz`` written by ``ridurre prune-scores`` (or :func:`save_npz_atomic`).

    Returns:
        A new model (``keras.models.clone_model``) with the original weights and the file's
        weights applied. It is compiled with the original compile configuration if the
        original was compiled (fresh optimizer state).

    Raises:
        ValueError: a layer or weight of the file is not in the model, or a shape differs
            (the message names the layer and both shapes).

    Example:
        >>> import keras, numpy as np, os, tempfile
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
        variables = {_var_name(v): v for v in layer.weights}
        for wname, array in named.items():
            if wname not in variables:
                raise ValueError(f"{npz_path}: layer {lpath!r} has no weight {wname!r} "
                                 f"(it has {sorted(variables)})")
            want = tuple(variables[wname].shape)
            if tuple(array.shape) != want:
                raise ValueError(f"{npz_path}: shape mismatch for layer {lpath!r} weight "
                                 f"{wname!r}: file has {tuple(array.shape)}, model has {want}")
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    for lpath, named in per_layer.items():
        layer = _find_layer(new, lpath)
        values = [np.asarray(named[_var_name(v)], dtype=w.dtype) if _var_name(v) in named else w
                  for v, w in zip(layer.weights, layer.get_weights())]
        layer.set_weights(values)
    if getattr(model, "compiled", False):
        try:
            new.compile_from_config(model.get_compile_config())
        except Exception as exc:  # e.g. a custom loss that does not deserialize
            warnings.warn(f"apply_pruned_weights: the new model could not be compiled like the "
                          f"original ({exc}); compile it yourself", stacklevel=2)
    return new
