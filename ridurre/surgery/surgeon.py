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
    >>> from ridurre.surgery import delete_channels
    >>> model = keras.Sequential([keras.Input((8, 8, 1)),
    ...                           keras.layers.Conv2D(6, 3, name="conv"),
    ...                           keras.layers.Flatten(), keras.layers.Dense(3, name="head")])
    >>> pruned = delete_channels(model, "conv", [0, 2])
    >>> pruned.get_layer("conv").filters, tuple(pruned.get_layer("head").kernel.shape)
    (4, (144, 3))

The pruning loop talks to the surgeon in channel groups: ``Surgeon(model, trace=trace)`` reuses
a trace it already made, ``delete_group_channels(group, channels)`` queues group channels, and
``operate(zero=True)`` builds the zeroed reference from the same plan.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np

from ridurre import _compat
from ridurre import graph as _graph
from ridurre.surgery.rebuild import plan_layers, rebuild

__all__ = [
    "Surgeon",
    "delete_channels",
    "zero_channels",
    "delete_layer",
    "insert_layer",
    "replace_layer",
]

_JOBS = ("delete_channels", "delete_layer", "insert_layer", "replace_layer")


def _validate_channels(channels, n, what):
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        raise TypeError(f"channels for {what} must be a sequence of ints, got {channels!r}")
    values = list(channels)
    for c in values:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral):
            raise TypeError(f"channels for {what} must be ints, got {c!r}")
    values = [int(c) for c in values]
    bad = [c for c in values if not 0 <= c < n]
    if bad:
        raise ValueError(f"channel indices {bad} are out of range for {what}, which has {n} channels")
    if len(set(values)) != len(values):
        dup = sorted({c for c in values if values.count(c) > 1})
        raise ValueError(f"channel indices {dup} are given more than once for {what}")
    return np.asarray(values, dtype=np.int64)


