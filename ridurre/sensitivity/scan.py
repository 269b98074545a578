"""Per-layer pruning sensitivity: scan, ratio choice, and a pruning method that uses them.

:func:`scan` removes, for every prunable layer and every ratio (0.1 ... 0.9 by default), that
share of the layer's channels (chosen by a criterion: L1 by default) and evaluates a metric on
VALIDATION data. A "layer" is a channel group labelled by its first producer (see
:func:`ridurre.channel_groups`): the two convolutions of a residual pair are one layer here,
because their channels can only be removed together; the classifier is never prunable.

How a point is evaluated:

* without ``finetune_fn`` (fast): with MASKS on ONE working copy of the model. The channels'
  weights are zeroed in place exactly as :func:`ridurre.surgeon.zero_channels` does (the
  producing kernels and biases, the BatchNormalization that follows, the consumers' input
  weights), the metric is evaluated, and the touched layers get their weights back. No model
  is rebuilt or recompiled, so nothing is retraced (``bench/sensitivity_scan.py`` measures
  the speed-up against rebuilding every point). The zeroed model computes exactly what the
  pruned model computes, EXCEPT where the channels pass through a LayerNormalization or an
  RMS norm (``ChannelGroup.exact`` is False): their statistics are taken over the channel axis,
  and a zeroed channel still counts there while a deleted one does not. The points of those
  layers are approximations: the result lists them in ``SensitivityResult.approximate`` and the
  scan warns (a scan with ``finetune_fn`` rebuilds every point and is not affected).
* with ``finetune_fn(model)``: every point is a real model rebuilt by the surgeon, recompiled
  with the model's compile config (or ``compile_fn``), fine-tuned, then evaluated.

:func:`choose_ratios` picks, per layer, the largest ratio whose metric stays within
``max_drop`` of the baseline; :class:`SensitivityPruning` prunes every layer to its ratio. Both
the scan and the choice use the validation split: choosing on the test split (as the original
tool did) would make the reported test accuracy optimistic. Keep the test split for the final
report only.

Example:
    >>> import keras, numpy as np
    >>> from ridurre.sensitivity import scan, choose_ratios
    >>> x = keras.Input((6,))
    >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(8, name="h")(x)))
    >>> model.compile(loss="mse")
    >>> xv, yv = np.ones((8, 6), "float32"), np.zeros((8, 2), "float32")
    >>> result = scan(model, xv, yv, ratios=[0.5], progress=False)
    >>> result.layers, result.metric_name, result.points[0].channels_removed
    (['h'], 'loss', 4)
    >>> sorted(choose_ratios(result, max_drop=10.0))
    ['h']
"""

from __future__ import annotations

import logging
import numbers
import os
import re
import sys

import keras
import numpy as np

from ridurre import graph as _graph
from ridurre._progress import Progress
from ridurre._validation import LayerPatterns, check_callable, check_int
from ridurre.criteria import Criterion, criterion_class, make_criterion
from ridurre.criteria import selection as _selection
from ridurre.criteria.view import ActivationRecorder, GroupView
from ridurre.graph import set_layer_weights
from ridurre.rules import HEAD_KINDS
from ridurre.sensitivity.result import SensitivityPoint, SensitivityResult
from ridurre.surgery import Surgeon, plan_layers

__all__ = [
    "DEFAULT_RATIOS",
    "scan",
    "channels_to_remove",
    "criterion_for",
    "check_ratios",
    "group_of",
    "ChannelChooser",
]

logger = logging.getLogger("ridurre")

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_LOWER_IS_BETTER = re.compile(r"(^|_)(loss|error|mse|mae|mape|msle|rmse)$")


# -- validation ------------------------------------------------------------------------------
def check_ratios(ratios, name="ratios"):
    """Sorted distinct ratios in (0, 1) from a number or a sequence; ``ValueError`` naming ``name``.

    Example:
        >>> check_ratios([0.5, 0.1, 0.5])
        [0.1, 0.5]
    """
    values = [ratios] if isinstance(ratios, numbers.Real) else ratios
    try:
        values = list(values)
    except TypeError:
        raise ValueError(f"{name} must be a number or a sequence of numbers in (0, 1), got {ratios!r}") from None
    for r in values:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0.0 < r < 1.0:
            raise ValueError(f"{name} must hold numbers in (0, 1) (a share of a layer's channels), got {r!r}")
    if not values:
        raise ValueError(f"{name} must hold at least one ratio")
    return sorted({round(float(r), 6) for r in values})


