"""The prune-and-finetune loop (:class:`BasePruning`, :class:`Pruner`), the classic method
classes, limits, schedules and checkpoints.

``ridurre.pruning.schedules`` is plain numpy; the loop (and Keras) is imported when first used.
"""

from ridurre._lazy import lazy_exports

_EXPORTS = {
    "BasePruning": "ridurre.pruning.loop:BasePruning",
    "Pruner": "ridurre.pruning.loop:Pruner",
    "IterationRecord": "ridurre.pruning.loop:IterationRecord",
    "RandomFilterPruning": "ridurre.pruning.methods:RandomFilterPruning",
    "KMeansFilterPruning": "ridurre.pruning.methods:KMeansFilterPruning",
    "L1FilterPruning": "ridurre.pruning.methods:L1FilterPruning",
    "L2FilterPruning": "ridurre.pruning.methods:L2FilterPruning",
    "BNScaleFilterPruning": "ridurre.pruning.methods:BNScaleFilterPruning",
    "ActivationFilterPruning": "ridurre.pruning.methods:ActivationFilterPruning",
    "ScoreFilterPruning": "ridurre.pruning.methods:ScoreFilterPruning",
    "METHODS": "ridurre.pruning.methods:METHODS",
    "Limits": "ridurre.pruning.limits:Limits",
    "PruningPlan": "ridurre.pruning.plan:PruningPlan",
    "MetricGuard": "ridurre.pruning.guard:MetricGuard",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
