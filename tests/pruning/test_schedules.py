"""Tests for ridurre.schedules: endpoints, monotonicity, sparsity algebra, validation."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ridurre.pruning import schedules as sch

unit = st.floats(0.0, 1.0)
FAST = settings(max_examples=100, deadline=None)


def _run_like_ridurre_002(schedule, start_factor, n_iterations):
    """The original loop: ``factor = fn(factor, iteration)`` before every pruning step."""
    factor, seen = start_factor, []
    for it in range(n_iterations):
        factor = schedule(factor, it)
        seen.append(factor)
    return seen


def test_call_convention_is_factor_then_iteration():
    # A user scheduler written for ridurre 0.0.2 (stateful, uses the current factor)
    assert _run_like_ridurre_002(lambda f, i: f * 0.5, 1.0, 3) == [0.5, 0.25, 0.125]
    s = sch.linear(0.9, 0.5, 4)
    assert s(0.123, 1) == pytest.approx(0.8)
    assert s(factor=0.0, iteration=4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="iteration must be an integer >= 0"):
        s(1, 0.5)  # swapped arguments are caught: 0.5 is not an iteration


def test_constant():
    s = sch.constant(0.9)
    assert _run_like_ridurre_002(s, 0.1, 5) == [0.9] * 5
    assert "0.9" in repr(s)


@pytest.mark.parametrize("bad", [-0.1, 1.1, float("nan"), "0.5", True, None])
def test_constant_rejects_bad_factor(bad):
    with pytest.raises(ValueError, match=r"factor must be a number in \[0, 1\]"):
        sch.constant(bad)


@pytest.mark.parametrize("iteration", [-1, 1.0, True, "2"])
def test_schedules_reject_bad_iteration(iteration):
    with pytest.raises(ValueError, match="iteration must be an integer >= 0"):
        sch.constant(0.5)(0.5, iteration)


def test_linear_endpoints_and_clamp():
    s = sch.linear(0.9, 0.5, 4)
    values = _run_like_ridurre_002(s, 1.0, 7)
    np.testing.assert_allclose(values, [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5])
    np.testing.assert_allclose([sch.linear(0.2, 0.6, 1)(0, t) for t in range(3)], [0.2, 0.6, 0.6])


@FAST
@given(unit, unit, st.integers(1, 20))
def test_linear_is_monotone_between_endpoints(start, end, n):
    s = sch.linear(start, end, n)
    values = np.array([s(0.0, t) for t in range(n + 3)])
    assert values[0] == pytest.approx(start) and values[n] == pytest.approx(end)
    steps = np.diff(values) * np.sign(end - start)
    assert (steps >= -1e-12).all()
    assert values.min() >= min(start, end) - 1e-12 and values.max() <= max(start, end) + 1e-12


def test_linear_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_iterations must be an integer >= 1"):
        sch.linear(0.9, 0.5, 0)
    with pytest.raises(ValueError, match="end must be"):
        sch.linear(0.9, 2.0, 3)


def test_step():
    s = sch.step([2, 5], [0.9, 0.8, 0.7])
    assert [s(0.0, t) for t in range(7)] == [0.9, 0.9, 0.8, 0.8, 0.8, 0.7, 0.7]
    assert sch.step([], [0.4])(0.0, 100) == 0.4
    with pytest.raises(ValueError, match="strictly increasing"):
        sch.step([3, 3], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="len\\(boundaries\\) \\+ 1 = 2"):
        sch.step([3], [0.1])
    with pytest.raises(ValueError, match=r"boundaries\[0\] must be an integer >= 1"):
        sch.step([0], [0.1, 0.2])


def test_polynomial_decay_matches_zhu_gupta_formula():
    s = sch.polynomial_decay(0.0, 0.8, n_iterations=10, power=3)
    assert s.sparsity(0) == 0.0
    assert s.sparsity(5) == pytest.approx(0.8 - 0.8 * 0.5**3)  # 0.7
    assert s.sparsity(10) == pytest.approx(0.8) and s.sparsity(50) == pytest.approx(0.8)
    # iteration t goes from S(t) to S(t + 1): the first step removes the most
    fractions = _run_like_ridurre_002(s, 1.0, 12)
    assert fractions[0] == pytest.approx(0.8 - 0.8 * 0.9**3)
    assert fractions[10] == 0.0 and fractions[11] == 0.0  # nothing left to do: loop stops


@FAST
@given(st.floats(0.0, 0.6), st.floats(0.0, 0.39), st.integers(1, 15), st.floats(0.5, 5.0))
def test_polynomial_decay_steps_compose_to_final_sparsity(s_i, extra, n, power):
    s_f = s_i + extra
    sched = sch.polynomial_decay(s_i, s_f, n, power=power)
    targets = [sched.sparsity(t) for t in range(n + 2)]
    assert targets[0] == pytest.approx(s_i) and targets[n] == pytest.approx(s_f)
    assert all(b >= a - 1e-12 for a, b in zip(targets, targets[1:]))  # monotone
    remaining = 1.0 - s_i
    for t in range(n):
        f = sched(0.0, t)
        assert 0.0 <= f <= 1.0
        remaining *= 1.0 - f
        assert 1.0 - remaining == pytest.approx(targets[t + 1], abs=1e-9)
    keep = sch.polynomial_decay(s_i, s_f, n, power=power, kind="keep")
    assert all(keep(1.0, t) == pytest.approx(1.0 - sched(0.0, t)) for t in range(n + 1))


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0.5, 0.2, 5), {}, "final_sparsity .* must be >= initial_sparsity"),
        ((0.0, 1.0, 5), {}, r"final_sparsity must be a number in \[0, 1\)"),
        ((0.0, 0.5, 0), {}, "n_iterations must be"),
        ((0.0, 0.5, 5), {"power": 0}, "power must be"),
        ((0.0, 0.5, 5), {"power": float("inf")}, "power must be"),
        ((0.0, 0.5, 5), {"kind": "prune"}, "kind must be 'remove' or 'keep'"),
    ],
)
def test_polynomial_decay_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        sch.polynomial_decay(*args, **kwargs)


def test_per_step_fraction():
    assert sch.per_step_fraction(0.0, 0.5) == 0.5
    assert sch.per_step_fraction(0.5, 0.75) == 0.5
    assert sch.per_step_fraction(0.3, 0.3) == 0.0
    assert sch.per_step_fraction(0.5, 1.0) == 1.0
    with pytest.raises(ValueError, match="must be >= prev_sparsity"):
        sch.per_step_fraction(0.5, 0.4)
    with pytest.raises(ValueError, match=r"prev_sparsity must be a number in \[0, 1\)"):
        sch.per_step_fraction(1.0, 1.0)


def test_n_remove_for_target():
    assert sch.n_remove_for_target(64, 64, 0.25) == 16
    assert sch.n_remove_for_target(64, 50, 0.25) == 2
    assert sch.n_remove_for_target(64, 40, 0.25) == 0  # already past the target
    assert sch.n_remove_for_target(10, 10, 0.7) == 7  # no floating-point drift (0.3 * 10)
    assert sch.n_remove_for_target(10, 10, 1.0) == 9  # never below one channel
    # following polynomial_decay by counts lands exactly on the final width
    s, n, cur = sch.polynomial_decay(0.0, 0.6, 7), 100, 100
    for t in range(7):
        cur -= sch.n_remove_for_target(n, cur, s.sparsity(t + 1))
    assert cur == math.ceil(round(n * 0.4, 9))
    with pytest.raises(ValueError, match="n_current .* must be <= n_original"):
        sch.n_remove_for_target(10, 11, 0.5)


def test_docstring_examples_run():
    result = doctest.testmod(sch, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 5 and result.failed == 0
