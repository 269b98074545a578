"""Trace a Keras model into channel groups: sets of channels that must be pruned together.

Every channel of every tensor in the model is labelled with a *unit* id. Producers (Conv,
Dense, ...) create new units; rules from :mod:`ridurre.rules` carry units through other layers
and join units that are coupled (a residual ``Add`` joins channel i of all its inputs; a layer
shared between calls joins its inputs across calls). A *channel group* is a set of producers
whose units are joined; pruning channel j of a group removes every position carrying that unit,
in every layer. Units that reach a model input or output, or a layer without a rule, are marked
unprunable with the reason (every reason is kept: :attr:`ChannelGroup.reasons`).

Some layers own channels that appear in no tensor: the heads of an attention layer and the
dimensions of its heads. Their rules create *internal* units (see :mod:`ridurre.rules.base`),
which form groups of their own, named ``"<layer path>:<internal name>"`` (``"mha:heads"``).
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
        self.inexact = {}  # root -> paths of the normalizations the unit passes through
        self.blocked = {}  # root -> first reason
        self.reasons = {}  # root -> every reason, in the order they were found
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
                    known = self.reasons.setdefault(rx, [])
                    known.extend(r for r in self.reasons.pop(ry) if r not in known)
                if ry in self.inexact:
                    paths = self.inexact.setdefault(rx, [])
                    paths.extend(p for p in self.inexact.pop(ry) if p not in paths)

    def block(self, layout, reason):
        for u in np.asarray(layout).tolist():
            root = self.find(u)
            self.blocked.setdefault(root, reason)
            known = self.reasons.setdefault(root, [])
            if reason not in known:
                known.append(reason)

    def mark_inexact(self, layout, path):
        for root in {self.find(u) for u in layout.tolist()}:
            paths = self.inexact.setdefault(root, [])
            if path not in paths:
                paths.append(path)


@dataclass
class LayerUse:
    """Everything the surgeon needs to know about one layer: its rule and channel layouts.

    ``in_layout``/``out_layout`` are those of the layer's first call when it has one input and
    one output (``None`` otherwise); ``in_layouts``/``out_layouts`` hold every input and output
    of the first call (the inputs in the rule's ``call_inputs`` order when it names them,
    ``None`` for an argument not given) and ``internal`` the layer's internal units by name.
    Calls of a shared channel-dependent layer are joined so that any call gives the same answer.
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
    in_layouts: list = field(default_factory=list)
    out_layouts: list = field(default_factory=list)
    internal: dict = field(default_factory=dict)


