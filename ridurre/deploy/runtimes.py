"""Run an exported model in the runtime it was exported for: LiteRT, ONNX Runtime, TensorFlow.

Every runtime is a callable ``run(inputs) -> [outputs]`` over lists of NumPy arrays, with the
attributes ``runtime`` (its name) and ``threads`` (the CPU threads it may use), so that
:func:`ridurre.metrics.measure_runners` times it beside a Keras model. The converters and
interpreters are imported only when a runtime is loaded (the optional ``ridurre[deploy]`` extra:
``ai-edge-litert``, ``onnxruntime``; TensorFlow for SavedModels).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

__all__ = [
    "FORMATS",
    "canonical_format",
    "format_of",
    "load_runtime",
    "missing_packages",
    "LiteRTRuntime",
    "OnnxRuntime",
    "SavedModelRuntime",
]

FORMATS = ("litert", "onnx", "saved_model")
"""The export formats, each run by its own runtime (the LiteRT interpreter, onnxruntime,
TensorFlow)."""

_ALIASES = {"tflite": "litert", "tf_saved_model": "saved_model", "savedmodel": "saved_model"}

_NEEDS = {
    "litert": (("ai_edge_litert", "tensorflow"),),  # either interpreter
    "onnx": (("onnxruntime",), ("onnx",), ("tf2onnx",)),
    "saved_model": (("tensorflow",),),
}


def canonical_format(name) -> str:
    """The format called ``name`` (``"litert"``, ``"onnx"`` or ``"saved_model"``; ``"tflite"`` and
    ``"tf_saved_model"`` are accepted too).

    Example:
        >>> canonical_format("tflite"), canonical_format("ONNX")
        ('litert', 'onnx')
    """
    if not isinstance(name, str):
        raise TypeError(f"`format` must be a string among {', '.join(FORMATS)}, got {type(name).__name__}.")
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in FORMATS:
        raise ValueError(f"`format` must be one of {', '.join(FORMATS)}, got {name!r}.")
    return key


def format_of(path) -> str:
    """The format of an exported model, from its path: ``.tflite``, ``.onnx``, or a directory
    holding ``saved_model.pb``.

    Example:
        >>> format_of("model.tflite"), format_of("model.onnx")
        ('litert', 'onnx')
    """
    path = os.fspath(path)
    if path.endswith(".tflite"):
        return "litert"
    if path.endswith(".onnx"):
        return "onnx"
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        return "saved_model"
    raise ValueError(f"cannot tell the format of {path!r}: expected a .tflite or .onnx file or a SavedModel directory.")


def missing_packages(format) -> list:
    """The packages ``format`` needs that are not installed (``[]`` when it can run).

    Example:
        >>> isinstance(missing_packages("onnx"), list)
        True
    """
    fmt = canonical_format(format)
    return [
        " or ".join(options)
        for options in _NEEDS[fmt]
        if not any(importlib.util.find_spec(name) is not None for name in options)
    ]


def _require(format):
    missing = missing_packages(format)
    if missing:
        raise ImportError(
            f"the {format} format needs {', '.join(missing)}: install them with pip install 'ridurre[deploy]'."
        )


def _threads(threads):
    if threads is None:
        return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"`threads` must be a positive int or None, got {threads!r}.")
    return int(threads)


class LiteRTRuntime:
    """A ``.tflite`` model in the LiteRT interpreter (``ai_edge_litert``, else ``tf.lite``), with
    its XNNPACK CPU kernels and ``threads`` threads. Inputs of another batch size resize the
    interpreter's tensors; integer inputs and outputs are (de)quantized with their scales."""

    runtime = "litert"

    def __init__(self, path, threads=None):
        _require("litert")
        self.path = os.fspath(path)
        self.threads = _threads(threads)
        if importlib.util.find_spec("ai_edge_litert") is not None:
            from ai_edge_litert.interpreter import Interpreter
        else:  # pragma: no cover - only without ai-edge-litert
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        self._interpreter = Interpreter(model_path=self.path, num_threads=self.threads)
        self._inputs = self._interpreter.get_input_details()
        self._outputs = self._interpreter.get_output_details()
        self._shapes = None

    def __call__(self, inputs):
        it = self._interpreter
        shapes = [tuple(x.shape) for x in inputs]
        if len(inputs) != len(self._inputs):
            raise ValueError(f"{self.path} takes {len(self._inputs)} input(s), got {len(inputs)}.")
        if shapes != self._shapes:
            for detail, shape in zip(self._inputs, shapes):
                it.resize_tensor_input(detail["index"], shape)
            it.allocate_tensors()
            self._shapes = shapes
        for detail, x in zip(self._inputs, inputs):
            it.set_tensor(detail["index"], _quantize(x, detail))
        it.invoke()
        return [_dequantize(it.get_tensor(d["index"]), d) for d in self._outputs]


