"""ridurre: channel pruning for Keras 3.

Score the channels of a trained model, physically remove the weakest (coupled channels
together), recompile and fine-tune through your own callbacks, and repeat.

The public API is imported lazily, so ``import ridurre`` is cheap and the TensorFlow-free
score-file path (``python -m ridurre.prune_scores --mode mask``) never imports Keras. See
``ARCHITECTURE.md`` for the layout: a library (``graph``, ``rules``, ``surgery``, ``criteria``,
``pruning``, ``sensitivity``, ``scorefile``, ``ssvep``, ``metrics``, ``zoo``) and an application
(``app``: command line, configuration, reports) that the library never imports.
"""

from ridurre._lazy import lazy_exports

__version__ = "1.0.0.dev0"

_EXPORTS = {
    # tracing and surgery
    "channel_groups": "ridurre.graph:channel_groups",
    "ChannelGroup": "ridurre.graph:ChannelGroup",
    "inline_composites": "ridurre.graph:inline_composites",
    "Surgeon": "ridurre.surgery:Surgeon",
    "delete_channels": "ridurre.surgery:delete_channels",
    "zero_channels": "ridurre.surgery:zero_channels",
    "delete_layer": "ridurre.surgery:delete_layer",
    "insert_layer": "ridurre.surgery:insert_layer",
    "replace_layer": "ridurre.surgery:replace_layer",
    "residual_branches": "ridurre.surgery:residual_branches",
    "remove_branches": "ridurre.surgery:remove_branches",
    "prune_branches": "ridurre.surgery:prune_branches",
    "register_rule": "ridurre.rules:register_rule",
    # the loop and its methods
    "BasePruning": "ridurre.pruning:BasePruning",
    "Pruner": "ridurre.pruning:Pruner",
    "Criterion": "ridurre.criteria:Criterion",
    "register_criterion": "ridurre.criteria:register_criterion",
    "IterationRecord": "ridurre.pruning:IterationRecord",
    "PruningPlan": "ridurre.pruning:PruningPlan",
    "GroupView": "ridurre.criteria:GroupView",
    "RandomFilterPruning": "ridurre.pruning:RandomFilterPruning",
    "KMeansFilterPruning": "ridurre.pruning:KMeansFilterPruning",
    "L1FilterPruning": "ridurre.pruning:L1FilterPruning",
    "L2FilterPruning": "ridurre.pruning:L2FilterPruning",
    "BNScaleFilterPruning": "ridurre.pruning:BNScaleFilterPruning",
    "ActivationFilterPruning": "ridurre.pruning:ActivationFilterPruning",
    "ScoreFilterPruning": "ridurre.pruning:ScoreFilterPruning",
    "SSVEPScorePruning": "ridurre.ssvep:SSVEPScorePruning",
    "find_temporal_layers": "ridurre.ssvep:find_temporal_layers",
    "SensitivityPruning": "ridurre.sensitivity:SensitivityPruning",
    "SensitivityResult": "ridurre.sensitivity:SensitivityResult",
    "choose_ratios": "ridurre.sensitivity:choose_ratios",
    "define_prune_bins": "ridurre.criteria.selection:define_prune_bins",
    # metrics
    "model_stats": "ridurre.metrics:model_stats",
    "count_params": "ridurre.metrics:count_params",
    "measure_latency": "ridurre.metrics:measure_latency",
    "model_size_bytes": "ridurre.metrics:model_size_bytes",
    # score files and masks (TensorFlow-free)
    "apply_pruned_weights": "ridurre.scorefile:apply_pruned_weights",
    "read_model_file": "ridurre.scorefile:read_model_file",
    "prune_by_scores": "ridurre.scorefile:prune_by_scores",
    "ScoreFileError": "ridurre.scorefile:ScoreFileError",
    "frequency_response_scores": "ridurre.ssvep:frequency_response_scores",
    "score_model_layer": "ridurre.ssvep:score_model_layer",
    "write_scores_csv": "ridurre.ssvep:write_scores_csv",
}

# Modules under their 0.0.2 / 1.0.0.dev names, as attributes (``ridurre.views``...). The ones users
# import by dotted path (``ridurre.surgeon``, ``ridurre.prune_scores``, ``ridurre.models``...) also
# have a small module of their own at the top of the package.
_MODULES = {
    "graph": "ridurre.graph",
    "rules": "ridurre.rules",
    "surgery": "ridurre.surgery",
    "surgeon": "ridurre.surgeon",
    "criteria": "ridurre.criteria",
    "importance": "ridurre.criteria.scores",
    "views": "ridurre.criteria.view",
    "pruning": "ridurre.pruning",
    "methods": "ridurre.pruning.methods",
    "selection": "ridurre.criteria.selection",
    "schedules": "ridurre.schedules",
    "checkpoints": "ridurre.pruning.checkpoints",
    "sensitivity": "ridurre.sensitivity",
    "scorefile": "ridurre.scorefile",
    "masks": "ridurre.masks",
    "prune_scores": "ridurre.prune_scores",
    "ssvep": "ridurre.ssvep",
    "ssvep_pruning": "ridurre.ssvep.pruning",
    "metrics": "ridurre.metrics",
    "zoo": "ridurre.zoo",
    "models": "ridurre.models",
    "datasets": "ridurre.datasets",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, {**_EXPORTS, **_MODULES}, globals())
