"""What a pruning criterion sees of one channel group: :class:`GroupView`.

A criterion's ``score_channels(view)`` gets a view and returns one score per channel of the
group. The view gathers, for every channel, the weights of all the layers that produce it
(coupled residual branches included), the BatchNormalization scales that follow it, and, on a
data sample, its activations.
"""

from __future__ import annotations

import numpy as np

import keras

from ridurre import graph as _graph
from ridurre import rules as _rules

__all__ = ["GroupView"]

# layers walked through to find a producer's activation (after BN and the nonlinearity)
_ACTIVATION_CHAIN = ("BatchNormalization", "ReLU", "Activation", "ELU", "LeakyReLU", "PReLU", "Dropout",
                     "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D")


def _output_axis(use):
    return -2 if getattr(use.rule, "transpose", False) else -1


def _kernel_name(layer):
    names = [v.name for v in layer.weights]
    for name in ("kernel", "pointwise_kernel"):
        if name in names:
            return name
    return None


class GroupView:
    """One channel group of the model being pruned, as a criterion sees it.

    Attributes:
        group: the :class:`ridurre.graph.ChannelGroup`.
        size: its number of channels.
        name: the name of its first producer (a readable label).
        seed: a seed for this group and iteration (use it for anything random).
    """

    def __init__(self, group, trace, model, seed=0):
        self.group = group
        self.size = group.size
        self.name = group.producers[0]
        self.model = model
        self._trace = trace
        self._uses = {use.path: use for use in trace.uses.values()}
        self.seed = int(seed) * 100_003 + group.id

    def producer_layers(self):
        """``[(path, layer), ...]`` of the layers creating these channels."""
        return [(p, self._uses[p].layer) for p in self.group.producers if p in self._uses]

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
            >>> from ridurre.views import GroupView
            >>> x = keras.Input((6, 6, 2))
            >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(
            ...     keras.layers.Conv2D(4, 3, name="c")(x))))
            >>> trace = trace_model(model)
            >>> view = GroupView(trace.groups()[1], trace, model)
            >>> [m.shape for m in view.weight_matrices()]
            [(4, 18)]
        """
        mats = []
        for path, layer in self.producer_layers():
            use = self._uses[path]
            name = _kernel_name(layer)
            if name is None:
                continue
            kernel = np.asarray(dict(zip([v.name for v in layer.weights], layer.get_weights()))[name])
            columns = np.moveaxis(kernel, _output_axis(use) % kernel.ndim, -1).reshape(-1, kernel.shape[_output_axis(use)])
            mats.append(self._by_channel(columns.T, self.group.positions[path]))
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
            gamma = np.abs(np.asarray(use.layer.gamma)).reshape(-1, 1)
            out.append(self._by_channel(gamma, index).mean(axis=1))
        if not out:
            raise ValueError(f"no BatchNormalization follows the channels of group {self.name!r}: "
                             "the BN-scale criterion needs one")
        return out

    def activations(self, data, batch_size=64):
        """Per producer, the activations of these channels on ``data``: ``(..., size)`` arrays.

        The activation is read after the BatchNormalization and nonlinearity that directly
        follow the producer (what "dead neuron" and firing-rate scores look at). Only producers
        at the top level of the model are recorded.
        """
        recorded = self._trace.__dict__.setdefault("_activation_cache", {})
        key = id(data)
        if key not in recorded:
            recorded.clear()
            recorded[key] = _record_activations(self.model, self._trace, data, batch_size)
        per_layer = recorded[key]
        out = []
        for path, _ in self.producer_layers():
            if path not in per_layer:
                continue
            act = per_layer[path]
            flat = act.reshape(-1, act.shape[-1]).T  # positions x samples
            grouped = self._by_channel(flat, self.group.positions[path])  # size x (k * samples)
            k = grouped.shape[1] // flat.shape[1]
            out.append(grouped.reshape(self.size, k, -1).mean(axis=1).T)
        if not out:
            raise ValueError(f"group {self.name!r} has no top-level producer whose activations can be recorded")
        return out


def _record_activations(model, trace, data, batch_size):
    functional = _graph.check_model(model)
    consumers = {}
    producing_node = {}
    for depth in functional._nodes_by_depth:
        for node in functional._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            producing_node.setdefault(id(node.operation), node)
            for t in node.input_tensors:
                consumers.setdefault(id(t), []).append(node)
    outputs, paths = [], []
    for use in trace.uses.values():
        if use.rule is None or not use.rule.produces or "/" in use.path:
            continue
        node = producing_node.get(id(use.layer))
        if node is None or len(node.outputs) != 1:
            continue
        tensor = node.outputs[0]
        while len(consumers.get(id(tensor), [])) == 1:
            nxt = consumers[id(tensor)][0]
            if type(nxt.operation).__name__ not in _ACTIVATION_CHAIN or len(nxt.outputs) != 1:
                break
            if isinstance(_rules.get_rule(nxt.operation), _rules.MergeRule):
                break
            tensor = nxt.outputs[0]
        outputs.append(tensor)
        paths.append(use.path)
    if not outputs:
        return {}
    probe = keras.Model(functional.inputs, outputs)
    values = probe.predict(data, batch_size=batch_size, verbose=0)
    if len(outputs) == 1:
        values = [values]
    return {p: np.asarray(v) for p, v in zip(paths, values)}
