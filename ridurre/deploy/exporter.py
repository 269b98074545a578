"""Export a Keras model to LiteRT, ONNX or a TensorFlow SavedModel, optionally int8, and check it.

Keras 3's own ``model.export`` writes each format (LiteRT through the TFLite converter, ONNX
through ``tf2onnx``); int8 is LiteRT's full-integer quantization, ONNX Runtime's static
quantization (QDQ, per-channel weights), or Keras's ``model.quantize("int8")`` for a SavedModel
(which quantizes Dense-like layers only). Every export is written to a temporary name, loaded in
its runtime and compared with the Keras model before it takes its final name: nothing
half-written or wrong is left behind.

Verification:

* float exports: on sample inputs, every output must satisfy ``|exported - keras| <= atol +
  rtol * |keras|`` with ``atol = 1e-4 * max(1, max |keras|)`` and ``rtol = 1e-3`` (float32
  kernels of different runtimes differ by rounding only);
* int8 exports: top-1 accuracy on the validation data (labels given) or agreement with the Keras
  model's top-1 (no labels), which may drop by at most ``max_accuracy_drop`` (default 2 points).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
import warnings

import keras
import numpy as np

from ridurre._io import atomic_directory, atomic_path
from ridurre._validation import check_unit
from ridurre.deploy.runtimes import _require, canonical_format, load_runtime
from ridurre.metrics import input_dtypes, random_inputs

__all__ = ["ExportError", "ExportResult", "export", "check_samples"]

_EXTENSIONS = {"litert": ".tflite", "onnx": ".onnx", "saved_model": ""}
_CALIBRATION_SAMPLES = 256
_RTOL = 1e-3
_ATOL = 1e-4


class ExportError(RuntimeError):
    """The exported model does not reproduce the Keras model (nothing was written)."""


@dataclasses.dataclass
class ExportResult:
    """What `export` wrote and how it was checked.

    Attributes:
        path: the exported file or directory.
        format: ``"litert"``, ``"onnx"`` or ``"saved_model"``.
        int8: whether it is quantized to int8.
        size_bytes: its size on disk.
        seconds: time to export and verify.
        verification: how it was checked: ``{"kind": "outputs", "max_abs_error", "atol", "rtol",
            "examples"}`` for float exports, ``{"kind": "accuracy" | "agreement",
            "keras_accuracy", "exported_accuracy", "agreement", "max_accuracy_drop",
            "examples"}`` for int8 (``{"kind": "none"}`` with ``verify=False``).
    """

    path: str
    format: str
    int8: bool
    size_bytes: int
    seconds: float
    verification: dict

    def to_dict(self) -> dict:
        """The result as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _size(path):
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    return os.path.getsize(path)


def _input_shapes(model):
    shapes = [tuple(t.shape[1:]) for t in keras.tree.flatten(model.inputs)]
    if any(d is None for s in shapes for d in s):
        raise ValueError(f"model {model.name!r} has undefined input dimensions {shapes}: export needs them defined.")
    return shapes


def check_samples(model, x, name="calibration_data"):
    """``x`` as a list of float32 arrays (one per model input; integer ones, token ids, keep the
    input's integer type), checked against the model's inputs.

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        >>> [a.shape for a in check_samples(model, np.zeros((5, 4)))]
        [(5, 4)]
    """
    shapes = _input_shapes(model)
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if len(xs) != len(shapes):
        raise ValueError(f"`{name}` must hold {len(shapes)} input array(s) for {model.name!r}, got {len(xs)}.")
    out = []
    for array, shape, dtype in zip(xs, shapes, input_dtypes(model)):
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.number) or array.ndim != len(shape) + 1 or array.shape[1:] != shape:
            raise ValueError(
                f"`{name}` must be a numeric array of shape (n, {', '.join(map(str, shape))}) for "
                f"{model.name!r}, got {array.dtype} {array.shape}."
            )
        if len(array) == 0:
            raise ValueError(f"`{name}` is empty: give at least one example.")
        out.append(array.astype(dtype if np.dtype(dtype).kind in "iu" else np.float32))
    if len({len(a) for a in out}) > 1:
        raise ValueError(f"`{name}`: every input array must have the same number of examples.")
    return out


def _split_labeled(model, data, name):
    """``(xs, y or None)`` from an array, ``(x, y)``, or a mapping with ``x`` (and ``y``)."""
    if data is None:
        return None, None
    y = None
    if isinstance(data, dict) or hasattr(data, "files"):
        keys = list(data.files if hasattr(data, "files") else data)
        if "x" not in keys:
            raise ValueError(f"`{name}` must have an array `x` (and optionally `y`), got keys {keys}.")
        x, y = data["x"], data["y"] if "y" in keys else None
    elif isinstance(data, tuple) and len(data) == 2 and len(keras.tree.flatten(model.inputs)) == 1:
        x, y = data
    else:
        x = data
    xs = check_samples(model, x, name)
    if y is not None:
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot
            y = y.argmax(axis=1)
        y = y.reshape(len(y)) if y.size == len(y) else None
        if y is None or len(y) != len(xs[0]):
            raise ValueError(f"`{name}`: `y` must hold one class label per example of `x`.")
    return xs, y


