"""Iterative pruning of SSVEP models by frequency response: :class:`SSVEPScorePruning`.

The prune-and-finetune loop of :class:`ridurre.pruning.BasePruning`, ranking filters by their
SSVEP score (higher = keep), from one of two sources:

* **frequency response** (``fs=``, ``target_freqs=``): the scores of
  :func:`ridurre.ssvep.frequency_response_scores`, the share of each temporal FIR filter's
  response energy within ``± bandwidth`` Hz of the stimulus frequencies and their harmonics,
  recomputed from the current weights at every iteration (after each finetune). The temporal
  layers are those named by ``temporal_layers=``, by default every ``Conv2D`` whose kernel is
  ``(1, K)`` with ``K > 1`` (EEGNet's ``temporal_conv``).
* **a score file** (``stats=``): a CSV in the format of ``ridurre prune-scores``
  (``layer,filter,score``; see :mod:`ridurre.scorefile.scores`), read and validated against the
  model with :func:`ridurre.scorefile.read_scores`. These scores belong to the filters of the
  original model and follow them across iterations: once filters ``[1, 4]`` are gone, the
  filters now at positions ``0, 1, 2, 3, ...`` keep the original scores of filters
  ``0, 2, 3, 5, ...``.

Only the scored layers are pruned (the temporal layers, or the layers of the score file). Pass
``layers=`` to prune more: those extra layers have no SSVEP score and are ranked by the L1 norm
of their filters (Li et al. 2017).

In EEGNet the temporal convolution is followed by BatchNormalization and a ``DepthwiseConv2D``
with depth multiplier ``D``: removing temporal filter ``f`` also removes the depthwise channels
``f*D .. f*D+D-1``, their BatchNormalization entries and the separable convolution's inputs. The
channel surgeon (:mod:`ridurre.surgery`) removes all of them together.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Mapping

import keras
import numpy as np

from ridurre import _compat
from ridurre import graph as _graph
from ridurre._validation import LayerPatterns, check_int, check_number
from ridurre.criteria import scores as _scores
from ridurre.graph import layer_weights
from ridurre.pruning.methods import ScoreFilterPruning
from ridurre.ssvep.scores import frequency_response_scores

__all__ = ["SSVEPScorePruning", "find_temporal_layers"]

# Layer classes whose kernel can be read as a bank of FIR filters (one long spatial axis).
_TEMPORAL_CLASSES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def _is_default_temporal(layer):
    """A ``Conv2D`` with a ``(1, K)`` kernel, ``K > 1``: a bank of temporal FIR filters."""
    if not isinstance(layer, keras.layers.Conv2D):  # Separable/Depthwise/Transpose are not
        return False
    size = tuple(layer.kernel_size)
    return len(size) == 2 and size[0] == 1 and size[1] > 1


def find_temporal_layers(model) -> list[str]:
    """Paths of the layers :class:`SSVEPScorePruning` treats as temporal filters by default.

    Every ``Conv2D`` (not separable, depthwise or transposed) whose kernel is ``(1, K)`` with
    ``K > 1``, nested models included (``"outer/inner"``), in ``model.layers`` order.

    Args:
        model: a Keras model.

    Returns:
        A list of layer paths (empty if there are none).

    Example:
        >>> from ridurre.models import eegnet
        >>> find_temporal_layers(eegnet(num_classes=4, channels=8, samples=128))
        ['temporal_conv']
    """
    return [path for path, layer in _graph.all_layers(model) if _is_default_temporal(layer)]


def _model_file(model):
    """A :class:`ridurre.scorefile.ModelFile` view of a live Keras model, for ``read_scores``.

    Layer IDs are indices in ``model.layers`` and paths are ``"outer/inner"`` inside nested
    models, exactly as for the saved model; nothing is written to disk.
    """
    from ridurre.scorefile import LayerInfo, ModelFile

    weights = {}

    def walk(container, prefix, out_top, out_all):
        for layer in container.layers:
            path = prefix + layer.name
            named = {} if _compat.is_graph_model(layer) else layer_weights(layer)
            info = LayerInfo(layer.name, path, type(layer).__name__, {}, tuple(named))
            out_all.append(info)
            if out_top is not None:
                out_top.append(info)
            if named:
                weights[path] = list(named.values())
            if _compat.is_graph_model(layer):
                walk(layer, path + "/", None, out_all)

    top, every = [], []
    walk(model, "", top, every)
    return ModelFile(f"<model {model.name!r}>", "memory", type(model).__name__, top, every, weights)


class SSVEPScorePruning(ScoreFilterPruning):
    """Prune the filters that respond least to the SSVEP stimulus frequencies, iteratively.

    Each iteration scores the filters of the scored layers, removes the lowest-scoring
    ``removal_factor`` share of each layer (with everything coupled to them), recompiles with
    ``model_compile_fn`` and finetunes with ``model_finetune_fn``, as every ridurre method does
    (see :class:`ridurre.pruning.BasePruning`). The model passed to ``run_pruning`` is never
    modified.

    Give either ``fs`` and ``target_freqs`` (frequency-response scores of the temporal layers,
    recomputed from their weights at every iteration) or ``stats`` (a score file whose scores
    follow their filters across iterations). See the module docstring.

    Args:
        removal_factor: share of each scored layer's filters removed per iteration, in [0, 1].
        model_compile_fn: ``fn(model)`` compiling the rebuilt model.
        model_finetune_fn: ``fn(model, initial_epoch, end_epoch)``, or ``None`` (no finetune).
        nb_finetune_epochs: epochs per finetune.
        maximum_prune_iterations: stop after this many iterations (``None``: no limit).
        maximum_pruning_percent: stop once this share of the prunable filters is removed.
        nb_trained_for_epochs: epochs the model was trained for before pruning.
        fs: sampling rate in Hz (frequency-response mode).
        target_freqs: stimulus frequencies in Hz, each in ``(0, fs/2)`` (frequency-response mode).
        harmonics: also count the bands at ``h·f`` for ``h = 1..harmonics``.
        bandwidth: half-width in Hz of each band.
        n_fft: FFT length (default: see :func:`ridurre.ssvep.frequency_response_scores`).
        temporal_layers: the temporal layers to score and prune: names, regular expressions
            (matched in full against the layer name or its ``"outer/inner"`` path) or layer
            objects. Default: every ``Conv2D`` with a ``(1, K)`` kernel, ``K > 1``
            (:func:`find_temporal_layers`). Each must be a ``Conv1D/2D/3D`` whose kernel has one
            spatial axis longer than 1.
        stats: path of a score CSV (``layer,filter,score``, as ``ridurre prune-scores`` reads;
            layer IDs are indices in ``model.layers``). Every filter of a layer in the file must
            have a score. Score-file mode.
        layer_mapping: a ``layer_id,layer_name`` CSV path or ``{id: name}`` dict for the layer
            IDs of ``stats``.
        **options: the keyword options of :class:`ridurre.pruning.BasePruning` (``layers`` adds
            layers to prune, ranked by L1 norm; ``exclude``, ``min_channels``,
            ``max_fraction_per_layer``, ``round_to``, ``output_dir``, ``resume``, ``verify``,
            ``evaluate_fn``, ``seed``, ...).

    Raises:
        ValueError: naming the argument: neither or both sources given, no target frequency,
            ``fs <= 0``, a target frequency outside ``(0, fs/2)``, a bad ``harmonics``,
            ``bandwidth`` or ``n_fft``, an invalid ``temporal_layers`` pattern, a missing
            ``stats`` file. ``run_pruning`` raises ``ValueError`` for a ``temporal_layers``
            entry matching no layer (or a layer that is not a temporal convolution), a model
            without temporal layers, and a score file that does not fit the model
            (:class:`ridurre.scorefile.ScoreFileError`, naming the file and line).

    Example:
        >>> import keras, numpy as np
        >>> from ridurre.models import eegnet
        >>> model = eegnet(num_classes=4, channels=4, samples=128, F1=4, kernel_length=32)
        >>> t = np.arange(32) / 128.0
        >>> bank = [np.sin(2 * np.pi * f * t) * np.hanning(32) for f in (10, 40, 12, 50)]
        >>> model.get_layer("temporal_conv").set_weights([np.stack(bank, -1)[None, :, None, :]])
        >>> pruning = SSVEPScorePruning(0.5, lambda m: m.compile("adam", "mse"), None, 0,
        ...                             maximum_prune_iterations=1, fs=128.0,
        ...                             target_freqs=[10.0, 12.0], bandwidth=2.0)
        >>> pruned, _ = pruning.run_pruning(model)
        >>> pruned.get_layer("temporal_conv").filters, pruning.history[0].removed
        (2, {'temporal_conv': [1, 3]})
        >>> model.get_layer("temporal_conv").filters          # the input model is unchanged
        4
    """

    def __init__(
        self,
        removal_factor,
        model_compile_fn,
        model_finetune_fn,
        nb_finetune_epochs,
        maximum_prune_iterations=None,
        maximum_pruning_percent=0.9,
        nb_trained_for_epochs=0,
        *,
        fs=None,
        target_freqs=None,
        harmonics=2,
        bandwidth=0.5,
        n_fft=None,
        temporal_layers=None,
        stats=None,
        layer_mapping=None,
        **options,
    ):
        if "scores" in options:
            raise TypeError(
                "SSVEPScorePruning takes no scores= argument: give fs= and target_freqs= "
                "(frequency-response scores) or stats= (a score file); for scores of your "
                "own use ridurre.ScoreFilterPruning"
            )
        frequency_args = [
            name
            for name, value in (("fs", fs), ("target_freqs", target_freqs), ("temporal_layers", temporal_layers))
            if value is not None
        ]
        if stats is not None and frequency_args:
            raise ValueError(
                f"give either stats= (a score file) or fs= and target_freqs= (frequency-response "
                f"scores), not both (got stats and {', '.join(frequency_args)})"
            )
        if stats is None:
            if layer_mapping is not None:
                raise ValueError("layer_mapping is only used with stats= (it maps the score file's layer IDs)")
            if target_freqs is None:
                raise ValueError(
                    "target_freqs is required: the SSVEP stimulus frequencies in Hz (or give stats= for a score file)"
                )
            if fs is None:
                raise ValueError("fs is required: the sampling rate in Hz of the model's input")
            self._fs = check_number(fs, "fs (the sampling rate in Hz)", low=0, low_open=True)
            self._targets = self._check_targets(target_freqs, self._fs)
            self._harmonics = check_int(harmonics, "harmonics", 1)
            self._bandwidth = check_number(bandwidth, "bandwidth (half-width in Hz)", low=0, low_open=True)
            self._n_fft = None if n_fft is None else check_int(n_fft, "n_fft", 1)
            self._temporal_patterns = LayerPatterns.parse(temporal_layers, "temporal_layers")
            if self._temporal_patterns is not None and not self._temporal_patterns:
                raise ValueError(
                    "temporal_layers is empty: name at least one layer, or leave it out "
                    "to use every Conv2D with a (1, K) kernel"
                )
            self._stats = None
            self._layer_mapping = None
        else:
            if not isinstance(stats, (str, os.PathLike)):
                raise TypeError(f"stats must be the path of a score CSV file, got {type(stats).__name__}")
            if not os.path.isfile(stats):
                raise ValueError(f"stats: no such score file {os.fspath(stats)!r}")
            if (
                layer_mapping is not None
                and not isinstance(layer_mapping, Mapping)
                and not (isinstance(layer_mapping, (str, os.PathLike)) and os.path.isfile(layer_mapping))
            ):
                raise ValueError(
                    f"layer_mapping must be a layer_id,layer_name CSV file or an {{id: name}} "
                    f"dict, got {layer_mapping!r}"
                )
            self._stats = os.fspath(stats)
            self._layer_mapping = layer_mapping
            self._temporal_patterns = None
        super().__init__(
            removal_factor,
            model_compile_fn,
            model_finetune_fn,
            nb_finetune_epochs,
            maximum_prune_iterations,
            maximum_pruning_percent,
            nb_trained_for_epochs,
            scores={},
            **options,
        )
        self._scored_patterns = None  # the scored layers, resolved by run_pruning
        self._temporal: list[str] = []
        self._scored: list[str] = []

    # -- argument checks -------------------------------------------------------------------
    @staticmethod
    def _check_targets(target_freqs, fs):
        if isinstance(target_freqs, numbers.Real) and not isinstance(target_freqs, bool):
            target_freqs = [target_freqs]
        try:
            targets = np.asarray(list(target_freqs), dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ValueError(f"target_freqs must be a list of frequencies in Hz, got {target_freqs!r}") from None
        if targets.size == 0:
            raise ValueError("target_freqs is empty: give at least one SSVEP stimulus frequency in Hz")
        nyquist = fs / 2
        bad = [float(f) for f in targets if not (math.isfinite(f) and 0 < f < nyquist)]
        if bad:
            raise ValueError(
                f"target_freqs must lie in (0, {nyquist:g}) Hz, below the Nyquist frequency of fs={fs:g} Hz; got {bad}"
            )
        return targets

    # -- setup against the model ----------------------------------------------------------------
    @property
    def temporal_layers(self) -> list[str]:
        """Paths of the temporal layers scored by frequency response in the last ``run_pruning``."""
        return list(self._temporal)

    @property
    def scored_layers(self) -> list[str]:
        """Paths of the layers scored (and pruned) in the last ``run_pruning``, besides ``layers=``."""
        return list(self._scored)

    def _prunable_producers(self, model):
        groups = _graph.trace_model(model, rules=self._rules).groups()
        prunable = {p for g in groups if g.prunable for p in g.producers}
        reasons = {p: g.reason for g in groups if not g.prunable for p in g.producers}
        return prunable, reasons

    def _resolve_temporal(self, model):
        prunable, reasons = self._prunable_producers(model)
        layers = list(_graph.all_layers(model))
        if self._temporal_patterns is None:
            found = [path for path, layer in layers if _is_default_temporal(layer)]
            if not found:
                raise ValueError(
                    f"model {model.name!r} has no temporal convolution (a Conv2D with a (1, K) "
                    f"kernel, K > 1): name the temporal layers with temporal_layers="
                )
            usable = [p for p in found if p in prunable]
            if not usable:
                raise ValueError(
                    f"none of the temporal layers of model {model.name!r} can be pruned: "
                    + "; ".join(f"{p}: {reasons.get(p) or 'not a producer of channels'}" for p in found)
                )
            return usable
        found = []
        by_path = dict(layers)
        for pattern, matches in self._temporal_patterns.matching(path for path, _ in layers).items():
            if not matches:
                names = ", ".join(repr(p) for p, _ in layers) or "none"
                raise ValueError(
                    f"temporal_layers: {pattern!r} matches no layer of model {model.name!r} (its layers: {names})"
                )
            # a pattern may match other layers too ("temporal_.*" also matches "temporal_bn"): keep
            # the convolutions, and refuse a pattern that matches none
            convs = [m for m in matches if isinstance(by_path[m], _TEMPORAL_CLASSES)]
            if not convs:
                what = ", ".join(f"{m!r} is a {type(by_path[m]).__name__}" for m in matches)
                raise ValueError(
                    f"temporal_layers: {pattern!r} matches no temporal convolution ({what}, not a "
                    f"Conv1D/Conv2D/Conv3D with one kernel axis longer than 1)"
                )
            found.extend(m for m in convs if m not in found)
        for path in found:
            layer = by_path[path]
            try:
                self._frequency_scores(layer)
            except ValueError as exc:
                raise ValueError(
                    f"temporal_layers: layer {path!r} cannot be scored by frequency response: {exc}"
                ) from None
            if path not in prunable:
                raise ValueError(
                    f"temporal_layers: the filters of layer {path!r} cannot be pruned: "
                    f"{reasons.get(path) or 'it does not produce channels of its own'}"
                )
        return found

    def _read_stats(self, model):
        from ridurre.scorefile import read_scores

        model_file = _model_file(model)
        rows = read_scores(self._stats, model_file, self._layer_mapping)
        prunable, reasons = self._prunable_producers(model)
        per_layer: dict[str, dict[int, float]] = {}
        for row in rows:
            per_layer.setdefault(row.layer, {})[row.filter] = row.score
        scores = {}
        for path, values in per_layer.items():
            if path not in prunable:
                why = reasons.get(path) or ("its channels follow the layer before it (pruning that layer prunes them)")
                raise ValueError(f"stats: {self._stats}: layer {path!r} is not pruned by the loop: {why}")
            n = model_file.num_filters(path)
            missing = sorted(set(range(n)) - set(values))
            if missing:
                raise ValueError(
                    f"stats: {self._stats}: layer {path!r} has {n} filters but the file scores "
                    f"{len(values)} (missing {missing[:10]}{' ...' if len(missing) > 10 else ''}); "
                    f"iterative pruning needs a score for every filter of a scored layer"
                )
            scores[path] = np.array([values[i] for i in range(n)], dtype=np.float64)
        return scores

    def run_pruning(self, model, prune_factor_scheduler_fn=None, custom_objects_inside_model=None):
        """Score, prune and finetune ``model`` (never modified); return ``(pruned_model, last_epoch)``.

        The temporal layers (or the score file) are resolved against ``model`` first; see the
        class docstring for the errors. Arguments as :meth:`ridurre.pruning.BasePruning.run_pruning`.
        """
        _graph.check_model(model)
        self._scores.clear()
        if self._stats is None:
            self._temporal = self._resolve_temporal(model)
            self._scored = list(self._temporal)
        else:
            self._temporal = []
            self._scores.update(self._read_stats(model))
            self._scored = list(self._scores)  # ScoreFilterPruning tracks their surviving filters
        self._scored_patterns = LayerPatterns([re.escape(p) for p in self._scored], "scored layers")
        return super().run_pruning(model, prune_factor_scheduler_fn, custom_objects_inside_model)

    def eligible(self, group):
        """Only the scored layers are pruned, and the layers of ``layers=`` (ranked by L1 norm)."""
        if not group.prunable or group.size < 2:
            return False
        if self._exclude is not None and any(self._exclude.matches(p) for p in group.producers):
            return False
        return all(
            self._scored_patterns.matches(p) or (self._include is not None and self._include.matches(p))
            for p in group.producers
        )

    # -- scoring ----------------------------------------------------------------------------
    def _frequency_scores(self, layer):
        kernel = layer_weights(layer).get("kernel")
        if kernel is None:
            raise ValueError(f"layer {layer.name!r} has no kernel")
        return frequency_response_scores(
            kernel, self._fs, self._targets, harmonics=self._harmonics, bandwidth=self._bandwidth, n_fft=self._n_fft
        )

    def _current_scores(self, name, layer, n):
        if name in self._temporal:
            scores = self._frequency_scores(layer)
            if len(scores) != n:
                raise ValueError(f"layer {name!r}: {len(scores)} frequency-response scores for {n} channels")
            return scores
        return super()._current_scores(name, layer, n)

    def score_channels(self, view):
        """SSVEP scores of a group's channels (summed over its scored producers); groups without
        SSVEP scores (added with ``layers=``) are ranked by the L1 norm of their filters."""
        total = self._summed_scores(view)
        if total is None:
            return _scores.lp_norm_scores(view.weight_matrices(), p=1, reduction="sum")
        return total
