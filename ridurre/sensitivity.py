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
  pruned model computes, EXCEPT where the channels pass through a LayerNormalization or
  GroupNormalization: their statistics are taken over the channel axis, and a zeroed channel
  still counts there while a deleted one does not. Scans of such models are approximations.
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

import argparse
import csv
import io
import json
import math
import numbers
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np

import keras

from ridurre import graph as _graph
from ridurre import importance as _importance
from ridurre import selection as _selection
from ridurre import surgeon as _surgeon
from ridurre.checkpoints import write_text_atomic
from ridurre.pruning import BasePruning
from ridurre.views import GroupView

__all__ = ["DEFAULT_RATIOS", "SensitivityPoint", "SensitivityResult", "SensitivityPruning", "scan",
           "choose_ratios", "channels_to_remove", "build_parser", "run", "main"]

DEFAULT_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BASELINE = "(baseline)"  # the CSV row holding the unpruned model's metric
CSV_COLUMNS = ("layer", "ratio", "metric", "criterion", "channels_removed", "channels_total")
_ALIASES = {"bn": "bn_scale", "activation": "activation_mean", "mean": "activation_mean"}
_LOWER_IS_BETTER = re.compile(r"(^|_)(loss|error|mse|mae|mape|msle|rmse)$")


@dataclass(frozen=True)
class SensitivityPoint:
    """One point of a scan: ``layer`` with ``channels_removed`` of its ``channels_total``
    channels removed (``ratio`` of them) scored ``metric``."""

    layer: str
    ratio: float
    metric: float
    channels_removed: int
    channels_total: int