def _quantize(x, detail):
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return np.asarray(x, dtype=dtype)
    scale, zero = detail["quantization"]
    if not scale:  # an integer input that is not quantized: token ids
        return np.asarray(x).astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)


def _dequantize(y, detail):
    if np.issubdtype(y.dtype, np.floating):
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


class OnnxRuntime:
    """An ``.onnx`` model in ONNX Runtime's CPU provider, ``threads`` intra-op threads, one
    inter-op thread, sequential execution, all graph optimizations."""

    runtime = "onnx"

    def __init__(self, path, threads=None):
        _require("onnx")
        import onnxruntime as ort

        self.path = os.fspath(path)
        self.threads = _threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self._names = [i.name for i in self._session.get_inputs()]
        self._dtypes = [_ONNX_TYPES.get(i.type, np.float32) for i in self._session.get_inputs()]

    def __call__(self, inputs):
        if len(inputs) != len(self._names):
            raise ValueError(f"{self.path} takes {len(self._names)} input(s), got {len(inputs)}.")
        feed = {n: np.asarray(x).astype(d, copy=False) for n, x, d in zip(self._names, inputs, self._dtypes)}
        return self._session.run(None, feed)


_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64}


class SavedModelRuntime:
    """A TensorFlow SavedModel written by Keras's export (its ``serve`` endpoint), run by
    TensorFlow with its process-wide thread pool."""

    runtime = "saved_model"

    def __init__(self, path, threads=None):
        _require("saved_model")
        import tensorflow as tf

        self.path = os.fspath(path)
        self._tf = tf
        self._loaded = tf.saved_model.load(self.path)
        if not hasattr(self._loaded, "serve"):
            raise ValueError(f"{self.path} has no `serve` endpoint: export it with ridurre.deploy.export().")
        self.threads = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
        if threads is not None and _threads(threads) != self.threads:
            raise ValueError(
                f"TensorFlow's threads are set for the whole process ({self.threads}); "
                "start Python with those you want (tf.config.threading) instead of `threads`."
            )

    def __call__(self, inputs):
        x = inputs if len(inputs) > 1 else inputs[0]
        outputs = self._loaded.serve(x)
        return [np.asarray(t) for t in self._tf.nest.flatten(outputs)]


_RUNTIMES = {"litert": LiteRTRuntime, "onnx": OnnxRuntime, "saved_model": SavedModelRuntime}


def load_runtime(path, format=None, threads=None):
    """Load an exported model into its runtime.

    Args:
        path: a ``.tflite`` or ``.onnx`` file, or a SavedModel directory.
        format: ``"litert"``, ``"onnx"`` or ``"saved_model"`` (default: from the path).
        threads: CPU threads the runtime may use (default: all cores). A SavedModel runs on
            TensorFlow's process-wide pool, which cannot be changed here.

    Returns:
        A callable ``run(inputs) -> [outputs]`` with ``runtime`` and ``threads`` attributes.

    Example:
        >>> import keras, numpy as np, os, tempfile
        >>> from ridurre.deploy import export
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        >>> path = os.path.join(tempfile.mkdtemp(), "m.tflite")
        >>> _ = export(model, path, format="litert")
        >>> run = load_runtime(path, threads=1)
        >>> run.runtime, run.threads, run([np.ones((2, 4), "float32")])[0].shape
        ('litert', 1, (2, 3))
    """
    fmt = format_of(path) if format is None else canonical_format(format)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no exported model at {os.fspath(path)!r}")
    return _RUNTIMES[fmt](path, threads=threads)
