"""Pruning-factor schedules: how much to prune at each iteration of the loop.

A schedule is a callable ``schedule(factor, iteration) -> new_factor`` with the exact
calling convention of ridurre 0.0.2, whose loop did, before every pruning step::

    self._pruning_factor = prune_factor_scheduler_fn(self._pruning_factor, pruning_iteration)

i.e. the CURRENT factor first, the 0-based iteration second, and the returned value
becomes the factor of this step (and the ``factor`` passed next time). Any plain function
or lambda with that signature works as well, e.g. ``lambda factor, it: factor * 0.95``.

What the factor means is up to the pruning method (the original's KMeans factor is a
KEEP fraction, its random factor a REMOVAL fraction): :func:`constant`, :func:`linear`
and :func:`step` return the numbers you give them; :func:`polynomial_decay` derives the
factor from a cumulative sparsity target and lets you choose ``kind="remove"|"keep"``.

Cumulative sparsity vs. per-step factor: a step that removes the fraction ``f_t`` of the
channels that REMAIN takes the sparsity (fraction of the ORIGINAL channels removed) from
``s`` to ``1 - (1 - s)(1 - f_t)``. Hitting the target ``s_next`` from ``s_prev`` therefore
needs ``f_t = (s_next - s_prev) / (1 - s_prev)``: :func:`per_step_fraction`. Rounding to
whole channels drifts over many steps; :func:`n_remove_for_target` computes the count
from the original width instead.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence

from ridurre._validation import check_int, check_unit

__all__ = [
    "Schedule",
    "constant",
    "linear",
    "n_remove_for_target",
    "per_step_fraction",
    "polynomial_decay",
    "step",
]


class Schedule:
    """Base class: ``schedule(factor, iteration)`` returns the factor for ``iteration``.

    Subclasses implement :meth:`value`; ``factor`` (the current factor) is accepted for
    compatibility with ridurre 0.0.2 and ignored by the built-in schedules.

    Example:
        >>> class Halving(Schedule):
        ...     def value(self, iteration):
        ...         return 0.5 ** (iteration + 1)
        >>> Halving()(1.0, 2)
        0.125
    """

    def __call__(self, factor: float, iteration: int) -> float:
        return float(self.value(check_int(iteration, "iteration", 0)))

    def value(self, iteration: int) -> float:  # pragma: no cover - abstract
        """The factor for the 0-based ``iteration``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _Constant(Schedule):
    def __init__(self, factor: float):
        self.factor = factor

    def value(self, iteration: int) -> float:
        return self.factor


class _Linear(Schedule):
    def __init__(self, start: float, end: float, n_iterations: int):
        self.start, self.end, self.n_iterations = start, end, n_iterations

    def value(self, iteration: int) -> float:
        t = min(iteration, self.n_iterations) / self.n_iterations
        return self.start + (self.end - self.start) * t


class _Step(Schedule):
    def __init__(self, boundaries: tuple[int, ...], values: tuple[float, ...]):
        self.boundaries, self.values = boundaries, values

    def value(self, iteration: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, iteration)]


class _PolynomialDecay(Schedule):
    def __init__(self, initial_sparsity: float, final_sparsity: float, n_iterations: int, power: float, kind: str):
        self.initial_sparsity, self.final_sparsity = initial_sparsity, final_sparsity
        self.n_iterations, self.power, self.kind = n_iterations, power, kind

    def sparsity(self, iteration: int) -> float:
        """Cumulative sparsity target after ``iteration`` steps (``S(0)`` = initial).

        Example:
            >>> polynomial_decay(0.0, 0.5, 4).sparsity(4)
            0.5
        """
        t = min(check_int(iteration, "iteration", 0), self.n_iterations) / self.n_iterations
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        return s_f + (s_i - s_f) * (1.0 - t) ** self.power

    def value(self, iteration: int) -> float:
        fraction = per_step_fraction(self.sparsity(iteration), self.sparsity(iteration + 1))
        return fraction if self.kind == "remove" else 1.0 - fraction


def constant(factor: float) -> Schedule:
    """The same factor at every iteration (the original's default behaviour).

    Args:
        factor: value in ``[0, 1]``.

    Returns:
        A :class:`Schedule`.

    Example:
        >>> s = constant(0.9)
        >>> s(0.5, 0), s(0.5, 10)
        (0.9, 0.9)
    """
    return _Constant(check_unit(factor, "factor"))


def linear(start: float, end: float, n_iterations: int) -> Schedule:
    """Linear interpolation from ``start`` (iteration 0) to ``end`` (iteration ``n_iterations``).

    Stays at ``end`` afterwards. Works in either direction.

    Args:
        start: factor at iteration 0, in ``[0, 1]``.
        end: factor from iteration ``n_iterations`` on, in ``[0, 1]``.
        n_iterations: iterations to go from ``start`` to ``end``, ``>= 1``.

    Returns:
        A :class:`Schedule`.

    Example:
        >>> s = linear(0.9, 0.5, 4)
        >>> [round(s(0.0, t), 3) for t in range(6)]
        [0.9, 0.8, 0.7, 0.6, 0.5, 0.5]
    """
    return _Linear(check_unit(start, "start"), check_unit(end, "end"), check_int(n_iterations, "n_iterations", 1))