class Surgeon:
    """Batch several jobs on one model into a single rebuild.

    Args:
        model: a built Functional or Sequential ``keras.Model``. It is never modified.
        rules: extra layer rules for this surgery (a ``{layer class: rule}`` dict or a
            :class:`ridurre.rules.RuleSet`), see :mod:`ridurre.rules`.
        trace: a :class:`ridurre.graph.Trace` of ``model`` made earlier (with the same rules):
            it is reused instead of tracing the model again.

    Jobs (``add_job(job, layer, **kwargs)``):
        * ``"delete_channels"`` with ``channels=[...]``: remove these output channels of
          ``layer`` and everything coupled to them. Jobs touching the same group delete the
          union of their channels. ``"mha:heads"`` addresses the internal units of a layer
          (the heads of an attention layer ``mha``; ``"mha:head_dims"``... see
          :mod:`ridurre.rules.attention`).
        * ``"delete_layer"``: remove a layer whose output has the shape of its input.
        * ``"insert_layer"`` with ``new_layer=...``: insert ``new_layer`` before ``layer``.
        * ``"replace_layer"`` with ``new_layer=...``: use ``new_layer`` instead of ``layer``.

    ``delete_group_channels(group, channels)`` queues channels of a :class:`ridurre.ChannelGroup`
    directly (what the pruning loop does), and ``operate(zero=True)`` returns the model with the
    same architecture in which the queued channels contribute exactly nothing.

    Example:
        >>> import keras
        >>> from ridurre.surgery import Surgeon
        >>> x = keras.Input((16,), name="x")
        >>> h = keras.layers.Dense(8, name="h")(x)
        >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(keras.layers.Dropout(0.5, name="drop")(h)))
        >>> surgeon = Surgeon(model)
        >>> surgeon.add_job("delete_channels", "h", channels=[0, 1, 2])
        >>> surgeon.add_job("delete_layer", "drop")
        >>> new = surgeon.operate()
        >>> new.get_layer("h").units, [l.name for l in new.layers]
        (5, ['x', 'h', 'out'])
    """

    def __init__(self, model: keras.Model, rules=None, *, trace: _graph.Trace | None = None):
        _graph.check_model(model)
        if trace is not None and (not isinstance(trace, _graph.Trace) or trace.model is not model):
            raise ValueError("trace must be a ridurre.graph.Trace of this very model (trace_model(model))")
        self.model = model
        self._rules = rules if trace is None else trace.rules
        self._trace = trace
        self._deletes = []  # (layer, channels, internal name or None)
        self._unit_deletes = []  # unit roots queued by delete_group_channels
        self._edits = {}  # id(layer) -> (kind, new_layer)

    @property
    def trace(self) -> _graph.Trace:
        """The trace of the model (made on first use, or the one given)."""
        if self._trace is None:
            self._trace = _graph.trace_model(self.model, rules=self._rules)
        return self._trace

    def add_job(
        self, job: str, layer: keras.layers.Layer | str, *, channels=None, new_layer: keras.layers.Layer | None = None
    ) -> None:
        """Queue a job; see the class docstring. Validation of channel indices happens here."""
        if job not in _JOBS:
            raise ValueError(f"job must be one of {_JOBS}, got {job!r}")
        internal = None
        if job == "delete_channels" and isinstance(layer, str) and ":" in layer:
            try:
                layer = _graph.resolve_layer(self.model, layer)
            except ValueError:  # "mha:heads": internal units of the layer "mha"
                layer, internal = layer.rsplit(":", 1)
        layer = _graph.resolve_layer(self.model, layer)
        if job == "delete_channels":
            if channels is None:
                raise ValueError(f"job 'delete_channels' on layer {layer.name!r} needs channels=[...]")
            self._deletes.append((layer, channels, internal))
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

    def delete_group_channels(self, group: _graph.ChannelGroup, channels) -> None:
        """Queue the removal of channels of a group of :attr:`trace` (``trace.groups()``).

        Args:
            group: a :class:`ridurre.ChannelGroup` of this surgeon's trace.
            channels: group channel indices (``0 .. group.size - 1``).

        Raises:
            ValueError: a group of another trace, indices out of range or repeated, or a group
                that cannot be pruned.
        """
        groups = self.trace.groups()
        if not (0 <= group.id < len(groups)) or groups[group.id] is not group:
            raise ValueError(f"group {group.producers} is not a group of this surgeon's trace")
        idx = _validate_channels(channels, group.size, f"group {group.producers[0]!r}")
        if idx.size and not group.prunable:
            raise ValueError(f"cannot delete channels of group {group.producers[0]!r}: {group.reason}")
        self._unit_deletes.append(group.roots[idx])

    def bypass_merge(self, layer: keras.layers.Layer | str, branch: int, offset=None) -> None:
        """Queue replacing a two-input ``Add`` by its other input (plus ``offset``): the layers that
        fed only input ``branch`` leave the model. :func:`ridurre.surgery.remove_branches` is the
        checked way to use it (it computes the ``offset`` that keeps the surgery exact).

        Args:
            layer: the ``Add`` layer (or its name), called once.
            branch: 0 or 1, the input removed.
            offset: ``None``, or a per-channel constant (1-D array) added to the kept input by a
                :class:`ridurre.graph.layers.ChannelOffset` named ``"<layer>_offset"``.
        """
        layer = _graph.resolve_layer(self.model, layer)
        calls = _compat.layer_calls(layer)
        if not isinstance(layer, keras.layers.Add) or len(calls) != 1 or len(calls[0].inputs) != 2:
            raise ValueError(f"bypass_merge: layer {layer.name!r} must be an Add called once on two inputs")
        if branch not in (0, 1) or isinstance(branch, bool):
            raise ValueError(f"bypass_merge: branch must be 0 or 1, got {branch!r}")
        if id(layer) in self._edits:
            raise ValueError(f"layer {layer.name!r} already has a {self._edits[id(layer)][0]!r} job")
        if offset is not None:
            offset = np.asarray(offset, dtype="float32")
            width = calls[0].inputs[1 - branch].shape[-1]
            if offset.shape != (width,):
                raise ValueError(f"bypass_merge: offset must have shape ({width},), got {offset.shape}")
        self._edits[id(layer)] = ("bypass", (int(branch), offset))

    @staticmethod
    def _check_deletable(layer):
        for call in _compat.layer_calls(layer):
            if len(call.inputs) != 1 or len(call.outputs) != 1:
                raise ValueError(f"cannot delete layer {layer.name!r}: it has several inputs or outputs")
            if tuple(call.inputs[0].shape) != tuple(call.outputs[0].shape):
                raise ValueError(
                    f"cannot delete layer {layer.name!r}: its output shape {tuple(call.outputs[0].shape)} "
                    f"differs from its input shape {tuple(call.inputs[0].shape)}"
                )

    def operate(self, zero: bool = False, delete_inexact: bool = False) -> keras.Model:
        """Apply every queued job in one rebuild and return the new model.

        Args:
            zero: keep the architecture and zero the queued channels instead of removing them
                (the output then equals the pruned model's; layer jobs are applied as usual).
            delete_inexact: with ``zero``, still remove the queued channels that pass through
                a normalization over the channel axis (groups whose ``exact`` is False), and
                zero only the others. The pruned model equals THIS reference exactly: zeroing
                a channel that a LayerNormalization normalizes changes its statistics, while
                deleting it in both models does not (``verify="exact"`` compares with it).

        Example:
            >>> import keras, numpy as np
            >>> x = keras.Input((6,))
            >>> h = keras.layers.LayerNormalization(name="ln")(keras.layers.Dense(5, name="a")(x))
            >>> model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
            >>> surgeon = Surgeon(model)
            >>> surgeon.add_job("delete_channels", "a", channels=[0, 3])
            >>> pruned, reference = surgeon.operate(), surgeon.operate(zero=True, delete_inexact=True)
            >>> xs = np.random.default_rng(0).normal(size=(4, 6))
            >>> bool(np.allclose(pruned.predict(xs, verbose=0), reference.predict(xs, verbose=0), atol=1e-5))
            True
        """
        trace = self._edited_trace()
        deleted = self._deleted_roots(trace)
        still = None
        if zero and delete_inexact:
            still = [r for r in deleted.tolist() if r in trace.units.inexact]
        return rebuild(self.model, plan_layers(trace, deleted, zero=zero, still_delete=still, lazy=True), self._edits)

    def inexact_groups(self) -> list[_graph.ChannelGroup]:
        """The groups of the queued channels that pass through a normalization over the channel
        axis (``group.exact`` is False): for them the pruned model is not the zeroed one."""
        trace = self._edited_trace()
        deleted = set(self._deleted_roots(trace).tolist())
        return [g for g in trace.groups() if not g.exact and deleted.intersection(g.roots.tolist())]

    # -- internals ---------------------------------------------------------------------------
    def _edited_trace(self):
        if not self._edits:
            return self.trace
        if self._unit_deletes:  # layer edits change the trace: carry group jobs over by layer name
            for roots in self._unit_deletes:
                self._queue_by_layer(roots)
            self._unit_deletes = []
        return _graph.trace_model(self.model, self._edits, rules=self._rules)

    def _queue_by_layer(self, roots):
        trace = self.trace
        for use in trace.uses.values():
            if use.rule is not None and use.rule.produces and use.out_layout is not None:
                hit = np.flatnonzero(np.isin(trace.units.roots(use.out_layout), roots))
                if hit.size:
                    self._deletes.append((use.layer, hit.tolist(), None))
                    return
        for use in trace.uses.values():  # internal units (attention heads...)
            for name, layout in use.internal.items():
                hit = np.flatnonzero(np.isin(trace.units.roots(layout), roots))
                if hit.size:
                    self._deletes.append((use.layer, hit.tolist(), name))
                    return

    def _deleted_roots(self, trace):
        units = trace.units
        deleted = set()
        for roots in self._unit_deletes:
            deleted.update(units.roots(roots).tolist())
        for layer, channels, internal in self._deletes:
            use = trace.uses.get(id(layer))
            if internal is not None:
                layout = None if use is None else use.internal.get(internal)
                if layout is None:
                    known = sorted(use.internal) if use is not None else []
                    raise ValueError(f"layer {layer.name!r} has no internal units {internal!r} (it has {known})")
                what = f"{use.path}:{internal}"
            else:
                # a producer with several outputs (attention returning its scores) is addressed by
                # the channels it creates, as its group lists it
                layout = None if use is None else use.out_layout
                if layout is None and use is not None and use.rule is not None and use.rule.produces:
                    layout = trace.created_units(layer)
                if layout is None:
                    raise ValueError(f"layer {layer.name!r} has no single output whose channels can be deleted")
                what = use.path
            idx = _validate_channels(channels, len(layout), f"layer {what!r}")
            if idx.size == 0:
                continue
            roots = units.roots(layout[idx])
            for r in np.unique(roots).tolist():
                if r in units.blocked:
                    raise ValueError(f"cannot delete channels of layer {what!r}: {units.blocked[r]}")
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
            # a layer may own only some channels of a group (one side of a concatenation that is
            # then added to something): it must keep one of its own
            for use in trace.uses.values():
                if use.out_layout is not None and len(use.out_layout) and gone[units.roots(use.out_layout)].all():
                    raise ValueError(
                        f"deleting these channels would leave layer {use.path!r} with no output channels (all "
                        f"{len(use.out_layout)} of its channels are among them); keep at least one of them"
                    )
        return np.asarray(sorted(deleted), dtype=np.int64)


