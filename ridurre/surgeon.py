"""The channel surgeon: kerassurgeon's operations for Keras 3.

``delete_channels``, ``delete_layer``, ``insert_layer`` and ``replace_layer`` each return a new
model and never change the one given. :class:`Surgeon` batches any number of these jobs into
ONE rebuild. ``zero_channels`` is the soft counterpart of ``delete_channels``: same
architecture, and the chosen channels contribute exactly nothing (it is the reference for
exactness tests and the basis of mask mode).

Deleting channels of a layer deletes the same channels everywhere they are coupled (see
:func:`ridurre.channel_groups`): residual merges, concatenations, depthwise and grouped
convolutions, normalization layers, shared layers and nested models are all followed.

Example:
    >>> import keras, numpy as np
    >>> from ridurre.surgeon import delete_channels
    >>> model = keras.Sequential([keras.Input((8, 8, 1)),
    ...                           keras.layers.Conv2D(6, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(3, name="head")])
    >>> pruned = delete_channels(model, "conv", [0, 2])
    >>> pruned.get_layer("conv").filters, pruned.get_layer("head").kernel.shape
    (4, (144, 3))
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

import keras

from ridurre import graph as _graph

__all__ = [
    "Surgeon",
    "delete_channels",
    "zero_channels",
    "delete_layer",
    "insert_layer",
    "replace_layer",
]

_JOBS = ("delete_channels", "delete_layer", "insert_layer", "replace_layer")


def _weights_dict(layer):
    names = [v.name for v in layer.weights]
    values = layer.get_weights()
    if len(set(names)) != len(names):  # rare: fall back to positions
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    return dict(zip(names, values))


def _weights_list(layer, weights):
    names = [v.name for v in layer.weights]
    if len(set(names)) != len(names):
        names = [f"{i}:{n}" for i, n in enumerate(names)]
    if all(n in weights for n in names):
        return [weights[n] for n in names]
    if len(names) == len(weights):  # unnamed variables get new automatic names in the clone
        return list(weights.values())
    raise KeyError(f"weights {sorted(set(names) - set(weights))} are missing")


def _validate_channels(channels, n, layer_name):
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise TypeError(f"channels for layer {layer_name!r} must be a sequence of ints, got {channels!r}")
    values = list(channels)
    for c in values:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise TypeError(f"channels for layer {layer_name!r} must be ints, got {c!r}")
    values = [int(c) for c in values]
    bad = [c for c in values if not 0 <= c < n]
    if bad:
        raise ValueError(f"channel indices {bad} are out of range for layer {layer_name!r}, which has {n} channels")
    if len(set(values)) != len(values):
        dup = sorted({c for c in values if values.count(c) > 1})
        raise ValueError(f"channel indices {dup} are given more than once for layer {layer_name!r}")
    return np.asarray(values, dtype=np.int64)


class Surgeon:
    """Batch several jobs on one model into a single rebuild.

    Args:
        model: a built Functional or Sequential ``keras.Model``. It is never modified.

    Jobs (``add_job(job, layer, **kwargs)``):
        * ``"delete_channels"`` with ``channels=[...]``: remove these output channels of
          ``layer`` and everything coupled to them. Jobs touching the same group delete the
          union of their channels.
        * ``"delete_layer"``: remove a layer whose output has the shape of its input.
        * ``"insert_layer"`` with ``new_layer=...``: insert ``new_layer`` before ``layer``.
        * ``"replace_layer"`` with ``new_layer=...``: use ``new_layer`` instead of ``layer``.

    Example:
        >>> import keras
        >>> from ridurre.surgeon import Surgeon
        >>> x = keras.Input((16,))
        >>> h = keras.layers.Dense(8, name="h")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.Dropout(0.5, name="drop")(h)))
        >>> surgeon = Surgeon(model)
        >>> surgeon.add_job("delete_channels", "h", channels=[0, 1, 2])
        >>> surgeon.add_job("delete_layer", "drop")
        >>> new = surgeon.operate()
        >>> new.get_layer("h").units, [l.name for l in new.layers]
        (5, ['input_layer', 'h', 'out'])
    """

    def __init__(self, model):
        _graph.check_model(model)
        self.model = model
        self._deletes = []  # (layer, channels)
        self._edits = {}  # id(layer) -> (kind, new_layer)

    def add_job(self, job, layer, *, channels=None, new_layer=None):
        """Queue a job; see the class docstring. Validation of channel indices happens here."""
        if job not in _JOBS:
            raise ValueError(f"job must be one of {_JOBS}, got {job!r}")
        layer = _graph.resolve_layer(self.model, layer)
        if job == "delete_channels":
            if channels is None:
                raise ValueError(f"job 'delete_channels' on layer {layer.name!r} needs channels=[...]")
            self._deletes.append((layer, channels))
            return
        if id(layer) in self._edits:
            raise ValueError(f"layer {layer.name!r} already has a {self._edits[id(layer)][0]!r} job")
        if job == "delete_layer":
            self._check_deletable(layer)
            self._edits[id(layer)] = ("delete", None)
        else:
            if not isinstance(new_layer, keras.layers.Layer):
                raise TypeError(f"job {job!r} on layer {layer.name!r} needs new_layer=<a keras layer>")
            self._edits[id(layer)] = ("insert" if job == "insert_layer" else "replace", new_layer)

    @staticmethod
    def _check_deletable(layer):
        for node in layer._inbound_nodes:
            if len(node.input_tensors) != 1 or len(node.outputs) != 1:
                raise ValueError(f"cannot delete layer {layer.name!r}: it has several inputs or outputs")
            if tuple(node.input_tensors[0].shape) != tuple(node.outputs[0].shape):
                raise ValueError(
                    f"cannot delete layer {layer.name!r}: its output shape {tuple(node.outputs[0].shape)} "
                    f"differs from its input shape {tuple(node.input_tensors[0].shape)}"
                )

    def operate(self):
        """Apply every queued job in one rebuild and return the new model."""
        return self._run(zero=False)

    # -- internals ---------------------------------------------------------------------------
    def _deleted_roots(self, trace):
        units = trace.units
        deleted = set()
        for layer, channels in self._deletes:
            use = trace.uses.get(id(layer))
            if use is None or use.out_layout is None:
                raise ValueError(f"layer {layer.name!r} has no single output whose channels can be deleted")
            idx = _validate_channels(channels, len(use.out_layout), use.path)
            if idx.size == 0:
                continue
            roots = units.roots(use.out_layout[idx])
            for r in np.unique(roots).tolist():
                if r in units.blocked:
                    raise ValueError(
                        f"cannot delete channels of layer {use.path!r}: {units.blocked[r]}"
                    )
            deleted.update(roots.tolist())
        if deleted:
            gone = np.zeros(len(units.parent), dtype=bool)
            gone[list(deleted)] = True
            for group in trace.groups():
                kept = np.count_nonzero(~gone[group.roots])
                if kept == 0:
                    raise ValueError(
                        f"deleting these channels would delete every channel of the group produced by "
                        f"{', '.join(group.producers)} ({group.size} channels); keep at least one"
                    )
        return np.asarray(sorted(deleted), dtype=np.int64)

    def _run(self, zero):
        trace = _graph.trace_model(self.model, self._edits)
        deleted = self._deleted_roots(trace)
        return _rebuild(self.model, plan_layers(trace, deleted, zero=zero), self._edits)


def _gone_masks(trace, use, deleted):
    """Boolean masks of the input and output channel positions of ``use`` that are deleted
    (``deleted`` is a boolean array over units, True for the roots to delete)."""

    def mask(layout):
        if layout is None:
            return None
        gone = deleted[trace.units.roots(layout)]
        return gone if gone.any() else None

    return mask(use.in_layout), mask(use.out_layout)


def plan_layers(trace, deleted, zero=False, shapes_only=False):
    """For every layer of a traced model, its config and weights once ``deleted`` units are gone.

    Args:
        trace: a :class:`ridurre.graph.Trace`.
        deleted: int array of the unit roots to delete.
        zero: keep shapes and zero the channels instead of removing them.
        shapes_only: slice placeholder arrays instead of the real weights (cheap: used to
            estimate params and MACs of a planned deletion without rebuilding anything).

    Returns:
        dict ``id(layer) -> (config, weights dict or None)``; nested models map to
        ``("model", [new width of each input])``.
    """
    deleted_roots = np.asarray(deleted, dtype=np.int64)
    deleted = np.zeros(len(trace.units.parent), dtype=bool)
    deleted[deleted_roots] = True
    plans = {}
    for use in trace.uses.values():
        layer = use.layer
        if _graph._is_model(layer):
            plans[id(layer)] = ("model", [
                None if deleted_roots.size == 0 or zero else int(np.count_nonzero(~deleted[trace.units.roots(lay)]))
                for lay in use.model_in_layouts
            ])
            continue
        variables = getattr(layer, "weights", [])  # raw keras.ops operations have none
        built = bool(variables) or getattr(layer, "built", True)
        if shapes_only:
            weights = {v.name: np.broadcast_to(np.zeros(1, np.int8), tuple(v.shape)) for v in variables}
        else:
            weights = _weights_dict(layer) if variables else {}
        config = layer.get_config()
        gone_in, gone_out = (_gone_masks(trace, use, deleted) if use.rule is not None and deleted_roots.size
                             else (None, None))
        if gone_in is not None or gone_out is not None:
            if zero:
                weights = use.rule.zero(layer, weights, gone_in, gone_out)
            else:
                keep_in = None if gone_in is None else ~gone_in
                keep_out = None if gone_out is None else ~gone_out
                config, weights = use.rule.slice(layer, config, weights, keep_in, keep_out)
        plans[id(layer)] = (config, weights if built else None)
    return plans


def _rebuild(model, plans, edits):
    """Clone ``model`` once, building every layer from its planned config and weights."""
    new_layers = {}  # id(old layer) -> new layer
    weights_for = []  # (new layer, weights)

    def build(layer):
        if isinstance(layer, keras.layers.Lambda):
            return layer  # weightless user code: reuse rather than deserialize it unsafely
        if _graph._is_model(layer):
            return clone(layer, plans[id(layer)][1])
        config, weights = plans.get(id(layer), (layer.get_config(), None))
        new = layer.__class__.from_config(config)
        if weights:
            weights_for.append((new, weights))
        return new

    def clone_function(layer):
        edit = edits.get(id(layer))
        new = build(edit[1] if edit and edit[0] == "replace" else layer)
        new_layers[id(layer)] = new
        if edit and edit[0] == "insert":
            new_layers[("insert", id(layer))] = build(edit[1])
        return new

    old_of = {}

    def recording_clone(layer):
        new = clone_function(layer)
        old_of[id(new)] = layer
        return new

    def call_function(new_layer, *args, **kwargs):
        old = old_of.get(id(new_layer))
        edit = edits.get(id(old)) if old is not None else None
        if edit and edit[0] == "delete":
            return args[0]
        if edit and edit[0] == "insert":
            args = (new_layers[("insert", id(old))](args[0]),) + args[1:]
        if edit and edit[0] == "replace":
            kwargs = _accepted_kwargs(new_layer, kwargs)
        return new_layer(*args, **kwargs)

    def clone(model, channels=None):
        """Clone a (possibly nested) model; ``channels`` gives the new width of each input."""
        inputs = None
        if channels is not None and any(c is not None for c in channels):
            flat = list(model.inputs)
            shapes = [t.shape if c is None else tuple(t.shape[:-1]) + (c,) for t, c in zip(flat, channels)]
            new_inputs = [keras.Input(batch_shape=s, dtype=t.dtype, name=t.name) for s, t in zip(shapes, flat)]
            inputs = new_inputs[0] if isinstance(model, keras.Sequential) else keras.tree.pack_sequence_as(
                model._inputs_struct, new_inputs)
        if isinstance(model, keras.Sequential):
            if edits:
                return _rebuild_sequential(model, recording_clone, edits, new_layers, inputs)
            return keras.models.clone_model(model, input_tensors=inputs, clone_function=recording_clone)
        return keras.models.clone_model(
            model, input_tensors=inputs, clone_function=recording_clone,
            call_function=call_function if edits else None,
        )

    new_model = clone(model)
    for new, weights in weights_for:
        try:
            new.set_weights(_weights_list(new, weights))
        except (ValueError, KeyError) as exc:
            raise RuntimeError(f"could not set the weights of rebuilt layer {new.name!r}: {exc}") from exc
    return new_model


def _accepted_kwargs(layer, kwargs):
    """The call kwargs of the replaced layer (``mask``, ``training``) that ``layer`` accepts."""
    params = inspect.signature(layer.call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _rebuild_sequential(model, clone_function, edits, new_layers, inputs=None):
    layers = []
    for layer in model.layers:
        edit = edits.get(id(layer))
        if edit and edit[0] == "delete":
            continue
        new = clone_function(layer)
        if edit and edit[0] == "insert":
            layers.append(new_layers[("insert", id(layer))])
        layers.append(new)
    if inputs is None:
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    return keras.Sequential([inputs] + layers, name=model.name)


def delete_channels(model, layer, channels):
    """Return a copy of ``model`` without the given output channels of ``layer``.

    The same channels are removed from every layer coupled to them (see
    :func:`ridurre.channel_groups`), and every consumer is sliced to match.

    Args:
        model: a built Functional or Sequential model (not modified).
        layer: a layer of ``model`` or its name (``"outer/inner"`` inside nested models).
        channels: indices of ``layer``'s output channels (last axis) to delete.

    Raises:
        ValueError: unknown layer, indices out of range or repeated, channels that cannot be
            pruned (the message gives the reason), or deleting every channel of a group.
        TypeError: a subclassed model, or channels that are not ints.

    Example:
        >>> import keras
        >>> from ridurre.surgeon import delete_channels
        >>> x = keras.Input((10,))
        >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(6, name="h")(x)))
        >>> delete_channels(model, "h", [1, 4]).get_layer("h").units
        4
    """
    surgeon = Surgeon(model)
    surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon.operate()


def zero_channels(model, layer, channels):
    """Return a copy of ``model`` in which the given channels contribute exactly nothing.

    Same architecture and the same coupling as :func:`delete_channels`: the producing kernel
    columns and biases are zeroed, the normalization parameters that follow are set so that the
    channel is zero after normalization, and the consumers' input weights for the channel are
    zeroed, so the output equals that of ``delete_channels(model, layer, channels)``.

    Example:
        >>> import keras, numpy as np
        >>> from ridurre.surgeon import zero_channels
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, keras.layers.Dense(3, name="h")(x))
        >>> zeroed = zero_channels(model, "h", [1])
        >>> float(np.abs(zeroed.predict(np.ones((2, 4)), verbose=0)[:, 1]).max())
        0.0
    """
    surgeon = Surgeon(model)
    surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon._run(zero=True)


def delete_layer(model, layer):
    """Return a copy of ``model`` without ``layer`` (its output must have its input's shape).

    Example:
        >>> import keras
        >>> from ridurre.surgeon import delete_layer
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.1, name="d"), keras.layers.Dense(2)])
        >>> [l.name for l in delete_layer(model, "d").layers] == [model.layers[1].name]
        True
    """
    surgeon = Surgeon(model)
    surgeon.add_job("delete_layer", layer)
    return surgeon.operate()


def insert_layer(model, layer, new_layer):
    """Return a copy of ``model`` with ``new_layer`` inserted before ``layer``.

    Example:
        >>> import keras
        >>> from ridurre.surgeon import insert_layer
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
        >>> new = insert_layer(model, "d", keras.layers.Dropout(0.2, name="drop"))
        >>> [l.name for l in new.layers]
        ['drop', 'd']
    """
    surgeon = Surgeon(model)
    surgeon.add_job("insert_layer", layer, new_layer=new_layer)
    return surgeon.operate()


def replace_layer(model, layer, new_layer):
    """Return a copy of ``model`` with ``layer`` replaced by ``new_layer``.

    Example:
        >>> import keras
        >>> from ridurre.surgeon import replace_layer
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU(name="act"), keras.layers.Dense(2)])
        >>> new = replace_layer(model, "act", keras.layers.ELU(name="elu"))
        >>> [type(l).__name__ for l in new.layers]
        ['ELU', 'Dense']
    """
    surgeon = Surgeon(model)
    surgeon.add_job("replace_layer", layer, new_layer=new_layer)
    return surgeon.operate()
