"""Argument checks shared by the library: each raises ``ValueError``/``TypeError`` naming the
argument and what was expected. Imports neither Keras nor TensorFlow."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["check_int", "check_number", "check_unit", "check_fraction", "check_callable", "LayerPatterns"]


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


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float within ``[low, high]`` (ends open when asked; bools and NaN are refused,
    and infinities unless ``finite=False``).

    Example:
        >>> check_number(2, "fs", low=0, low_open=True)
        2.0
        >>> check_number(float("nan"), "noise", low=0)
        Traceback (most recent call last):
        ...
        ValueError: noise must be a number >= 0, got nan
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and not math.isnan(value)
    ok = ok and (not finite or math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if low is not None and high is not None:
            what = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            what = f"{'>' if low_open else '>='} {low:g}"
        elif high is not None:
            what = f"{'<' if high_open else '<='} {high:g}"
        else:
            what = "finite" if finite else "real"
        raise ValueError(f"{name} must be a number {what}, got {value!r}")
    return float(value)


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


def check_fraction(value: Any, name: str) -> float | None:
    """An optional share in ``(0, 1]`` (``None`` stays ``None``): a limit such as
    ``maximum_pruning_percent``.

    Example:
        >>> check_fraction(None, "limit"), check_fraction(0.5, "limit")
        (None, 0.5)
    """
    return None if value is None else check_unit(value, name, lower_open=True)


def check_callable(fn: Any, name: str, signature: str, optional: bool = True) -> Any:
    """``fn`` unless it is neither callable nor (when ``optional``) ``None``.

    Example:
        >>> check_callable(None, "finetune_fn", "fn(model)") is None
        True
    """
    if fn is None and optional:
        return None
    if not callable(fn):
        raise TypeError(
            f"{name} must be a callable {signature}{' or None' if optional else ''}, got {type(fn).__name__}"
        )
    return fn


class LayerPatterns:
    """Regular expressions selecting layers, matched IN FULL against a layer's path
    (``"outer/inner"`` in nested models) or its own name; the one parser of ``layers=``,
    ``exclude=`` and every other layer selection.

    Args:
        values: a pattern, a layer (its name, escaped), or a list of them.
        name: the argument's name, for error messages.

    Raises:
        ValueError: an invalid regular expression (naming it and the argument).
        TypeError: something that is neither a string nor a layer.

    Example:
        >>> patterns = LayerPatterns(["conv[12]", "head"], "layers")
        >>> patterns.matches("conv1"), patterns.matches("block/conv2"), patterns.matches("conv12")
        (True, True, False)
    """

    def __init__(self, values: Any, name: str):
        if isinstance(values, str) or hasattr(values, "name") and not isinstance(values, Iterable):
            values = [values]
        if values is None or not isinstance(values, Iterable):
            raise TypeError(
                f"{name} must be a layer name, a regular expression, a layer or a list of them, got {values!r}"
            )
        self.name = name
        self.patterns: list[str] = []
        for value in values:
            if isinstance(value, str):
                try:
                    re.compile(value)
                except re.error as exc:
                    raise ValueError(f"{name}: {value!r} is not a valid regular expression: {exc}") from None
                self.patterns.append(value)
            elif isinstance(getattr(value, "name", None), str):  # a Keras layer
                self.patterns.append(re.escape(value.name))
            else:
                raise TypeError(f"{name} must hold layer names, regular expressions or layers, got {value!r}")
        self._compiled = [re.compile(p) for p in self.patterns]

    @classmethod
    def parse(cls, values: Any, name: str) -> LayerPatterns | None:
        """``None`` for ``None`` (no selection), else ``LayerPatterns(values, name)``."""
        return None if values is None else cls(values, name)

    def matches(self, path: str) -> bool:
        """Whether one pattern matches ``path`` or its last component in full."""
        short = path.rsplit("/", 1)[-1]
        return any(p.fullmatch(path) or p.fullmatch(short) for p in self._compiled)

    def first_match(self, path: str) -> str | None:
        """The first pattern matching ``path`` (see :meth:`matches`), or ``None``."""
        short = path.rsplit("/", 1)[-1]
        return next((s for s, p in zip(self.patterns, self._compiled) if p.fullmatch(path) or p.fullmatch(short)), None)

    def matching(self, paths: Iterable[str]) -> dict[str, list[str]]:
        """For each pattern, the paths it matches (an empty list: a pattern matching nothing).

        Example:
            >>> LayerPatterns(["conv.*", "fc"], "layers").matching(["conv1", "conv2", "head"])
            {'conv.*': ['conv1', 'conv2'], 'fc': []}
        """
        paths = list(paths)
        out = {}
        for pattern, compiled in zip(self.patterns, self._compiled):
            out[pattern] = [p for p in paths if compiled.fullmatch(p) or compiled.fullmatch(p.rsplit("/", 1)[-1])]
        return out

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def __repr__(self) -> str:
        return f"LayerPatterns({self.patterns!r})"
