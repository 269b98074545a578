"""What inlining needs to record a layer's call as a graph and to judge the recording: the
reasons for refusing one, the structure of a call's result, the fingerprints that tell two
recordings apart, and the recording of a call at two batch and sequence sizes.

Keras builds a graph with the batch size (and a text model's sequence length) unknown:
``ops.shape(x)[0]`` is ``None`` there, so a layer that reshapes by the batch size records an
operation that fails when the graph runs. Recording such a call at two concrete sizes
(:data:`SIZES`) shows which operations depend on the sizes; :func:`size_free` keeps the graph
when the only ones are reshapes that keep the batch axis in front (they become a
batch-preserving ``keras.layers.Reshape``), and refuses it otherwise.
"""

from __future__ import annotations

import keras
import numpy as np

from ridurre import _compat

__all__ = [
    "Refused",
    "Slot",
    "SIZES",
    "sized_shape",
    "result_slots",
    "size_free",
    "symbolic_leaves",
    "fingerprint",
    "unknown_dimension",
    "operation_config",
    "call_signature",
    "all_sublayers",
    "structure_key",
]


class Refused(Exception):
    """A call that cannot be inlined; the message is the reason."""

    def __init__(self, reason, unknown_size=False):
        super().__init__(reason)
        self.unknown_size = unknown_size  # the call failed on an unknown batch or sequence size


class Slot:
    """Position of a tensor among a recorded call's flat outputs (the rest of the structure is kept)."""

    def __init__(self, index):
        self.index = index


SIZES = ((2, 5), (3, 7))
"""(batch, other unknown dimension) sizes of the two recordings of a call that needs them."""


def sized_shape(shape, sizes) -> tuple:
    """``shape`` with its unknown batch axis set to ``sizes[0]`` and other unknown axes to ``sizes[1]``.

    Example:
        >>> sized_shape((None, None, 16), SIZES[0])
        (2, 5, 16)
    """
    return tuple((sizes[0] if axis == 0 else sizes[1]) if d is None else d for axis, d in enumerate(shape))


def result_slots(result):
    """``(symbolic outputs, structure)``: the distinct symbolic tensors of a call's result, and
    the result with each replaced by its :class:`Slot` (``None``, numbers and constants kept)."""
    outputs, slots = [], {}

    def slot(value):
        if _compat.is_symbolic(value):
            if id(value) not in slots:
                slots[id(value)] = Slot(len(outputs))
                outputs.append(value)
            return slots[id(value)]
        return value

    structure = keras.tree.map_structure(slot, result)
    if not outputs:
        raise Refused("its call returns no symbolic tensor")
    return outputs, structure


def size_free(calls, other, kinds=None, other_kinds=None) -> dict:
    """Compare two recordings of one call at the two :data:`SIZES`: ``{index: replacement}``
    for the calls that depend on the sizes but can do without them. A raw ``reshape`` whose
    target starts with the batch size is replaced by a batch-preserving ``keras.layers.Reshape``
    (the replacement is that layer); a constant argument that is the causal mask of the sequence
    at both sizes (keras-hub's decoder blocks) is to be computed by
    :class:`ridurre.graph.layers.CausalMask` (the replacement is ``{argument position: dtype}``).

    ``kinds`` and ``other_kinds`` name, call by call, the inner composite a call of a nested
    model was recorded from (``None`` for other calls): such calls are compared by that name.

    Raises:
        Refused: the recordings differ in structure, or a call depends on the sizes otherwise.
    """
    kinds = kinds or [None] * len(calls)
    other_kinds = other_kinds or [None] * len(other)
    if [k or _kind(c) for c, k in zip(calls, kinds)] != [k or _kind(c) for c, k in zip(other, other_kinds)]:
        raise Refused("its graph changes with the batch or sequence size")
    replacements = {}
    for index, (call, again) in enumerate(zip(calls, other)):
        if kinds[index] is not None:  # an inner composite: recorded again on unknown sizes
            continue
        constants = [_constants(c) for c in (call, again)]
        configs = [operation_config(c.operation) for c in (call, again)]
        for config in configs:
            config.pop("name", None)
        if constants[0] == constants[1] and configs[0] == configs[1]:
            continue
        if constants[0] == constants[1]:
            target = _batch_reshape(call, again)
            replacement = None if target is None else keras.layers.Reshape(target)
        else:
            replacement = _causal_masks(call, again) if configs[0] == configs[1] else None
        if replacement is None:
            raise Refused(
                f"its call gives {type(call.operation).__name__} values that depend on the batch or sequence size",
                unknown_size=True,
            )
        replacements[index] = replacement
    return replacements


