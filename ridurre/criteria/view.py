"""What a pruning criterion sees of one channel group: :class:`GroupView`.

A criterion's ``score(view)`` gets a view and returns one score per channel of the group. The
view gathers, for every channel, the weights of all the layers that produce it (coupled
residual branches included), the BatchNormalization scales that follow it, and, on a data
sample, its activations. Which weights produce a channel, and which layers belong to a
producer's activation, are questions the layer rules answer (:mod:`ridurre.rules`).
"""

from __future__ import annotations

import keras
import numpy as np

from ridurre import _compat
from ridurre import graph as _graph
from ridurre.graph import layer_weights
from ridurre.rules import LayerRule

__all__ = ["GroupView", "ActivationRecorder"]


class ActivationRecorder:
    """Records the activations of every top-level producer of a model, once per data sample.

    The views of one pruning step share one recorder, so the model runs once on the data for
    all the groups.

    Args:
        model: the model being pruned.
        trace: its :class:`ridurre.graph.Trace`.
    """

    def __init__(self, model, trace):
        self.model, self.trace = model, trace
        self._data_id, self._values = None, None

    def record(self, data, batch_size=64) -> dict:
        """``{producer path: activations}`` on ``data`` (recorded on the first call for it)."""
        if self._data_id != id(data):
            self._values = _record_activations(self.model, self.trace, data, batch_size)
            self._data_id = id(data)
        return self._values


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
        rank = {r: j for j, r in enumerate(self.group.roots.tolist())}
        return np.array([rank.get(r, -1) for r in self._trace.units.roots(use.out_layout).tolist()], dtype=np.int64)

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