def _keras_outputs(model, xs, batch_size=64):
    x = xs if len(xs) > 1 else xs[0]
    outputs = model.predict(x, batch_size=batch_size, verbose=0)
    return [np.asarray(o) for o in keras.tree.flatten(outputs)]


def _runtime_outputs(run, xs, batch_size=64):
    parts = None
    for start in range(0, len(xs[0]), batch_size):
        out = run([x[start : start + batch_size] for x in xs])
        parts = [[o] for o in out] if parts is None else [p + [o] for p, o in zip(parts, out)]
    return [np.concatenate(p) for p in parts]


def _verify_float(model, run, xs):
    expected = _keras_outputs(model, xs)
    got = _runtime_outputs(run, xs)
    if len(got) != len(expected):
        raise ExportError(f"the exported model has {len(got)} outputs, the Keras model {len(expected)}")
    worst, atol = 0.0, 0.0
    for e, g in zip(expected, got):
        if g.shape != e.shape:
            raise ExportError(f"exported output shape {g.shape} differs from the Keras model's {e.shape}")
        atol = max(atol, _ATOL * max(1.0, float(np.abs(e).max())))
        worst = max(worst, float(np.abs(g - e).max()))
        if not np.all(np.abs(g - e) <= atol + _RTOL * np.abs(e)):
            raise ExportError(
                f"the exported model's outputs differ from the Keras model's by up to {worst:.3g} "
                f"(tolerance {atol:.3g} + {_RTOL:g} x |output|)"
            )
    return {"kind": "outputs", "max_abs_error": worst, "atol": atol, "rtol": _RTOL, "examples": len(xs[0])}


def _verify_int8(model, run, xs, y, max_drop):
    expected = _keras_outputs(model, xs)[0]
    got = _runtime_outputs(run, xs)[0]
    if expected.ndim != 2 or expected.shape[1] < 2:
        raise ValueError(
            "int8 exports are checked by top-1 accuracy: the model's first output must be (n, classes), "
            f"got {expected.shape}."
        )
    keras_top, top = expected.argmax(axis=1), got.argmax(axis=1)
    agreement = float(np.mean(keras_top == top))
    if y is not None:
        keras_acc, acc, kind = float(np.mean(keras_top == y)), float(np.mean(top == y)), "accuracy"
    else:
        keras_acc, acc, kind = 1.0, agreement, "agreement"
    result = {
        "kind": kind,
        "keras_accuracy": keras_acc,
        "exported_accuracy": acc,
        "agreement": agreement,
        "max_accuracy_drop": max_drop,
        "examples": len(top),
    }
    if keras_acc - acc > max_drop + 1e-12:
        what = "accuracy" if y is not None else "top-1 agreement with the Keras model"
        raise ExportError(
            f"int8 {what} {100 * acc:.2f} % vs {100 * keras_acc:.2f} % for the Keras model: a drop of "
            f"{100 * (keras_acc - acc):.2f} points, more than max_accuracy_drop={100 * max_drop:g} points"
        )
    return result


def _representative(xs):
    def generate():
        for i in range(len(xs[0])):
            yield [x[i : i + 1] for x in xs]

    return generate


def _export_litert(model, path, calibration):
    kwargs = {}
    if calibration is not None:
        import tensorflow as tf

        kwargs = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": _representative(calibration),
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        }
    model.export(path, format="litert", verbose=False, **kwargs)


class _Calibration:
    """onnxruntime's CalibrationDataReader over the calibration arrays, one example at a time."""

    def __init__(self, names, xs):
        self._items = iter([{n: x[i : i + 1] for n, x in zip(names, xs)} for i in range(len(xs[0]))])

    def get_next(self):
        return next(self._items, None)


