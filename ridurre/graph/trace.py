"""Trace a Keras model into channel groups: sets of channels that must be pruned together.

Every channel of every tensor in the model is labelled with a *unit* id. Producers (Conv,
Dense, ...) create new units; rules from :mod:`ridurre.rules` carry units through other layers
and join units that are coupled (a residual ``Add`` joins channel i of all its inputs; a layer
shared between calls joins its inputs across calls). A *channel group* is a set of producers
whose units are joined; pruning channel j of a group removes every position carrying that unit,
in every layer. Units that reach a model input or output, or a layer without a rule, are marked
unprunable with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import keras
import numpy as np

from ridurre import _compat
from ridurre import rules as _rules
from ridurre.graph.composite import opaque_reason

__all__ = [
    "ChannelGroup",
    "LayerUse",
    "Trace",
    "trace_model",
    "channel_groups",
    "resolve_layer",
    "check_model",
    "all_layers",
]


class _Units:
    """Union-find over channel units, remembering why a unit cannot be pruned."""

    def __init__(self):
        self.parent = []
        self.blocked = {}  # root -> reason
        self._root_array = None  # root of every unit, valid until the next new() or union()

    def new(self, n):
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self._root_array = None
        return np.arange(start, start + n, dtype=np.int64)

    def root_array(self):
        """The root of every unit as one int array (pointer jumping in numpy, cached)."""
        if self._root_array is None:
            parent = np.asarray(self.parent, dtype=np.int64)
            while True:
                grand = parent[parent]
                if np.array_equal(grand, parent):
                    break
                parent = grand
            self._root_array = parent
        return self._root_array

    def find(self, u):
        parent = self.parent
        root = u
        while parent[root] != root:
            root = parent[root]
        while parent[u] != root:
            parent[u], u = root, parent[u]
        return root

    def roots(self, layout):
        return self.root_array()[np.asarray(layout, dtype=np.int64)]

    def union(self, a, b):
        self._root_array = None
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                if rx > ry:
                    rx, ry = ry, rx
                self.parent[ry] = rx
                if ry in self.blocked:
                    self.blocked.setdefault(rx, self.blocked.pop(ry))

    def block(self, layout, reason):
        for u in layout.tolist():
            self.blocked.setdefault(self.find(u), reason)


@dataclass
class LayerUse:
    """Everything the surgeon needs to know about one layer: its rule and channel layouts.

    ``in_layout``/``out_layout`` are those of the layer's first call; calls of a shared
    channel-dependent layer are joined so that any call gives the same answer.
    """

    layer: object
    path: str
    rule: object
    in_layout: np.ndarray | None = None
    out_layout: np.ndarray | None = None
    in_shape: tuple | None = None
    out_shape: tuple | None = None
    calls: int = 0
    model_in_layouts: list | None = None  # nested models: layouts of their inputs


@dataclass
class ChannelGroup:
    """A set of coupled channels.

    Attributes:
        id: index of the group in ``channel_groups(model)``.
        size: number of channels (a channel of a grouped convolution or of a depthwise block
            stands for all the positions that must go together).
        producers: names of the layers creating these channels (Conv, Dense, ...).
        consumers: names of the layers whose inputs are sliced when a channel is removed.
        carriers: names of layers in between whose weights are sliced (BatchNormalization,
            DepthwiseConv2D, PReLU, ...).
        prunable: whether channels can be removed.
        reason: why not, when ``prunable`` is False.
        positions: for each producer, an int array over that layer's output channels giving the
            group channel each position belongs to (-1 for positions of another group).
    """

    id: int
    size: int
    producers: tuple
    consumers: tuple
    carriers: tuple
    prunable: bool
    reason: str | None
    positions: dict = field(repr=False, default_factory=dict)
    roots: np.ndarray = field(repr=False, default=None)

    def channels_of(self, layer_name: str) -> list[np.ndarray]:
        """For each group channel, the output positions of ``layer_name`` that carry it."""
        index = self.positions[layer_name]
        return [np.flatnonzero(index == j) for j in range(self.size)]


def check_model(model: keras.Model) -> keras.Model:
    """The Functional graph of ``model``; ``TypeError`` unless it is a built Functional or
    Sequential Keras model."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    functional = _compat.functional_of(model)
    if functional is None:
        raise TypeError(
            f"model {model.name!r} is a subclassed {type(model).__name__}: ridurre needs its graph. "
            "Use a Functional or Sequential model (subclassed models have no inspectable graph)."
        )
    return functional


