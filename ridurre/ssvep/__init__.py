"""SSVEP models: frequency-response scores of temporal filters (numpy only, see
:mod:`ridurre.ssvep.scores`) and :class:`SSVEPScorePruning`, the loop ranking filters by them
(imported with Keras when first used)."""

from ridurre._lazy import lazy_exports
from ridurre.ssvep.scores import frequency_response_scores, score_model_layer, write_scores_csv

__all__ = [
    "frequency_response_scores",
    "score_model_layer",
    "write_scores_csv",
    "SSVEPScorePruning",
    "find_temporal_layers",
]

__getattr__, _dir = lazy_exports(
    __name__,
    {
        "SSVEPScorePruning": "ridurre.ssvep.pruning:SSVEPScorePruning",
        "find_temporal_layers": "ridurre.ssvep.pruning:find_temporal_layers",
    },
    globals(),
)
