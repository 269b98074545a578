"""Lazy exports for packages: ``import ridurre`` (or a subpackage) stays cheap, and modules that
need no Keras (score files, numpy criteria) can be imported without it.

A package declares ``{public name: "module:attribute"}`` (or ``"module"`` to export a module);
the module is imported the first time the name is used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for a package exporting ``exports`` lazily.

    Args:
        package: the package's ``__name__`` (for error messages).
        exports: ``{name: "module:attribute"}``, or ``{name: "module"}`` to export a module.
        namespace: the package's ``globals()``: resolved names are cached there.

    Example:
        >>> getattr_, dir_ = lazy_exports("pkg", {"sqrt": "math:sqrt", "json": "json"}, {})
        >>> getattr_("sqrt")(9.0), getattr_("json").__name__
        (3.0, 'json')
    """

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attribute = target.partition(":")
        value = importlib.import_module(module_name)
        if attribute:
            value = getattr(value, attribute)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(exports) | {k for k in namespace if not k.startswith("_")})

    return __getattr__, __dir__
