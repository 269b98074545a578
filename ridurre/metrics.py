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
    Dense applied to a ``(T, D)`` tensor costs ``T * D * units``;
  - ``SimpleRNN``/``GRU``/``LSTM``: ``steps * gates * units * (inputs +
    units)`` (gates 1, 3, 4: the kernel and recurrent-kernel products of every
    time step); ``ConvLSTM1D/2D/3D`` the same times the output positions and
    the kernel window; ``Bidirectional`` both directions; ``TimeDistributed``
    the wrapped layer's MACs times the steps; ``Embedding`` none (a lookup).
  - ``EinsumDense``: the product of the sizes of every axis of its equation
    (batch excepted): ``T * D * units`` for ``"btd,du->btu"``;
  - ``MultiHeadAttention`` and ``GroupQueryAttention``: the query, key, value
    (and gate) projections and the output projection, plus the attention
    products ``heads * T * S * (key_dim + value_dim)`` for the traced target
    and source lengths T and S (see :mod:`ridurre.rules.attention`); their
    softmax counts as ``"activation"`` work.

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
* Every count is asked of the layer's rule (:mod:`ridurre.rules`: ``macs``,
  ``cost`` and ``other_ops``), the same table that says how channels flow, so
  a layer taught with ``register_rule`` is counted too. Layers that hold
  weights but have no rule (custom layers...) are listed in
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

from ridurre import _compat
from ridurre._validation import check_int as _check_int
from ridurre.rules import LayerRule, as_rule_set