@dataclass
class SensitivityResult:
    """The table of a scan: layer x ratio -> metric, with the unpruned baseline.

    Attributes:
        baseline: the metric of the unpruned model.
        criterion: the criterion that chose the channels (a :data:`ridurre.importance.CRITERIA` name).
        metric_name: what the metric is (e.g. ``"accuracy"``).
        higher_is_better: False for losses and errors.
        points: the :class:`SensitivityPoint` list, by layer (model order) then ratio.
        mode: ``"mask"`` (zeroed weights) or ``"rebuild"`` (pruned and fine-tuned models).

    Example:
        >>> import os, tempfile
        >>> result = SensitivityResult(0.9, "l1", "accuracy", points=[
        ...     SensitivityPoint("conv1", 0.5, 0.85, 8, 16), SensitivityPoint("conv1", 0.9, 0.4, 14, 16)])
        >>> result.table()
        {'conv1': {0.5: 0.85, 0.9: 0.4}}
        >>> paths = result.save(tempfile.mkdtemp())
        >>> SensitivityResult.from_json(paths["json"]) == result
        True
        >>> print(open(paths["csv"]).read().strip())
        layer,ratio,metric,criterion,channels_removed,channels_total
        (baseline),0.0,0.9,l1,0,0
        conv1,0.5,0.85,l1,8,16
        conv1,0.9,0.4,l1,14,16
    """

    baseline: float
    criterion: str
    metric_name: str = "metric"
    higher_is_better: bool = True
    points: list = field(default_factory=list)
    mode: str = "mask"

    @property
    def layers(self):
        """Layer labels in scan order."""
        return list(dict.fromkeys(p.layer for p in self.points))

    @property
    def ratios(self):
        """Every ratio of the scan, ascending."""
        return sorted({p.ratio for p in self.points})

    def table(self):
        """``{layer: {ratio: metric}}``."""
        out = {layer: {} for layer in self.layers}
        for p in self.points:
            out[p.layer][p.ratio] = p.metric
        return out

    def curve(self, layer):
        """``(ratios, metrics)`` arrays of one layer, by ratio."""
        pts = sorted((p.ratio, p.metric) for p in self.points if p.layer == layer)
        if not pts:
            raise ValueError(f"layer {layer!r} is not in this result; its layers are {self.layers}")
        return np.array([r for r, _ in pts]), np.array([m for _, m in pts])

    def to_csv(self, path):
        """Write the table as CSV atomically (first row: the baseline, layer ``"(baseline)"``)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerow([BASELINE, repr(0.0), repr(float(self.baseline)), self.criterion, 0, 0])
        for p in self.points:
            writer.writerow([p.layer, repr(p.ratio), repr(float(p.metric)), self.criterion,
                             p.channels_removed, p.channels_total])
        write_text_atomic(os.fspath(path), buffer.getvalue())

    def to_json(self, path):
        """Write the result (metadata, baseline, points) as JSON atomically."""
        data = {k: v for k, v in asdict(self).items() if k != "points"}
        data["layers"], data["ratios"] = self.layers, self.ratios
        data["points"] = [asdict(p) for p in self.points]
        write_text_atomic(os.fspath(path), json.dumps(data, indent=1, allow_nan=True) + "\n")

    def plot(self, path=None, **kwargs):
        """Draw the curves (see :func:`ridurre.sensitivity_plot.plot_sensitivity`); returns the Figure."""
        from ridurre.sensitivity_plot import plot_sensitivity

        return plot_sensitivity(self, path, **kwargs)

    def save(self, output_dir, plot=True):
        """Write ``sensitivity.csv``, ``sensitivity.json`` (and ``sensitivity.png``) in ``output_dir``.

        Returns:
            ``{"csv": path, "json": path[, "png": path]}``.
        """
        paths = {ext: os.path.join(os.fspath(output_dir), f"sensitivity.{ext}") for ext in ("csv", "json", "png")}
        self.to_csv(paths["csv"])
        self.to_json(paths["json"])
        if plot:
            self.plot(paths["png"])
        else:
            del paths["png"]
        return paths

    @classmethod
    def from_json(cls, path):
        """Read a result written by :meth:`to_json`."""
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        points = [SensitivityPoint(**p) for p in data.pop("points")]
        data.pop("layers", None)
        data.pop("ratios", None)
        return cls(points=points, **data)

    @classmethod
    def from_csv(cls, path, metric_name="metric", higher_is_better=True):
        """Read a result written by :meth:`to_csv` (the CSV holds no metric name: pass it).

        Raises:
            ValueError: a malformed file (missing columns or baseline row, several criteria).
        """
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or set(CSV_COLUMNS) - set(rows[0]):
            raise ValueError(f"{path}: not a sensitivity CSV (expected columns {', '.join(CSV_COLUMNS)})")
        criteria = {r["criterion"] for r in rows}
        baseline = [r for r in rows if r["layer"] == BASELINE]
        if len(criteria) != 1 or len(baseline) != 1:
            raise ValueError(f"{path}: expected one baseline row and one criterion, found "
                             f"{len(baseline)} baseline rows and criteria {sorted(criteria)}")
        try:
            points = [SensitivityPoint(r["layer"], float(r["ratio"]), float(r["metric"]),
                                       int(r["channels_removed"]), int(r["channels_total"]))
                      for r in rows if r["layer"] != BASELINE]
            base = float(baseline[0]["metric"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed row: {exc}") from None
        return cls(base, criteria.pop(), metric_name, higher_is_better, points)


# -- validation ------------------------------------------------------------------------------
def _check_ratios(ratios, name="ratios"):
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


def _criterion_name(criterion):
    name = _ALIASES.get(criterion, criterion) if isinstance(criterion, str) else criterion
    return _importance.get_criterion(name).name


def _check_data(criterion, data):
    if _importance.CRITERIA[criterion].inputs == "activations" and (data is None or len(data) == 0):
        raise ValueError(f"criterion {criterion!r} scores activations: pass data=<a sample of inputs> "
                         "(a few hundred training examples)")


def _patterns(layers):
    if layers is None:
        return None
    out = []
    for p in [layers] if isinstance(layers, str) else layers:
        try:
            out.append(re.compile(p))
        except (re.error, TypeError) as exc:
            raise ValueError(f"layers: {p!r} is not a valid regular expression ({exc})") from None
    return out


def _callable(fn, name, signature):
    if fn is not None and not callable(fn):
        raise TypeError(f"{name} must be a callable {signature} or None, got {type(fn).__name__}")


def _lower_is_better(name):
    return bool(_LOWER_IS_BETTER.search(name))


# -- channel choice ----------------------------------------------------------------------------
class _Selector:
    """Chooses the channels of one group to remove, for any count, by a criterion."""

    def __init__(self, view, criterion, data=None):
        self.view, self.criterion = view, criterion
        if criterion == "kmeans":
            self.mats = view.weight_matrices()
        elif criterion == "random":
            self.scores = _importance.random_scores(view.size, view.seed)
        elif criterion in ("l1", "l2"):
            self.scores = _importance.lp_norm_scores(view.weight_matrices(), p=int(criterion[1]), reduction="sum")
        elif criterion == "bn_scale":  # like BNScaleFilterPruning: L1 for groups without BN
            try:
                self.scores = _importance.bn_scale_scores(view.bn_gammas(), reduction="sum")
            except ValueError:
                self.scores = _importance.lp_norm_scores(view.weight_matrices(), p=1, normalize=True)
        else:
            kind = "apoz" if criterion == "apoz" else "mean"
            self.scores = _importance.activation_scores(view.activations(data), kind=kind)

    def __call__(self, n_remove):
        """Sorted group channel indices to remove."""
        if n_remove <= 0:
            return np.array([], dtype=np.int64)
        if self.criterion == "kmeans":
            keep = _importance.kmeans_keep(self.mats, self.view.size - n_remove, seed=self.view.seed % (2**32))
            return np.setdiff1d(np.arange(self.view.size), keep)
        return np.sort(_selection.select_lowest(self.scores, n_remove))


def _n_remove(size, ratio):
    return _selection.channels_to_keep(size, 1.0 - ratio)[1]


def _positions(group, idx, path=None):
    channels = group.channels_of(path or group.producers[0])
    return sorted(int(p) for j in idx for p in channels[j])


def _find_group(trace, layer):
    for group in trace.groups():
        if layer in group.producers or layer in [p.rsplit("/", 1)[-1] for p in group.producers]:
            return group
    raise ValueError(f"layer {layer!r} produces no channels of the model (labels of the prunable layers: "
                     f"{[g.producers[0] for g in trace.groups() if g.prunable]})")


def channels_to_remove(model, layer, ratio, criterion="l1", *, data=None, seed=0):
    """The output channels of ``layer`` that a scan removes at ``ratio`` (to reproduce a point).

    Args:
        model: a Functional or Sequential model.
        layer: the name of a producer (Conv, Dense) of a prunable channel group.
        ratio: share of the group's channels to remove, in (0, 1).
        criterion: as in :func:`scan`.
        data: input sample for the activation criteria.
        seed: as in :func:`scan`.

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
    ratio = _check_ratios([ratio], "ratio")[0]
    criterion = _criterion_name(criterion)
    _check_data(criterion, data)
    trace = _graph.trace_model(model)
    group = _find_group(trace, layer)
    if not group.prunable:
        raise ValueError(f"the channels of layer {layer!r} cannot be pruned: {group.reason}")
    view = GroupView(group, trace, model, seed)
    idx = _Selector(view, criterion, data)(_n_remove(group.size, ratio))
    path = next(p for p in group.producers if p == layer or p.rsplit("/", 1)[-1] == layer)
    return _positions(group, idx, path)


