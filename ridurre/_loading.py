"""Load a saved Keras model with a one-line message naming the file and the cause when it fails.

Keras's own messages are often wrong or long for a user: a truncated, empty or text ``.keras``
file gives "File not found" although it exists, and a missing custom class dumps the whole layer
config (about 2,000 characters). :func:`load_keras_model` checks the file first (without Keras)
and turns every failure into :class:`ModelLoadError` saying what is wrong and, for ``Lambda``
layers and custom classes, how to opt in. Keras is imported only when a model is loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import zipfile

__all__ = ["ModelLoadError", "check_model_file", "load_keras_model", "custom_objects_from"]

_MODEL_CONTAINERS = ("Functional", "Sequential", "Model")


class ModelLoadError(ValueError):
    """A model file that cannot be loaded; the message is one line naming the file and the cause."""


def _not_a_model(path: str) -> str:
    """What ``path`` is instead of a saved model, as a message."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return f"{path}: the file is empty (0 bytes), not a Keras model"
    if head.startswith(b"PK"):
        return f"{path}: a truncated or damaged zip archive, not a complete .keras model"
    if head.startswith(b"\x89HDF"):
        return f"{path}: a truncated or damaged HDF5 file, not a complete .h5 model"
    if b"\0" not in head:
        return f"{path}: a text file, not a Keras model (a .keras zip archive or an .h5 file)"
    return f"{path}: not a Keras model (neither a .keras zip archive nor an .h5 file)"


def _saved_config(path: str) -> dict:
    """The model config stored in ``path`` (``config.json`` of a ``.keras`` archive, the
    ``model_config`` attribute of a legacy ``.h5`` file); raises :class:`ModelLoadError` when the
    file is not a complete saved model."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such model file")
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: is a directory, not a model file")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                if "config.json" not in names:
                    raise ModelLoadError(f"{path}: a zip archive without config.json, not a .keras model")
                if "model.weights.h5" not in names:
                    raise ModelLoadError(f"{path}: the .keras archive has no model.weights.h5 (incomplete file?)")
                return json.loads(archive.read("config.json"))
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"{path}: a damaged .keras archive (truncated or corrupt: {exc})") from None
    import h5py

    if h5py.is_hdf5(path):
        try:
            with h5py.File(path, "r") as f:
                if "model_config" not in f.attrs:
                    raise ModelLoadError(f"{path}: an HDF5 file without a model (weights only?)")
                raw = f.attrs["model_config"]
                return json.loads(raw.decode("utf8") if isinstance(raw, bytes) else raw)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ModelLoadError):
                raise
            raise ModelLoadError(f"{path}: a damaged HDF5 model file (truncated or corrupt: {exc})") from None
    raise ModelLoadError(_not_a_model(path))


def check_model_file(path: str | os.PathLike) -> dict:
    """Check, without Keras, that ``path`` holds a complete saved Keras model; return its config.

    Raises:
        ModelLoadError: naming the file and what it is instead (missing, empty, text, truncated).

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> _ = open(p, "w").write("not a model")
        >>> try:
        ...     check_model_file(p)
        ... except ModelLoadError as exc:
        ...     print(str(exc).split(": ", 1)[1])
        a text file, not a Keras model (a .keras zip archive or an .h5 file)
    """
    return _saved_config(os.fspath(path))


def _layer_configs(config):
    """Every layer config in a saved model config (the entries of its ``layers`` lists, nested
    models included)."""
    inner = config.get("config") if isinstance(config, dict) else None
    for layer in (inner or {}).get("layers", []) if isinstance(inner, dict) else []:
        if isinstance(layer, dict) and "class_name" in layer:
            yield layer
            yield from _layer_configs(layer)


def _unknown_classes(config, custom_objects):
    import keras

    unknown = []
    for layer in _layer_configs(config):
        name = layer.get("registered_name") or layer["class_name"]
        if layer["class_name"] in _MODEL_CONTAINERS or layer["class_name"].startswith("__"):
            continue
        known = (
            keras.saving.get_registered_object(name, custom_objects=custom_objects) is not None
            or name in (custom_objects or {})
            or hasattr(keras.layers, name)
            or (layer.get("module") or "").startswith("keras")
        )
        if not known and name not in unknown:
            unknown.append(name)
    return unknown


def _has_lambda(config):
    return any(layer["class_name"] == "Lambda" for layer in _layer_configs(config))


def _first_line(exc, limit=240):
    text = " ".join(str(exc).split())
    text = re.split(r"(?<=\.) (?:Full object config|config=)", text)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_keras_model(
    path: str | os.PathLike,
    *,
    custom_objects: dict | None = None,
    compile: bool = True,
    safe_mode: bool | None = None,
    unsafe_hint: str = "safe_mode=False",
    custom_hint: str = "custom_objects=",
):
    """``keras.models.load_model`` with one-line errors.

    Args:
        path: a ``.keras`` archive or a legacy ``.h5`` file.
        custom_objects: classes and functions the model's config names.
        compile: restore the training configuration too.
        safe_mode: refuse to run code stored in the file (``Lambda`` layers); ``None`` (default):
            safe unless ``keras.config.enable_unsafe_deserialization()`` was called.
        unsafe_hint, custom_hint: how the caller's user opts in (a command line says
            ``--unsafe`` and ``--custom-objects``), used in the messages.

    Raises:
        ModelLoadError: missing, empty, truncated or text files; a ``Lambda`` layer in safe mode;
            a custom class that is not registered; anything else Keras refuses (its first line).

    Example:
        >>> import keras, os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "m.keras")
        >>> keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")]).save(p)
        >>> load_keras_model(p).get_layer("d").units
        2
    """
    import warnings

    import keras

    from ridurre._compat import unsafe_deserialization_enabled

    path = os.fspath(path)
    config = _saved_config(path)
    if safe_mode is None:
        safe_mode = not unsafe_deserialization_enabled()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # optimizer-state notices are noise here
            return keras.models.load_model(path, custom_objects=custom_objects, compile=compile, safe_mode=safe_mode)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line naming the file
        unknown = _unknown_classes(config, custom_objects)
        if unknown:
            message = (
                f"{path}: the model uses {', '.join(map(repr, unknown))}, not a Keras class and not given: "
                f"pass {custom_hint} with the code defining it"
            )
        elif safe_mode and _has_lambda(config):
            message = (
                f"{path}: the model has a Lambda layer, whose code is stored in the file and would run when "
                f"loaded; refused in safe mode (pass {unsafe_hint} only if you trust the file)"
            )
        else:
            message = f"{path}: Keras cannot load the model: {_first_line(exc)}"
        raise ModelLoadError(message) from None


def custom_objects_from(spec: str) -> dict:
    """The classes and functions of a Python module, to load models that use them.

    Args:
        spec: a ``.py`` file or an importable module name. Its code runs (that is the opt-in).

    Raises:
        ModelLoadError: the file or module cannot be imported.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "my_layers.py")
        >>> _ = open(p, "w").write("def double(x):\\n    return 2 * x\\n")
        >>> sorted(custom_objects_from(p))
        ['double']
    """
    try:
        if spec.endswith(".py") or os.sep in spec:
            if not os.path.isfile(spec):
                raise ModelLoadError(f"{spec}: no such Python file")
            name = "_ridurre_custom_objects_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(spec))[0])
            module_spec = importlib.util.spec_from_file_location(name, spec)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(spec)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        raise ModelLoadError(f"{spec}: cannot import the custom objects: {type(exc).__name__}: {exc}") from None
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    }