def _causal_masks(call, again):
    """``{argument position: dtype}`` of the constant arguments of a call that differ between the
    two recordings only by being the causal mask of each size, or ``None`` if any differs otherwise."""
    leaves = [keras.tree.flatten((c.args, c.kwargs or {})) for c in (call, again)]
    found = {}
    for position, (a, b) in enumerate(zip(*leaves)):
        if _compat.is_symbolic(a) or fingerprint(a) == fingerprint(b):
            continue
        if not all(_is_causal_mask(v, sizes) for v, sizes in ((a, SIZES[0]), (b, SIZES[1]))):
            return None
        found[position] = str(np.asarray(a).dtype)
    return found or None


def _is_causal_mask(value, sizes) -> bool:
    if not (hasattr(value, "shape") and hasattr(value, "dtype")):
        return False
    array = np.asarray(value)
    batch, length = sizes
    if array.shape != (batch, length, length) or not np.isin(array, (0, 1)).all():
        return False
    return bool((array.astype(bool) == np.tril(np.ones((length, length), bool))).all())


def _kind(call):
    op = call.operation
    return id(op) if isinstance(op, keras.layers.Layer) else type(op).__name__


def _constants(call):
    values = [v for v in keras.tree.flatten((call.args, call.kwargs or {})) if not _compat.is_symbolic(v)]
    return repr([fingerprint(v) for v in values])


def _batch_reshape(call, again):
    """The target shape of a batch-preserving Reshape standing for a raw ``reshape`` recorded at
    both sizes, or ``None`` when the raw reshape does not keep the batch axis in front."""
    if type(call.operation).__name__ != "Reshape" or len(call.inputs) != 1:
        return None
    shapes = [tuple(getattr(c.operation, "newshape", ())) for c in (call, again)]
    for shape, c, sizes in zip(shapes, (call, again), SIZES):
        if not shape or shape[0] != sizes[0] or c.inputs[0].shape[0] != sizes[0]:
            return None  # the target does not start with the batch size of its input
    target = []
    for a, b in zip(shapes[0][1:], shapes[1][1:]):
        if a == b:
            target.append(a)
        elif (a, b) == (SIZES[0][1], SIZES[1][1]):
            target.append(-1)
        else:
            return None
    return tuple(target) if target.count(-1) <= 1 else None


def symbolic_leaves(structure) -> list:
    """The distinct symbolic tensors in a nested structure, in order."""
    seen, found = set(), []
    for leaf in keras.tree.flatten(structure):
        if _compat.is_symbolic(leaf) and id(leaf) not in seen:
            seen.add(id(leaf))
            found.append(leaf)
    return found


def fingerprint(value):
    """What identifies a call argument: a tensor's spec, a constant's value."""
    if _compat.is_symbolic(value):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, keras.Variable):
        return ("variable", value.path)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        return ("array", array.shape, str(array.dtype), hash(array.tobytes()))
    return type(value).__name__


def unknown_dimension(value) -> bool:
    """True when a call argument holds a shape with an unknown dimension (``(None, 8, 8, 16)``).

    Example:
        >>> unknown_dimension({"newshape": (None, 8, 16)}), unknown_dimension({"axis": None})
        (True, False)
    """
    if isinstance(value, (list, tuple)):
        if any(v is None for v in value) and any(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return True
        return any(unknown_dimension(v) for v in value)
    if isinstance(value, dict):
        return any(unknown_dimension(v) for v in value.values())
    return False


def operation_config(operation) -> dict:
    """The constructor arguments of a raw ``keras.ops`` operation (``Reshape(newshape)``), else ``{}``."""
    if isinstance(operation, keras.layers.Layer):
        return {}
    try:
        return operation.get_config()
    except Exception:  # noqa: BLE001 - an operation without a config has no constants to check
        return {}


def call_signature(args, kwargs):
    return repr(keras.tree.map_structure(fingerprint, (args, kwargs)))


def all_sublayers(layer) -> list:
    found, stack, seen = [], list(_compat.sublayers(layer)), set()
    while stack:
        sub = stack.pop()
        if id(sub) in seen:
            continue
        seen.add(id(sub))
        found.append(sub)
        stack.extend(_compat.sublayers(sub))
    return found


def structure_key(calls) -> list:
    """The shape of a recorded graph, for comparing two recordings of one call."""
    key = []
    for call in calls:
        op = call.operation
        # ridurre's own layers (causal masks) are made afresh, with new names, by each recording
        own = type(op).__module__.startswith("ridurre.")
        name = op.name if isinstance(op, keras.layers.Layer) and not own else type(op).__name__
        constants = [fingerprint(v) for v in keras.tree.flatten(call.args) if not _compat.is_symbolic(v)]
        constants += [
            (k, repr(keras.tree.map_structure(fingerprint, v)))
            for k, v in sorted((call.kwargs or {}).items())
            if k != "training"
        ]
        key.append((name, len(call.inputs), repr(constants)))
    return key
