"""What a pruning criterion sees of one channel group: :class:`GroupView`.

A criterion's ``score(view)`` gets a view and returns one score per channel of the group. The
view gathers, for every channel, the weights of every layer of the group (:meth:`GroupView.members`):
the layers that produce it (coupled residual branches included), the consumers reading it (their
input weights), the normalization scales that follow it and the other carriers (depthwise
filters); and, on a data sample, its activations, feature maps and the loss gradients of all
those weights. Which weights produce or consume a channel, and which layers belong to a
producer's activation, are questions the layer rules answer (:mod:`ridurre.rules`).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np

from ridurre import _compat
from ridurre import graph as _graph
from ridurre.graph import layer_weights, weight_names
from ridurre.rules import LayerRule

__all__ = ["GroupView", "ActivationRecorder", "Member", "ROLES"]

ROLES = ("producer", "consumer", "norm", "carrier")
"""The parts of a group: the layers producing its channels, the layers reading them (their input
weights), the normalizations after them (their scale) and other carriers (depthwise filters)."""


class Member(NamedTuple):
    """One layer's part of a group: its ``role`` (one of :data:`ROLES`), its path and a
    ``(group size, features)`` matrix whose row j holds its weights for group channel j."""

    role: str
    path: str
    matrix: np.ndarray


class ActivationRecorder:
    """Records the activations of every top-level producer of a model (once per data sample) and
    the loss gradients of its weights (once per data and labels).

    The views of one pruning step share one recorder, so the model runs once on the data for
    all the groups.

    Args:
        model: the model being pruned.
        trace: its :class:`ridurre.graph.Trace`.
    """

    def __init__(self, model, trace):
        self.model, self.trace = model, trace
        self._data_id, self._values = None, None
        self._gradient_key, self._gradients = None, None

    def record(self, data, batch_size=64) -> dict:
        """``{producer path: activations}`` on ``data`` (recorded on the first call for it)."""
        if self._data_id != id(data):
            self._values = _record_activations(self.model, self.trace, data, batch_size)
            self._data_id = id(data)
        return self._values

    def gradients(self, data, labels, batch_size=32, max_batches=None, loss=None):
        """The :class:`~ridurre.criteria.gradients.Gradients` of the loss on ``(data, labels)``
        (computed on the first call for them)."""
        from ridurre.criteria.gradients import accumulate_gradients

        key = (id(data), id(labels), batch_size, max_batches, id(loss))
        if self._gradient_key != key:
            self._gradients = accumulate_gradients(self.model, data, labels, batch_size, max_batches, loss)
            self._gradient_key = key
        return self._gradients


class GroupView:
    """One channel group of the model being pruned, as a criterion sees it.

    Args:
        group: a :class:`ridurre.graph.ChannelGroup` of ``trace``.
        trace: the :class:`ridurre.graph.Trace` of ``model``.
        model: the model being pruned.
        seed: this step's seed; the view's own seed mixes in the group id.
        n_remove: how many channels the step removes from this group at its own factor, when
            known (KMeans clusters into the channels left).
        activations: an :class:`ActivationRecorder` shared by the views of one step.

    Attributes:
        group: the :class:`ridurre.graph.ChannelGroup`.
        size: its number of channels.
        name: the name of its first producer (a readable label).
        seed: a seed for this group and iteration (use it for anything random).
    """

    def __init__(self, group, trace, model, seed=0, *, n_remove=None, activations=None):
        self.group = group
        self.size = group.size
        self.name = group.producers[0]
        self.model = model
        self.n_remove = n_remove
        self._trace = trace
        self._uses = {use.path: use for use in trace.uses.values()}
        self._activations = activations or ActivationRecorder(model, trace)
        self.seed = int(seed) * 100_003 + group.id

    def producer_layers(self):
        """``[(path, layer), ...]`` of the layers creating these channels (for internal units such
        as attention heads, ``("mha:heads", the attention layer)``)."""
        return [(path, use.layer) for path, use, _ in self._sources()]

    def _sources(self):
        """``(producer path, LayerUse, internal name or None)`` of every producer of the group."""
        out = []
        for path in self.group.producers:
            use, internal = (self._uses[path], None) if path in self._uses else self._trace.source_use(path)
            if use is not None:
                out.append((path, use, internal))
        return out

    def output_index(self, path):
        """For each output channel of producer ``path``, the group channel it carries (-1 for a
        channel of another group). A grouped convolution or a Bidirectional layer repeats its
        channels over its outputs, so this is longer than ``group.positions[path]`` there."""
        use = self._uses.get(path)  # internal units (``"mha:heads"``) have no output of their own
        if use is None or use.out_layout is None:
            return self.group.positions[path]
        return self._index(use.out_layout)

    def _by_channel(self, values, index):
        """Rows of ``values`` (positions x features) grouped per group channel: (size, k*features)."""
        valid = index >= 0
        order = np.argsort(index[valid], kind="stable")
        rows, labels = values[valid][order], index[valid][order]
        counts = np.bincount(labels, minlength=self.size)
        if counts.min() == counts.max() and counts[0] > 0:
            return rows.reshape(self.size, -1)
        width = counts.max() * values.shape[1]
        out = np.zeros((self.size, width), dtype=values.dtype)
        for j in range(self.size):
            block = rows[labels == j].ravel()
            out[j, : block.size] = block
        return out

    def weight_matrices(self):
        """One ``(size, features)`` matrix per producer: row j = the weights producing channel j.

        Example:
            >>> import keras, ridurre
            >>> from ridurre.graph import trace_model
            >>> from ridurre.criteria import GroupView
            >>> x = keras.Input((6, 6, 2))
            >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(
            ...     keras.layers.Conv2D(4, 3, name="c")(x))))
            >>> trace = trace_model(model)
            >>> view = GroupView(trace.groups()[1], trace, model)
            >>> [m.shape for m in view.weight_matrices()]
            [(4, 18)]
        """
        mats = []
        for path, use, internal in self._sources():
            rule, layer = use.rule, use.layer
            if rule is None:
                continue
            weights = layer_weights(layer)
            rows = (
                rule.output_weights(layer, weights) if internal is None else rule.unit_weights(layer, weights, internal)
            )
            if rows is None:
                continue
            mats.append(self._by_channel(np.asarray(rows), self.output_index(path)))
        if not mats:
            raise ValueError(f"group {self.name!r} has no producer with a kernel to score")
        return mats

    def _index(self, layout):
        """For each position of a layer's channel axis, the group channel it carries (-1: another group)."""
        rank = {r: j for j, r in enumerate(self.group.roots.tolist())}
        return np.array([rank.get(r, -1) for r in self._trace.units.roots(layout).tolist()], dtype=np.int64)

    def members(self, roles=ROLES, transform=None):
        """The weights of every layer of the group, one :class:`Member` per layer and role.

        Args:
            roles: which parts (see :data:`ROLES`): ``("producer",)`` is what ridurre 0.0.2
                scored; the default is the whole group, as Torch-Pruning's group importance.
            transform: ``fn(layer, weights) -> weights`` applied to a layer's ``{name: array}``
                before its rows are taken (e.g. weights times their gradients for Taylor scores).

        Example:
            >>> import keras
            >>> from ridurre.graph import trace_model
            >>> x = keras.Input((6, 6, 2))
            >>> h = keras.layers.Conv2D(4, 3, name="c")(x)
            >>> h = keras.layers.BatchNormalization(name="bn")(h)
            >>> model = keras.Model(x, keras.layers.Conv2D(3, 1, name="next")(h))
            >>> trace = trace_model(model)
            >>> view = GroupView(trace.groups()[1], trace, model)
            >>> [(m.role, m.path, m.matrix.shape) for m in view.members()]
            [('producer', 'c', (4, 18)), ('consumer', 'next', (4, 3)), ('norm', 'bn', (4, 1))]
        """
        bad = set(roles) - set(ROLES)
        if bad:
            raise ValueError(f"roles must be among {ROLES}, got {sorted(bad)}")
        out = []
        parts = []
        if "producer" in roles:
            parts += [("producer", p) for p in self.group.producers]
        if "consumer" in roles:
            parts += [("consumer", p) for p in self.group.consumers]
        if "norm" in roles or "carrier" in roles:
            for path in self.group.carriers:
                use = self._uses[path]
                role = "norm" if use.rule is not None and use.rule.cost == "normalization" else "carrier"
                if role in roles:
                    parts.append((role, path))
        internal_of = {path: internal for path, _, internal in self._sources()}
        for role, path in parts:
            use = self._uses.get(path)
            if use is None and path in internal_of:  # internal units: "mha:heads" is its layer's
                use = next(u for p, u, _ in self._sources() if p == path)
            if use is None or use.rule is None:
                continue
            weights = layer_weights(use.layer)
            if transform is not None:
                weights = transform(use.layer, weights)
            if role == "producer" and internal_of.get(path) is not None:
                rows = use.rule.unit_weights(use.layer, weights, internal_of[path])
                index = self.output_index(path)
            elif role == "producer":
                rows, index = use.rule.output_weights(use.layer, weights), self.output_index(path)
            else:
                layout = use.in_layout if role == "consumer" else use.out_layout
                rows = use.rule.input_weights(use.layer, weights) if layout is not None else None
                index = self._index(layout) if rows is not None else None
            if rows is None or index is None or len(index) != len(rows):
                continue
            out.append(Member(role, path, self._by_channel(np.asarray(rows), index)))
        return out

    def structure(self):
        """A hashable description of the group's structure: its size and, per layer, its role,
        class and weight shapes. Structurally identical groups (the same block repeated) have
        equal structures; ``ranking="isomorphic"`` ranks each such set of groups together.

        Example:
            >>> import keras
            >>> from ridurre.graph import trace_model
            >>> x = keras.Input((6, 6, 2))
            >>> h = keras.layers.Conv2D(4, 3, padding="same", name="a")(x)
            >>> h = keras.layers.Conv2D(4, 3, padding="same", name="b")(h)
            >>> model = keras.Model(x, keras.layers.Conv2D(4, 3, padding="same", name="c")(h))
            >>> trace = trace_model(model)
            >>> a, b = (GroupView(g, trace, model) for g in trace.groups()[1:3])
            >>> a.structure() == b.structure()   # a reads 2 channels, b reads 4
            False
        """
        parts = []
        for role, paths in (("producer", self.group.producers), ("consumer", self.group.consumers)):
            for path in paths:
                use = self._uses.get(path)
                if use is not None:
                    parts.append((role, type(use.layer).__name__, tuple(tuple(w.shape) for w in use.layer.weights)))
        for path in self.group.carriers:
            use = self._uses[path]
            parts.append(("carrier", type(use.layer).__name__, tuple(tuple(w.shape) for w in use.layer.weights)))
        return (self.size, tuple(sorted(parts)))

    def gradients(self, data, labels, batch_size=32, max_batches=None, loss=None):
        """Loss gradients of the model's weights on ``(data, labels)``, shared by the views of
        one step (a :class:`~ridurre.criteria.gradients.Gradients`)."""
        return self._activations.gradients(data, labels, batch_size, max_batches, loss)

    @staticmethod
    def layer_gradients(layer, gradients, kind="mean"):
        """``{weight name: gradient}`` of ``layer``, named as :func:`ridurre.graph.layer_weights`
        names its weights (zeros for weights without a gradient, such as moving statistics).

        Args:
            layer: a layer of the model the gradients were taken of.
            gradients: from :meth:`gradients`.
            kind: ``"mean"`` (the mean gradient) or ``"square"`` (the mean squared gradient).
        """
        stats = gradients.mean if kind == "mean" else gradients.mean_square
        return {
            name: stats.get(id(var), np.zeros(tuple(var.shape)))
            for name, var in zip(weight_names(layer), layer.weights)
        }

    def bn_gammas(self):
        """|gamma| of each BatchNormalization following these channels, one ``(size,)`` array each
        (Network Slimming's channel scaling factors)."""
        rank = {r: j for j, r in enumerate(self.group.roots.tolist())}
        out = []
        for path in self.group.carriers:
            use = self._uses[path]
            if not isinstance(use.layer, keras.layers.BatchNormalization) or not use.layer.scale:
                continue
            index = np.array([rank.get(r, -1) for r in self._trace.units.roots(use.out_layout).tolist()])
            gamma = np.abs(layer_weights(use.layer)["gamma"]).reshape(-1, 1)
            out.append(self._by_channel(gamma, index).mean(axis=1))
        if not out:
            raise ValueError(
                f"no BatchNormalization follows the channels of group {self.name!r}: the BN-scale criterion needs one"
            )
        return out

    def activations(self, data, batch_size=64):
        """Per producer, the activations of these channels on ``data``: ``(..., size)`` arrays.

        The activation is read after the layers that belong to the producer's activation
        (BatchNormalization, the nonlinearity, dropout: rules with ``in_activation``), what
        "dead neuron" and firing-rate scores look at. For internal units (attention heads and
        head dimensions) it is what their rule's ``unit_activations`` measures: the magnitude of
        each head's contribution to the attention output. Only producers at the top level of the
        model are recorded.
        """
        per_layer = self._activations.record(data, batch_size)
        out = []
        for path, _ in self.producer_layers():
            if path not in per_layer:
                continue
            act = per_layer[path]
            flat = act.reshape(-1, act.shape[-1]).T  # positions x samples
            grouped = self._by_channel(flat, self.output_index(path))  # size x (k * samples)
            k = grouped.shape[1] // flat.shape[1]
            out.append(grouped.reshape(self.size, k, -1).mean(axis=1).T)
        if not out:
            if self.group.kind != "channels":
                raise ValueError(
                    f"group {self.name!r}: the activity of attention heads is recorded for top-level layers "
                    "called on (batch, sequence, features) inputs only"
                )
            raise ValueError(f"group {self.name!r} has no top-level producer whose activations can be recorded")
        return out

    def feature_maps(self, data, batch_size=64):
        """Per producer, the feature maps of these channels on ``data``: ``(samples, *spatial, size)``
        arrays (read where :meth:`activations` reads; positions of one group channel averaged)."""
        per_layer = self._activations.record(data, batch_size)
        out = []
        for path, _ in self.producer_layers():
            if path not in per_layer:
                continue
            act, index = per_layer[path], self.output_index(path)
            valid = index >= 0
            counts = np.bincount(index[valid], minlength=self.size).astype(act.dtype)
            mix = np.zeros((len(index), self.size), dtype=act.dtype)
            mix[np.flatnonzero(valid), index[valid]] = 1.0 / counts[index[valid]]
            out.append(act @ mix)
        if not out:
            raise ValueError(f"group {self.name!r} has no top-level producer whose activations can be recorded")
        return out