def delete_channels(model: keras.Model, layer: keras.layers.Layer | str, channels, *, rules=None) -> keras.Model:
    """Return a copy of ``model`` without the given output channels of ``layer``.

    The same channels are removed from every layer coupled to them (see
    :func:`ridurre.channel_groups`), and every consumer is sliced to match.

    Args:
        model: a built Functional or Sequential model (not modified).
        layer: a layer of ``model`` or its name (``"outer/inner"`` inside nested models).
        channels: indices of ``layer``'s output channels (last axis) to delete.
        rules: extra layer rules for this call (see :mod:`ridurre.rules`).

    Raises:
        ValueError: unknown layer, indices out of range or repeated, channels that cannot be
            pruned (the message gives the reason), or deleting every channel of a group.
        TypeError: a subclassed model, or channels that are not ints.

    Example:
        >>> import keras
        >>> from ridurre.surgery import delete_channels
        >>> x = keras.Input((10,))
        >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(6, name="h")(x)))
        >>> delete_channels(model, "h", [1, 4]).get_layer("h").units
        4
    """
    surgeon = Surgeon(model, rules)
    surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon.operate()


def zero_channels(model: keras.Model, layer: keras.layers.Layer | str, channels, *, rules=None) -> keras.Model:
    """Return a copy of ``model`` in which the given channels contribute exactly nothing.

    Same architecture and the same coupling as :func:`delete_channels`: the producing kernel
    columns and biases are zeroed, the normalization parameters that follow are set so that the
    channel is zero after normalization, and the consumers' input weights for the channel are
    zeroed, so the output equals that of ``delete_channels(model, layer, channels)``.

    Args:
        model, layer, channels, rules: as for :func:`delete_channels`.

    Example:
        >>> import keras, numpy as np
        >>> from ridurre.surgery import delete_channels, zero_channels
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(3, name="h")(x)))
        >>> zeroed = zero_channels(model, "h", [1])
        >>> h = keras.Model(zeroed.inputs, zeroed.get_layer("h").output)
        >>> float(np.abs(h.predict(np.ones((2, 4)), verbose=0)[:, 1]).max())
        0.0
        >>> pruned = delete_channels(model, "h", [1])
        >>> xs = np.random.default_rng(0).normal(size=(5, 4))
        >>> bool(np.allclose(pruned.predict(xs, verbose=0), zeroed.predict(xs, verbose=0), atol=1e-6))
        True
    """
    surgeon = Surgeon(model, rules)
    surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon.operate(zero=True)


