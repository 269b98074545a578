"""The inputs of a command: model files, data, and whether they fit together; checked before anything
is written. Bad input raises :class:`~ridurre.app.config.ConfigError` naming the option."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ridurre._loading import ModelLoadError, custom_objects_from, load_keras_model
from ridurre.app.config import ConfigError

__all__ = [
    "load_model_file",
    "load_data",
    "check_data_fits",
    "check_output_dir",
    "accuracy",
    "eval_split",
    "check_data_values",
    "add_loading_options",
    "loading_options",
    "custom_objects_option",
]


def load_model_file(path, flag="--model", custom_objects=None):
    """Load a ``.keras`` (or legacy ``.h5``) model in Keras's safe mode (``--unsafe`` lifts it).

    Raises:
        ConfigError: the file is missing, is not a complete model, or Keras cannot load it: one
            line naming ``flag``, the file and the cause (and ``--unsafe``/``--custom-objects``
            when the model needs them).
    """
    if not path:
        raise ConfigError(flag, message=f"{flag}: a model file is required (a .keras archive)")
    try:
        return load_keras_model(
            path, custom_objects=custom_objects, unsafe_hint="--unsafe", custom_hint="--custom-objects FILE.py"
        )
    except ModelLoadError as exc:
        raise ConfigError(flag, message=f"{flag}: {exc}") from None


def load_data(source, normalize="auto", validation_split=0.1, seed=0, flag="--data"):
    """Load ``digits``, ``mnist``, ``cifar10`` or an ``.npz`` file with :func:`ridurre.datasets.load_dataset`.

    Raises:
        ConfigError: unknown name, missing file or unreadable arrays (naming ``flag``).
    """
    from ridurre.zoo.datasets import load_dataset

    kwargs = {"validation_split": validation_split, "seed": seed}
    if normalize != "auto":
        kwargs["normalize"] = None if normalize == "none" else normalize
    if str(source).endswith(".npz") and not os.path.isfile(source):
        raise ConfigError(flag, message=f"{flag}: no such data file: {source}")
    try:
        data = load_dataset(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown names, bad arrays, no internet...
        hint = " (no internet? pass a local .npz file with arrays x and y)" if "URL" in str(exc) else ""
        raise ConfigError(flag, message=f"{flag}: cannot load data {source!r}: {exc}{hint}") from None
    check_data_values(data, source, flag)
    return data


def check_data_values(data, source, flag="--data"):
    """Raise :class:`ConfigError` when ``data`` has no training rows, or NaN or infinite values.

    Example:
        >>> import numpy as np
        >>> from ridurre.zoo.datasets import Dataset
        >>> empty = Dataset(*(np.zeros((0, 2)), np.zeros(0, int)) * 3, num_classes=2, name="empty")
        >>> try:
        ...     check_data_values(empty, "empty.npz")
        ... except ConfigError as exc:
        ...     print(exc)
        --data: 'empty.npz' has no training examples (0 rows)
    """
    if len(data.x_train) == 0:
        raise ConfigError(flag, message=f"{flag}: {source!r} has no training examples (0 rows)")
    for split in ("train", "val", "test"):
        for kind in ("x", "y"):
            values = np.asarray(getattr(data, f"{kind}_{split}"))
            if values.dtype.kind == "f" and not np.isfinite(values).all():
                bad = int(np.size(values) - np.isfinite(values).sum())
                raise ConfigError(
                    flag,
                    message=f"{flag}: {source!r} has {bad:,} NaN or infinite value(s) in {kind}_{split} "
                    f"(of {values.size:,}); a model trained on them gets non-finite weights",
                )


def check_data_fits(model, data, flag="--data"):
    """Raise :class:`ConfigError` unless ``data`` has the input shape and classes ``model`` expects."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError(
            "--model",
            message=f"--model: the command line handles single-input, single-output "
            f"models; {model.name!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs",
        )
    expected = tuple(model.inputs[0].shape[1:])
    got = tuple(data.x_train.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        shown = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise ConfigError(
            flag,
            message=f"{flag}: {data.name!r} has inputs of shape {got} but the model "
            f"{model.name!r} expects {shown} (batch axis left out)",
        )
    outputs = model.outputs[0].shape[-1]
    if outputs is not None and outputs > 1 and data.num_classes > outputs:
        raise ConfigError(
            flag,
            message=f"{flag}: {data.name!r} has {data.num_classes} classes but the model "
            f"{model.name!r} has only {outputs} outputs",
        )


def check_output_dir(output_dir, inputs, flag="--output"):
    """Refuse an output directory that holds (and so could overwrite) one of the input files."""
    out = os.path.realpath(output_dir)
    for path in inputs:
        if path and os.path.commonpath([out, os.path.realpath(path)]) == out:
            raise ConfigError(
                flag,
                message=f"{flag}: {output_dir} contains the input model {path}; "
                "choose another directory (the input model is never overwritten)",
            )


def accuracy(model, x, y, batch_size=256):
    """Share of ``x`` classified as ``y`` (argmax, or a 0.5 threshold for one output); None if empty.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> 0.0 <= accuracy(model, np.zeros((4, 2)), np.array([0, 1, 0, 1])) <= 1.0
        True
    """
    if len(x) == 0:
        return None
    p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).reshape(len(x), -1)
    pred = (p[:, 0] > 0.5).astype(int) if p.shape[1] == 1 else p.argmax(axis=1)
    return float(np.mean(pred == np.asarray(y)))


def eval_split(data):
    """``(x, y, name)`` of the split to report accuracy on: test, else validation."""
    if len(data.x_test):
        return data.x_test, data.y_test, "test"
    return data.x_val, data.y_val, "validation"


def add_loading_options(parser: argparse.ArgumentParser) -> None:
    """``--unsafe`` and ``--custom-objects``: how a command loads models that run code of their own."""
    parser.add_argument(
        "--custom-objects",
        metavar="FILE.py|MODULE",
        dest="custom_objects",
        default=None,
        help="a Python file or module defining the custom layers (or functions) the model uses; its code runs",
    )
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="load models with Lambda layers, whose code is stored in the model file and runs when it is "
        "loaded: only for files you trust",
    )


def loading_options(args: argparse.Namespace) -> dict | None:
    """Apply ``--unsafe`` (Keras's unsafe deserialization, for this process) and load
    ``--custom-objects``; return the custom objects (``None`` when not given).

    Raises:
        ConfigError: the custom objects cannot be imported.
    """
    return custom_objects_option(getattr(args, "custom_objects", None), getattr(args, "unsafe", False))


def custom_objects_option(spec, unsafe=False):
    """Apply ``--unsafe`` (Keras's unsafe deserialization, for this process) and import
    ``--custom-objects`` ``spec``; return the custom objects (``None`` when not given).

    Raises:
        ConfigError: the custom objects cannot be imported.
    """
    if unsafe:
        import keras

        keras.config.enable_unsafe_deserialization()
    if spec is None:
        return None
    try:
        return custom_objects_from(spec)
    except ModelLoadError as exc:
        raise ConfigError("--custom-objects", message=f"--custom-objects: {exc}") from None