class _Masker:
    """Zeroes channels of one group on the working copy and restores the touched layers.

    The zeroed weights are those of ``plan_layers(trace, deleted, zero=True)`` (each touched
    layer's rule's ``zero``), computed for the touched layers only.
    """

    def __init__(self, trace, group):
        self.layouts = []  # (use, roots of in_layout or None, roots of out_layout or None)
        for use in trace.uses.values():
            if use.rule is None or _graph._is_model(use.layer) or not use.layer.weights:
                continue
            roots = [None if lay is None else trace.units.roots(lay) for lay in (use.in_layout, use.out_layout)]
            if any(r is not None and np.isin(r, group.roots).any() for r in roots):
                self.layouts.append((use, *roots))
        self.original = [use.layer.get_weights() for use, _, _ in self.layouts]

    def apply(self, deleted):
        for use, r_in, r_out in self.layouts:
            gone = [None if r is None or not np.isin(r, deleted).any() else np.isin(r, deleted) for r in (r_in, r_out)]
            if gone[0] is None and gone[1] is None:
                continue
            weights = use.rule.zero(use.layer, _surgeon._weights_dict(use.layer), *gone)
            use.layer.set_weights(_surgeon._weights_list(use.layer, weights))

    def restore(self):
        for (use, _, _), values in zip(self.layouts, self.original):
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