def delete_layer(model: keras.Model, layer: keras.layers.Layer | str) -> keras.Model:
    """Return a copy of ``model`` without ``layer`` (its output must have its input's shape).

    Example:
        >>> import keras
        >>> from ridurre.surgery import delete_layer
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dropout(0.1, name="d"), keras.layers.Dense(2)])
        >>> [l.name for l in delete_layer(model, "d").layers] == [model.layers[1].name]
        True
    """
    surgeon = Surgeon(model)
    surgeon.add_job("delete_layer", layer)
    return surgeon.operate()


def insert_layer(model: keras.Model, layer: keras.layers.Layer | str, new_layer: keras.layers.Layer) -> keras.Model:
    """Return a copy of ``model`` with ``new_layer`` inserted before ``layer``.

    Example:
        >>> import keras
        >>> from ridurre.surgery import insert_layer
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
        >>> new = insert_layer(model, "d", keras.layers.Dropout(0.2, name="drop"))
        >>> [l.name for l in new.layers]
        ['drop', 'd']
    """
    surgeon = Surgeon(model)
    surgeon.add_job("insert_layer", layer, new_layer=new_layer)
    return surgeon.operate()


def replace_layer(model: keras.Model, layer: keras.layers.Layer | str, new_layer: keras.layers.Layer) -> keras.Model:
    """Return a copy of ``model`` with ``layer`` replaced by ``new_layer``.

    Example:
        >>> import keras
        >>> from ridurre.surgery import replace_layer
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.ReLU(name="act"), keras.layers.Dense(2)])
        >>> new = replace_layer(model, "act", keras.layers.ELU(name="elu"))
        >>> [type(l).__name__ for l in new.layers]
        ['ELU', 'Dense']
    """
    surgeon = Surgeon(model)
    surgeon.add_job("replace_layer", layer, new_layer=new_layer)
    return surgeon.operate()