def _record_activations(model, trace, data, batch_size):
    functional = _graph.check_model(model)
    consumers = {}
    producing = {}
    for call in _compat.calls(functional):
        producing.setdefault(id(call.operation), call)
        for t in call.inputs:
            consumers.setdefault(id(t), []).append(call)
    outputs, paths = [], []
    internal = []  # (use, call) of the layers whose internal units are measured on the data
    for use in trace.uses.values():
        if use.rule is None or not use.rule.produces or "/" in use.path:
            continue
        call = producing.get(id(use.layer))
        if call is not None and use.internal and type(use.rule).unit_activations is not LayerRule.unit_activations:
            internal.append((use, call))
        if call is None or len(call.outputs) != 1:
            continue
        tensor = call.outputs[0]
        while len(consumers.get(id(tensor), [])) == 1:
            nxt = consumers[id(tensor)][0]
            rule = trace.rules.get(nxt.operation)
            if rule is None or not rule.in_activation or len(nxt.outputs) != 1:
                break
            tensor = nxt.outputs[0]
        outputs.append(tensor)
        paths.append(use.path)
    call_inputs = list({id(t): t for _, call in internal for t in call.inputs}.values())
    if not outputs and not call_inputs:
        return {}
    probe = keras.Model(functional.inputs, outputs + call_inputs)
    values = probe.predict(data, batch_size=batch_size, verbose=0)
    values = [values] if len(outputs) + len(call_inputs) == 1 else list(values)
    recorded = {p: np.asarray(v) for p, v in zip(paths, values)}
    by_tensor = {id(t): np.asarray(v) for t, v in zip(call_inputs, values[len(outputs) :])}
    for use, call in internal:
        recorded.update(_unit_activations(use, call, by_tensor, batch_size))
    return recorded


def _unit_activations(use, call, by_tensor, batch_size):
    """``{"<layer>:<internal>": activity}`` of a layer's internal units, batch by batch."""
    n = len(next(iter(by_tensor.values())))
    parts = {}
    for start in range(0, n, batch_size):

        def concrete(value, start=start):
            return by_tensor[id(value)][start : start + batch_size] if _compat.is_symbolic(value) else value

        args, kwargs = keras.tree.map_structure(concrete, (tuple(call.args), dict(call.kwargs or {})))
        try:
            measured = use.rule.unit_activations(use.layer, args, kwargs)
        except ValueError:  # inputs the rule cannot measure (attention over several axes): left out
            return {}
        for name, value in measured.items():
            parts.setdefault(name, []).append(np.asarray(value))
    return {f"{use.path}:{name}": np.concatenate(chunks) for name, chunks in parts.items()}
