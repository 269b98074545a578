"""The result of a sensitivity scan: :class:`SensitivityResult` (layer x ratio -> metric), its
CSV and JSON files, and the choice of a ratio per layer (:func:`choose_ratios`)."""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ridurre._io import write_text_atomic

__all__ = ["BASELINE", "CSV_COLUMNS", "SensitivityPoint", "SensitivityResult", "choose_ratios"]

BASELINE = "(baseline)"  # the CSV row holding the unpruned model's metric
CSV_COLUMNS = ("layer", "ratio", "metric", "criterion", "channels_removed", "channels_total")


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
        criterion: the criterion that chose the channels (a name of :mod:`ridurre.criteria`).
        metric_name: what the metric is (e.g. ``"accuracy"``).
        higher_is_better: False for losses and errors.
        points: the :class:`SensitivityPoint` list, by layer (model order) then ratio.
        mode: ``"mask"`` (zeroed weights) or ``"rebuild"`` (pruned and fine-tuned models).
        approximate: ``{layer: [normalization layers]}``: in a masked scan, the layers whose
            channels pass through a normalization over the channel axis (LayerNormalization,
            RMS norms). Zeroing a channel there is not removing it (the statistics change), so
            their points approximate the pruned model's metric. Written to the JSON file only.

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
    approximate: dict = field(default_factory=dict)

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
            writer.writerow(
                [p.layer, repr(p.ratio), repr(float(p.metric)), self.criterion, p.channels_removed, p.channels_total]
            )
        write_text_atomic(os.fspath(path), buffer.getvalue())

    def to_json(self, path):
        """Write the result (metadata, baseline, points) as JSON atomically."""
        data = {k: v for k, v in asdict(self).items() if k != "points"}
        data["layers"], data["ratios"] = self.layers, self.ratios
        data["points"] = [asdict(p) for p in self.points]
        write_text_atomic(os.fspath(path), json.dumps(data, indent=1, allow_nan=True) + "\n")

    def plot(self, path=None, **kwargs):
        """Draw the curves (see :func:`ridurre.sensitivity.plot.plot_sensitivity`); returns the Figure."""
        from ridurre.sensitivity.plot import plot_sensitivity

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
            raise ValueError(
                f"{path}: expected one baseline row and one criterion, found "
                f"{len(baseline)} baseline rows and criteria {sorted(criteria)}"
            )
        try:
            points = [
                SensitivityPoint(
                    r["layer"],
                    float(r["ratio"]),
                    float(r["metric"]),
                    int(r["channels_removed"]),
                    int(r["channels_total"]),
                )
                for r in rows
                if r["layer"] != BASELINE
            ]
            base = float(baseline[0]["metric"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed row: {exc}") from None
        return cls(base, criteria.pop(), metric_name, higher_is_better, points)


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
