"""ridurre: channel pruning for Keras 3.

Score the channels of a trained model, physically remove the weakest (coupled channels
together), recompile and fine-tune through your own callbacks, and repeat.

The public API is imported lazily, so ``import ridurre`` is cheap and the TensorFlow-free
score-file path (``python -m ridurre.prune_scores --mode mask``) never imports Keras.
"""

import importlib

__version__ = "1.0.0.dev0"

_EXPORTS = {
    # surgery
    "channel_groups": "ridurre.graph",
    "ChannelGroup": "ridurre.graph",
    "Surgeon": "ridurre.surgeon",
    "delete_channels": "ridurre.surgeon",
    "zero_channels": "ridurre.surgeon",
    "delete_layer": "ridurre.surgeon",
    "insert_layer": "ridurre.surgeon",
    "replace_layer": "ridurre.surgeon",
    "register_rule": "ridurre.rules",
    # the loop and its methods
    "BasePruning": "ridurre.pruning",
    "IterationRecord": "ridurre.pruning",
    "GroupView": "ridurre.views",
    "RandomFilterPruning": "ridurre.methods",
    "KMeansFilterPruning": "ridurre.methods",
    "L1FilterPruning": "ridurre.methods",
    "L2FilterPruning": "ridurre.methods",
    "BNScaleFilterPruning": "ridurre.methods",
    "ActivationFilterPruning": "ridurre.methods",
    "ScoreFilterPruning": "ridurre.methods",
    "SSVEPScorePruning": "ridurre.ssvep_pruning",
    "find_temporal_layers": "ridurre.ssvep_pruning",
    "SensitivityPruning": "ridurre.sensitivity",
    "SensitivityResult": "ridurre.sensitivity",
    "choose_ratios": "ridurre.sensitivity",
    "define_prune_bins": "ridurre.selection",
    # metrics
    "model_stats": "ridurre.metrics",
    "count_params": "ridurre.metrics",
    "measure_latency": "ridurre.metrics",
    "model_size_bytes": "ridurre.metrics",
    # score files and masks (TensorFlow-free)
    "apply_pruned_weights": "ridurre.masks",
    "read_model_file": "ridurre.masks",
    "prune_by_scores": "ridurre.prune_scores",
    "ScoreFileError": "ridurre.prune_scores",
    "frequency_response_scores": "ridurre.ssvep",
    "score_model_layer": "ridurre.ssvep",
    "write_scores_csv": "ridurre.ssvep",
}

_SUBMODULES = ("models", "datasets", "metrics", "schedules", "importance", "selection", "surgeon", "graph",
               "rules", "masks", "ssvep", "ssvep_pruning", "prune_scores", "sensitivity", "views", "pruning",
               "methods", "checkpoints")

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"ridurre.{name}")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ridurre' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
