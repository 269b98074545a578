"""Plots of a pruning run (matplotlib, no display needed): every figure has a title, axis labels
and units, and is written atomically as a PNG.

* :func:`plot_history`: parameters, MACs and accuracy per iteration.
* :func:`plot_channels`: channels per layer before and after (bar chart).
* :func:`plot_scores`: the criterion's scores of each layer's channels, the removed ones marked.
* :func:`plot_comparison`: several runs side by side (the demo).

The functions take plain numbers (no Keras), and use matplotlib's object API (no pyplot state).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["plot_history", "plot_channels", "plot_scores", "plot_comparison", "scaled"]

KEPT, REMOVED, BEFORE, AFTER = "#4C72B0", "#C44E52", "#A0A0A0", "#4C72B0"


def scaled(values):
    """``(values / unit, unit label)`` for readable axes: ``""``, ``"thousands"`` or ``"millions"``.

    Example:
        >>> scaled([1500, 2500])
        (array([1.5, 2.5]), 'thousands')
    """
    values = np.asarray(values, dtype=float)
    top = float(np.max(np.abs(values))) if values.size else 0.0
    for div, unit in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if top >= div:
            return values / div, unit
    return values, ""


def _figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    from ridurre._io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_history(path, rows, title="Pruning history"):
    """Parameters, MACs and accuracy of the original model (iteration 0) and after each iteration.

    Args:
        path: the PNG to write.
        rows: dicts with ``step`` (0 = original), ``params``, ``macs`` and ``accuracy`` (a
            fraction, or None).
        title: the figure title.

    Example:
        >>> import os, tempfile
        >>> rows = [{"step": 0, "params": 5000, "macs": 90000, "accuracy": 0.97},
        ...         {"step": 1, "params": 3000, "macs": 50000, "accuracy": 0.96}]
        >>> os.path.exists(plot_history(os.path.join(tempfile.mkdtemp(), "h.png"), rows))
        True
    """
    steps = [r["step"] for r in rows]
    fig = _figure(11, 3.6)
    axes = fig.subplots(1, 3)
    for ax, key, label in ((axes[0], "params", "Parameters"), (axes[1], "macs", "MACs per example")):
        values, unit = scaled([r[key] for r in rows])
        ax.plot(steps, values, "o-", color=KEPT)
        for s, v in zip(steps, values):
            ax.annotate(f"{v:.3g}", (s, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        ax.set_title(label)
        ax.set_ylabel(f"{label} ({unit})" if unit else label)
        ax.set_ylim(0, max(values) * 1.15 if len(values) else 1)
    accuracy = [np.nan if r.get("accuracy") is None else 100 * r["accuracy"] for r in rows]
    axes[2].plot(steps, accuracy, "o-", color=REMOVED)
    axes[2].set_title("Validation accuracy")
    axes[2].set_ylabel("accuracy (%)")
    finite = [a for a in accuracy if not math.isnan(a)]
    if finite:
        axes[2].set_ylim(max(0.0, min(finite) - 5), min(101.0, max(finite) + 2))
    for ax in axes:
        ax.set_xlabel("iteration (0 = original)")
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def plot_channels(path, rows, title="Channels per layer"):
    """A grouped bar chart of each layer's output channels before and after pruning.

    Args:
        path: the PNG to write.
        rows: dicts with ``name``, ``channels_before`` and ``channels_after``.
        title: the figure title.

    Example:
        >>> import os, tempfile
        >>> rows = [{"name": "conv1", "channels_before": 16, "channels_after": 9}]
        >>> os.path.exists(plot_channels(os.path.join(tempfile.mkdtemp(), "c.png"), rows))
        True
    """
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    fig = _figure(max(6.0, 0.7 * len(rows) + 3), 4.2)
    ax = fig.subplots()
    b = ax.bar(x - 0.2, [r["channels_before"] for r in rows], 0.4, label="before", color=BEFORE)
    a = ax.bar(x + 0.2, [r["channels_after"] for r in rows], 0.4, label="after", color=AFTER)
    ax.bar_label(b, fontsize=8)
    ax.bar_label(a, fontsize=8)
    ax.set_xticks(x, names, rotation=30 if len(rows) > 4 else 0, ha="right" if len(rows) > 4 else "center")
    ax.set_xlabel("layer")
    ax.set_ylabel("output channels (count)")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_scores(path, groups, criterion="score", title=None, max_groups=12):
    """Each layer's channel scores, sorted, with the channels removed in the first iteration in red.

    Args:
        path: the PNG to write.
        groups: ``(label, scores, removed_mask)`` per channel group.
        criterion: what the score is (the y-axis label).
        title: the figure title.
        max_groups: plot at most this many groups (the first ones).

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> groups = [("conv1", np.array([0.1, 0.5, 0.3]), np.array([True, False, False]))]
        >>> os.path.exists(plot_scores(os.path.join(tempfile.mkdtemp(), "s.png"), groups))
        True
    """
    from matplotlib.ticker import MaxNLocator

    groups = list(groups)[:max_groups]
    n = max(1, len(groups))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = _figure(4.0 * cols, 3.0 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, (label, scores, removed) in zip(axes, groups):
        scores = np.asarray(scores, dtype=float)
        removed = np.asarray(removed, dtype=bool)
        order = np.argsort(scores, kind="stable")
        colors = np.where(removed[order], REMOVED, KEPT)
        ax.bar(np.arange(len(scores)), scores[order], color=colors, width=0.9)
        ax.set_title(f"{label}: {int(removed.sum())} of {len(scores)} removed", fontsize=10)
        ax.set_xlabel("channels, sorted by score")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(criterion)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.axis("off")
    if not groups:
        axes[0].text(0.5, 0.5, "no prunable channel group", ha="center", va="center")
    from matplotlib.patches import Patch

    fig.legend(
        handles=[Patch(color=KEPT, label="kept"), Patch(color=REMOVED, label="removed in iteration 1")],
        loc="outside lower center",
        ncols=2,
    )
    fig.suptitle(title or f"Channel scores of the original model ({criterion}; higher = more important)")
    return _save(fig, path)


def plot_comparison(path, rows, title="Pruning methods compared"):
    """Accuracy, MACs and measured speed-up of several runs (one bar per run).

    Args:
        path: the PNG to write.
        rows: dicts with ``label``, ``accuracy`` (fraction), ``macs`` and ``speedup`` (x, measured).
        title: the figure title.

    Example:
        >>> import os, tempfile
        >>> rows = [{"label": "original", "accuracy": 0.97, "macs": 9e4, "speedup": 1.0},
        ...         {"label": "l1", "accuracy": 0.96, "macs": 4e4, "speedup": 1.8}]
        >>> os.path.exists(plot_comparison(os.path.join(tempfile.mkdtemp(), "c.png"), rows))
        True
    """
    labels = [r["label"] for r in rows]
    x = np.arange(len(rows))
    fig = _figure(11, 3.6)
    axes = fig.subplots(1, 3)
    macs, unit = scaled([r["macs"] for r in rows])
    accuracy = [100 * (r["accuracy"] or 0.0) for r in rows]
    panels = (
        (axes[0], accuracy, "test accuracy (%)", "Accuracy", "{:.1f}"),
        (axes[1], macs, f"MACs per example ({unit})" if unit else "MACs per example", "Compute", "{:.3g}"),
        (axes[2], [r["speedup"] for r in rows], "speed-up vs original (x, measured)", "Measured speed-up", "{:.2f}x"),
    )
    for ax, values, ylabel, name, fmt in panels:
        bars = ax.bar(x, values, color=[BEFORE] + [KEPT] * (len(rows) - 1))
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8)
        ax.set_xticks(x, labels)
        ax.set_xlabel("model")
        ax.set_ylabel(ylabel)
        ax.set_title(name)
        ax.grid(axis="y", alpha=0.3)
    if accuracy:
        axes[0].set_ylim(max(0.0, min(accuracy) - 10), 100)
    fig.suptitle(title)
    return _save(fig, path)
