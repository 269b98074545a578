"""The inputs of a command: model files, data, and whether they fit together; checked before anything
is written. Bad input raises :class:`~ridurre.app.config.ConfigError` naming the option."""

from __future__ import annotations

import os
import warnings

import numpy as np

from ridurre.app.config import ConfigError

__all__ = ["load_model_file", "load_data", "check_data_fits", "check_output_dir", "accuracy", "eval_split"]


def load_model_file(path, flag="--model"):
    """Load a ``.keras`` (or legacy ``.h5``) model with ``safe_mode=True``: nothing is unpickled.

    Raises:
        ConfigError: the file is missing or Keras cannot load it (the message names ``flag``).
    """
    import keras

    if not path:
        raise ConfigError(flag, message=f"{flag}: a model file is required (a .keras archive)")
    if not os.path.isfile(path):
        raise ConfigError(flag, message=f"{flag}: no such model file: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optimizer-state notices are noise to a CLI user
        try:
            return keras.models.load_model(path, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad input file here
            raise ConfigError(flag, message=f"{flag}: Keras cannot load {path}: {exc}") from None


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
        return load_dataset(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown names, bad arrays, no internet...
        hint = " (no internet? pass a local .npz file with arrays x and y)" if "URL" in str(exc) else ""
        raise ConfigError(flag, message=f"{flag}: cannot load data {source!r}: {exc}{hint}") from None


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
