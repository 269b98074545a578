"""``ridurre prune-scores`` and ``python -m ridurre.prune_scores``: prune the filters a score file
ranks worst (see :mod:`ridurre.scorefile.scores`). Mask mode imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

from ridurre.app.config import ConfigError
from ridurre.app.inputs import add_loading_options, loading_options
from ridurre.scorefile import ScoreFileError, prune_by_scores

__all__ = ["build_parser", "run", "main"]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the command's options to ``parser`` (a new one if None) and return it."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m ridurre.prune_scores",
            description="Prune the filters a score file ranks worst (mask mode needs no TensorFlow or Keras).",
        )
    parser.add_argument("--model", required=True, help="the model: a .keras archive or a legacy .h5 file")
    parser.add_argument(
        "--stats",
        default="filter_stats.csv",
        help="score CSV with layer, filter and score columns (default: filter_stats.csv)",
    )
    parser.add_argument("--output", default="pruned_model", help="output directory (default: pruned_model)")
    parser.add_argument(
        "--percentage", type=float, default=None, help="prune this fraction (0-1) of all scored filters, worst first"
    )
    parser.add_argument(
        "--min-score", type=float, default=None, dest="min_score", help="prune every filter scoring below this"
    )
    parser.add_argument(
        "--layer-mapping",
        default=None,
        dest="layer_mapping",
        help="CSV with layer_id,layer_name columns for integer layer IDs (default: an ID is the index in model.layers)",
    )
    parser.add_argument(
        "--mode",
        choices=("mask", "remove"),
        default="mask",
        help="mask: zero the filters (and the channels of a BatchNormalization right after them) and write "
        "pruned_weights.npz (default); remove: remove them and write pruned_model.keras",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --output: an earlier run's files there are replaced or removed",
    )
    add_loading_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the command on parsed arguments; print a summary. Returns the exit status."""
    try:
        custom_objects = None
        if args.mode == "remove":
            custom_objects = loading_options(args)
        result = prune_by_scores(
            args.model,
            args.stats,
            args.output,
            percentage=args.percentage,
            min_score=args.min_score,
            layer_mapping=args.layer_mapping,
            mode=args.mode,
            overwrite=args.overwrite,
            custom_objects=custom_objects,
        )
    except (ScoreFileError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sel = result.selection
    how = f"percentage {args.percentage}" if args.percentage is not None else f"min score {args.min_score}"
    threshold = f", threshold {sel.threshold:.6g}" if math.isfinite(sel.threshold) else ""
    print(f"pruned {len(sel.pruned)} of {sel.n_scored} scored filters ({how}{threshold})")
    by_layer = sel.by_layer()
    for layer, total in result.num_filters.items():
        print(f"  {layer}: {len(by_layer.get(layer, []))} of {total} filters pruned")
    for s in sel.kept:
        print(
            f"note: kept filter {s.filter} of layer {s.layer!r} (score {s.score:.6g}): "
            f"all its filters were selected and a layer keeps at least one"
        )
    for norm, layer in result.normalizations.items():
        print(
            f"note: zeroed the same channels of BatchNormalization {norm!r} after {layer!r} (else it would add its "
            "shift to the zeroed filters), so the masked model computes what --mode remove's does"
        )
    for path in result.removed:
        print(f"removed {path} (an earlier run's)")
    for path in result.files:
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m ridurre.prune_scores``; returns the exit status
    (0 ok, 2 bad input with the message on stderr)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