def criterion_for(criterion, data=None, labels=None):
    """The :class:`~ridurre.criteria.Criterion` a scan (or :class:`SensitivityPruning`) uses.

    Args:
        criterion: a registered name or alias (``"l1"``, ``"bn"``...), a Criterion class or
            instance.
        data: a sample of inputs, for criteria that need data (activations, gradients).
        labels: the targets of ``data``, for criteria that take loss gradients (Taylor, Hessian).

    Raises:
        ValueError: an unknown name, or no data for a criterion that needs it.

    Example:
        >>> criterion_for("bn").name
        'bn_scale'
    """
    if isinstance(criterion, Criterion):
        return criterion
    cls = criterion_class(criterion) if isinstance(criterion, str) else criterion
    needs = cls.needs if isinstance(cls, type) and issubclass(cls, Criterion) else ()
    options = {"data": data} if "data" in needs else {}
    if "gradients" in needs:
        options["labels"] = labels
    return make_criterion(criterion, **options)


def _needs_gradients(criterion):
    cls = criterion_class(criterion) if isinstance(criterion, str) else criterion
    return "gradients" in getattr(cls, "needs", ())


def _lower_is_better(name):
    return bool(_LOWER_IS_BETTER.search(name))


# -- channel choice ----------------------------------------------------------------------------
class ChannelChooser:
    """The channels of one group a criterion removes, for any count: a criterion that only scores
    is scored once; one that picks a set (KMeans) picks for every count."""

    def __init__(self, view, criterion):
        self.view, self.criterion = view, criterion
        self.scores = None
        if type(criterion).select is Criterion.select:
            self.scores = np.asarray(criterion.score(view), dtype=np.float64)

    def __call__(self, n_remove):
        """Sorted group channel indices to remove."""
        if n_remove <= 0:
            return np.array([], dtype=np.int64)
        if self.scores is None:
            return np.sort(np.asarray(self.criterion.select(self.view, n_remove), dtype=np.int64))
        return np.sort(_selection.select_lowest(self.scores, n_remove))


def _n_remove(size, ratio, round_to=None):
    wanted = _selection.channels_to_keep(size, 1.0 - ratio)[1]
    return _selection.removal_count(size, wanted, round_to=round_to)


def _positions(group, idx, path=None):
    channels = group.channels_of(path or group.producers[0])
    return sorted(int(p) for j in idx for p in channels[j])


def group_of(trace, layer):
    """The channel group of ``trace`` that the producer ``layer`` (a path or a name) belongs to."""
    for group in trace.groups():
        if layer in group.producers or layer in [p.rsplit("/", 1)[-1] for p in group.producers]:
            return group
    raise ValueError(
        f"layer {layer!r} produces no channels of the model (labels of the prunable layers: "
        f"{[g.producers[0] for g in trace.groups() if g.prunable]})"
    )


def channels_to_remove(model, layer, ratio, criterion="l1", *, data=None, seed=0, round_to=None, rules=None):
    """The output channels of ``layer`` that a scan removes at ``ratio`` (to reproduce a point).

    Args:
        model: a Functional or Sequential model.
        layer: the name of a producer (Conv, Dense) of a prunable channel group.
        ratio: share of the group's channels to remove, in (0, 1).
        criterion: as in :func:`scan`.
        data: input sample for the activation criteria.
        seed, round_to, rules: as in :func:`scan`.

    Returns:
        Sorted list of output positions of ``layer``; ``delete_channels(model, layer, it)``
        builds the pruned model of that point.

    Example:
        >>> import keras, numpy as np
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(4, name="h")(x)))
        >>> model.get_layer("h").set_weights([np.diag([1.0, 3.0, 2.0, 4.0]), np.zeros(4)])
        >>> channels_to_remove(model, "h", 0.5)
        [0, 2]
    """
    ratio = check_ratios([ratio], "ratio")[0]
    criterion = criterion_for(criterion, data)
    trace = _graph.trace_model(model, rules=rules)
    group = group_of(trace, layer)
    if not group.prunable:
        raise ValueError(f"the channels of layer {layer!r} cannot be pruned: {group.reason}")
    view = GroupView(group, trace, model, seed)
    idx = ChannelChooser(view, criterion)(_n_remove(group.size, ratio, None if group.kind in HEAD_KINDS else round_to))
    path = next(p for p in group.producers if p == layer or p.rsplit("/", 1)[-1] == layer)
    return _positions(group, idx, path)


