"""Per-layer pruning sensitivity: scan (:func:`scan`), result and ratio choice
(:class:`SensitivityResult`, :func:`choose_ratios`), and the pruning method that uses them
(:class:`SensitivityPruning`). See :mod:`ridurre.sensitivity.scan` for how a point is evaluated.
"""

from ridurre.sensitivity.pruning import SensitivityPruning
from ridurre.sensitivity.result import BASELINE, CSV_COLUMNS, SensitivityPoint, SensitivityResult, choose_ratios
from ridurre.sensitivity.scan import DEFAULT_RATIOS, channels_to_remove, criterion_for, scan

__all__ = [
    "BASELINE",
    "CSV_COLUMNS",
    "DEFAULT_RATIOS",
    "SensitivityPoint",
    "SensitivityPruning",
    "SensitivityResult",
    "channels_to_remove",
    "choose_ratios",
    "criterion_for",
    "scan",
]