__all__ = [
    "LatencyResult",
    "LayerStats",
    "ModelStats",
    "compare",
    "count_params",
    "layer_stats",
    "backend_threads",
    "keras_runner",
    "measure_latency",
    "measure_runners",
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
            lines.append(f"{row.name[:40]:<40} {row.class_name[:22]:<22} {row.params:>12,} {row.macs:>14,}")
        lines.append(f"{'total':<63} {self.total_params:>12,} {self.total_macs:>14,}")
        return "\n".join(lines)


@dataclasses.dataclass
class LatencyResult:
    """Measured inference latency, as returned by `measure_latency` and `measure_runners`.

    Attributes:
        median_ms: Median wall-clock time of one forward pass, milliseconds (over every timed
            call of every round).
        p90_ms: 90th percentile of the forward-pass times, milliseconds.
        batch_size: Examples per forward pass.
        repeats: Number of timed forward passes (all rounds together).
        images_per_second: Throughput at the median, ``batch_size / median``.
        spread_ms: Interquartile range (75th - 25th percentile) of the timed calls, milliseconds.
        rounds: Interleaved rounds the calls were timed in.
        threads: CPU threads the runtime was allowed (``None``: not known).
        runtime: What ran the model: ``"keras"``, ``"litert"``, ``"onnx"``, ``"saved_model"``...
        min_ms: The fastest timed call, milliseconds: on a shared machine, where other jobs only
            ever add time, the least disturbed estimate of the work itself.
    """

    median_ms: float
    p90_ms: float
    batch_size: int
    repeats: int
    images_per_second: float
    spread_ms: float = 0.0
    rounds: int = 1
    threads: int | None = None
    runtime: str = "keras"
    min_ms: float | None = None

    def to_dict(self) -> dict:
        """Return the result as a JSON-serialisable dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# Validation and graph access
# --------------------------------------------------------------------------


def _check_model(model, what="model"):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{what}` must be a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"`{what}` ({model.name!r}) is not built: expected a built "
            "keras.Model (create it with keras.Input or call model.build)."
        )


def _graph(model):
    """Return the Functional graph behind ``model`` (Sequential included)."""
    graph = _compat.functional_of(model)
    if graph is None:
        raise ValueError(
            f"Model {model.name!r} ({type(model).__name__}) has no layer "
            "graph: MACs need a Functional or Sequential model with known "
            "inputs (subclassed models are not supported)."
        )
    return graph


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
# Per-call cost: asked of the layer's rule (ridurre.rules)
# --------------------------------------------------------------------------


def _call_cost(layer, rule, call, name):
    """Return (macs, other_kind, other_count) for one call of ``layer``."""
    if not call.outputs or (rule is not None and rule.cost == "free" and not rule.produces):
        return 0, None, 0
    in_shapes = [_shape(t) for t in call.channel_inputs()]
    out_shapes = [_defined(_shape(t), name) for t in call.outputs]
    if rule is None:
        return 0, "other", _prod(out_shapes[0][1:])
    if rule.call_inputs is not None:  # the rule names its inputs (query, value, key): in that order
        positions, _ = call.input_positions(rule.call_inputs)
        in_shapes = [None if i is None else in_shapes[i] for i in positions]
    if rule.produces or type(rule).macs is not LayerRule.macs:
        in_shapes = [None if s is None else _defined(s, name) for s in in_shapes]
    elif rule.cost == "pooling":
        in_shapes = [_defined(s, name) for s in in_shapes[:1]]
    macs = int(rule.macs(layer, in_shapes, out_shapes))
    count = int(rule.other_ops(layer, in_shapes, out_shapes))
    kind = rule.cost if count and rule.cost != "free" else None
    return macs, kind, count if kind else 0


# --------------------------------------------------------------------------
# Graph walk
# --------------------------------------------------------------------------


def _with_input_shape(model, input_shape):
    """Clone ``model`` onto inputs of a concrete shape (no batch axis), in the structure and
    dtypes of its own inputs (a dict of token ids, for a keras-hub text backbone)."""
    shapes = input_shape
    if not isinstance(shapes, list):
        shapes = [shapes]
    structure = _compat.inputs_structure(model) if _compat.is_graph_model(model) else None
    originals = keras.tree.flatten(structure) if structure is not None else []
    dtypes = [t.dtype for t in originals] if len(originals) == len(shapes) else [None] * len(shapes)
    try:
        inputs = [keras.Input(shape=tuple(int(d) for d in s), dtype=dtype) for s, dtype in zip(shapes, dtypes)]
    except (TypeError, ValueError):
        raise ValueError(
            "`input_shape` must be a tuple of positive ints without the batch "
            f"axis (or a list of such tuples), got {input_shape!r}."
        ) from None
    if any(d <= 0 for s in shapes for d in s):
        raise ValueError(f"`input_shape` must contain positive ints, got {input_shape!r}.")
    if len(originals) == len(inputs) and not isinstance(model, keras.Sequential):
        tensors = keras.tree.pack_sequence_as(structure, inputs)
    else:
        tensors = inputs if len(inputs) > 1 else inputs[0]
    return keras.models.clone_model(model, input_tensors=tensors)


def _collect(model, prefix, rows, other, uncounted, rules):
    graph = _graph(model)
    calls = {}
    for call in _compat.calls(graph):
        calls.setdefault(id(call.operation), []).append(call)
    for layer in graph.operations:
        name = prefix + layer.name
        layer_calls = calls.get(id(layer))
        if not layer_calls:
            continue
        if _compat.is_graph_model(layer):
            for call in layer_calls:
                inner = layer
                call_shapes = [_shape(t) for t in call.inputs]
                inner_shapes = [_shape(t) for t in keras.tree.flatten(_graph(layer).inputs)]
                if any(d is None for s in inner_shapes for d in s[1:]) and len(call_shapes) == len(inner_shapes):
                    # The nested model was built for any size: retrace it on
                    # the shapes of this call.
                    shapes = [s[1:] for s in call_shapes]
                    inner = _with_input_shape(layer, shapes if len(shapes) > 1 else shapes[0])
                _collect(inner, name + "/", rows, other, uncounted, rules)
            continue
        rule = rules.get(layer)
        params = _weights_size(layer)
        if params and rule is None and name not in uncounted:
            uncounted.append(name)
        row = rows.get(name)
        if row is None:
            outputs = layer_calls[0].outputs
            out = _shape(outputs[0]) if outputs else None
            channels = out[-1] if out and len(out) >= 2 else None
            row = rows[name] = LayerStats(
                name=name,
                class_name=type(layer).__name__,
                output_shape=out,
                channels=None if channels is None else int(channels),
                params=params,
                macs=0,
                other_ops=0,
                calls=0,
            )
        for call in layer_calls:
            macs, kind, count = _call_cost(layer, rule, call, name)
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


def layer_stats(model, input_shape=None, rules=None) -> list:
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
    return model_stats(model, input_shape=input_shape, rules=rules).layers


def model_stats(model, input_shape=None, rules=None) -> ModelStats:
    """Count the parameters, MACs and other operations of a model.

    See the module docstring for the exact counting convention.

    Args:
        model: A built Functional or Sequential `keras.Model`.
        input_shape: Optional shape of one example (no batch axis), or a
            list of shapes for a multi-input model; the model is then traced
            on inputs of that shape. Needed when the model's inputs have
            undefined dimensions.
        rules: extra layer rules for this call (see :mod:`ridurre.rules`).

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
    _collect(traced, "", rows, other, uncounted, as_rule_set(rules))
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
            raise TypeError(f"`{label}` must be a ModelStats or a keras.Model, got {type(value).__name__}.")
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


def _input_shapes(model, input_shape):
    """The shapes (no batch axis) of ``model``'s inputs, checked; ``input_shape`` overrides them."""
    if input_shape is None:
        shapes = [_shape(t)[1:] for t in keras.tree.flatten(model.inputs)]
        if any(d is None for s in shapes for d in s):
            raise ValueError(
                f"Model {model.name!r} has undefined input dimensions {shapes}:"
                " pass `input_shape` (without the batch axis)."
            )
        return shapes
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    for s in shapes:
        if not isinstance(s, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in s
        ):
            raise ValueError(
                f"`input_shape` must be a tuple of positive ints without the batch axis, got {input_shape!r}."
            )
    return [tuple(int(d) for d in s) for s in shapes]


def random_inputs(shapes, batch_size, seed=0, dtypes=None):
    """Random inputs of the given shapes (no batch axis): float32 normal values, or token ids 0
    and 1 (valid for any vocabulary) where ``dtypes`` says an input is an integer one.

    Example:
        >>> import keras
        >>> tokens = keras.Input((5,), dtype="int32")
        >>> x, = random_inputs([(5,)], 4, dtypes=input_dtypes(keras.Model(tokens, tokens)))
        >>> x.dtype, x.shape, int(x.max()) <= 1
        (dtype('int32'), (4, 5), True)
    """
    rng = np.random.default_rng(seed)
    dtypes = dtypes or ["float32"] * len(shapes)
    return [
        rng.integers(0, 2, (batch_size, *s)).astype(d)
        if np.dtype(d).kind in "iu"
        else rng.standard_normal((batch_size, *s)).astype("float32")
        for s, d in zip(shapes, dtypes)
    ]


def input_dtypes(model) -> list[str]:
    """The dtype of each of ``model``'s inputs (``"float32"``, ``"int32"`` for token ids...).

    Example:
        >>> import keras
        >>> tokens = keras.Input((5,), dtype="int32")
        >>> input_dtypes(keras.Model(tokens, keras.layers.Embedding(10, 2)(tokens)))
        ['int32']
    """
    return [str(getattr(t, "dtype", "float32")) for t in keras.tree.flatten(model.inputs)]


def backend_threads() -> int | None:
    """CPU threads the Keras backend uses for one operation (``None`` when it does not say).

    Example:
        >>> threads = backend_threads()
        >>> threads is None or threads >= 1
        True
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
    if keras.backend.backend() == "torch":
        import torch

        return torch.get_num_threads()
    return None


def keras_runner(model, compiled=True):
    """A function ``run(inputs) -> [numpy outputs]`` timing-ready for `measure_runners`.

    ``inputs`` is the list of input arrays. With ``compiled=True`` it calls
    ``model.predict_on_batch`` (a ``tf.function`` on TensorFlow, a jitted function on JAX), which
    is what deployed inference runs; otherwise the eager ``model(x, training=False)``. Outputs
    are converted to NumPy, which waits for asynchronous backends. The function has the
    attributes ``runtime = "keras"`` and ``threads`` (:func:`backend_threads`).

    Example:
        >>> import keras, numpy as np
        >>> inputs = keras.Input((4,))
        >>> run = keras_runner(keras.Model(inputs, keras.layers.Dense(3)(inputs)))
        >>> [o.shape for o in run([np.zeros((2, 4), "float32")])], run.runtime
        ([(2, 3)], 'keras')
    """
    _check_model(model)

    def run(inputs):
        x = inputs if len(inputs) > 1 else inputs[0]
        outputs = model.predict_on_batch(x) if compiled else model(x, training=False)
        return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(outputs)]

    run.runtime = "keras"
    run.threads = backend_threads()
    return run


def _time_calls(fn, inputs, repeats):
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn(inputs)
        times[i] = (time.perf_counter() - start) * 1000.0
    return times


def _result(times, batch_size, rounds, runner):
    median = float(np.median(times))
    q25, q75, p90 = np.percentile(times, [25, 75, 90])
    return LatencyResult(
        median_ms=median,
        p90_ms=float(p90),
        batch_size=batch_size,
        repeats=len(times),
        images_per_second=batch_size * 1000.0 / median if median > 0 else float("inf"),
        spread_ms=float(q75 - q25),
        rounds=rounds,
        threads=getattr(runner, "threads", None),
        runtime=getattr(runner, "runtime", "custom"),
        min_ms=float(np.min(times)),
    )


def measure_runners(
    runners,
    input_shapes,
    batch_sizes=(1, 32),
    rounds=5,
    budget=0.25,
    warmup=2,
    seed=0,
    on_round=None,
    input_dtypes=None,
) -> dict:
    """Time several ways of running models side by side: interleaved rounds, median and spread.

    For each batch size, every runner is warmed up, its number of calls per round is chosen so
    that one round takes about ``budget`` seconds (3 to 50 calls), and then ``rounds`` rounds
    are run in which each runner takes its turn. A busy machine thus slows every runner alike
    and their ratios stay meaningful. Each result pools the calls of all rounds.

    Args:
        runners: ``{name: run}``, ``run(inputs)`` taking the list of input arrays (e.g.
            :func:`keras_runner`, or a runtime of :mod:`ridurre.deploy`). Its ``runtime`` and
            ``threads`` attributes, when present, are stated in the results.
        input_shapes: the shape of one example (no batch axis), or a list of them, one per input.
        batch_sizes: the batch sizes to time.
        rounds: interleaved rounds (positive int).
        budget: seconds per runner per round, roughly.
        warmup: untimed calls before timing (int >= 0).
        seed: seed of the random float32 inputs (the same inputs for every runner).
        on_round: optional ``fn()`` called after each runner's turn (progress bars).
        input_dtypes: the dtype of each input (default float32); integer inputs get token ids
            (:func:`random_inputs`).

    Returns:
        ``{name: {batch_size: LatencyResult}}``.

    Example:
        >>> import keras
        >>> inputs = keras.Input((16,))
        >>> wide = keras.Model(inputs, keras.layers.Dense(256)(inputs))
        >>> narrow = keras.Model(inputs, keras.layers.Dense(8)(inputs))
        >>> runs = {"wide": keras_runner(wide), "narrow": keras_runner(narrow)}
        >>> out = measure_runners(runs, (16,), batch_sizes=(4,), rounds=2, budget=0.01)
        >>> sorted(out), out["wide"][4].rounds, out["wide"][4].runtime
        (['narrow', 'wide'], 2, 'keras')
    """
    if not isinstance(runners, dict) or not runners or not all(callable(r) for r in runners.values()):
        raise TypeError("`runners` must be a non-empty dict {name: callable(inputs)}.")
    shapes = input_shapes if isinstance(input_shapes, list) else [input_shapes]
    shapes = [tuple(int(d) for d in s) for s in shapes]
    rounds = _check_int(rounds, "rounds", 1)
    warmup = _check_int(warmup, "warmup", 0)
    batch_sizes = [_check_int(b, "batch_sizes", 1) for b in batch_sizes]
    out = {name: {} for name in runners}
    for batch in batch_sizes:
        inputs = random_inputs(shapes, batch, seed, input_dtypes)
        repeats = {}
        for name, run in runners.items():
            for _ in range(warmup):
                run(inputs)
            probe = float(np.median(_time_calls(run, inputs, 3)))
            repeats[name] = int(np.clip(budget * 1000.0 / max(probe, 1e-3), 3, 50))
        times = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                times[name].append(_time_calls(run, inputs, repeats[name]))
                if on_round is not None:
                    on_round()
        for name, run in runners.items():
            out[name][batch] = _result(np.concatenate(times[name]), batch, rounds, run)
    return out


def measure_latency(model, batch_size=1, input_shape=None, warmup=3, repeats=20, compiled=False) -> LatencyResult:
    """Measure the wall-clock inference time of ``model(x, training=False)``.

    With ``compiled=True`` the compiled forward pass (``model.predict_on_batch``: a
    ``tf.function`` on TensorFlow, a jitted function on JAX) is timed instead, which is what
    deployed inference runs; on small models the eager call mostly times Python overhead.

    The input is random float32 data (``np.random.default_rng(0)``; token ids 0 and 1 for an
    integer input, such as an Embedding's). After
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
    run = keras_runner(model, compiled=compiled)
    inputs = random_inputs(_input_shapes(model, input_shape), batch_size, dtypes=input_dtypes(model))
    for _ in range(warmup):
        run(inputs)
    return _result(_time_calls(run, inputs, repeats), batch_size, 1, run)