def _shape(tensor):
    return tuple(tensor.shape[1:])


def _width(shape):
    return int(shape[-1]) if len(shape) and shape[-1] is not None else 1


class Trace:
    """The channel structure of a model. Build it with :func:`trace_model`."""

    def __init__(self, model, edits=None, rules=None):
        self.model = model
        self.rules = _rules.as_rule_set(rules)
        self.units = _Units()
        self.uses: dict[int, LayerUse] = {}  # id(layer) -> use
        self.sources = []  # (path, layer_id, units)
        self.edits = edits or {}  # id(layer) -> ("delete" | "insert" | "replace", new_layer)
        self._source_units = {}
        functional = check_model(model)
        in_layouts = []
        for tensor in functional.inputs:
            name = _compat.input_name(tensor)
            units = self._new_source(None, f"input:{name}", _width(_shape(tensor)))
            self.units.block(units, "carried by a model input")
            in_layouts.append(units)
        outs = self._trace_functional(functional, in_layouts, prefix="")
        for out in outs:
            self.units.block(out, "reaches a model output")
        self._groups = None

    # -- tracing -----------------------------------------------------------------------------
    def _new_source(self, layer, path, n):
        key = id(layer) if layer is not None else path
        if key in self._source_units:
            return self._source_units[key]
        units = self.units.new(n)
        self._source_units[key] = units
        self.sources.append((path, key, units))
        return units

    def _trace_functional(self, functional, in_layouts, prefix):
        layouts = {id(t): lay for t, lay in zip(functional.inputs, in_layouts)}
        for call in _compat.calls(functional):
            ins = [layouts[id(t)] for t in call.inputs]
            outs = self._trace_call(call, ins, prefix)
            for tensor, lay in zip(call.outputs, outs):
                layouts[id(tensor)] = lay
        return [layouts[id(t)] for t in functional.outputs]

    def _trace_call(self, call, in_layouts, prefix):
        layer = call.operation
        path = prefix + layer.name
        in_shapes = [_shape(t) for t in call.inputs]
        out_shapes = [_shape(t) for t in call.outputs]
        if _compat.is_graph_model(layer):
            use = self.uses.setdefault(id(layer), LayerUse(layer, path, None))
            if use.model_in_layouts is None:
                use.model_in_layouts = list(in_layouts)
            else:  # a nested model called again: its inputs carry the same channels
                for first, again in zip(use.model_in_layouts, in_layouts):
                    if len(first) == len(again):
                        self.units.union(first, again)
            return self._trace_functional(_compat.functional_of(layer), in_layouts, prefix=path + "/")
        edit = self.edits.get(id(layer))
        if edit is not None:
            kind, new_layer = edit
            if kind == "delete":
                return in_layouts
            if kind == "insert":
                in_layouts = self._apply_rule(
                    new_layer, f"{path}<inserted {new_layer.name}>", in_layouts, in_shapes, in_shapes, None
                )
            if kind == "replace":
                layer = new_layer
        return self._apply_rule(layer, path, in_layouts, in_shapes, out_shapes, call)

    def _apply_rule(self, layer, path, in_layouts, in_shapes, out_shapes, call):
        ctx = _Context(self, layer, path, call)
        rule = self.rules.get(layer)
        use = self.uses.get(id(layer))
        if use is None:
            use = self.uses[id(layer)] = LayerUse(layer, path, rule)
        use.calls += 1
        try:
            if rule is None:
                raise _rules.Unsupported(opaque_reason(layer, self.rules))
            outs = rule.propagate(layer, in_layouts, in_shapes, out_shapes, ctx)
        except _rules.Unsupported as exc:
            reason = f"{path} ({type(layer).__name__}): {exc}"
            for lay in in_layouts:
                self.units.block(lay, reason)
            outs = [self._new_source(layer, path, _width(s)) for s in out_shapes[:1]]
            outs += [self.units.new(_width(s)) for s in out_shapes[1:]]
            for lay in outs:
                self.units.block(lay, reason)
            use.rule = None
        if use.calls == 1:
            use.in_layout = in_layouts[0] if len(in_layouts) == 1 else None
            use.out_layout = outs[0] if len(outs) == 1 else None
            use.in_shape = in_shapes[0] if in_shapes else None
            use.out_shape = out_shapes[0] if out_shapes else None
        elif use.rule is not None and use.rule.channel_dependent:
            if use.in_layout is not None and len(in_layouts) == 1 and len(in_layouts[0]) == len(use.in_layout):
                self.units.union(use.in_layout, in_layouts[0])
            if use.out_layout is not None and len(outs) == 1 and len(outs[0]) == len(use.out_layout):
                self.units.union(use.out_layout, outs[0])
        return outs

    # -- results -----------------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        """The channel groups, in the order their first producer appears in the model."""
        if self._groups is not None:
            return self._groups
        units = self.units
        source_roots = [units.roots(u) for _, _, u in self.sources]
        # join sources sharing a root
        parent = list(range(len(self.sources)))

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        owner = {}
        for i, roots in enumerate(source_roots):
            for r in np.unique(roots).tolist():
                if r in owner:
                    a, b = find(owner[r]), find(i)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
                else:
                    owner[r] = i
        members = {}
        for i in range(len(self.sources)):
            members.setdefault(find(i), []).append(i)
        groups = []
        for idx in sorted(members):
            srcs = members[idx]
            order = []
            seen = set()
            for i in srcs:
                for r in source_roots[i].tolist():
                    if r not in seen:
                        seen.add(r)
                        order.append(r)
            roots = np.asarray(order, dtype=np.int64)
            reason = next((units.blocked[r] for r in order if r in units.blocked), None)
            producers = [self.sources[i][0] for i in srcs if not str(self.sources[i][0]).startswith("input:")]
            if not producers:
                producers = [self.sources[i][0] for i in srcs]
            rank = {r: j for j, r in enumerate(order)}
            positions = {}
            for i in srcs:
                path = self.sources[i][0]
                positions[path] = np.array([rank.get(r, -1) for r in source_roots[i].tolist()], dtype=np.int64)
            groups.append(
                ChannelGroup(
                    id=len(groups),
                    size=len(order),
                    producers=tuple(producers),
                    consumers=(),
                    carriers=(),
                    prunable=reason is None,
                    reason=reason,
                    positions=positions,
                    roots=roots,
                )
            )
        self._fill_consumers(groups)
        self._groups = groups
        return groups

    def _fill_consumers(self, groups):
        by_root = {}
        for g in groups:
            for r in g.roots.tolist():
                by_root[r] = g.id
        consumers = {g.id: [] for g in groups}
        carriers = {g.id: [] for g in groups}
        for use in self.uses.values():
            if use.rule is None:
                continue
            if use.rule.produces and use.in_layout is not None:
                for gid in {by_root[r] for r in self.units.roots(use.in_layout).tolist()}:
                    consumers[gid].append(use.path)
            elif use.rule.channel_dependent and use.out_layout is not None and use.layer.weights:
                for gid in {by_root[r] for r in self.units.roots(use.out_layout).tolist()}:
                    carriers[gid].append(use.path)
        for g in groups:
            g.consumers = tuple(consumers[g.id])
            g.carriers = tuple(carriers[g.id])

    def layer_use(self, layer) -> LayerUse:
        """The :class:`LayerUse` of a layer object."""
        return self.uses[id(layer)]


