"""Argument checks shared by the library: each raises ``ValueError`` naming the argument."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_int", "check_unit"]


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (bools are refused).

    Example:
        >>> check_int(3, "n", 1)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_unit(value: Any, name: str, *, upper_open: bool = False, lower_open: bool = False) -> float:
    """``value`` as a float in ``[0, 1]`` (or with an open end).

    Example:
        >>> check_unit(0.25, "ratio")
        0.25
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and 0.0 <= value <= 1.0
    if ok and upper_open and value >= 1.0:
        ok = False
    if ok and lower_open and value <= 0.0:
        ok = False
    if not ok:
        interval = ("(" if lower_open else "[") + "0, 1" + (")" if upper_open else "]")
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)
