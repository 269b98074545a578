"""Criteria as objects: :class:`Criterion` and the one registry of them.

A criterion ranks the channels of a channel group: ``score(view)`` returns one score per channel
(higher = more important) from a :class:`~ridurre.criteria.GroupView`; a criterion that picks a
*set* rather than a ranking (KMeans keeps one channel per cluster) also overrides
``select(view, n_remove)``. The pruning loop, the classic method classes, the sensitivity scan,
the configuration, the command line and the report all look criteria up here, so a criterion
registered once is usable everywhere::

    from ridurre.criteria import Criterion, register_criterion

    @register_criterion
    class MeanAbsWeight(Criterion):
        name = "mean_abs"
        description = "smallest mean absolute weight"
        score_label = "mean |w|"

        def score(self, view):
            return np.mean([np.abs(m).mean(axis=1) for m in view.weight_matrices()], axis=0)

This module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ridurre.criteria.selection import select_lowest

__all__ = [
    "Criterion",
    "NEEDS",
    "CRITERIA",
    "register_criterion",
    "unregister_criterion",
    "criterion_class",
    "criterion_names",
    "make_criterion",
    "canonical_name",
]

NEEDS = ("weights", "data", "gradients")
"""What a criterion can need: the weights only, a sample of input data, or gradients on data."""


class Criterion:
    """How to rank the channels of a group; subclass it and :func:`register_criterion` it.

    Class attributes:
        name: the registry name (``"l1"``), also the ``--method``/``--criterion`` value.
        aliases: other names accepted for it.
        description: one line saying what it removes (shown by ``--help`` and in reports).
        score_label: what the score is, for plots (``"L1 norm of the filter"``).
        needs: what it needs besides the model, a subset of :data:`NEEDS`; a criterion needing
            ``"data"`` takes ``data=`` (a sample of inputs) when it is made, one needing
            ``"gradients"`` also ``labels=`` (their targets).
        scoped: it takes ``scope=`` (``"group"`` or ``"producers"``, see
            :class:`~ridurre.criteria.GroupCriterion`).
        normalizer: how one group's scores are scaled before ``ranking="global"`` compares
            groups (:func:`~ridurre.criteria.scores.normalize_scores`): ``"mean"`` (divided by
            their mean, as ridurre 0.0.2), ``"max"``, ``"sum"``, ``"gaussian"``, ``"lamp"``,
            or ``None`` (compared as they are).

    Example:
        >>> import numpy as np
        >>> class Largest(Criterion):
        ...     name = "largest"
        ...     def score(self, view):
        ...         return np.max([np.abs(m).max(axis=1) for m in view.weight_matrices()], axis=0)
        >>> Largest().needs, Largest().name
        (frozenset({'weights'}), 'largest')
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    score_label: ClassVar[str] = "score"
    needs: ClassVar[frozenset] = frozenset({"weights"})
    scoped: ClassVar[bool] = False
    normalizer: str | None = "mean"

    def score(self, view) -> np.ndarray:
        """One score per channel of ``view``'s group, higher = more important."""
        raise NotImplementedError(f"{type(self).__name__} must implement score(view)")

    def select(self, view, n_remove: int) -> np.ndarray:
        """The ``n_remove`` group channels to remove (default: the lowest scores, ties by index)."""
        scores = np.asarray(self.score(view), dtype=np.float64)
        if scores.shape != (view.size,):
            raise ValueError(
                f"criterion {self.name!r} returned scores of shape {scores.shape} for group "
                f"{view.name!r} of {view.size} channels"
            )
        return select_lowest(scores, n_remove)

    def __repr__(self) -> str:
        return f"<criterion {self.name!r}>"


CRITERIA: dict[str, type[Criterion]] = {}
"""Registered criteria, by name."""

_ALIASES: dict[str, str] = {}


def _check_class(cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Criterion)):
        raise TypeError(f"a criterion must be a subclass of ridurre.criteria.Criterion, got {cls!r}")
    if not isinstance(cls.name, str) or not cls.name.isidentifier():
        raise ValueError(f"{cls.__name__}.name must be an identifier-like string, got {cls.name!r}")
    bad = set(cls.needs) - set(NEEDS)
    if bad:
        raise ValueError(f"{cls.__name__}.needs must be a subset of {NEEDS}, got {sorted(bad)}")


