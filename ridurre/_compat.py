"""The only module that touches Keras internals (``keras.src`` and private graph attributes).

Keras 3 keeps the graph of a Functional model in private attributes (``_nodes_by_depth``,
``_inbound_nodes``, ``_keras_history``, a Sequential model's ``_functional``). ridurre needs
them to trace channels; everything else in ridurre goes through the functions below, so a Keras
release that moves them breaks one file. Keras itself is imported only inside the functions that
need it (the rule table consults :func:`builtin_kind` without Keras), and never TensorFlow.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Call",
    "builtin_kind",
    "calls",
    "calls_between",
    "convert_call_input",
    "forget_nodes",
    "functional_of",
    "intercepted_calls",
    "is_graph_model",
    "is_symbolic",
    "keras_mask",
    "layer_calls",
    "input_name",
    "inputs_structure",
    "unsafe_deserialization_enabled",
    "node_counts",
    "outputs_structure",
    "producer",
    "sublayers",
]


@dataclass(frozen=True)
class Call:
    """One call of a layer (or raw ``keras.ops`` operation) in a Functional graph.

    Attributes:
        operation: the layer or operation called.
        inputs: the symbolic tensors it was called on, flattened.
        outputs: the symbolic tensors it returned, flattened.
        args, kwargs: the call's arguments as given (tensors, constants and options such as
            ``training`` or ``attention_mask``).
    """

    operation: Any
    inputs: tuple
    outputs: tuple
    args: tuple = ()
    kwargs: dict | None = None

    def channel_inputs(self) -> tuple:
        """The inputs without the Keras masks passed along (``mask=``, from ``Embedding(mask_zero=
        True)`` or ``Masking``): a mask has one entry per time step, no channels.

        Example:
            >>> import keras
            >>> x = keras.Input((5,), dtype="int32")
            >>> h = keras.layers.LSTM(3, name="lstm")(keras.layers.Embedding(10, 4, mask_zero=True)(x))
            >>> call = next(c for c in calls(keras.Model(x, h)) if c.operation.name == "lstm")
            >>> len(call.inputs), len(call.channel_inputs())
            (2, 1)
        """
        import keras

        masks = {id(t) for t in keras.tree.flatten((self.kwargs or {}).get("mask")) if is_symbolic(t)}
        return tuple(t for t in self.inputs if id(t) not in masks) if masks else self.inputs

    def constants(self) -> list:
        """The call's arguments that are not symbolic tensors (scalars, arrays, options)."""
        values = list(self.args) + list((self.kwargs or {}).values())
        return [v for v in values if not is_symbolic(v)]

    def arguments(self) -> dict:
        """The call's arguments by the name of the parameter of ``operation.call`` they fill
        (``{"query": tensor, "value": tensor, "attention_mask": tensor}``).

        Raises:
            TypeError: the arguments do not fit the signature.
        """
        import inspect

        bound = inspect.signature(self.operation.call).bind_partial(*self.args, **(self.kwargs or {}))
        named = {}
        for name, value in bound.arguments.items():
            kind = bound.signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                named.update(value)
            else:
                named[name] = value
        return named

    def input_positions(self, names) -> tuple[list, dict]:
        """Where the tensors of the arguments ``names`` are in :meth:`channel_inputs`.

        Returns:
            ``(positions, others)``: for each name, the index in :meth:`channel_inputs` of the tensor
            given for it (``None`` when the argument was not given or is not one tensor), and
            ``{index: argument name}`` of every other input tensor (masks and the like).

        Raises:
            TypeError: the arguments do not fit the signature of ``operation.call``.
        """
        import keras

        arguments = self.arguments()
        inputs = self.channel_inputs()  # Keras masks passed along are neither named nor blocked
        index = {}
        for i, tensor in enumerate(inputs):
            index.setdefault(id(tensor), i)
        positions = []
        for name in names:
            value = arguments.get(name)
            positions.append(index.get(id(value)) if is_symbolic(value) else None)
        taken = {id(inputs[i]) for i in positions if i is not None}
        others = {}
        for name, value in arguments.items():
            if name in names:
                continue
            for tensor in keras.tree.flatten(value):
                if is_symbolic(tensor) and id(tensor) not in taken:
                    for i, t in enumerate(inputs):
                        if t is tensor:
                            others[i] = name
        return positions, others


def _call_of(node) -> Call:
    arguments = getattr(node, "arguments", None)
    args = tuple(arguments.args) if arguments is not None else ()
    kwargs = dict(arguments.kwargs) if arguments is not None else {}
    return Call(node.operation, tuple(node.input_tensors), tuple(node.outputs), args, kwargs)


def functional_of(model) -> Any:
    """The Functional graph behind a built Functional or Sequential model, else ``None``.

    Raises:
        ValueError: a Sequential model that is not built (no ``Input``).
    """
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    if isinstance(model, Sequential):
        if model._functional is None:
            raise ValueError(f"Sequential model {model.name!r} is not built: give it an Input or call build().")
        return model._functional
    if isinstance(model, Functional):
        return model
    return None


def is_graph_model(layer) -> bool:
    """True for Functional and Sequential models (a model used as a layer is followed inside)."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    return isinstance(layer, (Functional, Sequential))


def calls(functional) -> Iterator[Call]:
    """The calls of a Functional graph in topological order (inputs first), without the inputs."""
    by_depth = functional._nodes_by_depth
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if node.is_input or node.operation is None:
                continue
            yield _call_of(node)


def layer_calls(layer) -> list[Call]:
    """Every call of ``layer`` in any graph it was used in."""
    return [_call_of(node) for node in layer._inbound_nodes]


def is_symbolic(value) -> bool:
    """True for a symbolic tensor of a Functional graph."""
    return hasattr(value, "_keras_history")


def producer(tensor) -> Any:
    """The layer or operation whose call produced a symbolic tensor (an ``InputLayer`` for inputs)."""
    return tensor._keras_history.operation


def input_name(tensor) -> str:
    """The name of the ``InputLayer`` that created a model input tensor."""
    return tensor._keras_history.operation.name


def inputs_structure(model) -> Any:
    """The nested structure of a Functional model's inputs (a dict, list or single tensor)."""
    return model._inputs_struct