class _Context:
    """What a rule may do while propagating: create units, join them, block them.

    Attributes:
        call: the :class:`ridurre._compat.Call` being traced (its other arguments, such as the
            constants of a raw ``keras.ops`` call), or ``None`` for an inserted layer.
    """

    def __init__(self, trace, layer, path, call=None):
        self._trace, self._layer, self._path = trace, layer, path
        self.call = call

    def new_units(self, n):
        return self._trace._new_source(self._layer, self._path, n)

    def block(self, layout, reason):
        """Make these units unprunable, with ``reason`` (a layer's output that is not channels)."""
        self._trace.units.block(np.asarray(layout), f"{self._path} ({type(self._layer).__name__}): {reason}")

    def union(self, a, b):
        if len(a) != len(b):
            raise _rules.Unsupported(f"cannot couple {len(a)} channels with {len(b)}")
        self._trace.units.union(np.asarray(a), np.asarray(b))


def all_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """``(path, layer)`` of every layer of ``model``, nested models' layers included
    (``"outer/inner"``), depth first in ``model.layers`` order.

    Example:
        >>> import keras
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="inner")
        >>> outer = keras.Sequential([keras.Input((3,)), inner], name="outer")
        >>> [path for path, _ in all_layers(outer)]
        ['inner', 'inner/d']
    """
    for layer in model.layers:
        yield prefix + layer.name, layer
        if _compat.is_graph_model(layer):
            yield from all_layers(layer, prefix + layer.name + "/")


