"""Read a saved Keras model without Keras: :func:`read_model_file`.

This module reads a saved Keras model with nothing but ``zipfile``, ``json``, ``h5py`` and
``numpy``, so score-based pruning runs on machines where TensorFlow (or any Keras backend)
is not installed.

Two file formats are understood:

* ``.keras`` archives (Keras 3): a zip with ``config.json`` and ``model.weights.h5``. Each layer
  of ``model.layers`` stores its own variables under ``layers/<key>/vars/0, 1, ...``, where
  ``<key>`` is the snake-cased class name made unique by a counter in ``model.layers`` order
  (``conv2d``, ``conv2d_1``, ...); Keras 3.15 also records the layer name in the ``name``
  attribute of the ``vars`` group. A nested model keeps its layers under
  ``layers/<key>/layers/<inner key>/vars``. Variable *names* are not stored, so they are
  recovered from each layer class's creation order, which its rule knows
  (:meth:`ridurre.rules.LayerRule.weight_names`).
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

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field

import h5py
import numpy as np

from ridurre.rules import rule_for_class_name

__all__ = [
    "ModelFileError",
    "LayerInfo",
    "ModelFile",
    "read_model_file",
]


class ModelFileError(ValueError):
    """The file is missing, unreadable, or not a saved Keras model; the message names the file."""


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
        inputs: paths of the layers whose outputs it is called on (in the same model), as the
            saved graph records them (for a ``Sequential`` model: the layer before it).
    """

    name: str
    path: str
    class_name: str
    config: dict
    weight_names: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()


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
            raise KeyError(f"layer name {name!r} is ambiguous: use one of {[m.path for m in matches]}")
        raise KeyError(name)

    def named_weights(self, name: str) -> dict[str, np.ndarray]:
        """Weight name -> array for one layer (``{"kernel": ..., "bias": ...}``)."""
        layer = self.layer(name)
        return dict(zip(layer.weight_names, self.weights.get(layer.path, [])))

    def consumers(self, name: str) -> list[LayerInfo]:
        """The layers called on the output of layer ``name`` (a path), in model order."""
        path = self.layer(name).path
        return [layer for layer in self.all_layers if path in layer.inputs]

    def num_filters(self, name: str) -> int:
        """Number of filters (output channels) of a prunable layer; ValueError otherwise."""
        from ridurre.scorefile.masks import num_filters

        layer = self.layer(name)
        return num_filters(layer.class_name, self.named_weights(layer.path), layer.config)


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
        raise ModelFileError(
            f"{path}: the model is a {cls!r}; only Functional and Sequential models can be read without Keras"
        )
    if cls == "Sequential":  # Sequential.layers leaves the InputLayer out
        layers = [lc for lc in layers if lc.get("class_name") != "InputLayer"]
    return cls, layers


def _history_names(node):
    """Layer names a saved inbound node refers to: Keras 3 writes ``{"keras_history": [name, i, j]}``
    tensors, Keras 2 and legacy ``.h5`` files ``[name, i, j, kwargs]`` lists."""
    if isinstance(node, dict):
        history = node.get("keras_history")
        if isinstance(history, list) and history and isinstance(history[0], str):
            return [history[0]]
        return [n for value in node.values() for n in _history_names(value)]
    if isinstance(node, list):
        if len(node) >= 3 and isinstance(node[0], str) and isinstance(node[1], int):
            return [node[0]]
        return [n for item in node for n in _history_names(item)]
    return []


def _inputs_by_name(model_class, layer_configs):
    """``{layer name: names of the layers it is called on}`` of one model's saved layers."""
    names = [(lc.get("config", {}) or {}).get("name") or lc.get("name") for lc in layer_configs]
    if model_class == "Sequential":
        return {name: (before,) for before, name in zip(names, names[1:])}
    return {
        name: tuple(dict.fromkeys(_history_names(lc.get("inbound_nodes", []))))
        for name, lc in zip(names, layer_configs)
    }


def _expected_weight_names(class_name, config, n):
    rule = rule_for_class_name(class_name)
    names = rule.weight_names(config) if rule is not None else None
    if names is not None and len(names) == n:
        return tuple(names)
    return tuple(str(i) for i in range(n))  # unknown layout: name variables by position


def _snake_case(name):  # as Keras names them (keras/src/utils/naming.py, to_snake_case)
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
                raise ModelFileError(
                    f"{path}: the archive has no model.weights.h5 (sharded or missing weights are not supported)"
                )
            config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in names else {}
            weights_bytes = archive.read("model.weights.h5")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not a Keras model ({exc})") from None
    model_class, layer_configs = _model_layers_config(path, config)
    top, every, weights = [], [], {}
    try:
        with h5py.File(io.BytesIO(weights_bytes), "r") as store:
            _walk_keras_layers(path, store.get("layers"), (model_class, layer_configs), "", top, every, weights)
    except ModelFileError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: corrupt model.weights.h5 in the archive ({exc!r})") from None
    return ModelFile(path, "keras", model_class, top, every, weights, metadata.get("keras_version"))


def _walk_keras_layers(path, group, model_layers, prefix, top, every, weights):
    model_class, layer_configs = model_layers
    inputs = _inputs_by_name(model_class, layer_configs)
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
        if base in used:  # as Keras does (keras/src/saving/saving_lib.py, _get_unique_name)
            used[base] += 1
            key = f"{base}_{used[base]}"
        else:
            used[base] = 0
            key = base
        key = by_name.get(name, key)
        sub = group.get(key) if group is not None else None
        arrays = _read_vars(sub)
        info = LayerInfo(
            name,
            prefix + name,
            cls,
            cfg,
            _expected_weight_names(cls, cfg, len(arrays)),
            tuple(prefix + n for n in inputs.get(name, ())),
        )
        every.append(info)
        if top is not None:
            top.append(info)
        if arrays:
            weights[info.path] = arrays
        if cls in _MODEL_CLASSES and isinstance(cfg.get("layers"), list):
            _walk_keras_layers(
                path,
                sub.get("layers") if sub is not None else None,
                _model_layers_config(path, lc),
                info.path + "/",
                None,
                every,
                weights,
            )


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy_h5(path):
    try:
        with h5py.File(path, "r") as f:
            if "model_config" not in f.attrs:
                raise ModelFileError(
                    f"{path}: not a Keras model (HDF5 file without a model_config attribute; a weights-only file?)"
                )
            config = json.loads(_decode(f.attrs["model_config"]))
            version = _decode(f.attrs["keras_version"]) if "keras_version" in f.attrs else None
            model_class, layer_configs = _model_layers_config(path, config)
            root = f["model_weights"] if "model_weights" in f else f
            top, every, weights = [], [], {}
            inputs = _inputs_by_name(model_class, layer_configs)
            for lc in layer_configs:
                _read_h5_layer(path, root, lc, "", top, every, weights, inputs=inputs)
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


def _read_h5_layer(path, root, lc, prefix, top, every, weights, pool=None, inputs=None):
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
    info = LayerInfo(name, prefix + name, cls, cfg, names, tuple(prefix + n for n in (inputs or {}).get(name, ())))
    every.append(info)
    if top is not None:
        top.append(info)
    if own:
        weights[info.path] = own
    if is_model:
        inner_class, inner = _model_layers_config(path, lc)
        inner_inputs = _inputs_by_name(inner_class, inner)
        for inner_lc in inner:
            _read_h5_layer(path, root, inner_lc, info.path + "/", None, every, weights, pool, inner_inputs)