class _Masker:
    """Zeroes channels of one group on the working copy and restores the touched layers.

    The zeroed weights are those of ``plan_layers(trace, deleted, zero=True)`` (each touched
    layer's rule's ``zero``), planned for the touched layers only.
    """

    def __init__(self, trace, group):
        self.trace = trace
        self.uses = []
        for use in trace.uses.values():
            if use.rule is None or not getattr(use.layer, "weights", None) or use.model_in_layouts is not None:
                continue
            layouts = list(use.in_layouts) + list(use.out_layouts) + list(use.internal.values())
            roots = [trace.units.roots(lay) for lay in layouts if lay is not None]
            if any(np.isin(r, group.roots).any() for r in roots):
                self.uses.append(use)
        self.original = [use.layer.get_weights() for use in self.uses]

    def apply(self, deleted):
        plans = plan_layers(self.trace, deleted, zero=True, uses=self.uses)
        for use in self.uses:
            set_layer_weights(use.layer, plans[id(use.layer)][1])

    def restore(self):
        for use, values in zip(self.uses, self.original):
            use.layer.set_weights(values)


def _evaluation_inputs(x, y, batch_size):
    """``model.evaluate`` keyword arguments. On TensorFlow, numpy arrays are wrapped once in a
    batched ``tf.data.Dataset``: evaluating arrays rebuilds an input pipeline at every call
    (about 0.3 s, more than a small model's whole evaluation)."""
    tf = sys.modules.get("tensorflow")
    arrays = all(isinstance(a, np.ndarray) for a in keras.tree.flatten((x, y)) if a is not None)
    if tf is None or keras.backend.backend() != "tensorflow" or not arrays:
        return {"x": x, "y": y, "batch_size": batch_size}
    x = tuple(x) if isinstance(x, list) else x  # several inputs: a tuple, not one stacked tensor
    dataset = tf.data.Dataset.from_tensor_slices(x if y is None else (x, y)).batch(batch_size)
    return {"x": dataset.prefetch(2)}