def resolve_layer(model: keras.Model, layer: keras.layers.Layer | str) -> keras.layers.Layer:
    """Find ``layer`` (a layer object, a name, or a nested path ``"outer/inner"``) in ``model``.

    Raises:
        ValueError: when the model has no such layer, naming what was asked for.
    """
    if isinstance(layer, str):
        found = [lay for path, lay in all_layers(model) if path == layer]
        if not found:
            found = [lay for path, lay in all_layers(model) if path.rsplit("/", 1)[-1] == layer]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ValueError(f"layer name {layer!r} is ambiguous in model {model.name!r}: use 'outer/inner'")
        raise ValueError(f"model {model.name!r} has no layer named {layer!r}")
    if isinstance(layer, keras.layers.Layer):
        if any(lay is layer for _, lay in all_layers(model)):
            return layer
        raise ValueError(f"layer {layer.name!r} is not a layer of model {model.name!r}")
    raise TypeError(f"layer must be a keras layer or a layer name, got {type(layer).__name__}")


def trace_model(model: keras.Model, edits: dict | None = None, rules=None) -> Trace:
    """Trace ``model`` into its channel structure (see :class:`Trace`).

    Args:
        model: a built Functional or Sequential model.
        edits: ``{id(layer): ("delete" | "insert" | "replace", new layer)}`` (the surgeon's jobs).
        rules: extra rules for this trace (a :class:`ridurre.rules.RuleSet` or a
            ``{layer class: rule}`` dict), consulted before the global registry.
    """
    return Trace(model, edits, rules)


def channel_groups(model: keras.Model, rules=None) -> list[ChannelGroup]:
    """List the groups of coupled channels of a Functional or Sequential model.

    Args:
        model: a built ``keras.Model`` (Functional or Sequential, possibly nested).
        rules: extra rules for layers ridurre does not know (a ``{layer class: rule}`` dict or a
            :class:`ridurre.rules.RuleSet`), for this call only; see :mod:`ridurre.rules`.

    Returns:
        A list of :class:`ChannelGroup`, one per set of coupled channels, with their size,
        producing and consuming layers, and whether they can be pruned (with the reason).

    Example:
        >>> import keras, ridurre
        >>> x = keras.Input((8, 8, 3))
        >>> a = keras.layers.Conv2D(4, 3, padding="same", name="a")(x)
        >>> b = keras.layers.Conv2D(4, 3, padding="same", name="b")(a)
        >>> y = keras.layers.Add()([a, b])
        >>> out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(y))
        >>> model = keras.Model(x, out)
        >>> [(g.producers, g.size, g.prunable) for g in ridurre.channel_groups(model)][1:]
        [(('a', 'b'), 4, True), (('head',), 2, False)]
    """
    return trace_model(model, rules=rules).groups()
