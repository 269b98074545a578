"""SSVEP filter scores from the weights alone: how much of a temporal filter's frequency
response lies at the stimulus frequencies.

Steady-state visually evoked potentials (SSVEP) are EEG responses at the flicker frequency of
a stimulus and its harmonics. The first convolution of EEG networks such as EEGNet
(``temporal_conv``, a ``Conv2D`` with kernel shape ``(1, K, 1, F)``) is a bank of ``F`` FIR
filters over ``K`` time samples. A filter whose passband holds the stimulus frequencies is
useful; one that passes other frequencies mostly lets noise through. The score of a filter is
the share of its frequency-response energy within ``± bandwidth`` Hz of each stimulus frequency
``f`` and its harmonics ``h·f`` (``h = 1..harmonics``):

    score = Σ_{bins in bands} |H(k)|² / Σ_{all bins} |H(k)|²   (one-sided spectrum)

so scores lie in [0, 1], higher is better, and :func:`write_scores_csv` writes them in the
format ``ridurre prune-scores`` reads.

A filter of ``K`` taps cannot be sharper than its length allows: its main lobe reaches about
``±2·fs/K`` Hz with a Hann-like taper (``±fs/K`` untapered). With short kernels and the default
``bandwidth=0.5`` even a pure sinusoid keeps only part of its energy in band; the scores still
rank the filters, and a wider ``bandwidth`` raises them all.

The computation is numpy only (model files are read with :mod:`ridurre.scorefile`, without Keras),
and the functions are pure, for reuse by pruning criteria.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping

import numpy as np

from ridurre._io import atomic_writer
from ridurre.scorefile import ModelFile, read_model_file

__all__ = ["frequency_response_scores", "write_scores_csv", "score_model_layer"]


def _as_filter_bank(kernel):
    """Reshape a temporal kernel to ``(K taps, C input channels, F filters)``."""
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim == 1:
        return k[:, None, None]
    if k.ndim == 2:  # (taps, filters)
        return k[:, None, :]
    spatial = k.shape[:-2]
    long_axes = [i for i, n in enumerate(spatial) if n > 1]
    if len(long_axes) > 1:
        raise ValueError(
            f"kernel of shape {k.shape} has {len(long_axes)} spatial axes longer "
            f"than 1; a temporal (FIR) kernel has one, e.g. (1, K, 1, F)"
        )
    taps = spatial[long_axes[0]] if long_axes else 1
    return np.moveaxis(k, long_axes[0] if long_axes else 0, 0).reshape(taps, k.shape[-2], k.shape[-1])


def frequency_response_scores(
    kernel,
    fs: float,
    target_freqs: Iterable[float],
    harmonics: int = 2,
    bandwidth: float = 0.5,
    n_fft: int | None = None,
) -> np.ndarray:
    """Share of each FIR filter's response energy at the target frequencies and harmonics.

    Args:
        kernel: the filter taps: ``(K,)`` for one filter, ``(K, F)``, or a convolution kernel
            whose last axis is the filters and whose other axes are one time axis, singleton
            axes and the input channels (Conv1D ``(K, C, F)``, EEGNet's Conv2D ``(1, K, 1, F)``).
            With several input channels the energies of their responses are summed.
        fs: sampling rate in Hz.
        target_freqs: stimulus frequencies in Hz (each below the Nyquist frequency ``fs/2``).
        harmonics: count the bands at ``h·f`` for ``h = 1..harmonics`` (those above ``fs/2``
            are skipped).
        bandwidth: half-width in Hz of each band.
        n_fft: FFT length (taps are zero-padded). Default: the smallest power of two at least
            ``K`` and ``4·fs/bandwidth``, so each band spans about eight bins.

    Returns:
        Scores in [0, 1], shape ``(F,)``. An all-zero filter scores 0.

    Example:
        >>> import numpy as np
        >>> fs, t = 128.0, np.arange(64) / 128.0
        >>> bank = np.stack([np.sin(2 * np.pi * f * t) * np.hanning(64) for f in (7, 10, 13)], -1)
        >>> kernel = bank[None, :, None, :]                     # EEGNet layout (1, K, 1, F)
        >>> scores = frequency_response_scores(kernel, fs, [10.0], bandwidth=1.0)
        >>> int(np.argmax(scores)), bool(scores[1] > 0.5)
        (1, True)
    """
    if not (isinstance(fs, (int, float, np.number)) and math.isfinite(fs) and fs > 0):
        raise ValueError(f"fs must be a positive sampling rate in Hz, got {fs!r}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be positive (Hz), got {bandwidth!r}")
    if int(harmonics) != harmonics or harmonics < 1:
        raise ValueError(f"harmonics must be an integer >= 1, got {harmonics!r}")
    targets = np.atleast_1d(np.asarray(list(target_freqs), dtype=np.float64))
    if targets.size == 0:
        raise ValueError("target_freqs is empty")
    nyquist = fs / 2
    if np.any(targets <= 0) or np.any(targets >= nyquist):
        raise ValueError(
            f"target frequencies must lie in (0, {nyquist:g}) Hz (below the "
            f"Nyquist frequency of fs={fs:g}), got {targets.tolist()}"
        )

    bank = _as_filter_bank(kernel)
    taps = bank.shape[0]
    if n_fft is None:
        n_fft = 1 << max(taps - 1, int(math.ceil(4 * fs / bandwidth)) - 1, 1).bit_length()
    elif n_fft < taps:
        raise ValueError(f"n_fft={n_fft} is shorter than the {taps} filter taps")

    spectrum = np.fft.rfft(bank, n=int(n_fft), axis=0)  # (bins, C, F)
    power = (np.abs(spectrum) ** 2).sum(axis=1)  # (bins, F)
    freqs = np.fft.rfftfreq(int(n_fft), d=1.0 / fs)
    weight = np.full(freqs.shape, 2.0)  # one-sided spectrum
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    in_band = np.zeros(freqs.shape, dtype=bool)
    for f in targets:
        for h in range(1, int(harmonics) + 1):
            if h * f < nyquist + bandwidth:
                in_band |= np.abs(freqs - h * f) <= bandwidth
    total = (weight[:, None] * power).sum(axis=0)
    band = (weight[in_band, None] * power[in_band]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(total > 0, band / np.where(total > 0, total, 1.0), 0.0)
    return scores


def write_scores_csv(
    path: str | os.PathLike, layer_name: str | Mapping[str, Iterable[float]], scores: Iterable[float] | None = None
) -> None:
    """Write scores as the ``layer,filter,score`` CSV that ``ridurre prune-scores`` reads.

    The file is replaced atomically. Pass one layer (``layer_name, scores``) or several as a
    mapping ``{layer_name: scores}``.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "filter_stats.csv")
        >>> write_scores_csv(p, "temporal_conv", [0.5, 0.25])
        >>> print(open(p).read(), end="")
        layer,filter,score
        temporal_conv,0,0.5
        temporal_conv,1,0.25
    """
    if isinstance(layer_name, Mapping):
        if scores is not None:
            raise TypeError("pass either a {layer: scores} mapping or layer_name and scores")
        per_layer = dict(layer_name)
    else:
        if scores is None:
            raise TypeError("scores is required with a layer name")
        per_layer = {layer_name: scores}
    rows = []
    for name, values in per_layer.items():
        if not isinstance(name, str) or not name or any(c in name for c in ',\n\r"'):
            raise ValueError(f"invalid layer name {name!r} for a CSV file")
        values = np.asarray(list(values), dtype=np.float64)
        if values.ndim != 1 or not np.all(np.isfinite(values)):
            raise ValueError(f"scores of layer {name!r} must be a 1-D array of finite numbers")
        rows.extend(f"{name},{i},{float(v)!r}\n" for i, v in enumerate(values))
    with atomic_writer(path, "w", newline="") as f:
        f.write("layer,filter,score\n")
        f.writelines(rows)


def _temporal_kernel(source, layer_name):
    """(class name or None, temporal kernel) of a layer from any supported source."""
    if isinstance(source, (str, os.PathLike)):
        source = read_model_file(source)
    if isinstance(source, ModelFile):
        info = source.layer(layer_name)
        weights = source.named_weights(info.path)
        cls = info.class_name
    elif hasattr(source, "get_layer"):  # a Keras model (duck-typed: no Keras import here)
        layer = source.get_layer(layer_name)
        cls = type(layer).__name__
        weights = {v.name.split("/")[-1]: np.asarray(w) for v, w in zip(layer.weights, layer.get_weights())}
    elif isinstance(source, Mapping):
        value = source[layer_name]
        if isinstance(value, Mapping):
            weights, cls = dict(value), None
        elif isinstance(value, (list, tuple)):
            weights, cls = {"kernel": value[0]}, None
        else:
            weights, cls = {"kernel": value}, None
    else:
        raise TypeError(
            f"expected a model file path, a ModelFile, a Keras model or a "
            f"{{layer: kernel}} mapping, got {type(source).__name__}"
        )
    if cls is not None and cls.startswith("Separable"):
        raise ValueError(
            f"layer {layer_name!r} is a {cls}: its outputs mix input channels "
            f"through the pointwise kernel, so they are not single FIR filters"
        )
    kernel = weights.get("kernel", weights.get("depthwise_kernel"))
    if kernel is None:
        raise ValueError(f"layer {layer_name!r} has no kernel (weights: {sorted(weights)})")
    kernel = np.asarray(kernel)
    if cls is not None and cls.startswith("DepthwiseConv"):
        # output c*m + k filters input channel c alone: one FIR filter per output channel
        kernel = kernel.reshape(kernel.shape[:-2] + (1, kernel.shape[-2] * kernel.shape[-1]))
    return kernel


def score_model_layer(
    weights_or_model,
    layer_name: str,
    fs: float,
    target_freqs: Iterable[float],
    *,
    harmonics: int = 2,
    bandwidth: float = 0.5,
    n_fft: int | None = None,
    output: str | os.PathLike | None = None,
) -> np.ndarray:
    """Score a temporal convolution layer's filters by :func:`frequency_response_scores`.

    Args:
        weights_or_model: a ``.keras``/``.h5`` path (read without Keras), a
            :class:`~ridurre.scorefile.ModelFile`, a Keras model, or a mapping
            ``{layer_name: kernel}`` (a kernel array, a weights list, or ``{"kernel": ...}``).
        layer_name: the layer (``Conv1D``/``Conv2D`` with one time axis, or ``DepthwiseConv``).
        fs, target_freqs, harmonics, bandwidth, n_fft: see :func:`frequency_response_scores`.
        output: if given, also write the scores there with :func:`write_scores_csv`.

    Returns:
        The scores, shape ``(F,)``.

    Example:
        >>> import numpy as np
        >>> t = np.arange(32) / 128.0
        >>> k = np.stack([np.sin(2 * np.pi * 12 * t), np.random.default_rng(0).normal(size=32)], -1)
        >>> s = score_model_layer({"temporal_conv": k[None, :, None, :]}, "temporal_conv",
        ...                       fs=128, target_freqs=[12], bandwidth=2.0)
        >>> bool(s[0] > s[1])
        True
    """
    kernel = _temporal_kernel(weights_or_model, layer_name)
    scores = frequency_response_scores(kernel, fs, target_freqs, harmonics=harmonics, bandwidth=bandwidth, n_fft=n_fft)
    if output is not None:
        write_scores_csv(output, layer_name, scores)
    return scores
