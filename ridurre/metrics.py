"""Model cost metrics: parameters, multiply-accumulates, size on disk, latency.

Counting convention
-------------------
* **Parameters** are all weights, trainable and not (BatchNormalization's
  moving mean and variance included), each shared weight counted once. This
  is what ``model.count_params()`` reports.
* **MACs** (multiply-accumulates) are counted for one example (batch size 1)
  in the layers that dominate the cost of a convolutional network:

  - ``Conv1D/2D/3D``: ``prod(output spatial) * filters * prod(kernel) *
    in_channels / groups``;
  - ``Conv1DTranspose/2DTranspose/3DTranspose``: ``prod(input spatial) *
    in_channels * prod(kernel) * filters / groups`` (every input position is
    scattered through the kernel);
  - ``DepthwiseConv1D/2D``: ``prod(output spatial) * in_channels *
    depth_multiplier * prod(kernel)``;
  - ``SeparableConv1D/2D``: the depthwise part plus the pointwise part,
    ``prod(output spatial) * in_channels * depth_multiplier * filters``;
  - ``Dense``: ``in_units * units`` for every position of the input, so a
    Dense applied to a ``(T, D)`` tensor costs ``T * D * units``.

  Bias additions are not counted. A layer called several times (a shared
  layer, or a nested model used twice) costs its MACs once per call, while
  its parameters are counted once.
* **Other operations** are reported separately in ``ModelStats.other_ops``
  as element counts and are *not* part of ``total_macs``:
  ``"normalization"`` (output elements of BatchNormalization and the other
  normalization layers), ``"activation"`` (output elements of activation
  layers and of fused ``activation=`` arguments), ``"pooling"`` (output
  elements times the pool window; input elements for global pooling),
  ``"elementwise"`` (``Add``/``Multiply``/... : output elements times
  ``inputs - 1``) and ``"other"`` (output elements of any other weightless
  operation that is not a pure reshaping, padding, concatenation or dropout).
* Nested models (a Functional or Sequential model used as a layer) are
  counted through their inner layers, whose rows are named ``outer/inner``.
* Layers that hold weights but have no MAC rule here (recurrent layers,
  attention, ``EinsumDense``, custom layers...) are listed in
  ``ModelStats.uncounted``: for such models ``total_macs`` is a lower bound.

This module imports only Keras, NumPy and the standard library, so it works
on the TensorFlow, JAX and PyTorch backends alike.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import time

import keras
import numpy as np

__all__ = [
    "LatencyResult",
    "LayerStats",
    "ModelStats",
    "compare",
    "count_params",
    "layer_stats",
    "measure_latency",
    "model_size_bytes",
    "model_stats",
]


# --------------------------------------------------------------------------
# Result types
# --------------------------------------------------------------------------


@dataclasses.dataclass
class LayerStats:
    """Cost of one layer (summed over all its calls in the model).

    Attributes:
        name: Layer name; inner layers of nested models are named
            ``"outer/inner"``.
        class_name: The layer's class name, e.g. ``"Conv2D"``.
        output_shape: Output shape of the layer's first call, batch axis
            included (``None``).
        channels: Size of the last output axis, or ``None``.
        params: Number of weights of the layer (trainable and not).
        macs: Multiply-accumulates for one example, summed over calls.
        other_ops: Element operations counted in ``ModelStats.other_ops``.
        calls: How many times the layer is called in the model.
    """

    name: str
    class_name: str
    output_shape: tuple | None
    channels: int | None
    params: int
    macs: int
    other_ops: int = 0
    calls: int = 1

    def to_dict(self) -> dict:
        """Return the row as a JSON-serialisable dict."""
        row = dataclasses.asdict(self)
        if self.output_shape is not None:
            row["output_shape"] = list(self.output_shape)
        return row


@dataclasses.dataclass
class ModelStats:
    """Cost summary of a model, as returned by `model_stats`.

    Attributes:
        layers: One `LayerStats` per layer, in graph order.
        total_params: All weights of the model, each counted once.
        total_macs: Multiply-accumulates of convolutions and Dense layers
            for one example.
        other_ops: Element counts of the other operations, by kind
            (``"normalization"``, ``"activation"``, ``"pooling"``,
            ``"elementwise"``, ``"other"``).
        uncounted: Names of layers that hold weights but whose MACs are not
            counted (``total_macs`` is then a lower bound).
    """

    layers: list
    total_params: int
    total_macs: int
    other_ops: dict
    uncounted: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (``json.dumps`` accepts it)."""
        return {
            "total_params": int(self.total_params),
            "total_macs": int(self.total_macs),
            "other_ops": {k: int(v) for k, v in self.other_ops.items()},
            "uncounted": list(self.uncounted),
            "layers": [row.to_dict() for row in self.layers],
        }

    def summary(self) -> str:
        """Return a plain-text table of the layers and the totals."""
        lines = [f"{'layer':<40} {'class':<22} {'params':>12} {'MACs':>14}"]
        for row in self.layers:
            lines.append(
                f"{row.name[:40]:<40} {row.class_name[:22]:<22} "
                f"{row.params:>12,} {row.macs:>14,}"
            )
        lines.append(
            f"{'total':<63} {self.total_params:>12,} {self.total_macs:>14,}"
        )
        return "\n".join(lines)


