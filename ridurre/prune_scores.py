"""Compatibility: ``python -m ridurre.prune_scores`` and ``from ridurre.prune_scores import ...``.

The library lives in :mod:`ridurre.scorefile`, the command in :mod:`ridurre.app.scorefile_cli`
(``ridurre prune-scores``). Mask mode imports neither Keras nor TensorFlow.
"""

import sys

from ridurre.scorefile.scores import (
    FilterScore,
    PruneResult,
    ScoreFileError,
    Selection,
    plot_pruning,
    prune_by_scores,
    read_layer_mapping,
    read_scores,
    select_filters,
)

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
    "build_parser",
    "run",
    "main",
]


def build_parser(parser=None):
    """The options of ``ridurre prune-scores`` (see :mod:`ridurre.app.scorefile_cli`)."""
    from ridurre.app import scorefile_cli

    return scorefile_cli.build_parser(parser)


def run(args):
    """Run ``ridurre prune-scores`` on parsed arguments; returns the exit status."""
    from ridurre.app import scorefile_cli

    return scorefile_cli.run(args)


def main(argv=None):
    """``python -m ridurre.prune_scores ...``; returns the exit status (0 ok, 2 bad input)."""
    from ridurre.app import scorefile_cli

    return scorefile_cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