def outputs_structure(model) -> Any:
    """The nested structure of a Functional model's outputs (a dict, list or single tensor)."""
    return model._outputs_struct


def sublayers(layer) -> list:
    """The layers ``layer`` tracks directly (its attributes, lists and dicts of layers)."""
    return list(layer._flatten_layers(include_self=False, recursive=False))


def keras_mask(tensor) -> Any:
    """The Keras mask a symbolic tensor carries (``Embedding(mask_zero=True)``...), else ``None``."""
    return getattr(tensor, "_keras_mask", None)


def convert_call_input(layer, value) -> Any:
    """``value`` as ``layer.__call__`` hands it to ``layer.call``: floating tensors cast to the
    layer's input dtype when the layer autocasts (what calling ``call`` directly would skip)."""
    if not is_symbolic(value) or not getattr(layer, "_convert_input_args", True):
        return value
    return layer.dtype_policy.convert_input(value, layer.autocast, layer.input_dtype)


def calls_between(inputs, outputs) -> list[Call]:
    """The calls of the graph that leads from the symbolic tensors ``inputs`` to ``outputs``, in
    topological order (no Functional model needed).

    Raises:
        ValueError: a path from ``outputs`` reaches a graph input that is not in ``inputs`` (the
            computation uses a symbolic tensor from elsewhere).
    """
    stop = {id(t) for t in inputs}
    order, seen = [], set()
    stack = [(t, False) for t in reversed(outputs) if id(t) not in stop]
    while stack:
        tensor, expanded = stack.pop()
        history = tensor._keras_history
        node = history.operation._inbound_nodes[history.node_index] if history.operation is not None else None
        if node is None or node.is_input:
            raise ValueError(f"the graph uses the symbolic tensor {tensor.name!r}, which is not one of its inputs")
        if expanded:
            if id(node) not in seen:
                seen.add(id(node))
                order.append(_call_of(node))
            continue
        if id(node) in seen:
            continue
        stack.append((tensor, True))
        stack.extend((t, False) for t in reversed(node.input_tensors) if id(t) not in stop)
    return order


def node_counts(operations) -> dict:
    """How many graph nodes each operation has recorded so far (see :func:`forget_nodes`)."""
    return {id(op): (op, len(op._inbound_nodes), len(op._outbound_nodes)) for op in operations}


def forget_nodes(counts: dict) -> None:
    """Drop the graph nodes recorded since :func:`node_counts` (a trace that was abandoned),
    so that the layers keep only the nodes of the graphs they really belong to."""
    for op, inbound, outbound in counts.values():
        del op._inbound_nodes[inbound:]
        del op._outbound_nodes[outbound:]


_INTERCEPTING_CLASSES: dict = {}
_HANDLERS: dict = {}


def _intercepting_class(cls):
    sub = _INTERCEPTING_CLASSES.get(cls)
    if sub is None:

        def __call__(self, *args, **kwargs):
            handler = _HANDLERS.get(id(self))
            if handler is None:
                return cls.__call__(self, *args, **kwargs)
            return handler(self, args, kwargs, lambda *a, **k: cls.__call__(self, *a, **k))

        sub = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__})
        sub.__qualname__ = cls.__qualname__
        _INTERCEPTING_CLASSES[cls] = sub
    return sub


@contextlib.contextmanager
def intercepted_calls(layers, handler: Callable) -> Iterator[None]:
    """Route every call of these layer objects to ``handler(layer, args, kwargs, original)``
    for the duration of the block (``original(*args, **kwargs)`` is the usual ``__call__``).

    Keras offers no call hook, and Python looks ``__call__`` up on the class, so each layer's
    class is swapped for a subclass that consults the handler, and swapped back on exit.
    """
    swapped = []
    try:
        for layer in layers:
            if id(layer) in _HANDLERS:
                continue
            cls = type(layer)
            object.__setattr__(layer, "__class__", _intercepting_class(cls))
            _HANDLERS[id(layer)] = handler
            swapped.append((layer, cls))
        yield
    finally:
        for layer, cls in swapped:
            object.__setattr__(layer, "__class__", cls)
            _HANDLERS.pop(id(layer), None)


def builtin_kind(cls: type) -> str | None:
    """``"layer"`` for a class of ``keras.layers``, ``"op"`` for the class of a raw ``keras.ops``
    call in a graph (``keras.ops.add`` records an ``Add`` operation), ``"application"`` for a
    layer that a ``keras.applications`` model defines itself (ConvNeXt's ``LayerScale``), else
    ``None``.

    Example:
        >>> import keras
        >>> builtin_kind(keras.layers.Conv2D), builtin_kind(int)
        ('layer', None)
    """
    module = getattr(cls, "__module__", "") or ""
    if module.startswith("keras.src.layers.") or module.startswith("keras.layers"):
        return "layer"
    if module.startswith("keras.src.ops."):
        return "op"
    if module.startswith("keras.src.applications."):
        return "application"
    return None


def unsafe_deserialization_enabled() -> bool:
    """Whether ``keras.config.enable_unsafe_deserialization()`` was called (Keras has no public
    getter): models with ``Lambda`` layers may then be loaded."""
    from keras.src.saving import serialization_lib

    return serialization_lib.in_safe_mode() is False