@contextmanager
def _progress(total, enabled):
    class _Bar:
        def __init__(self, progress=None, task=None):
            self.progress, self.task = progress, task

        def step(self, description, advance):
            if self.progress is not None:
                self.progress.update(self.task, advance=advance, description=description)

    if not enabled or total == 0:
        yield _Bar()
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = (TextColumn("sensitivity {task.description:<28}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        yield _Bar(progress, progress.add_task("", total=total))


# -- the scan --------------------------------------------------------------------------------
def scan(model, x_val, y_val=None, *, ratios=DEFAULT_RATIOS, layers=None, criterion="l1", metric=None,
         metric_fn=None, higher_is_better=None, finetune_fn=None, compile_fn=None, data=None, batch_size=128,
         seed=0, output_dir=None, resume=False, progress=True):
    """Measure how the validation metric falls as each layer loses a share of its channels.

    Args:
        model: a trained Functional or Sequential model (never modified). Compiled, unless
            ``metric_fn`` (and, with ``finetune_fn``, ``compile_fn``) is given.
        x_val, y_val: VALIDATION data (never the test split: the ratios are chosen on it).
        ratios: shares of each layer's channels to remove, in (0, 1); a layer of n channels
            keeps ``ceil(n * (1 - ratio))``.
        layers: regular expressions (full match) selecting layers by label or producer name;
            ``None``: every prunable layer (channel group with at least 2 channels).
        criterion: which channels go: ``l1`` (default), ``l2``, ``random``, ``kmeans``, ``bn``
            (``bn_scale``), ``activation_mean`` or ``apoz`` (these two need ``data``).
        metric: the name of a compiled metric to read from ``model.evaluate`` (default: the
            first compiled metric, or the loss when there is none).
        metric_fn: ``fn(model, x_val, y_val) -> float`` evaluated instead.
        higher_is_better: default: False when the metric name is a loss or an error.
        finetune_fn: ``fn(model)`` fine-tuning each pruned model before evaluation; every point
            is then a real pruned model, rebuilt and recompiled (slow).
        compile_fn: ``fn(model)`` compiling rebuilt models (default: the model's compile config).
        data: input sample for the activation criteria.
        batch_size: evaluation batch size.
        seed: seeds the random and kmeans criteria.
        output_dir: write ``sensitivity.csv`` and ``sensitivity.json`` there after every point.
        resume: skip the points (and the baseline) already in ``output_dir/sensitivity.csv``.
        progress: show a progress bar (on stderr).

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
    ratios = _check_ratios(ratios)
    criterion = _criterion_name(criterion)
    _check_data(criterion, data)
    patterns = _patterns(layers)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    _callable(metric_fn, "metric_fn", "fn(model, x, y) -> float")
    _callable(finetune_fn, "finetune_fn", "fn(model)")
    _callable(compile_fn, "compile_fn", "fn(model)")
    if hasattr(x_val, "__len__") and len(x_val) == 0:
        raise ValueError("x_val is empty: pass validation data")
    if y_val is not None and hasattr(x_val, "__len__") and hasattr(y_val, "__len__") and len(y_val) != len(x_val):
        raise ValueError(f"x_val has {len(x_val)} examples but y_val has {len(y_val)}")
    compiled = bool(getattr(model, "compiled", False))
    if metric_fn is None and not compiled:
        raise ValueError("model is not compiled: compile it (its first compiled metric is evaluated) "
                         "or pass metric_fn=fn(model, x, y)")
    if finetune_fn is not None and compile_fn is None and not compiled:
        raise ValueError("finetune_fn needs compile_fn=fn(model) or a compiled model (its compile config "
                         "is reused for every pruned model)")
    if resume and output_dir is None:
        raise ValueError("resume=True needs output_dir (where sensitivity.csv is)")

    def recompile(m):
        compile_fn(m) if compile_fn is not None else m.compile_from_config(model.get_compile_config())

    rebuild = finetune_fn is not None
    work = model if rebuild else _surgeon.Surgeon(model).operate()
    if not rebuild and metric_fn is None:
        recompile(work)
    trace = _graph.trace_model(work)
    groups = [g for g in trace.groups() if g.prunable and g.size >= 2 and (patterns is None or any(
        p.fullmatch(n) for p in patterns for path in g.producers for n in (path, path.rsplit("/", 1)[-1])))]
    if not groups:
        raise ValueError("no prunable layer to scan" + (f" matches layers={layers!r}" if layers else "") +
                         f"; prunable layers: {[g.producers[0] for g in trace.groups() if g.prunable]}")

    name = metric
    if name is None and metric_fn is not None:
        name = getattr(metric_fn, "__name__", "metric")
        name = name if name.isidentifier() else "metric"
    result = SensitivityResult(float("nan"), criterion, name or "metric", True, [], "rebuild" if rebuild else "mask")
    baseline_known = direction_known = False
    paths = None if output_dir is None else {e: os.path.join(os.fspath(output_dir), f"sensitivity.{e}")
                                             for e in ("csv", "json")}
    if resume and os.path.exists(paths["csv"]):
        stored = SensitivityResult.from_csv(paths["csv"])
        if stored.criterion != criterion:
            raise ValueError(f"{paths['csv']} was written with criterion {stored.criterion!r}, not {criterion!r}: "
                             "use another output_dir or the same criterion")
        sizes = {g.producers[0]: g.size for g in groups}
        for p in stored.points:
            if p.layer in sizes and p.channels_total != sizes[p.layer]:
                raise ValueError(f"{paths['csv']}: layer {p.layer!r} had {p.channels_total} channels, the model "
                                 f"has {sizes[p.layer]}: it was written for another model")
        result.baseline, result.points, baseline_known = stored.baseline, stored.points, True
        if name is None and os.path.exists(paths["json"]):
            try:  # the metric's name is in the JSON only
                meta = SensitivityResult.from_json(paths["json"])
                result.metric_name, result.higher_is_better, direction_known = (
                    meta.metric_name, meta.higher_is_better, True)
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
                raise ValueError(f"metric {result.metric_name!r} is not computed by the model; it reports "
                                 f"{sorted(values)}")
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

    done = {(p.layer, round(p.ratio, 6)) for p in result.points}
    todo = [(g, r) for g in groups for r in ratios if (g.producers[0], r) not in done]
    set_direction()
    if not baseline_known:
        result.baseline = evaluate(work)
    write()
    with _progress(len(todo), progress) as bar:
        for group in [g for g in groups if any(t is g for t, _ in todo)]:
            label = group.producers[0]
            select = _Selector(GroupView(group, trace, work, seed), criterion, data)
            masker = None if rebuild else _Masker(trace, group)
            for ratio in [r for g, r in todo if g is group]:
                bar.step(f"{label[-20:]} {ratio:.2f}", 0)
                n = _n_remove(group.size, ratio)
                idx = select(n)
                if n == 0:
                    value = result.baseline
                elif rebuild:
                    pruned = _surgeon.delete_channels(model, label, _positions(group, idx))
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
                bar.step(f"{label[-20:]} {ratio:.2f}", 1)
    return result


def choose_ratios(result, max_drop=0.02, min_metric=None, higher_is_better=None, monotone=False):
    """Per layer, the largest scanned ratio whose metric stays acceptable (0.0 when none).

    Choose on a scan of VALIDATION data, never of the test split.

    Args:
        result: a :class:`SensitivityResult`.
        max_drop: how far the metric may fall below the baseline (in metric units: 0.02 is two
            points of accuracy); above it, when lower is better.
        min_metric: an absolute threshold instead: the metric must be at least this (at most,
            when lower is better). Overrides ``max_drop``.
        higher_is_better: default: the result's ``higher_is_better``.
        monotone: also require every smaller ratio of the layer to be acceptable (guards
            against a noisy curve passing again after a dip).

    Returns:
        ``{layer: ratio}`` for every layer of the result.

    Example:
        >>> from ridurre.sensitivity import SensitivityPoint as P, SensitivityResult
        >>> result = SensitivityResult(0.90, "l1", "accuracy", points=[
        ...     P("a", 0.2, 0.90, 2, 10), P("a", 0.5, 0.89, 5, 10), P("a", 0.8, 0.70, 8, 10),
        ...     P("b", 0.2, 0.80, 2, 10)])
        >>> choose_ratios(result, max_drop=0.02)
        {'a': 0.5, 'b': 0.0}
    """
    if not isinstance(result, SensitivityResult):
        raise TypeError(f"result must be a SensitivityResult, got {type(result).__name__}")
    higher = result.higher_is_better if higher_is_better is None else bool(higher_is_better)
    if min_metric is not None:
        if isinstance(min_metric, bool) or not isinstance(min_metric, numbers.Real) or math.isnan(min_metric):
            raise ValueError(f"min_metric must be a number or None, got {min_metric!r}")
        threshold = float(min_metric)
    else:
        if isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or not max_drop >= 0:
            raise ValueError(f"max_drop must be a number >= 0, got {max_drop!r}")
        threshold = result.baseline - max_drop if higher else result.baseline + max_drop
    tol = 1e-9 * max(1.0, abs(threshold))

    def ok(value):
        return math.isfinite(value) and (value >= threshold - tol if higher else value <= threshold + tol)

    chosen = {}
    for layer in result.layers:
        best = 0.0
        for ratio, value in zip(*result.curve(layer)):
            if ok(value):
                best = float(ratio)
            elif monotone:
                break
        chosen[layer] = best
    return chosen


# -- pruning to the chosen ratios ------------------------------------------------------------
class SensitivityPruning(BasePruning):
    """Prune every layer to its own ratio of its ORIGINAL channels (e.g. from :func:`choose_ratios`).

    In one step or over ``nb_steps`` iterations of the loop; each step removes an equal share
    of what remains to reach the target, and each step is compiled and fine-tuned by the loop's
    callbacks. The criterion chooses which channels go, on the current weights.

    The positional arguments follow the methods of :mod:`ridurre.methods` (``nb_steps`` where
    they take ``maximum_prune_iterations``).

    Args:
        ratios: ``{layer: ratio}``; a layer is the label (first producer) of a channel group, or
            any of its producers; ratio in [0, 1). Layers left out are not pruned.
        model_compile_fn, model_finetune_fn, nb_finetune_epochs, nb_trained_for_epochs: as in
            :class:`ridurre.pruning.BasePruning`.
        nb_steps: number of pruning iterations.
        maximum_pruning_percent: an overall limit, as in ``BasePruning`` (default: none).
        criterion: as in :func:`scan`.
        data: input sample for the activation criteria.
        **options: the keyword options of ``BasePruning`` (``min_channels``, ``round_to``,
            ``output_dir``, ``resume``, ``seed``, ``max_macs_reduction``, ...); ``ranking``
            must stay ``"local"``. The factor recorded in the history is ``1 / nb_steps``.

    Example:
        >>> import ridurre
        >>> from ridurre.sensitivity import SensitivityPruning
        >>> pruning = SensitivityPruning({"conv1": 0.5, "conv2": 0.25}, lambda m: m.compile("adam", "mse"),
        ...                              None, 0, nb_steps=2)
    """

    def __init__(self, ratios, model_compile_fn, model_finetune_fn, nb_finetune_epochs, nb_steps=1,
                 maximum_pruning_percent=None, nb_trained_for_epochs=0, *, criterion="l1", data=None, **options):
        if not isinstance(ratios, dict):
            raise TypeError(f"ratios must be a dict {{layer: ratio}}, got {type(ratios).__name__}")
        for layer, ratio in ratios.items():
            if not isinstance(layer, str):
                raise TypeError(f"ratios: keys must be layer names, got {layer!r}")
            if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= ratio < 1.0:
                raise ValueError(f"ratios[{layer!r}] must be a number in [0, 1), got {ratio!r}")
        nb_steps = self._check_int(nb_steps, "nb_steps", 1)
        if options.get("ranking", "local") != "local":
            raise ValueError("SensitivityPruning prunes each layer to its own ratio: ranking must be 'local'")
        if "maximum_prune_iterations" in options:
            raise ValueError("SensitivityPruning runs nb_steps iterations: pass nb_steps, not maximum_prune_iterations")
        self.criterion = _criterion_name(criterion)
        _check_data(self.criterion, data)
        super().__init__(1.0 / nb_steps, model_compile_fn, model_finetune_fn, nb_finetune_epochs,
                         nb_trained_for_epochs=nb_trained_for_epochs, maximum_prune_iterations=nb_steps,
                         maximum_pruning_percent=maximum_pruning_percent, **options)
        self.ratios = {k: float(v) for k, v in ratios.items()}
        self.nb_steps, self.data = nb_steps, data
        self._targets, self._iteration = {}, 0

    def run_pruning(self, model, prune_factor_scheduler_fn=None, custom_objects_inside_model=None):
        """As :meth:`BasePruning.run_pruning`; first checks that every layer of ``ratios`` is prunable."""
        trace = _graph.trace_model(model)
        self._targets = {}
        for layer, ratio in self.ratios.items():
            group = _find_group(trace, layer)
            if not group.prunable:
                raise ValueError(f"ratios: the channels of layer {layer!r} cannot be pruned: {group.reason}")
            self._targets[group.producers[0]] = _selection.channels_to_keep(group.size, 1.0 - ratio)[0]
        return super().run_pruning(model, prune_factor_scheduler_fn, custom_objects_inside_model)

    def _prune_step(self, model, factor, iteration):
        self._iteration = iteration
        return super()._prune_step(model, factor, iteration)

    def removal_count(self, nb_channels, factor):
        return nb_channels - 1  # an upper bound: select_channels picks each group's own count

    def _step_count(self, view):
        keep = self._targets.get(view.name)
        if keep is None or view.size <= keep:
            return 0
        steps_left = max(1, self.nb_steps - self._iteration)
        n = -(-(view.size - keep) // steps_left)
        if self._round_to:
            n = view.size - min(view.size, -(-(view.size - n) // self._round_to) * self._round_to)
        return n

    def select_channels(self, view, n_remove):
        n = min(self._step_count(view), n_remove)
        return _Selector(view, self.criterion, self.data)(n)


# -- command line ----------------------------------------------------------------------------
def build_parser(parser=None):
    """Add the options of ``ridurre sensitivity`` to an argparse parser.

    Args:
        parser: an ``argparse.ArgumentParser`` (e.g. a sub-command's); ``None`` makes one.

    Returns:
        The parser.

    Example:
        >>> args = build_parser().parse_args(["--model", "m.keras", "--data", "digits"])
        >>> args.ratios, args.output, args.max_drop
        ('0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9', 'sensitivity_output', 0.02)
    """
    if parser is None:
        parser = argparse.ArgumentParser(prog="ridurre sensitivity",
                                         description="Per-layer pruning sensitivity scan on validation data.")
    add = parser.add_argument
    add("--model", required=True, help="a saved .keras model")
    add("--data", required=True, help="digits, mnist, cifar10, or an .npz with x, y (and x_val, y_val)")
    add("--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS), help="comma-separated shares in (0, 1)")
    add("--layers", default=None, help="regular expression selecting layers (full match)")
    add("--criterion", default="l1", help=f"one of {', '.join(sorted(_importance.CRITERIA))} (or bn)")
    add("--output", default="sensitivity_output", help="output directory")
    add("--max-drop", type=float, default=0.02, help="largest metric drop accepted when choosing ratios")
    add("--resume", action="store_true", help="skip the points already in OUTPUT/sensitivity.csv")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--batch-size", type=int, default=128, help="evaluation batch size")
    return parser


def _loss_name(model):
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        return loss.lower()
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__).lower()


def run(args):
    """Run ``ridurre sensitivity``: scan a saved model on the validation split of ``--data``.

    Writes ``sensitivity.csv``, ``sensitivity.json``, ``sensitivity.png`` and
    ``chosen_ratios.json`` in ``--output``. An uncompiled model is compiled with (sparse)
    categorical crossentropy and accuracy; integer labels are one-hot encoded for a model
    compiled with a non-sparse categorical loss.

    Args:
        args: the namespace parsed by a parser from :func:`build_parser`.

    Returns:
        The exit code: 0 on success, 2 on bad input (a missing or unloadable model, bad ratios,
        an unknown criterion, data that does not fit the model...), reported on stderr before
        anything is written; 130 when interrupted (rerun with ``--resume``).

    Example:
        >>> import os, tempfile
        >>> missing = os.path.join(tempfile.mkdtemp(), "missing.keras")
        >>> run(build_parser().parse_args(["--model", missing, "--data", "digits"]))
        2
    """

    def fail(message):
        print(f"ridurre sensitivity: error: {message}", file=sys.stderr)
        return 2

    try:
        ratios = _check_ratios([float(r) for r in str(args.ratios).split(",") if r.strip()], "--ratios")
        criterion = _criterion_name(args.criterion)
        _patterns(args.layers)
    except ValueError as exc:
        return fail(str(exc) if "could not convert" not in str(exc) else f"--ratios: {args.ratios!r} is not a "
                    "comma-separated list of numbers")
    if args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.max_drop >= 0:
        return fail(f"--max-drop must be >= 0, got {args.max_drop}")
    if not os.path.isfile(args.model):
        return fail(f"--model: no such file {args.model!r}")
    try:
        model = keras.models.load_model(args.model, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - any loading failure is bad input
        return fail(f"--model: could not load {args.model!r}: {exc}")
    from ridurre.datasets import load_dataset

    try:
        data = load_dataset(args.data)
    except Exception as exc:  # noqa: BLE001 - unknown names, bad files, downloads without internet
        return fail(f"--data: could not load {args.data!r}: {exc}")
    x, y = data.x_val, data.y_val
    if len(x) == 0:
        return fail(f"--data: {args.data!r} has an empty validation split")
    expected = tuple(model.inputs[0].shape[1:])
    if len(model.inputs) != 1 or len(expected) != x.ndim - 1 or any(
            e is not None and e != s for e, s in zip(expected, x.shape[1:])):
        return fail(f"--data: examples of shape {x.shape[1:]} do not fit the model's input {expected}")
    units = int(model.outputs[0].shape[-1])
    if units > 1 and y.max() >= units:
        return fail(f"--data: labels go up to {int(y.max())} but the model has {units} outputs")
    if not getattr(model, "compiled", False):
        loss = "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    elif "categorical" in _loss_name(model) and "sparse" not in _loss_name(model):
        y = keras.utils.to_categorical(y, units)
    sample = data.x_train[:512] if len(data.x_train) else x
    try:
        result = scan(model, x, y, ratios=ratios, layers=args.layers, criterion=criterion, data=sample,
                      batch_size=args.batch_size, output_dir=args.output, resume=args.resume,
                      progress=not args.no_progress)
    except ValueError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"interrupted: rerun with --resume to continue from {args.output}", file=sys.stderr)
        return 130
    paths = result.save(args.output)
    chosen = choose_ratios(result, max_drop=args.max_drop)
    write_text_atomic(os.path.join(args.output, "chosen_ratios.json"), json.dumps(chosen, indent=1) + "\n")
    print(f"baseline {result.metric_name} on the validation split: {result.baseline:.4f}")
    print(f"chosen ratios (max drop {args.max_drop:g}):")
    for layer, ratio in chosen.items():
        print(f"  {layer:<32} {ratio:.2f}")
    print("wrote " + ", ".join(list(paths.values()) + [os.path.join(args.output, "chosen_ratios.json")]))
    return 0


def main(argv=None):
    """``python -m ridurre.sensitivity --model M --data D ...``; returns the exit code of :func:`run`."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