def _export_onnx(model, path, calibration):
    if calibration is None:
        model.export(path, format="onnx", verbose=False)
        return
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="ridurre_onnx_") as tmp:
        float_path = os.path.join(tmp, "float.onnx")
        model.export(float_path, format="onnx", verbose=False)
        names = [i.name for i in ort.InferenceSession(float_path, providers=["CPUExecutionProvider"]).get_inputs()]
        quantize_static(
            float_path,
            path,
            _Calibration(names, calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _export_saved_model(model, path, calibration):
    if calibration is not None:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            copy.quantize("int8")
        model = copy
    model.export(path, format="tf_saved_model", verbose=False)


_EXPORTERS = {"litert": _export_litert, "onnx": _export_onnx, "saved_model": _export_saved_model}


@contextlib.contextmanager
def _root_logging_kept():
    """tf2onnx and onnxruntime's quantization call ``logging.basicConfig`` when imported, which would
    print every later log record a second time: the root logger is restored after them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _check_path(path, fmt):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a file path, got {type(path).__name__}.")
    path = os.fspath(path)
    ext = _EXTENSIONS[fmt]
    if ext and not path.endswith(ext):
        raise ValueError(f"a {fmt} export is a {ext} file: `path` must end with {ext!r}, got {path!r}.")
    if not ext and os.path.isfile(path):
        raise ValueError(f"a saved_model export is a directory, but {path!r} is a file.")
    if ext and os.path.isdir(path):
        raise ValueError(f"`path` {path!r} is a directory; expected a {ext} file.")
    return path


def export(
    model,
    path,
    format="litert",
    *,
    int8=False,
    calibration_data=None,
    validation_data=None,
    verify=True,
    sample_inputs=None,
    max_accuracy_drop=0.02,
    threads=None,
) -> ExportResult:
    """Export ``model`` for a deployment runtime and check the result in that runtime.

    Args:
        model: a built Functional or Sequential `keras.Model` (never modified).
        path: the ``.tflite`` file (``litert``), ``.onnx`` file (``onnx``) or directory
            (``saved_model``) to write; written atomically, only once verified.
        format: ``"litert"``, ``"onnx"`` or ``"saved_model"``.
        int8: quantize to int8 (needs ``calibration_data``): LiteRT full-integer kernels with
            float inputs and outputs, ONNX Runtime QDQ static quantization, or Keras's
            ``model.quantize("int8")`` before a SavedModel export.
        calibration_data: inputs representative of real data: an array ``(n, *input_shape)``, a
            tuple ``(x, y)`` or a mapping with ``x`` (and ``y``) such as an ``.npz``. The first
            256 examples calibrate the int8 ranges.
        validation_data: the same kinds of data, to check an int8 export by accuracy (default:
            the calibration data).
        verify: load the export in its runtime and compare it with the Keras model (see the
            module docstring for the tolerances).
        sample_inputs: inputs for the float comparison (default: 8 calibration examples, else 8
            standard-normal examples, seeded).
        max_accuracy_drop: largest accepted int8 drop of top-1 accuracy (a fraction).
        threads: threads of the runtime used for the check (default: all cores).

    Returns:
        An `ExportResult`.

    Raises:
        ExportError: the export does not reproduce the model; nothing was written.
        ImportError: the format's converter or runtime is not installed (``ridurre[deploy]``).

    Example:
        >>> import keras, os, tempfile
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        >>> result = export(model, os.path.join(tempfile.mkdtemp(), "m.onnx"), format="onnx")
        >>> result.format, result.verification["kind"], result.verification["max_abs_error"] < 1e-4
        ('onnx', 'outputs', True)
    """
    started = time.perf_counter()
    if not isinstance(model, keras.Model) or not model.built:
        raise TypeError(f"`model` must be a built keras.Model, got {type(model).__name__}.")
    fmt = canonical_format(format)
    path = _check_path(path, fmt)
    if not isinstance(int8, bool):
        raise TypeError(f"`int8` must be True or False, got {int8!r}.")
    max_accuracy_drop = check_unit(max_accuracy_drop, "max_accuracy_drop")
    calibration, labels = _split_labeled(model, calibration_data, "calibration_data")
    validation, val_labels = _split_labeled(model, validation_data, "validation_data")
    if int8 and calibration is None:
        raise ValueError("`int8=True` needs `calibration_data`: inputs representative of real data.")
    if sample_inputs is not None:
        samples = check_samples(model, sample_inputs, "sample_inputs")
    elif calibration is not None:
        samples = [x[:8] for x in calibration]
    else:
        samples = random_inputs(_input_shapes(model), 8, dtypes=input_dtypes(model))
    _require(fmt)
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"ridurre exports with the TensorFlow backend; KERAS_BACKEND is {keras.backend.backend()!r}."
        )
    model(
        [x[:1] for x in samples] if len(samples) > 1 else samples[0][:1], training=False
    )  # Keras exports called models
    writer = atomic_directory(path) if fmt == "saved_model" else atomic_path(path)
    with writer as tmp:
        if fmt != "saved_model":
            os.remove(tmp)  # the converters write the file themselves
        else:
            os.rmdir(tmp)
        with _root_logging_kept(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # np.object in Keras's tf2onnx shim
            _EXPORTERS[fmt](model, tmp, [x[:_CALIBRATION_SAMPLES] for x in calibration] if int8 else None)
        verification = {"kind": "none"}
        if verify:
            run = load_runtime(tmp, fmt, threads=threads if fmt != "saved_model" else None)
            if int8:
                xs, y = (validation, val_labels) if validation is not None else (calibration, labels)
                verification = _verify_int8(model, run, xs, y, max_accuracy_drop)
            else:
                verification = _verify_float(model, run, samples)
        size = _size(tmp)
    return ExportResult(
        path=path,
        format=fmt,
        int8=int8,
        size_bytes=size,
        seconds=time.perf_counter() - started,
        verification=verification,
    )
