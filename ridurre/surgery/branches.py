"""Residual branches: depth pruning by removing whole blocks.

Channel pruning narrows layers but keeps every operation; in a runtime whose cost per operation
and per narrow convolution is high (TensorFlow on CPU: ResNet-56 at 2x fewer MACs runs only 1.4x
faster), removing whole residual blocks turns the MACs saved into time (ResNet-56 against
ResNet-32, its 5-block version: 0.95-1.0 of the MACs reduction in TensorFlow, LiteRT and ONNX
Runtime; see BENCHMARKS.md).

A **residual branch** is one input of a two-input ``Add`` fed by a chain of single-input layers
that nothing else reads (``conv -> BN -> ReLU -> conv -> BN`` in a ResNet block), with at least
one channel-mixing layer (one whose rule produces channels: a convolution, a Dense layer...).
Removing it is exact in the same sense
as deleting channels: the pruned model equals the original with the input of the branch's last
mixing layer zeroed, because the branch then outputs a per-channel constant (that layer's bias
through the layers after it), which the surgery adds to the other input (a
:class:`~ridurre.graph.layers.ChannelOffset` layer, trainable and prunable with the channels;
nothing when the constant is zero).

Example:
    >>> import keras, numpy as np
    >>> from ridurre.surgery import residual_branches, remove_branches
    >>> x = keras.Input((8, 8, 4), name="x")
    >>> h = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(x)
    >>> h = keras.layers.Conv2D(4, 3, padding="same", bias_initializer="ones", name="conv_b")(keras.layers.ReLU()(h))
    >>> model = keras.Model(x, keras.layers.Add(name="add")([x, h]))
    >>> [(b.merge, b.layers[0], b.mixing, b.offset.tolist()) for b in residual_branches(model)]
    [('add', 'conv_a', 'conv_b', [1.0, 1.0, 1.0, 1.0])]
    >>> smaller = remove_branches(model, residual_branches(model))
    >>> [layer.name for layer in smaller.layers]
    ['x', 'add_offset']
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from ridurre import _compat
from ridurre import graph as _graph
from ridurre._validation import check_callable
from ridurre.metrics import layer_stats
from ridurre.rules import get_rule
from ridurre.surgery.surgeon import Surgeon

__all__ = ["ResidualBranch", "residual_branches", "remove_branches", "prune_branches"]


@dataclasses.dataclass(frozen=True)
class ResidualBranch:
    """One removable input of a residual ``Add``.

    Attributes:
        merge: name of the ``Add`` layer.
        index: which of its two inputs is the branch (0 or 1).
        layers: names of the branch's layers, input side first.
        mixing: name of its last channel-mixing layer (its zeroed input defines the removal).
        macs: multiply-accumulates of the branch's layers for one example.
        offset: the per-channel constant the branch outputs once removed (added to the other
            input; all zeros when nothing needs adding).
    """

    merge: str
    index: int
    layers: tuple
    mixing: str
    macs: int
    offset: np.ndarray = dataclasses.field(repr=False, compare=False)


def residual_branches(model: keras.Model) -> list[ResidualBranch]:
    """Every residual branch of ``model`` that can be removed (top level of a Functional model).

    A merge whose two inputs are both branches (nothing passes through unchanged) lists both;
    :func:`remove_branches` removes at most one of them. Shared layers, nested models, merges of
    more than two inputs or of two shapes (a broadcast), and branches whose removal would not
    leave a per-channel constant (a layer after the last convolution that depends on the
    position) are left out.

    Example:
        >>> import keras
        >>> x = keras.Input((4,))
        >>> h = keras.layers.Dense(4, name="d")(x)
        >>> model = keras.Model(x, keras.layers.Add(name="sum")([x, h]))
        >>> [(b.merge, b.index, b.layers, b.macs) for b in residual_branches(model)]
        [('sum', 1, ('d',), 16)]
    """
    _graph.check_model(model)
    if isinstance(model, keras.Sequential):  # no merges
        return []
    consumers = {}
    for layer in model.layers:
        for call in _compat.layer_calls(layer):
            for t in keras.tree.flatten(call.inputs):
                consumers.setdefault(id(t), []).append(layer)
    macs = {row.name: row.macs for row in layer_stats(model)}
    found = []
    for layer in model.layers:
        calls = _compat.layer_calls(layer)
        if not isinstance(layer, keras.layers.Add) or len(calls) != 1 or len(calls[0].inputs) != 2:
            continue
        shapes = [tuple(t.shape) for t in calls[0].inputs]
        if shapes[0] != shapes[1]:  # a broadcast: the kept input alone would have another shape
            continue
        for index, tensor in enumerate(calls[0].inputs):
            chain = _exclusive_chain(tensor, consumers, model)
            mixing = [lay for lay in chain if _mixes(lay)]
            if not mixing:
                continue
            offset = _removed_output(chain[chain.index(mixing[-1]) :], mixing[-1])
            if offset is None:
                continue
            found.append(
                ResidualBranch(
                    merge=layer.name,
                    index=index,
                    layers=tuple(lay.name for lay in chain),
                    mixing=mixing[-1].name,
                    macs=int(sum(macs.get(lay.name, 0) for lay in chain)),
                    offset=offset,
                )
            )
    return found


def _mixes(layer):
    """A layer whose rule says it produces channels (convolutions, Dense...)."""
    rule = get_rule(layer)
    return rule is not None and rule.produces


def _exclusive_chain(tensor, consumers, model):
    """The single-input, single-consumer layers that lead to ``tensor``, input side first."""
    chain = []
    inputs = {id(t) for t in keras.tree.flatten(model.inputs)}
    while id(tensor) not in inputs and len(consumers.get(id(tensor), ())) == 1:
        layer = _compat.producer(tensor)
        calls = _compat.layer_calls(layer) if isinstance(layer, keras.layers.Layer) else []
        if (
            len(calls) != 1
            or _compat.is_graph_model(layer)
            or len(keras.tree.flatten(calls[0].inputs)) != 1
            or len(keras.tree.flatten(calls[0].outputs)) != 1
        ):
            break
        chain.insert(0, layer)
        tensor = keras.tree.flatten(calls[0].inputs)[0]
    return chain


def _removed_output(tail, mixing):
    """What ``tail`` (the mixing layer and the layers after it) outputs for a zero input: a
    per-channel constant, or ``None`` when it varies along the other axes."""
    shape = keras.tree.flatten(_compat.layer_calls(mixing)[0].inputs)[0].shape
    if any(d is None for d in shape[1:]):
        return None
    y = np.zeros((1, *shape[1:]), dtype="float32")
    for layer in tail:
        y = layer(y, training=False)
    y = keras.ops.convert_to_numpy(y)
    constant = y.reshape(-1, y.shape[-1])[0]
    scale = max(1.0, float(np.max(np.abs(constant))))
    if not np.allclose(y, np.broadcast_to(constant, y.shape), rtol=0.0, atol=1e-6 * scale):
        return None
    return constant.astype("float32")


def remove_branches(model: keras.Model, branches) -> keras.Model:
    """A copy of ``model`` without ``branches`` (from :func:`residual_branches`); the model given
    is not changed.

    Each branch's ``Add`` becomes its other input plus the branch's constant; the pruned model
    equals the original with the input of each branch's last mixing layer zeroed.

    Raises:
        ValueError: a branch that is not one of ``residual_branches(model)``, or both inputs of
            one merge.
        TypeError: ``branches`` is not a list of :class:`ResidualBranch`.
    """
    branches = list(branches) if not isinstance(branches, ResidualBranch) else [branches]
    if not all(isinstance(b, ResidualBranch) for b in branches):
        raise TypeError("branches must be ResidualBranch objects from residual_branches(model)")
    known = {(b.merge, b.index): b for b in residual_branches(model)}
    current = []
    for branch in branches:
        found = known.get((branch.merge, branch.index))
        if found is None or found.layers != branch.layers:
            raise ValueError(
                f"branch {branch.index} of {branch.merge!r} is not a removable residual branch of model {model.name!r}"
            )
        current.append(found)
    return _bypass(model, current)


def _bypass(model, branches):
    """The surgery of :func:`remove_branches` for branches just found in ``model``."""
    merges = set()
    surgeon = Surgeon(model)
    for branch in branches:
        if branch.merge in merges:
            raise ValueError(f"both inputs of {branch.merge!r} are listed: one of them must stay")
        merges.add(branch.merge)
        surgeon.bypass_merge(branch.merge, branch.index, branch.offset if np.any(branch.offset != 0) else None)
    return surgeon.operate()


def prune_branches(model: keras.Model, target_macs: float, score=None, data=None):
    """Remove the least important residual blocks until the model keeps about ``target_macs`` of
    its MACs (never fewer).

    The candidates are the branches of :func:`residual_branches`, one per merge: where both
    inputs of a merge are branches (a projection shortcut beside the block's convolutions), the
    costlier, so that the shortcut stays. Branches are taken lowest score first, skipping any
    that would cross the target.

    Args:
        model: a Functional model (not changed).
        target_macs: share of the original MACs to keep, in (0, 1).
        score: optional ``fn(model, branch) -> float`` (lower goes first). Default: with ``data``,
            the mean absolute change of the merge's output when the branch is removed (its
            output's distance to its constant on ``data``); without, the mean absolute weight of
            its last mixing layer times the mean absolute scale of the BatchNormalization layers
            after it.
        data: optional input examples for the default score.

    Returns:
        ``(pruned model, removed branches)``.

    Example:
        >>> import keras
        >>> x = keras.Input((4,))
        >>> h = x
        >>> for i in range(4):
        ...     h = keras.layers.Add(name=f"add{i}")([h, keras.layers.Dense(4, name=f"d{i}")(h)])
        >>> pruned, removed = prune_branches(keras.Model(x, h), target_macs=0.5)
        >>> len(removed), len(pruned.layers) < 9
        (2, True)
    """
    if isinstance(target_macs, bool) or not isinstance(target_macs, (int, float)) or not 0 < target_macs < 1:
        raise ValueError(f"target_macs must be a number in (0, 1), got {target_macs!r}")
    if score is not None:
        check_callable(score, "score", "fn(model, branch) -> float")
    branches = _block_branches(residual_branches(model))
    if not branches:
        raise ValueError(f"model {model.name!r} has no removable residual branch")
    total = sum(row.macs for row in layer_stats(model))
    if score is not None:
        scores = {(b.merge, b.index): float(score(model, b)) for b in branches}
    elif data is not None:
        scores = _data_scores(model, branches, data)
    else:
        scores = {(b.merge, b.index): _weight_score(model, b) for b in branches}
    budget = (1.0 - target_macs) * total
    chosen, merges, removed = [], set(), 0
    for branch in sorted(branches, key=lambda b: scores[(b.merge, b.index)]):
        if branch.merge in merges or removed + branch.macs > budget:
            continue
        chosen.append(branch)
        merges.add(branch.merge)
        removed += branch.macs
    if not chosen:
        raise ValueError(
            f"no residual branch of model {model.name!r} fits within target_macs={target_macs} "
            f"(the smallest costs {min(b.macs for b in branches) / total:.1%} of the MACs)"
        )
    return _bypass(model, chosen), chosen


def _block_branches(branches):
    """One candidate per merge: where both inputs are branches (a projection shortcut beside the
    block's convolutions), the costlier one, so that removing it keeps the shortcut."""
    best = {}
    for branch in branches:
        if branch.merge not in best or branch.macs > best[branch.merge].macs:
            best[branch.merge] = branch
    return [b for b in branches if best[b.merge] is b]


def _data_scores(model, branches, data):
    """Mean absolute distance of each branch's output to its constant on ``data`` (one pass)."""
    outputs = [_compat.layer_calls(model.get_layer(b.layers[-1]))[0].outputs[0] for b in branches]
    values = keras.Model(model.inputs, outputs).predict(np.asarray(data), verbose=0)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {(b.merge, b.index): float(np.mean(np.abs(np.asarray(v) - b.offset))) for b, v in zip(branches, values)}


def _weight_score(model, branch):
    """Mean absolute weight of the last mixing layer times the scale of the BatchNormalizations after it."""
    layers = [model.get_layer(name) for name in branch.layers]
    mixing = model.get_layer(branch.mixing)
    value = float(np.mean(np.abs(keras.ops.convert_to_numpy(mixing.weights[0]))))
    after = layers[layers.index(mixing) + 1 :]
    for bn in (lay for lay in after if isinstance(lay, keras.layers.BatchNormalization)):
        var = keras.ops.convert_to_numpy(bn.moving_variance)
        gamma = keras.ops.convert_to_numpy(bn.gamma) if bn.scale else np.ones_like(var)
        value *= float(np.mean(np.abs(gamma / np.sqrt(var + bn.epsilon))))
    return value
