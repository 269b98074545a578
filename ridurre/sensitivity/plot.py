"""The plot of a sensitivity scan: one curve per layer, the unpruned baseline dashed.

Kept apart from :mod:`ridurre.sensitivity` so that matplotlib is imported only when a plot is
drawn. It uses matplotlib's object API with the Agg canvas (no pyplot, no display, no global
state), so it works on headless machines and in threads.
"""

from __future__ import annotations

import os

__all__ = ["plot_sensitivity"]


def plot_sensitivity(result, path=None, *, ax=None, title=None):
    """Draw the metric against the share of channels removed, one curve per layer.

    Every curve starts at ratio 0 with the baseline (the unpruned model); the baseline is also
    drawn as a dashed horizontal line.

    Args:
        result: a :class:`ridurre.sensitivity.SensitivityResult`.
        path: where to save the figure (PNG, written atomically); ``None`` saves nothing.
        ax: a matplotlib ``Axes`` to draw on (then ``path`` saves its figure); ``None`` makes
            a new figure.
        title: the title (default: ``"Layer sensitivity (<criterion> criterion)"``).

    Returns:
        The matplotlib ``Figure``.

    Example:
        >>> from ridurre.sensitivity import SensitivityPoint, SensitivityResult
        >>> result = SensitivityResult(0.9, "l1", "accuracy", points=[
        ...     SensitivityPoint("conv1", 0.5, 0.85, 8, 16), SensitivityPoint("conv1", 0.9, 0.4, 14, 16)])
        >>> fig = plot_sensitivity(result)
        >>> fig.axes[0].get_xlabel()
        "share of the layer's channels removed"
    """
    from matplotlib.figure import Figure

    layers = result.layers
    if ax is None:
        width = 7.5 if len(layers) <= 8 else 9.5
        fig = Figure(figsize=(width, 5.0), dpi=110, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    cmap = _colormap(len(layers))
    for i, layer in enumerate(layers):
        ratios, metrics = result.curve(layer)
        ax.plot(
            [0.0, *ratios],
            [result.baseline, *metrics],
            marker="o",
            markersize=3.5,
            linewidth=1.4,
            color=cmap(i % cmap.N),
            label=layer,
        )
    ax.axhline(result.baseline, linestyle="--", color="black", linewidth=1.0, label=f"baseline {result.baseline:.4g}")
    ax.set_xlabel("share of the layer's channels removed")
    ax.set_ylabel(result.metric_name + ("" if result.higher_is_better else " (lower is better)"))
    ax.set_title(title or f"Layer sensitivity ({result.criterion} criterion)")
    ax.set_xlim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    ax.legend(
        fontsize="small" if len(layers) <= 10 else "x-small",
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        ncol=1 if len(layers) <= 20 else 2,
    )
    if path is not None:
        from ridurre._io import atomic_path

        with atomic_path(os.fspath(path), suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    return fig


def _colormap(n):
    from matplotlib import colormaps

    return colormaps["tab10" if n <= 10 else "tab20"]
