"""Pruning criteria: :class:`Criterion` objects in one registry, and the :class:`GroupView` they
score (see :mod:`ridurre.criteria.base`).

``import ridurre.criteria`` does not import Keras; the view (and what it imports) is loaded when
first used.
"""

from ridurre._lazy import lazy_exports
from ridurre.criteria.base import (
    CRITERIA,
    NEEDS,
    Criterion,
    canonical_name,
    criterion_class,
    criterion_names,
    make_criterion,
    register_criterion,
    unregister_criterion,
)
from ridurre.criteria.builtin import (
    SCOPES,
    ActivationMeanCriterion,
    APoZCriterion,
    BNScaleCriterion,
    FPGMCriterion,
    GroupCriterion,
    HessianCriterion,
    HRankCriterion,
    KMeansCriterion,
    L1Criterion,
    L2Criterion,
    LAMPCriterion,
    RandomCriterion,
    TaylorCriterion,
)

__all__ = [
    "CRITERIA",
    "NEEDS",
    "Criterion",
    "canonical_name",
    "criterion_class",
    "criterion_names",
    "make_criterion",
    "register_criterion",
    "unregister_criterion",
    "SCOPES",
    "GroupCriterion",
    "ActivationMeanCriterion",
    "APoZCriterion",
    "BNScaleCriterion",
    "FPGMCriterion",
    "HessianCriterion",
    "HRankCriterion",
    "KMeansCriterion",
    "L1Criterion",
    "L2Criterion",
    "LAMPCriterion",
    "RandomCriterion",
    "TaylorCriterion",
    "GroupView",
    "ActivationRecorder",
    "Member",
]

__getattr__, _dir = lazy_exports(
    __name__,
    {
        "GroupView": "ridurre.criteria.view:GroupView",
        "ActivationRecorder": "ridurre.criteria.view:ActivationRecorder",
        "Member": "ridurre.criteria.view:Member",
    },
    globals(),
)