def step(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """Piecewise-constant factor: ``values[i]`` from iteration ``boundaries[i - 1]`` on.

    Args:
        boundaries: strictly increasing iterations (``>= 1``) at which the factor changes.
        values: ``len(boundaries) + 1`` factors in ``[0, 1]``.

    Returns:
        A :class:`Schedule`.

    Example:
        >>> s = step([2, 5], [0.9, 0.8, 0.7])
        >>> [s(0.0, t) for t in range(7)]
        [0.9, 0.9, 0.8, 0.8, 0.8, 0.7, 0.7]
    """
    b = [check_int(x, f"boundaries[{i}]", 1) for i, x in enumerate(boundaries)]
    if any(y <= x for x, y in zip(b, b[1:])):
        raise ValueError(f"boundaries must be strictly increasing, got {b}")
    v = [check_unit(x, f"values[{i}]") for i, x in enumerate(values)]
    if len(v) != len(b) + 1:
        raise ValueError(f"values must have len(boundaries) + 1 = {len(b) + 1} items (one per interval), got {len(v)}")
    return _Step(tuple(b), tuple(v))


def polynomial_decay(
    initial_sparsity: float,
    final_sparsity: float,
    n_iterations: int,
    power: float = 3,
    kind: str = "remove",
) -> Schedule:
    """Gradual pruning of Zhu & Gupta (2017) as a per-iteration factor.

    The cumulative sparsity target (fraction of the ORIGINAL channels removed) after
    ``t`` steps is ``S(t) = s_f + (s_i - s_f) * (1 - t / n) ** power`` for ``t <= n`` and
    ``s_f`` afterwards: fast pruning first, gentle at the end. Iteration ``t`` (0-based)
    takes the model from ``S(t)`` to ``S(t + 1)``, so ``initial_sparsity`` is the sparsity
    the model has before the first step (0 for an unpruned model) and ``final_sparsity``
    is reached after ``n_iterations`` steps; later iterations return a removal of 0 (the
    original loop stops when a step prunes nothing).

    The returned factor is ``per_step_fraction(S(t), S(t + 1))``, the fraction of the
    REMAINING channels to remove (``kind="remove"``), or one minus it, the fraction to
    keep (``kind="keep"``, for keep-factor methods such as the original KMeans pruning).
    ``schedule.sparsity(t)`` exposes the cumulative target itself.

    Args:
        initial_sparsity: ``s_i`` in ``[0, 1)``.
        final_sparsity: ``s_f`` in ``[s_i, 1)``.
        n_iterations: ``n``, pruning steps to reach ``s_f``, ``>= 1``.
        power: exponent, ``> 0`` (3 in the paper; 1 is linear in sparsity).
        kind: ``"remove"`` or ``"keep"``.

    Returns:
        A :class:`Schedule` with an extra ``sparsity(t)`` method.

    Example:
        >>> s = polynomial_decay(0.0, 0.5, n_iterations=2, power=1)
        >>> s.sparsity(1), s(0.0, 0), round(s(0.0, 1), 4), s(0.0, 2)
        (0.25, 0.25, 0.3333, 0.0)
        >>> polynomial_decay(0.0, 0.5, 2, power=1, kind="keep")(1.0, 0)
        0.75
    """
    s_i = check_unit(initial_sparsity, "initial_sparsity", upper_open=True)
    s_f = check_unit(final_sparsity, "final_sparsity", upper_open=True)
    if s_f < s_i:
        raise ValueError(f"final_sparsity ({s_f}) must be >= initial_sparsity ({s_i}): channels are never restored")
    n = check_int(n_iterations, "n_iterations", 1)
    if isinstance(power, bool) or not isinstance(power, numbers.Real) or not (0 < power < math.inf):
        raise ValueError(f"power must be a finite number > 0, got {power!r}")
    if kind not in ("remove", "keep"):
        raise ValueError(f"kind must be 'remove' or 'keep', got {kind!r}")
    return _PolynomialDecay(s_i, s_f, n, float(power), kind)


def per_step_fraction(prev_sparsity: float, next_sparsity: float) -> float:
    """Fraction of the REMAINING channels to remove to go from one sparsity to the next.

    Sparsities are cumulative fractions of the original channels removed:
    ``(next - prev) / (1 - prev)``.

    Args:
        prev_sparsity: sparsity before the step, in ``[0, 1)``.
        next_sparsity: target after the step, in ``[prev_sparsity, 1]``.

    Returns:
        A fraction in ``[0, 1]``.

    Example:
        >>> per_step_fraction(0.0, 0.5), per_step_fraction(0.5, 0.75)
        (0.5, 0.5)
    """
    prev = check_unit(prev_sparsity, "prev_sparsity", upper_open=True)
    nxt = check_unit(next_sparsity, "next_sparsity")
    if nxt < prev:
        raise ValueError(f"next_sparsity ({nxt}) must be >= prev_sparsity ({prev}): channels are never restored")
    return min(1.0, max(0.0, (nxt - prev) / (1.0 - prev)))


def n_remove_for_target(n_original: int, n_current: int, target_sparsity: float) -> int:
    """Channels to remove now so that a group reaches a cumulative sparsity target.

    Counting from the ORIGINAL width avoids the drift of applying rounded per-step
    fractions repeatedly. The kept count is ``max(1, ceil(n_original * (1 - target)))``
    (rounding keeps, like the original ridurre's ``ceil``).

    Args:
        n_original: channels before any pruning, ``>= 1``.
        n_current: channels now, in ``[1, n_original]``.
        target_sparsity: cumulative target in ``[0, 1]``.

    Returns:
        ``n_current - target_kept`` if positive, else 0.

    Example:
        >>> n_remove_for_target(64, 64, 0.25), n_remove_for_target(64, 50, 0.25)
        (16, 2)
    """
    n_original = check_int(n_original, "n_original", 1)
    n_current = check_int(n_current, "n_current", 1)
    if n_current > n_original:
        raise ValueError(f"n_current ({n_current}) must be <= n_original ({n_original})")
    target = check_unit(target_sparsity, "target_sparsity")
    kept = max(1, math.ceil(round(n_original * (1.0 - target), 9)))
    return max(0, n_current - kept)
