"""Composite layers: layers without a rule that are made of other layers (keras-hub's
``TransformerEncoder``, ``MBConvBlock``...). Tracing sees such a layer as one opaque call;
:func:`ridurre.graph.inline_composites` replaces it by the layers and ``keras.ops`` calls of
its ``call``. This module says which layers are composites and why one stayed opaque.
"""

from __future__ import annotations

import weakref

from ridurre import _compat
from ridurre import rules as _rules

__all__ = ["is_composite", "opaque_reason", "record_refusal"]

_REFUSALS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # layer -> why its call was not inlined


def is_composite(layer, rules=None) -> bool:
    """True for a layer ridurre can only see into through its ``call``: it has no rule, it is not
    one of Keras's own layers (those get rules), and it tracks other layers.

    Args:
        layer: a Keras layer.
        rules: extra rules (a layer with a rule is never a composite: the rule describes it).

    Example:
        >>> import keras
        >>> class Block(keras.layers.Layer):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.dense = keras.layers.Dense(4)
        ...     def call(self, x):
        ...         return self.dense(x)
        >>> is_composite(Block()), is_composite(keras.layers.Dense(4))
        (True, False)
    """
    if _compat.is_graph_model(layer) or _compat.builtin_kind(type(layer)) is not None:
        return False
    if _rules.as_rule_set(rules).get(layer) is not None:
        return False
    return bool(_compat.sublayers(layer))


def record_refusal(layer, reason: str) -> None:
    """Remember why ``layer``'s call could not be inlined (reported by :func:`opaque_reason`)."""
    try:
        _REFUSALS[layer] = reason
    except TypeError:  # not weak-referenceable: the reason only lives in the inlining report
        pass


def opaque_reason(layer, rules=None) -> str:
    """Why the trace cannot follow channels through ``layer`` (a layer without a rule).

    Example:
        >>> import keras
        >>> opaque_reason(keras.layers.Layer())
        'ridurre has no rule for Layer layers'
    """
    reason = f"ridurre has no rule for {type(layer).__name__} layers"
    refused = _REFUSALS.get(layer)
    if refused is not None:
        return f"{reason}, and its call could not be inlined: {refused}"
    if is_composite(layer, rules):
        return f"{reason} (a composite layer: ridurre.inline_composites(model) traces its call)"
    return reason