@dataclasses.dataclass
class LatencyResult:
    """Measured inference latency, as returned by `measure_latency`.

    Attributes:
        median_ms: Median wall-clock time of one forward pass, milliseconds.
        p90_ms: 90th percentile of the forward-pass times, milliseconds.
        batch_size: Examples per forward pass.
        repeats: Number of timed forward passes.
        images_per_second: Throughput at the median, ``batch_size /
            median``.
    """

    median_ms: float
    p90_ms: float
    batch_size: int
    repeats: int
    images_per_second: float

    def to_dict(self) -> dict:
        """Return the result as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# Validation and graph access
# --------------------------------------------------------------------------


def _check_model(model, what="model"):
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{what}` must be a keras.Model, got {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"`{what}` ({model.name!r}) is not built: expected a built "
            "keras.Model (create it with keras.Input or call model.build)."
        )


def _graph(model):
    """Return the Functional graph behind ``model`` (Sequential included)."""
    graph = model
    if isinstance(model, keras.Sequential):
        # A built Sequential keeps its graph in a Functional of its own.
        graph = getattr(model, "_functional", None)
    if graph is None or not hasattr(graph, "operations"):
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no layer "
            "graph: MACs need a Functional or Sequential model with known "
            "inputs (subclassed models are not supported)."
        )
    return graph


def _graph_nodes(graph):
    """Return {id(node)} of the call nodes that belong to ``graph``.

    A layer can be called in several models; only the calls reachable from
    this graph's outputs count.
    """
    seen = set()
    stack = [t._keras_history for t in keras.tree.flatten(graph.outputs)]
    while stack:
        operation, node_index, _ = stack.pop()
        if operation is None:
            continue
        node = operation._inbound_nodes[node_index]
        if id(node) in seen:
            continue
        seen.add(id(node))
        for tensor in node.input_tensors:
            history = getattr(tensor, "_keras_history", None)
            if history is not None:
                stack.append(history)
    return seen


def _shape(tensor):
    return tuple(tensor.shape)


def _prod(values):
    return int(math.prod(int(v) for v in values))


def _weights_size(layer):
    return sum(_prod(w.shape) for w in getattr(layer, "weights", []))


def _defined(shape, layer_name):
    if any(d is None for d in shape[1:]):
        raise ValueError(
            f"Layer {layer_name!r} has an undefined shape {shape}: MACs need "
            "concrete shapes. Pass `input_shape=` (without the batch axis) to "
            "model_stats/layer_stats."
        )
    return shape


# --------------------------------------------------------------------------
# Per-layer cost rules
# --------------------------------------------------------------------------

_FREE = (
    "InputLayer", "Flatten", "Reshape", "Permute", "RepeatVector",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "GaussianNoise", "AlphaDropout", "ActivityRegularization",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "Concatenate", "Identity",
    "Masking", "UpSampling1D", "Cast", "Squeeze", "ExpandDims", "Transpose",
)
_ACTIVATIONS = (
    "ReLU", "ELU", "LeakyReLU", "PReLU", "Softmax", "ThresholdedReLU",
    "Activation", "Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "Gelu",
    "Softplus", "HardSigmoid", "HardSilu", "Elu", "LeakyRelu",
)
_ELEMENTWISE = (
    "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Divide",
)


def _channel_axis(layer, rank):
    data_format = getattr(layer, "data_format", "channels_last")
    return 1 if data_format == "channels_first" else rank - 1


def _spatial(shape, layer):
    axis = _channel_axis(layer, len(shape))
    return [d for i, d in enumerate(shape) if i not in (0, axis)], shape[axis]


def _conv_macs(layer, in_shape, out_shape):
    """MACs of a convolution-like layer, or None if ``layer`` is not one."""
    L = keras.layers
    kernel = _prod(getattr(layer, "kernel_size", ()))
    groups = int(getattr(layer, "groups", 1) or 1)
    in_spatial, in_ch = _spatial(in_shape, layer)
    out_spatial, out_ch = _spatial(out_shape, layer)
    if isinstance(layer, (L.Conv1DTranspose, L.Conv2DTranspose,
                          L.Conv3DTranspose)):
        return _prod(in_spatial) * in_ch * kernel * out_ch // groups
    if isinstance(layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
        return _prod(out_spatial) * out_ch * kernel
    if isinstance(layer, (L.SeparableConv1D, L.SeparableConv2D)):
        mid = in_ch * int(layer.depth_multiplier)
        return _prod(out_spatial) * mid * (kernel + out_ch)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)):
        return _prod(out_spatial) * out_ch * kernel * in_ch // groups
    return None


def _has_activation(layer):
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(
        activation, "__name__", "linear") != "linear"


def _call_cost(layer, node, name):
    """Return (macs, other_kind, other_count) for one call of ``layer``."""
    cls = type(layer).__name__
    inputs = [_shape(t) for t in node.input_tensors]
    out_shape = _shape(node.outputs[0]) if node.outputs else ()
    if cls in _FREE or not node.outputs:
        return 0, None, 0
    out_shape = _defined(out_shape, name)
    out_elems = _prod(out_shape[1:])
    if isinstance(layer, keras.layers.Dense):
        in_shape = _defined(inputs[0], name)
        macs = _prod(in_shape[1:]) * int(layer.units)
        return macs, ("activation" if _has_activation(layer) else None), (
            out_elems if _has_activation(layer) else 0)
    if inputs and hasattr(layer, "kernel_size"):
        macs = _conv_macs(layer, _defined(inputs[0], name), out_shape)
        if macs is not None:
            act = _has_activation(layer)
            return macs, ("activation" if act else None), (
                out_elems if act else 0)
    if "Normalization" in cls:
        return 0, "normalization", out_elems
    if cls in _ACTIVATIONS:
        if cls == "Activation" and not _has_activation(layer):
            return 0, None, 0
        return 0, "activation", out_elems
    if "Pooling" in cls:
        if cls.startswith("Global"):
            return 0, "pooling", _prod(_defined(inputs[0], name)[1:])
        return 0, "pooling", out_elems * _prod(getattr(layer, "pool_size", ()))
    if cls in _ELEMENTWISE:
        return 0, "elementwise", out_elems * max(len(inputs) - 1, 1)
    return 0, "other", out_elems


def _mac_layers():
    L = keras.layers
    return (
        L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose,
        L.Conv2DTranspose, L.Conv3DTranspose, L.DepthwiseConv1D,
        L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D,
    )


def _is_counted(layer):
    """Whether a layer with weights has a MAC rule (or has no MACs)."""
    cls = type(layer).__name__
    return (
        isinstance(layer, _mac_layers())
        or "Normalization" in cls
        or cls in _ACTIVATIONS
        or cls == "Embedding"
    )


# --------------------------------------------------------------------------
# Graph walk
# --------------------------------------------------------------------------


def _with_input_shape(model, input_shape):
    """Clone ``model`` onto inputs of a concrete shape (no batch axis)."""
    shapes = input_shape
    if not isinstance(shapes, list):
        shapes = [shapes]
    try:
        inputs = [keras.Input(shape=tuple(int(d) for d in s)) for s in shapes]
    except (TypeError, ValueError):
        raise ValueError(
            "`input_shape` must be a tuple of positive ints without the batch "
            f"axis (or a list of such tuples), got {input_shape!r}."
        ) from None
    if any(d <= 0 for s in shapes for d in s):
        raise ValueError(
            f"`input_shape` must contain positive ints, got {input_shape!r}.")
    tensors = inputs if len(inputs) > 1 else inputs[0]
    return keras.models.clone_model(model, input_tensors=tensors)


def _collect(model, prefix, rows, other, uncounted):
    graph = _graph(model)
    members = _graph_nodes(graph)
    for layer in graph.operations:
        name = prefix + layer.name
        nodes = [n for n in layer._inbound_nodes if id(n) in members]
        if type(layer).__name__ == "InputLayer" or not nodes:
            continue
        if isinstance(layer, keras.Model):
            for node in nodes:
                inner = layer
                call_shapes = [_shape(t) for t in node.input_tensors]
                inner_shapes = [_shape(t) for t in
                                keras.tree.flatten(_graph(layer).inputs)]
                if any(d is None for s in inner_shapes for d in s[1:]) and \
                        len(call_shapes) == len(inner_shapes):
                    # The nested model was built for any size: retrace it on
                    # the shapes of this call.
                    shapes = [s[1:] for s in call_shapes]
                    inner = _with_input_shape(
                        layer, shapes if len(shapes) > 1 else shapes[0])
                _collect(inner, name + "/", rows, other, uncounted)
            continue
        params = _weights_size(layer)
        if params and not _is_counted(layer) and name not in uncounted:
            uncounted.append(name)
        row = rows.get(name)
        if row is None:
            out = _shape(nodes[0].outputs[0]) if nodes[0].outputs else None
            channels = out[-1] if out and len(out) >= 2 else None
            row = rows[name] = LayerStats(
                name=name, class_name=type(layer).__name__, output_shape=out,
                channels=None if channels is None else int(channels),
                params=params, macs=0, other_ops=0, calls=0)
        for node in nodes:
            macs, kind, count = _call_cost(layer, node, name)
            row.macs += int(macs)
            row.calls += 1
            if kind is not None and count:
                row.other_ops += int(count)
                other[kind] = other.get(kind, 0) + int(count)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def count_params(model) -> int:
    """Count all weights of a model, trainable and not, each once.

    Args:
        model: A built `keras.Model`.

    Returns:
        The number of scalar weights.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    >>> count_params(model)
    15
    """
    _check_model(model)
    unique = {id(w): w for w in model.weights}
    return sum(_prod(w.shape) for w in unique.values())


def layer_stats(model, input_shape=None) -> list:
    """Return the cost of every layer of a model (see the module docstring).

    Args:
        model: A built Functional or Sequential `keras.Model`.
        input_shape: Optional shape of one example (no batch axis), or a
            list of shapes for a multi-input model. Needed when the model's
            inputs have undefined dimensions, e.g. ``(None, None, 3)``.

    Returns:
        A list of `LayerStats`, in graph order.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    >>> rows = layer_stats(keras.Model(inputs, x))
    >>> (rows[0].name, rows[0].params, rows[0].macs)
    ('conv', 112, 6912)
    """
    return model_stats(model, input_shape=input_shape).layers


def model_stats(model, input_shape=None) -> ModelStats:
    """Count the parameters, MACs and other operations of a model.

    See the module docstring for the exact counting convention.

    Args:
        model: A built Functional or Sequential `keras.Model`.
        input_shape: Optional shape of one example (no batch axis), or a
            list of shapes for a multi-input model; the model is then traced
            on inputs of that shape. Needed when the model's inputs have
            undefined dimensions.

    Returns:
        A `ModelStats`.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    >>> x = keras.layers.BatchNormalization()(x)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> outputs = keras.layers.Dense(2)(x)
    >>> stats = model_stats(keras.Model(inputs, outputs))
    >>> stats.total_params, stats.total_macs  # 112 + 16 + 10; 6912 + 8
    (138, 6920)
    >>> stats.other_ops
    {'normalization': 256, 'pooling': 256}
    """
    _check_model(model)
    traced = model
    if input_shape is not None:
        traced = _with_input_shape(model, input_shape)
    rows, other, uncounted = {}, {}, []
    _collect(traced, "", rows, other, uncounted)
    return ModelStats(
        layers=list(rows.values()),
        total_params=count_params(model),
        total_macs=sum(row.macs for row in rows.values()),
        other_ops=other,
        uncounted=uncounted,
    )


def compare(before, after) -> dict:
    """Compare the cost of a model before and after pruning.

    Ratios are ``after / before`` (the fraction kept), reductions are
    ``1 - ratio`` (the fraction removed) and compressions are ``before /
    after`` (how many times smaller). A ratio with a zero denominator is
    ``None``.

    Args:
        before: `ModelStats` (or a built keras.Model) of the original model.
        after: `ModelStats` (or a built keras.Model) of the pruned model.

    Returns:
        A dict with, for ``params`` and ``macs``: ``<x>_before``,
        ``<x>_after``, ``<x>_ratio``, ``<x>_reduction`` and
        ``<x>_compression``.

    Example:

    >>> import keras
    >>> def net(width):
    ...     inputs = keras.Input((8, 8, 3))
    ...     return keras.Model(inputs, keras.layers.Conv2D(width, 3)(inputs))
    >>> report = compare(model_stats(net(8)), model_stats(net(4)))
    >>> report["params_ratio"], report["macs_reduction"]
    (0.5, 0.5)
    """
    stats = []
    for label, value in (("before", before), ("after", after)):
        if isinstance(value, keras.Model):
            value = model_stats(value)
        if not isinstance(value, ModelStats):
            raise TypeError(
                f"`{label}` must be a ModelStats or a keras.Model, got "
                f"{type(value).__name__}.")
        stats.append(value)
    report = {}
    for key, attr in (("params", "total_params"), ("macs", "total_macs")):
        b, a = getattr(stats[0], attr), getattr(stats[1], attr)
        ratio = a / b if b else None
        report[f"{key}_before"] = int(b)
        report[f"{key}_after"] = int(a)
        report[f"{key}_ratio"] = ratio
        report[f"{key}_reduction"] = None if ratio is None else 1.0 - ratio
        report[f"{key}_compression"] = b / a if a else None
    return report


def model_size_bytes(model) -> int:
    """Return the size in bytes of the model saved as a ``.keras`` file.

    The model is saved to a temporary directory, measured and deleted.

    Args:
        model: A built `keras.Model`.

    Returns:
        The file size in bytes.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    >>> model_size_bytes(model) > 0
    True
    """
    _check_model(model)
    with tempfile.TemporaryDirectory(prefix="ridurre_size_") as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        return os.path.getsize(path)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"`{name}` must be {kind}, got {value!r}.")
    return int(value)


def measure_latency(model, batch_size=1, input_shape=None, warmup=3,
                    repeats=20, compiled=False) -> LatencyResult:
    """Measure the wall-clock inference time of ``model(x, training=False)``.

    With ``compiled=True`` the compiled forward pass (``model.predict_on_batch``: a
    ``tf.function`` on TensorFlow, a jitted function on JAX) is timed instead, which is what
    deployed inference runs; on small models the eager call mostly times Python overhead.

    The input is random float32 data (``np.random.default_rng(0)``). After
    ``warmup`` untimed calls, each of ``repeats`` calls is timed with
    ``time.perf_counter``, including the conversion of the outputs to NumPy
    (which waits for asynchronous backends such as JAX).

    Args:
        model: A built `keras.Model`.
        batch_size: Examples per forward pass (positive int).
        input_shape: Shape of one example without the batch axis (a list of
            shapes for multi-input models). Defaults to the model's input
            shape, which must then be fully defined.
        warmup: Untimed calls before timing (int >= 0).
        repeats: Timed calls (positive int).
        compiled: Time ``model.predict_on_batch`` instead of the eager call.

    Returns:
        A `LatencyResult`.

    Example:

    >>> import keras
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    >>> result = measure_latency(model, batch_size=8, repeats=5)
    >>> result.median_ms > 0 and result.batch_size == 8
    True
    """
    _check_model(model)
    batch_size = _check_int(batch_size, "batch_size", 1)
    warmup = _check_int(warmup, "warmup", 0)
    repeats = _check_int(repeats, "repeats", 1)
    if input_shape is None:
        shapes = [_shape(t)[1:] for t in keras.tree.flatten(model.inputs)]
        if any(d is None for s in shapes for d in s):
            raise ValueError(
                f"Model {model.name!r} has undefined input dimensions {shapes}:"
                " pass `input_shape` (without the batch axis).")
    else:
        shapes = input_shape if isinstance(input_shape, list) else [
            input_shape]
        for s in shapes:
            if not all(isinstance(d, (int, np.integer)) and d > 0 for d in s):
                raise ValueError(
                    "`input_shape` must be a tuple of positive ints without "
                    f"the batch axis, got {input_shape!r}.")
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((batch_size, *s)).astype("float32")
          for s in shapes]
    x = xs if len(xs) > 1 else xs[0]

    def run():
        outputs = model.predict_on_batch(x) if compiled else model(x, training=False)
        for tensor in keras.tree.flatten(outputs):
            keras.ops.convert_to_numpy(tensor)

    for _ in range(warmup):
        run()
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        run()
        times[i] = (time.perf_counter() - start) * 1000.0
    median = float(np.median(times))
    return LatencyResult(
        median_ms=median,
        p90_ms=float(np.percentile(times, 90)),
        batch_size=batch_size,
        repeats=repeats,
        images_per_second=batch_size * 1000.0 / median if median > 0 else
        float("inf"),
    )