def register_criterion(cls: type[Criterion]) -> type[Criterion]:
    """Register a :class:`Criterion` subclass under its ``name`` and ``aliases`` (a decorator).

    Registering a name again replaces the earlier criterion.

    Raises:
        TypeError: not a Criterion subclass.
        ValueError: a bad name, ``needs`` outside :data:`NEEDS`, or an alias already naming
            another criterion.

    Example:
        >>> class Ones(Criterion):
        ...     name = "ones"
        ...     def score(self, view):
        ...         return np.ones(view.size)
        >>> register_criterion(Ones) is Ones, "ones" in criterion_names()
        (True, True)
        >>> unregister_criterion("ones")
    """
    _check_class(cls)
    for alias in cls.aliases:
        owner = _ALIASES.get(alias, alias if alias in CRITERIA else None)
        if owner is not None and owner != cls.name:
            raise ValueError(f"alias {alias!r} of criterion {cls.name!r} already names criterion {owner!r}")
    unregister_criterion(cls.name)
    CRITERIA[cls.name] = cls
    for alias in cls.aliases:
        _ALIASES[alias] = cls.name
    return cls


def unregister_criterion(name: str) -> None:
    """Forget a registered criterion and its aliases (nothing happens for an unknown name)."""
    cls = CRITERIA.pop(name, None)
    if cls is not None:
        for alias in [a for a, target in _ALIASES.items() if target == name]:
            del _ALIASES[alias]


def criterion_names(aliases: bool = False) -> list[str]:
    """The registered names, sorted (with their aliases when ``aliases``).

    Example:
        >>> criterion_names()[:3]
        ['activation_mean', 'apoz', 'bn_scale']
    """
    return sorted(set(CRITERIA) | (set(_ALIASES) if aliases else set()))


def canonical_name(name: str) -> str:
    """The registry name of ``name`` (an alias resolved).

    Raises:
        ValueError: an unknown name; the message lists the valid ones.

    Example:
        >>> canonical_name("bn"), canonical_name("l1")
        ('bn_scale', 'l1')
    """
    if isinstance(name, str):
        if name in CRITERIA:
            return name
        if name in _ALIASES:
            return _ALIASES[name]
    aliases = ", ".join(sorted(_ALIASES))
    raise ValueError(
        f"Unknown criterion {name!r}; valid names: {', '.join(criterion_names())}"
        + (f" (aliases: {aliases})" if aliases else "")
    )


def criterion_class(name: str) -> type[Criterion]:
    """The registered class of ``name`` (or of one of its aliases); see :func:`canonical_name`."""
    return CRITERIA[canonical_name(name)]


def make_criterion(criterion: Any, **options: Any) -> Criterion:
    """A :class:`Criterion` instance from a name, a Criterion class or an instance.

    Args:
        criterion: ``"l1"`` (a registered name or alias), a Criterion subclass, or an instance
            (returned as is; ``options`` must then be empty).
        options: arguments of the criterion's constructor (``data=`` for activation criteria,
            ``kind=``...); options it does not accept are an error.

    Raises:
        ValueError: an unknown name, or missing data for a criterion that needs it.
        TypeError: an option the criterion does not take, or a value of the wrong kind.

    Example:
        >>> make_criterion("l1")
        <criterion 'l1'>
        >>> make_criterion("apoz")
        Traceback (most recent call last):
        ...
        ValueError: criterion 'apoz' scores activations: pass data=<a few hundred training inputs>
    """
    if isinstance(criterion, Criterion):
        if options:
            raise TypeError(f"options {sorted(options)} cannot be given with a criterion instance")
        return criterion
    if isinstance(criterion, type):
        _check_class(criterion)
        cls = criterion
    elif isinstance(criterion, str):
        cls = criterion_class(criterion)
    else:
        raise TypeError(
            f"criterion must be a name, a ridurre.criteria.Criterion subclass or instance, "
            f"got {type(criterion).__name__}"
        )
    try:
        return cls(**options)
    except TypeError as exc:
        raise TypeError(f"criterion {cls.name!r}: {exc}") from None