# -- the scan --------------------------------------------------------------------------------
def scan(
    model,
    x_val,
    y_val=None,
    *,
    ratios=DEFAULT_RATIOS,
    layers=None,
    criterion="l1",
    metric=None,
    metric_fn=None,
    higher_is_better=None,
    finetune_fn=None,
    compile_fn=None,
    data=None,
    labels=None,
    batch_size=128,
    seed=0,
    output_dir=None,
    resume=False,
    progress=True,
    round_to=None,
    rules=None,
):
    """Measure how the validation metric falls as each layer loses a share of its channels.

    Args:
        model: a trained Functional or Sequential model (never modified). Compiled, unless
            ``metric_fn`` (and, with ``finetune_fn``, ``compile_fn``) is given.
        x_val, y_val: VALIDATION data (never the test split: the ratios are chosen on it).
        ratios: shares of each layer's channels to remove, in (0, 1); a layer of n channels
            keeps ``ceil(n * (1 - ratio))``.
        layers: regular expressions (full match) selecting layers by label or producer name;
            ``None``: every prunable layer (channel group with at least 2 channels). The heads
            and head dimensions of an attention layer ``mha`` are scanned as the layers
            ``"mha:heads"``, ``"mha:head_dims"``...
        criterion: which channels go: any criterion of :mod:`ridurre.criteria` by name
            (``l1``, the default, ``l2``, ``random``, ``kmeans``, ``bn`` / ``bn_scale``,
            ``activation_mean``, ``apoz``, or one you registered), class or instance; the
            criteria that score activations need ``data``.
        metric: the name of a compiled metric to read from ``model.evaluate`` (default: the
            first compiled metric, or the loss when there is none).
        metric_fn: ``fn(model, x_val, y_val) -> float`` evaluated instead.
        higher_is_better: default: False when the metric name is a loss or an error.
        finetune_fn: ``fn(model)`` fine-tuning each pruned model before evaluation; every point
            is then a real pruned model, rebuilt and recompiled (slow).
        compile_fn: ``fn(model)`` compiling rebuilt models (default: the model's compile config).
        data: input sample for the activation and gradient criteria (gradient criteria default to
            ``x_val``, ``y_val``).
        labels: the targets of ``data``, for the gradient criteria (Taylor, Hessian).
        batch_size: evaluation batch size.
        seed: seeds the random and kmeans criteria.
        output_dir: write ``sensitivity.csv`` and ``sensitivity.json`` there after every point.
        resume: skip the points (and the baseline) already in ``output_dir/sensitivity.csv``.
        progress: show a progress bar (on stderr).
        round_to: keep a multiple of this many channels (the count of a point is rounded the
            way the pruning loop rounds it; attention heads are not rounded).
        rules: extra layer rules (see :mod:`ridurre.rules`).

    Returns:
        A :class:`SensitivityResult`.

    Raises:
        ValueError: bad ratios, criterion, layers or data; an uncompiled model without
            ``metric_fn``; a resume file written with another criterion or model.

    Example:
        >>> import keras, numpy as np
        >>> x = keras.Input((4, 4, 1))
        >>> h = keras.layers.Conv2D(6, 3, name="conv")(x)
        >>> model = keras.Model(x, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(h)))
        >>> model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> xv, yv = np.random.rand(16, 4, 4, 1).astype("float32"), np.arange(16) % 3
        >>> result = scan(model, xv, yv, ratios=[0.5, 0.9], progress=False)
        >>> [(p.layer, p.ratio, p.channels_removed) for p in result.points]
        [('conv', 0.5, 3), ('conv', 0.9, 5)]
    """
    _graph.check_model(model)
    ratios = check_ratios(ratios)
    if data is None and y_val is not None and _needs_gradients(criterion):
        data, labels = x_val, y_val  # gradient criteria take the loss on the validation data by default
    chooser_criterion = criterion_for(criterion, data, labels)
    criterion = chooser_criterion.name
    patterns = LayerPatterns.parse(layers, "layers")
    check_int(batch_size, "batch_size", 1)
    round_to = None if round_to is None else check_int(round_to, "round_to", 1)
    check_callable(metric_fn, "metric_fn", "fn(model, x, y) -> float")
    check_callable(finetune_fn, "finetune_fn", "fn(model)")
    check_callable(compile_fn, "compile_fn", "fn(model)")
    if hasattr(x_val, "__len__") and len(x_val) == 0:
        raise ValueError("x_val is empty: pass validation data")
    if y_val is not None and hasattr(x_val, "__len__") and hasattr(y_val, "__len__") and len(y_val) != len(x_val):
        raise ValueError(f"x_val has {len(x_val)} examples but y_val has {len(y_val)}")
    compiled = bool(getattr(model, "compiled", False))
    if metric_fn is None and not compiled:
        raise ValueError(
            "model is not compiled: compile it (its first compiled metric is evaluated) "
            "or pass metric_fn=fn(model, x, y)"
        )
    if finetune_fn is not None and compile_fn is None and not compiled:
        raise ValueError(
            "finetune_fn needs compile_fn=fn(model) or a compiled model (its compile config "
            "is reused for every pruned model)"
        )
    if resume and output_dir is None:
        raise ValueError("resume=True needs output_dir (where sensitivity.csv is)")

    def recompile(m):
        compile_fn(m) if compile_fn is not None else m.compile_from_config(model.get_compile_config())

    rebuild = finetune_fn is not None
    work = model if rebuild else Surgeon(model, rules).operate()  # the masked points change a copy
    if not rebuild and metric_fn is None:
        recompile(work)
    trace = _graph.trace_model(work, rules=rules)
    groups = [
        g
        for g in trace.groups()
        if g.prunable and g.size >= 2 and (patterns is None or any(patterns.matches(path) for path in g.producers))
    ]
    if not groups:
        raise ValueError(
            "no prunable layer to scan"
            + (f" matches layers={layers!r}" if layers else "")
            + f"; prunable layers: {[g.producers[0] for g in trace.groups() if g.prunable]}"
        )

    name = metric
    if name is None and metric_fn is not None:
        name = getattr(metric_fn, "__name__", "metric")
        name = name if name.isidentifier() else "metric"
    result = SensitivityResult(float("nan"), criterion, name or "metric", True, [], "rebuild" if rebuild else "mask")
    baseline_known = direction_known = False
    paths = (
        None
        if output_dir is None
        else {e: os.path.join(os.fspath(output_dir), f"sensitivity.{e}") for e in ("csv", "json")}
    )
    if resume and os.path.exists(paths["csv"]):
        stored = SensitivityResult.from_csv(paths["csv"])
        if stored.criterion != criterion:
            raise ValueError(
                f"{paths['csv']} was written with criterion {stored.criterion!r}, not {criterion!r}: "
                "use another output_dir or the same criterion"
            )
        sizes = {g.producers[0]: g.size for g in groups}
        for p in stored.points:
            if p.layer in sizes and p.channels_total != sizes[p.layer]:
                raise ValueError(
                    f"{paths['csv']}: layer {p.layer!r} had {p.channels_total} channels, the model "
                    f"has {sizes[p.layer]}: it was written for another model"
                )
        result.baseline, result.points, baseline_known = stored.baseline, stored.points, True
        if name is None and os.path.exists(paths["json"]):
            try:  # the metric's name is in the JSON only
                meta = SensitivityResult.from_json(paths["json"])
                result.metric_name, result.higher_is_better, direction_known = (
                    meta.metric_name,
                    meta.higher_is_better,
                    True,
                )
            except (ValueError, KeyError, TypeError):
                pass

    def set_direction():
        if higher_is_better is not None:
            result.higher_is_better = bool(higher_is_better)
        elif not direction_known:
            result.higher_is_better = not _lower_is_better(result.metric_name)

    inputs = _evaluation_inputs(x_val, y_val, batch_size) if metric_fn is None else None

    def evaluate(m):
        if metric_fn is not None:
            value = metric_fn(m, x_val, y_val)
        else:
            values = m.evaluate(**inputs, verbose=0, return_dict=True)
            if result.metric_name == "metric" and name is None:
                result.metric_name = next((k for k in values if k != "loss"), "loss")
            if result.metric_name not in values:
                raise ValueError(
                    f"metric {result.metric_name!r} is not computed by the model; it reports {sorted(values)}"
                )
            value = values[result.metric_name]
        if isinstance(value, (bool, str)) or np.ndim(value) != 0:
            raise TypeError(f"the metric must be a number, got {value!r}")
        set_direction()
        return float(value)

    order = {g.producers[0]: i for i, g in enumerate(groups)}

    def write():
        result.points.sort(key=lambda p: (order.get(p.layer, len(order)), p.ratio))
        if paths is not None:
            result.to_csv(paths["csv"])
            result.to_json(paths["json"])

    if not rebuild:
        result.approximate = {g.producers[0]: list(g.inexact_layers) for g in groups if not g.exact}
        if result.approximate:
            logger.warning(
                "sensitivity: %d layers (%s) pass through a normalization over the channels: their masked "
                "points zero channels the normalization still counts, so they approximate the pruned model",
                len(result.approximate),
                ", ".join(list(result.approximate)[:5]) + (", ..." if len(result.approximate) > 5 else ""),
            )
    done = {(p.layer, round(p.ratio, 6)) for p in result.points}
    todo = [(g, r) for g in groups for r in ratios if (g.producers[0], r) not in done]
    set_direction()
    if not baseline_known:
        result.baseline = evaluate(work)
    write()
    recorder = ActivationRecorder(work, trace)
    with Progress(progress and bool(todo), prefix="sensitivity") as bar:
        task = bar.add("", total=len(todo))
        for group in [g for g in groups if any(t is g for t, _ in todo)]:
            label = group.producers[0]
            select = ChannelChooser(GroupView(group, trace, work, seed, activations=recorder), chooser_criterion)
            masker = None if rebuild else _Masker(trace, group)
            for ratio in [r for g, r in todo if g is group]:
                bar.advance(task, 0, description=f"{label[-20:]} {ratio:.2f}")
                n = _n_remove(group.size, ratio, None if group.kind in HEAD_KINDS else round_to)
                idx = select(n)
                if n == 0:
                    value = result.baseline
                elif rebuild:
                    surgeon = Surgeon(model, trace=trace)
                    surgeon.delete_group_channels(group, idx)
                    pruned = surgeon.operate()
                    recompile(pruned)
                    finetune_fn(pruned)
                    value = evaluate(pruned)
                else:
                    try:
                        masker.apply(group.roots[idx])
                        value = evaluate(work)
                    finally:
                        masker.restore()
                result.points.append(SensitivityPoint(label, ratio, value, int(n), int(group.size)))
                write()
                bar.advance(task, 1)
    return result