@dataclass
class ChannelGroup:
    """A set of coupled channels.

    Attributes:
        id: index of the group in ``channel_groups(model)``.
        size: number of channels (a channel of a grouped convolution or of a depthwise block
            stands for all the positions that must go together).
        producers: names of the layers creating these channels (Conv, Dense, ...); internal
            units are named ``"<layer>:<internal name>"`` (``"mha:heads"``).
        consumers: names of the layers whose inputs are sliced when a channel is removed.
        carriers: names of layers in between whose weights are sliced (BatchNormalization,
            DepthwiseConv2D, PReLU, ...).
        prunable: whether channels can be removed.
        reason: why not, when ``prunable`` is False (the first reason found).
        positions: for each producer, an int array over the channels that layer creates giving the
            group channel each belongs to (-1 for channels of another group). A grouped
            convolution or a Bidirectional layer repeats the channels it creates over its
            outputs (each group, each direction): ``GroupView.output_index`` maps every output.
        exact: whether removing channels gives exactly the model with these channels zeroed.
            False when they pass through a normalization over the channel axis
            (LayerNormalization, RMS norms), whose statistics then change: the pruned model is
            structurally right, and the surgery is checked against a reference that deletes
            these channels too (``Surgeon.operate(zero=True, delete_inexact=True)``).
        inexact_layers: the layers that make the group inexact.
        kind: what a channel of the group is: ``"channels"``, ``"heads"`` (whole attention
            heads), ``"query_heads"`` (the query heads sharing a key/value head) or
            ``"head_dims"`` (one dimension of every head); see :data:`ridurre.rules.UNIT_KINDS`.
        reasons: every layer or operation that blocks the group, ``reason`` first: teaching
            ridurre all of them makes the group prunable.
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
    exact: bool = True
    inexact_layers: tuple = ()
    kind: str = "channels"
    reasons: tuple = ()

    @property
    def key(self) -> str:
        """The group's name across models: its producers joined by ``"+"`` (layer names survive
        surgery, group ids need not), e.g. the key of a measured latency table entry."""
        return "+".join(self.producers)

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
        self.source_kinds = {}  # path -> kind of units (rules.UNIT_KINDS)
        self.internal_sources = {}  # path of internal units -> (path of their layer, internal name)
        self.edits = edits or {}  # id(layer) -> ("delete" | "insert" | "replace" | "bypass", new_layer)
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
    def _new_source(self, layer, path, n, internal=None, kind="channels"):
        key = id(layer) if layer is not None else path
        if internal is not None:
            key, path = (key, internal), f"{path}:{internal}"
            self.internal_sources.setdefault(path, (path[: -len(internal) - 1], internal))
        if key in self._source_units:
            return self._source_units[key]
        units = self.units.new(n)
        self._source_units[key] = units
        self.sources.append((path, key, units))
        self.source_kinds[path] = kind
        return units

    def _trace_functional(self, functional, in_layouts, prefix):
        layouts = {id(t): lay for t, lay in zip(functional.inputs, in_layouts)}
        for call in _compat.calls(functional):
            ins = [layouts[id(t)] for t in call.channel_inputs()]
            outs = self._trace_call(call, ins, prefix)
            for tensor, lay in zip(call.outputs, outs):
                layouts[id(tensor)] = lay
        return [layouts[id(t)] for t in functional.outputs]

    def _trace_call(self, call, in_layouts, prefix):
        layer = call.operation
        path = prefix + layer.name
        in_shapes = [_shape(t) for t in call.channel_inputs()]
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
            if kind == "bypass":  # a merge replaced by one of its inputs (plus a constant)
                return [in_layouts[1 - new_layer[0]]]
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
        ctx.call_number = use.calls
        try:
            if rule is None:
                raise _rules.Unsupported(opaque_reason(layer, self.rules))
            if not rule.exact and self.rules.exact_only:
                raise _rules.Unsupported(f"{rule.inexact_reason} (exact_only=True)")
            if rule.call_inputs is not None and call is not None:
                in_layouts, in_shapes = self._named_inputs(rule, call, path, in_layouts, in_shapes)
            outs = rule.propagate(layer, in_layouts, in_shapes, out_shapes, ctx)
            if not rule.exact:
                for lay in in_layouts:
                    if lay is not None:
                        self.units.mark_inexact(lay, path)
        except _rules.Unsupported as exc:
            reason = f"{path} ({type(layer).__name__}): {exc}"
            for lay in in_layouts:
                if lay is not None:
                    self.units.block(lay, reason)
            for lay in ctx.created:  # internal units of a layer that cannot be pruned through
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
            use.in_layouts, use.out_layouts = list(in_layouts), list(outs)
        elif use.rule is not None and use.rule.channel_dependent:
            for first, again in zip(use.in_layouts + use.out_layouts, list(in_layouts) + list(outs)):
                if first is not None and again is not None and len(first) == len(again):
                    self.units.union(first, again)
        return outs

    def _named_inputs(self, rule, call, path, in_layouts, in_shapes):
        """The layouts and shapes of the arguments ``rule.call_inputs`` names, in that order;
        tensors given in other arguments (attention masks...) are blocked: their last axis
        holds positions, not channels."""
        try:
            positions, others = call.input_positions(rule.call_inputs)
        except TypeError as exc:
            raise _rules.Unsupported(f"its call arguments do not fit its signature ({exc})") from None
        for i, name in others.items():
            self.units.block(
                in_layouts[i], f"{path} ({type(call.operation).__name__}): used as {name!r}, which holds no channels"
            )
        return (
            [None if i is None else in_layouts[i] for i in positions],
            [None if i is None else in_shapes[i] for i in positions],
        )

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
            inexact = []
            for r in order:
                inexact.extend(p for p in units.inexact.get(r, ()) if p not in inexact)
            reasons = [reason] if reason is not None else []
            for r in order:
                reasons.extend(x for x in units.reasons.get(r, ()) if x not in reasons)
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
                    exact=not inexact,
                    inexact_layers=tuple(inexact),
                    kind=self.source_kinds.get(self.sources[srcs[0]][0], "channels"),
                    reasons=tuple(reasons),
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
            if use.rule.produces and use.in_layouts:
                consumed = [lay for lay in use.in_layouts if lay is not None]
                roots = np.concatenate([self.units.roots(lay) for lay in consumed]) if consumed else []
                for gid in sorted({by_root[r] for r in np.asarray(roots).tolist()}):
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

    def created_units(self, layer):
        """The units ``layer`` creates (its output channels when it is a group producer, the
        first output's when it has several: an attention layer returning its scores), or ``None``."""
        return self._source_units.get(id(layer))

    def source_use(self, path: str) -> tuple[LayerUse | None, str | None]:
        """``(LayerUse, internal name)`` of a group producer: the layer creating the channels and,
        for internal units (``"mha:heads"``), their name (``None`` for a layer's output).

        Example:
            >>> import keras
            >>> x = keras.Input((5, 8))
            >>> y = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
            >>> use, internal = trace_model(keras.Model(x, y)).source_use("mha:heads")
            >>> use.path, internal, len(use.internal["heads"])
            ('mha', 'heads', 2)
        """
        layer_path, internal = self.internal_sources.get(path, (path, None))
        use = next((u for u in self.uses.values() if u.path == layer_path), None)
        return use, internal


class _Context:
    """What a rule may do while propagating: create units, join them, block them.

    Attributes:
        call: the :class:`ridurre._compat.Call` being traced (its other arguments, such as the
            constants of a raw ``keras.ops`` call), or ``None`` for an inserted layer.
        call_number: which call of the layer this is (1 for the first; the surgeon slices a
            shared layer by the channels of its first call).
    """

    def __init__(self, trace, layer, path, call=None):
        self._trace, self._layer, self._path = trace, layer, path
        self.call = call
        self.call_number = 1  # 1 for the layer's first call, 2 for its second (a shared layer)...
        self.created = []  # internal layouts made by this call

    def new_units(self, n, internal=None, kind="channels"):
        """``n`` new units produced by the layer (the same ones in every call of a shared layer).

        Args:
            n: how many.
            internal: a name for units that live inside the layer and in no tensor (``"heads"``):
                they become a group of their own, ``"<layer path>:<internal>"``, and the rule's
                ``slice_units``/``zero_units`` see their masks under that name.
            kind: what the units are (one of :data:`ridurre.rules.UNIT_KINDS`).
        """
        if kind not in _rules.UNIT_KINDS:
            raise ValueError(f"kind must be one of {_rules.UNIT_KINDS}, got {kind!r}")
        units = self._trace._new_source(self._layer, self._path, n, internal=internal, kind=kind)
        if internal is not None:
            self.created.append(units)
            self._trace.uses[id(self._layer)].internal.setdefault(internal, units)
        return units

    def block(self, layout, reason):
        """Make the units of ``layout`` unprunable, for ``reason`` (the layer is named in front)."""
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
        edits: ``{id(layer): ("delete" | "insert" | "replace", new layer)}`` (the surgeon's jobs;
            ``("bypass", (branch index, per-channel offset or None))`` for a removed residual branch).
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
