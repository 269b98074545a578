"""Prune the filters a score file ranks worst (the library side of ``ridurre prune-scores``).

Scores are computed elsewhere (for SSVEP models, see :mod:`ridurre.ssvep`) and written to a CSV
file with a header and one row per filter::

    layer,filter,score
    temporal_conv,0,0.031
    temporal_conv,1,0.002

Accepted column names (case-insensitive; other columns are ignored):

* layer: ``layer``, ``layer_name`` or ``layer_id``, a layer name (or ``model/layer`` for a layer
  inside a nested model) or an integer ID. With ``--layer-mapping`` (a CSV with columns
  ``layer_id,layer_name``), IDs are looked up there; without it an ID is the layer's index in
  ``model.layers``, i.e. the order of the layers in the saved config (for a ``Sequential``
  model, not counting its ``InputLayer``). When both a name and an ID column exist, the name
  is used.
* filter: ``filter``, ``filter_idx`` or ``filter_index``: the output channel index (for a
  depthwise convolution ``c * depth_multiplier + m``).
* score: ``score``, ``similarity`` or ``similarity_score``: higher is better.

``--percentage p`` prunes the worst fraction ``p`` of all scored filters (one global ranking);
``--min-score s`` prunes every filter scoring below ``s``. Exactly one is required. A layer
never loses all its filters: if all were selected, its best one is kept and reported.

``--mode mask`` (default) needs neither TensorFlow nor Keras: it reads the ``.keras`` or
``.h5`` file with :mod:`ridurre.scorefile.modelfile`, zeroes the pruned filters' kernel slices and biases,
and writes ``pruned_weights.npz`` (keys ``<layer>/<weight>``, load them with
:func:`ridurre.scorefile.apply_pruned_weights`). ``--mode remove`` removes the filters (and the
channels coupled to them) with :class:`ridurre.surgery.Surgeon` and writes
``pruned_model.keras``. Both write ``pruned_filters.txt`` and ``pruning_visualization.png``.

Every input is validated before anything is written; a bad input raises
:class:`ScoreFileError` naming the file, line and problem (exit status 2 from the command),
and leaves the output directory untouched. Outputs are written to a temporary directory and
moved into place.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ridurre._io import atomic_writer, input_clash, save_npz_atomic, unwritable_reason
from ridurre.scorefile.masks import following_normalizations, has_filters, zero_filters, zero_normalization_channels
from ridurre.scorefile.modelfile import ModelFile, ModelFileError, read_model_file

__all__ = [
    "ScoreFileError",
    "FilterScore",
    "Selection",
    "PruneResult",
    "read_layer_mapping",
    "read_scores",
    "select_filters",
    "plot_pruning",
    "prune_by_scores",
]

LAYER_COLUMNS = ("layer_name", "layer", "layer_id")  # in order of preference
FILTER_COLUMNS = ("filter", "filter_idx", "filter_index")
SCORE_COLUMNS = ("score", "similarity", "similarity_score")
MAPPING_ID_COLUMNS = ("layer_id", "id")
MAPPING_NAME_COLUMNS = ("layer_name", "name", "layer")

NPZ_FILE = "pruned_weights.npz"
MODEL_FILE = "pruned_model.keras"
LIST_FILE = "pruned_filters.txt"
PLOT_FILE = "pruning_visualization.png"

_INT = re.compile(r"[+-]?\d+")


class ScoreFileError(ValueError):
    """A bad input to score-file pruning; the message names the file, the line and the problem."""


@dataclass(frozen=True)
class FilterScore:
    """One row of a score file, resolved against the model.

    Attributes:
        layer: path of the layer in the model (its name for a top-level layer).
        filter: output channel index.
        score: the score (higher is better).
        line: line number in the score file (1 is the header).
    """

    layer: str
    filter: int
    score: float
    line: int = 0


@dataclass
class Selection:
    """Which filters to prune.

    Attributes:
        pruned: the filters to prune, worst first.
        kept: filters that were selected but kept because their layer would lose all filters.
        threshold: for ``min_score``, that value; for ``percentage``, the highest pruned score
            (``nan`` when nothing is pruned).
        n_scored: number of scored filters.
    """

    pruned: list[FilterScore]
    kept: list[FilterScore] = field(default_factory=list)
    threshold: float = math.nan
    n_scored: int = 0

    def by_layer(self) -> dict[str, list[int]]:
        """Layer -> sorted pruned filter indices."""
        out: dict[str, list[int]] = {}
        for s in self.pruned:
            out.setdefault(s.layer, []).append(s.filter)
        return {k: sorted(v) for k, v in out.items()}


@dataclass
class PruneResult:
    """What :func:`prune_by_scores` did: the selection, the scores and the files written.

    Attributes:
        normalizations: in mask mode, the BatchNormalization layers whose channels were zeroed
            with the filters before them (layer path -> the pruned layer's path).
        removed: files of an earlier run that ``overwrite=True`` removed.
    """

    selection: Selection
    scores: list[FilterScore]
    num_filters: dict[str, int]
    files: list[str]
    normalizations: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


_SNIFF_LIMIT = 1 << 16  # characters of the header line looked at to guess the delimiter


@contextlib.contextmanager
def _open_csv(path, what):
    """``(header, rows)`` of a CSV file, streamed: ``header`` is ``(line, lowercase cells)``,
    ``rows`` an iterator of ``(line, cells)`` read one at a time, so that a bad row is reported
    without reading (or holding) the rest of a large file. Blank lines and ``#`` comments are
    skipped; every error names the file and the line."""
    path = os.fspath(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise ScoreFileError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise ScoreFileError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    with f:
        try:
            first = ""
            while True:
                line = f.readline(_SNIFF_LIMIT)
                if not line or (line.strip() and not line.lstrip().startswith("#")):
                    first = line
                    break
            f.seek(0)
        except UnicodeDecodeError as exc:
            raise ScoreFileError(f"{path}: cannot read the {what} (not UTF-8 text: {exc.reason})") from None
        if not first.strip():
            raise ScoreFileError(f"{path}, line 1: empty {what} (expected a header line)")
        try:
            dialect = csv.Sniffer().sniff(first, delimiters=",;\t")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(f, dialect)

        def records():
            try:
                for row in reader:
                    if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                        continue
                    yield reader.line_num, row
            except csv.Error as exc:
                raise ScoreFileError(f"{path}, line {reader.line_num}: not a valid CSV row ({exc})") from None
            except UnicodeDecodeError as exc:
                raise ScoreFileError(
                    f"{path}, after line {reader.line_num}: cannot read the {what} (not UTF-8 text: {exc.reason})"
                ) from None

        rows = records()
        line, cells = next(rows, (None, None))
        if line is None:
            raise ScoreFileError(f"{path}, line 1: empty {what} (expected a header line)")
        header = (line, [cell.strip().lower() for cell in cells])
        yield header, ((n, [cell.strip() for cell in row]) for n, row in rows)


def _column(path, header, accepted, role, prefer_first=False):
    line, names = header
    found = [c for c in accepted if c in names]
    if not found:
        raise ScoreFileError(
            f"{path}, line {line}: no {role} column (expected one of "
            f"{', '.join(accepted)}; found {', '.join(names) or 'nothing'})"
        )
    if len(found) > 1 and not prefer_first:
        raise ScoreFileError(f"{path}, line {line}: ambiguous {role} columns {', '.join(found)}: keep only one")
    return names.index(found[0])


def _cell(path, line, row, index, role):
    value = row[index] if index < len(row) else ""
    if value == "":
        raise ScoreFileError(f"{path}, line {line}: missing {role} value")
    return value


def read_layer_mapping(path: str | os.PathLike) -> dict[int, str]:
    """Read a ``layer_id,layer_name`` CSV into ``{id: name}``.

    Raises:
        ScoreFileError: missing columns, a non-integer or duplicate ID, an empty file.

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "mapping.csv")
        >>> _ = open(p, "w").write("layer_id,layer_name\\n0,temporal_conv\\n1,separable_conv\\n")
        >>> read_layer_mapping(p)
        {0: 'temporal_conv', 1: 'separable_conv'}
    """
    return {k: v for k, (v, _) in _read_mapping(os.fspath(path)).items()}


def _read_mapping(path):
    mapping = {}
    with _open_csv(path, "layer mapping file") as (header, rows):
        id_col = _column(path, header, MAPPING_ID_COLUMNS, "layer ID")
        name_col = _column(path, header, MAPPING_NAME_COLUMNS, "layer name")
        for line, row in rows:
            raw = _cell(path, line, row, id_col, "layer ID")
            if not _INT.fullmatch(raw):
                raise ScoreFileError(f"{path}, line {line}: layer ID {raw!r} is not an integer")
            lid = int(raw)
            if lid in mapping:
                raise ScoreFileError(f"{path}, line {line}: duplicate layer ID {lid} (first on line {mapping[lid][1]})")
            mapping[lid] = (_cell(path, line, row, name_col, "layer name"), line)
    if not mapping:
        raise ScoreFileError(f"{path}, line {header[0]}: no mapping rows after the header")
    return mapping


def _prunable_layers(model: ModelFile):
    return [layer.path for layer in model.all_layers if has_filters(layer.class_name) and layer.path in model.weights]


def _resolve_name(model, name, where):
    try:
        layer = model.layer(name)
    except KeyError as exc:
        close = difflib.get_close_matches(name, [l.path for l in model.all_layers], n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        detail = exc.args[0] if exc.args and exc.args[0] != name else f"layer {name!r} is not in the model{hint}"
        raise ScoreFileError(f"{where}: {detail}") from None
    return layer


def _check_prunable(model, layer, where, hint=""):
    if layer.path not in _prunable_layers(model):
        reason = "has no weights" if has_filters(layer.class_name) else "has no filters to prune"
        raise ScoreFileError(
            f"{where}: layer {layer.path!r} ({layer.class_name}) {reason} "
            f"(prunable layers: {', '.join(_prunable_layers(model))}){hint}"
        )


def read_scores(
    path: str | os.PathLike, model: ModelFile, layer_mapping: str | os.PathLike | Mapping[int, str] | None = None
) -> list[FilterScore]:
    """Read and validate a score CSV against a model read by :func:`ridurre.masks.read_model_file`.

    Args:
        path: the score file (see the module docstring for its columns).
        model: the :class:`~ridurre.masks.ModelFile` the scores refer to.
        layer_mapping: a ``layer_id,layer_name`` CSV path or a ``{id: name}`` dict.

    Returns:
        One :class:`FilterScore` per row, in file order, with layer paths resolved.

    Raises:
        ScoreFileError: naming the file and line: a missing column, an unknown layer or
            ID, a layer without filters, a filter index out of range, a non-numeric or
            non-finite score, a duplicate row, an empty file.

    Example:
        >>> import os, tempfile, numpy as np
        >>> from ridurre.masks import ModelFile, LayerInfo
        >>> conv = LayerInfo("conv", "conv", "Conv2D", {}, ("kernel",))
        >>> model = ModelFile("m.keras", "keras", "Functional", [conv], [conv],
        ...                   {"conv": [np.ones((3, 3, 1, 4))]})
        >>> p = os.path.join(tempfile.mkdtemp(), "stats.csv")
        >>> _ = open(p, "w").write("layer,filter,score\\nconv,0,0.5\\n0,3,0.1\\n")
        >>> [(s.layer, s.filter, s.score) for s in read_scores(p, model)]
        [('conv', 0, 0.5), ('conv', 3, 0.1)]
    """
    path = os.fspath(path)
    mapping_path = None
    if layer_mapping is None:
        mapping = None
    elif isinstance(layer_mapping, Mapping):
        mapping = {int(k): (v, 0) for k, v in layer_mapping.items()}
    else:
        mapping_path = os.fspath(layer_mapping)
        mapping = _read_mapping(mapping_path)
    if mapping is not None:  # every entry must name a layer of this model
        for lid, (name, line) in mapping.items():
            where = f"{mapping_path}, line {line}" if mapping_path else f"layer mapping {lid}"
            _resolve_name(model, name, where)

    with _open_csv(path, "score file") as (header, rows):
        out = _read_score_rows(path, header, rows, model, mapping, mapping_path)
    if not out:
        raise ScoreFileError(f"{path}, line {header[0]}: no score rows after the header")
    return out


def _read_score_rows(path, header, rows, model, mapping, mapping_path):
    """Validate the score rows one at a time (see :func:`read_scores`)."""
    layer_col = _column(path, header, LAYER_COLUMNS, "layer", prefer_first=True)
    filter_col = _column(path, header, FILTER_COLUMNS, "filter")
    score_col = _column(path, header, SCORE_COLUMNS, "score")

    n_top = len(model.layers)
    seen: dict[tuple[str, int], int] = {}
    out = []
    for line, row in rows:
        where = f"{path}, line {line}"
        raw_layer = _cell(path, line, row, layer_col, "layer")
        hint = ""
        if _INT.fullmatch(raw_layer) and not _has_layer(model, raw_layer):
            lid = int(raw_layer)
            if mapping is not None:
                if lid not in mapping:
                    raise ScoreFileError(
                        f"{where}: layer ID {lid} is not in the layer mapping {mapping_path or ''}".rstrip()
                    )
                layer = _resolve_name(model, mapping[lid][0], where)
            else:
                if not 0 <= lid < n_top:
                    raise ScoreFileError(
                        f"{where}: layer ID {lid} is out of range: the model "
                        f"has {n_top} layers (IDs 0..{n_top - 1} index "
                        f"model.layers; use --layer-mapping for other IDs)"
                    )
                layer = model.layers[lid]
                hint = (
                    f"; layer ID {lid} was read as the index in model.layers: "
                    f"use --layer-mapping if your IDs mean something else"
                )
        else:
            layer = _resolve_name(model, raw_layer, where)
        _check_prunable(model, layer, where, hint)

        raw_filter = _cell(path, line, row, filter_col, "filter")
        try:
            value = float(raw_filter)
            if not value.is_integer():
                raise ValueError
            index = int(value)
        except (ValueError, OverflowError):
            raise ScoreFileError(f"{where}: filter index {raw_filter!r} is not an integer") from None
        total = model.num_filters(layer.path)
        if not 0 <= index < total:
            raise ScoreFileError(
                f"{where}: filter index {index} is out of range for layer "
                f"{layer.path!r} ({total} filters: 0..{total - 1})"
            )

        raw_score = _cell(path, line, row, score_col, "score")
        try:
            score = float(raw_score)
        except ValueError:
            raise ScoreFileError(f"{where}: score {raw_score!r} is not a number") from None
        if not math.isfinite(score):
            raise ScoreFileError(f"{where}: score {raw_score!r} is not a finite number")

        key = (layer.path, index)
        if key in seen:
            raise ScoreFileError(
                f"{where}: duplicate row for layer {layer.path!r} filter {index} (first on line {seen[key]})"
            )
        seen[key] = line
        out.append(FilterScore(layer.path, index, score, line))
    return out


def _has_layer(model, name):
    return any(l.path == name or l.name == name for l in model.all_layers)


# ----------------------------------------------------------------------------- selection


def _check_criterion(percentage, min_score):
    if (percentage is None) == (min_score is None):
        raise ScoreFileError(
            "give exactly one of --percentage (fraction of filters to prune) "
            "or --min-score (prune filters scoring below it)"
        )
    if percentage is not None:
        try:
            p = float(percentage)
        except (TypeError, ValueError):
            raise ScoreFileError(f"--percentage {percentage!r} is not a number") from None
        if not 0 < p < 1:
            raise ScoreFileError(
                f"--percentage must be a fraction strictly between 0 and 1 "
                f"(0.3 prunes the worst 30%), got {percentage!r}"
            )
        return p, None
    try:
        s = float(min_score)
    except (TypeError, ValueError):
        raise ScoreFileError(f"--min-score {min_score!r} is not a number") from None
    if not math.isfinite(s):
        raise ScoreFileError(f"--min-score must be a finite number, got {min_score!r}")
    return None, s


def select_filters(
    scores: Sequence[FilterScore],
    *,
    percentage: float | None = None,
    min_score: float | None = None,
    num_filters: Mapping[str, int] | None = None,
) -> Selection:
    """Choose the filters to prune: the worst ``percentage`` of all scores, or those below
    ``min_score`` (exactly one). A layer whose filters would all go keeps its best one.

    Args:
        scores: the scored filters.
        percentage: fraction in (0, 1) of all scored filters to prune (global ranking;
            ``floor(percentage * n)`` filters; ties broken by file order).
        min_score: prune every filter scoring strictly below this.
        num_filters: layer -> its number of filters; layers not given are assumed to have
            exactly the filters scored.

    Example:
        >>> s = [FilterScore("conv", i, v) for i, v in enumerate([0.9, 0.1, 0.5, 0.2])]
        >>> sel = select_filters(s, percentage=0.5)
        >>> sel.by_layer(), sel.threshold
        ({'conv': [1, 3]}, 0.2)
        >>> select_filters(s, min_score=1.0).kept[0].filter    # the best filter survives
        0
    """
    p, threshold = _check_criterion(percentage, min_score)
    order = sorted(range(len(scores)), key=lambda i: (scores[i].score, i))
    if p is not None:
        n = int(math.floor(p * len(scores) + 1e-9))
        chosen = [scores[i] for i in order[:n]]
        threshold = chosen[-1].score if chosen else math.nan
    else:
        chosen = [scores[i] for i in order if scores[i].score < threshold]
    per_layer: dict[str, list[FilterScore]] = {}
    for s in scores:
        per_layer.setdefault(s.layer, []).append(s)
    chosen_set = {(s.layer, s.filter) for s in chosen}
    kept = []
    for layer, items in per_layer.items():
        total = (num_filters or {}).get(layer, len(items))
        if sum((layer, s.filter) in chosen_set for s in items) >= total:
            best = max(items, key=lambda s: (s.score, -s.filter))
            kept.append(best)
            chosen_set.discard((best.layer, best.filter))
    pruned = [s for s in chosen if (s.layer, s.filter) in chosen_set]
    return Selection(pruned, kept, threshold, len(scores))


# ----------------------------------------------------------------------------- outputs


def plot_pruning(
    path: str | os.PathLike,
    scores: Sequence[FilterScore],
    selection: Selection,
    num_filters: Mapping[str, int] | None = None,
) -> None:
    """Save a PNG: the score histogram with the threshold, then per layer its filters' scores
    with the pruned ones highlighted. Uses matplotlib's Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    layers = list(dict.fromkeys(s.layer for s in scores))
    pruned = {(s.layer, s.filter) for s in selection.pruned}
    kept = {(s.layer, s.filter) for s in selection.kept}
    fig = Figure(figsize=(10, 3.2 + 2.4 * len(layers)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1 + len(layers), 1, squeeze=False)[:, 0]

    values = np.array([s.score for s in scores])
    ax = axes[0]
    ax.hist(values, bins=int(np.clip(len(values) // 3, 10, 50)), color="#4c72b0", edgecolor="white")
    if math.isfinite(selection.threshold):
        ax.axvline(
            selection.threshold,
            color="#c44e52",
            linestyle="--",
            linewidth=2,
            label=f"threshold {selection.threshold:.4g}",
        )
        ax.legend(loc="upper right")
    ax.set_title(f"Score distribution: {len(selection.pruned)} of {len(scores)} scored filters pruned")
    ax.set_xlabel("score")
    ax.set_ylabel("number of filters")

    colors = {"pruned": "#c44e52", "kept": "#4c72b0", "saved": "#dd8452"}
    for ax, layer in zip(axes[1:], layers):
        items = sorted((s for s in scores if s.layer == layer), key=lambda s: s.filter)
        status = [
            "pruned" if (layer, s.filter) in pruned else "saved" if (layer, s.filter) in kept else "kept" for s in items
        ]
        ax.bar([s.filter for s in items], [s.score for s in items], color=[colors[x] for x in status], width=0.8)
        total = (num_filters or {}).get(layer, len(items))
        ax.set_title(f"{layer}: {status.count('pruned')} of {total} filters pruned")
        ax.set_xlabel("filter index")
        ax.set_ylabel("score")
        ax.set_xlim(-0.6, total - 0.4)
        handles = [Patch(color=colors["kept"], label="kept"), Patch(color=colors["pruned"], label="pruned")]
        if math.isfinite(selection.threshold):
            ax.axhline(selection.threshold, color="#c44e52", linestyle="--", linewidth=1)
        if "saved" in status:
            handles.append(Patch(color=colors["saved"], label="kept (last of its layer)"))
        ax.legend(handles=handles, loc="best", fontsize="small")
    with atomic_writer(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def _write_list(path, selection, layer_order):
    rows = sorted(selection.pruned, key=lambda s: (layer_order.get(s.layer, 0), s.filter))
    with atomic_writer(path, "w", newline="") as f:
        f.write("layer\tfilter\tscore\n")
        for s in rows:
            f.write(f"{s.layer}\t{s.filter}\t{s.score!r}\n")


OUTPUT_FILES = (NPZ_FILE, MODEL_FILE, LIST_FILE, PLOT_FILE)
"""Every file :func:`prune_by_scores` may write in its output directory."""


def _check_output(output, inputs, overwrite):
    """Refuse an output directory that would overwrite an input, that cannot be written, or that
    holds files (an earlier run's, or anything else) unless ``overwrite``."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ScoreFileError(f"--output {output}: exists and is not a directory")
    clash = input_clash(inputs, [os.path.join(output, name) for name in OUTPUT_FILES])
    if clash:
        label, path, written = clash
        raise ScoreFileError(
            f"{label} {path}: this run would overwrite it ({written}); choose another --output (inputs are never "
            "overwritten)"
        )
    reason = unwritable_reason(output)
    if reason:
        raise ScoreFileError(f"--output {output}: {reason}")
    present = sorted(os.listdir(output)) if os.path.isdir(output) else []
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise ScoreFileError(
            f"--output {output}: the directory is not empty ({shown}); pass --overwrite to replace an earlier "
            "run's files, or choose another directory"
        )


def _install_outputs(output, write_all, overwrite=False):
    """Run ``write_all(tmp_dir)`` and move what it wrote into ``output`` (created if needed); with
    ``overwrite``, the files of :data:`OUTPUT_FILES` it did not write are removed (an earlier run's).
    Returns the removed files."""
    output = os.path.abspath(output)
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=parent)
    removed = []
    try:
        write_all(tmp)
        written = set(os.listdir(tmp))
        if not os.path.exists(output):
            os.rename(tmp, output)
            return removed
        if overwrite:
            for name in OUTPUT_FILES:
                if name not in written and os.path.isfile(os.path.join(output, name)):
                    os.remove(os.path.join(output, name))
                    removed.append(os.path.join(output, name))
        for name in written:
            os.replace(os.path.join(tmp, name), os.path.join(output, name))
        return removed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _masked_arrays(mf, counts, selection, order):
    """``({"<layer>/<weight>": array}, {normalization: producer})`` of mask mode: the scored layers
    with their pruned filters zeroed, and the BatchNormalization layers called on them with the
    same channels zeroed (else they would add their shift to the zeroed filters)."""
    by_layer = selection.by_layer()
    arrays, normalizations = {}, {}
    for layer in sorted(counts, key=order.get):
        info = mf.layer(layer)
        new = zero_filters(info.class_name, mf.named_weights(layer), by_layer.get(layer, []), config=info.config)
        arrays.update({f"{layer}/{name}": value for name, value in new.items()})
        if not by_layer.get(layer):
            continue
        for norm in following_normalizations(mf, layer):
            weights = mf.named_weights(norm.path)
            if not weights:
                continue
            zeroed = zero_normalization_channels(norm.class_name, weights, by_layer[layer], norm.config)
            arrays.update({f"{norm.path}/{name}": value for name, value in zeroed.items()})
            normalizations[norm.path] = layer
    return arrays, normalizations


def prune_by_scores(
    model: str | os.PathLike,
    stats: str | os.PathLike,
    output: str | os.PathLike = "pruned_model",
    *,
    percentage: float | None = None,
    min_score: float | None = None,
    layer_mapping: str | os.PathLike | Mapping[int, str] | None = None,
    mode: str = "mask",
    overwrite: bool = False,
    custom_objects: Mapping | None = None,
) -> PruneResult:
    """Prune a saved model's worst-scoring filters; the library form of the command.

    Args:
        model: a ``.keras`` or legacy ``.h5`` Keras model file.
        stats: the score CSV.
        output: directory for the outputs (created). It must be empty (or new), and no input may
            be one of its outputs.
        percentage: prune this fraction (0, 1) of all scored filters, or
        min_score: prune the filters scoring below this (exactly one of the two).
        layer_mapping: a ``layer_id,layer_name`` CSV (or dict) for integer layer IDs.
        mode: ``"mask"`` (zero the filters, and the channels of a BatchNormalization after
            them, write ``pruned_weights.npz``, no Keras needed) or ``"remove"`` (remove them,
            write ``pruned_model.keras``).
        overwrite: accept a non-empty ``output``: an earlier run's files there are replaced or
            removed (other files are left alone).
        custom_objects: classes the model uses (remove mode loads it with Keras).

    Returns:
        A :class:`PruneResult`.

    Raises:
        ScoreFileError: any bad input; nothing is written then.

    Example:
        >>> import os, tempfile, keras
        >>> work = tempfile.mkdtemp()
        >>> keras.Sequential([keras.Input((4, 64, 1)),
        ...     keras.layers.Conv2D(4, (1, 16), name="temporal_conv"),
        ...     keras.layers.SeparableConv2D(2, (4, 1), name="separable_conv"),
        ... ]).save(os.path.join(work, "eegnet.keras"))
        >>> with open(os.path.join(work, "stats.csv"), "w") as f:
        ...     _ = f.write("layer,filter,score\\n"
        ...                 "temporal_conv,0,0.4\\ntemporal_conv,1,0.1\\n"
        ...                 "temporal_conv,2,0.3\\ntemporal_conv,3,0.2\\n"
        ...                 "separable_conv,0,0.05\\nseparable_conv,1,0.5\\n")
        >>> result = prune_by_scores(os.path.join(work, "eegnet.keras"),
        ...     os.path.join(work, "stats.csv"), os.path.join(work, "pruned"), percentage=0.5)
        >>> result.selection.by_layer()
        {'separable_conv': [0], 'temporal_conv': [1, 3]}
        >>> sorted(os.listdir(os.path.join(work, "pruned")))
        ['pruned_filters.txt', 'pruned_weights.npz', 'pruning_visualization.png']
    """
    if mode not in ("mask", "remove"):
        raise ScoreFileError(f"--mode must be 'mask' or 'remove', got {mode!r}")
    _check_criterion(percentage, min_score)
    output = os.fspath(output)
    mapping_file = None if layer_mapping is None or isinstance(layer_mapping, Mapping) else layer_mapping
    _check_output(output, {"--model": model, "--stats": stats, "--layer-mapping": mapping_file}, overwrite)
    try:
        mf = read_model_file(model)
    except ModelFileError as exc:
        raise ScoreFileError(str(exc)) from None
    scores = read_scores(stats, mf, layer_mapping)
    counts = {s.layer: mf.num_filters(s.layer) for s in scores}
    selection = select_filters(scores, percentage=percentage, min_score=min_score, num_filters=counts)
    order = {l.path: i for i, l in enumerate(mf.all_layers)}

    normalizations = {}
    if mode == "mask":
        arrays, normalizations = _masked_arrays(mf, counts, selection, order)
        main_file = NPZ_FILE

        def write_main(directory):
            save_npz_atomic(os.path.join(directory, NPZ_FILE), arrays)
    else:
        pruned_model = _remove_filters(os.fspath(model), selection, custom_objects)
        main_file = MODEL_FILE

        def write_main(directory):
            pruned_model.save(os.path.join(directory, MODEL_FILE))

    def write_all(directory):
        write_main(directory)
        _write_list(os.path.join(directory, LIST_FILE), selection, order)
        plot_pruning(os.path.join(directory, PLOT_FILE), scores, selection, counts)

    removed = _install_outputs(output, write_all, overwrite)
    files = [os.path.join(output, name) for name in (main_file, LIST_FILE, PLOT_FILE)]
    return PruneResult(selection, scores, counts, files, normalizations, removed)


def _remove_filters(model_path, selection, custom_objects=None):
    """Remove the selected filters, and the channels coupled to them, with the channel
    surgeon (needs Keras)."""
    from ridurre._loading import ModelLoadError, load_keras_model
    from ridurre.surgery import Surgeon

    try:
        model = load_keras_model(
            model_path,
            custom_objects=custom_objects,
            compile=False,
            unsafe_hint="--unsafe",
            custom_hint="--custom-objects FILE.py",
        )
    except ModelLoadError as exc:
        raise ScoreFileError(str(exc)) from None
    try:
        surgeon = Surgeon(model)
        for layer, filters in selection.by_layer().items():
            surgeon.add_job("delete_channels", layer, channels=filters)
        return surgeon.operate()
    except (ValueError, TypeError) as exc:
        raise ScoreFileError(
            f"{model_path}: cannot remove the selected filters ({exc}); --mode mask zeroes them instead"
        ) from None
