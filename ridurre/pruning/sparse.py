"""Sparse training before (or between) pruning steps: Keras callbacks for your own ``model.fit``.

Each callback pulls whole channels towards zero while the model trains, so that the channels a
criterion then removes carry little; add it to the ``callbacks`` of the ``fit`` that trains
the model before pruning, or of your finetune callback between steps::

    model.fit(x, y, epochs=10, callbacks=[ridurre.pruning.sparse.GroupLassoSparsity(1e-2)])

- :class:`BNScaleSparsity`: L1 on the normalization scales ``gamma`` (Network Slimming, Liu et
  al. 2017), as a proximal step (soft thresholding), so weak scales become exactly zero.
- :class:`GroupLassoSparsity`: group lasso over *coupled* groups: the penalty of a channel is
  the L2 norm of all its weights over the group (producers' filters, consumers' input weights,
  normalization scales, depthwise filters; biases aside); ``alpha > 1`` pulls the weak
  channels of a group harder (Torch-Pruning's ``GroupNormPruner``, "DepGraph (SL)", Fang et al.
  2023).
- :class:`GrowingRegularization`: an L2 penalty per channel whose strength grows step by step,
  faster for the weaker channels (Wang et al. 2021, Torch-Pruning's ``GrowingRegPruner``).

The penalties are applied after every optimizer step as a decoupled step of size
``learning_rate * strength`` (the optimizer's current learning rate unless given), on every
Keras backend (a TensorFlow, JAX or torch ``fit``); which weights belong to a channel is asked
of the layer rules (:meth:`ridurre.criteria.GroupView.members`).
"""

from __future__ import annotations

import keras
import numpy as np

from ridurre import graph as _graph
from ridurre._validation import LayerPatterns, check_int
from ridurre.criteria.view import GroupView
from ridurre.graph import weight_names

__all__ = ["SparsityCallback", "BNScaleSparsity", "GroupLassoSparsity", "GrowingRegularization", "SPARSITY_METHODS"]


def _positive(value, name, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


class _Membership:
    """Which elements of one variable belong to which channel segment."""

    def __init__(self, variable, elements, segments):
        self.variable, self.elements, self.segments = variable, elements, segments


class SparsityCallback(keras.callbacks.Callback):
    """Base class: finds the channel groups of the model being trained and, every ``every``
    batches, applies :meth:`update` to their weights.

    Args:
        strength: the penalty's weight (the lambda of ``loss + lambda * penalty``).
        every: apply the step every this many batches (its size is multiplied accordingly).
        learning_rate: the step's learning rate; ``None``: the optimizer's current one.
        layers, exclude: as for :class:`ridurre.BasePruning`: only groups whose producers all
            match ``layers``, none matching ``exclude``.
        roles: which members of a group are penalized (see :data:`ridurre.criteria.view.ROLES`).
    """

    roles = ("producer", "consumer", "norm", "carrier")

    def __init__(self, strength, every=1, learning_rate=None, layers=None, exclude=None):
        super().__init__()
        self.strength = _positive(strength, "strength", allow_zero=True)
        self.every = check_int(every, "every", 1)
        self.learning_rate = None if learning_rate is None else _positive(learning_rate, "learning_rate")
        self._include = LayerPatterns.parse(layers, "layers")
        self._exclude = LayerPatterns.parse(exclude, "exclude")
        self._memberships = []
        self.segments = 0  # channel segments: one per channel of every penalized group
        self.group_of_segment = np.zeros(0, dtype=np.int64)
        self._batches = 0

    # -- structure ---------------------------------------------------------------------------
    def _eligible(self, group):
        if not group.prunable or group.size < 2:
            return False
        if self._include is not None and not all(self._include.matches(p) for p in group.producers):
            return False
        return not (self._exclude is not None and any(self._exclude.matches(p) for p in group.producers))

    def on_train_begin(self, logs=None):
        model = self.model
        trace = _graph.trace_model(model)
        offsets, variables, start = {}, {}, 1  # element ids start at 1: 0 pads ragged rows
        for _, layer in _graph.all_layers(model):
            for var in layer.weights:
                if id(var) not in offsets and var.trainable:
                    offsets[id(var)], variables[start] = start, var
                    start += int(np.prod(var.shape))
        bounds = np.array(sorted(variables))
        by_start = [variables[b] for b in bounds]

        def element_ids(layer, weights):
            ids = {}
            for name, var in zip(weight_names(layer), layer.weights):
                base = offsets.get(id(var), None)
                shape = tuple(var.shape)
                ids[name] = np.zeros(shape) if base is None else base + np.arange(int(np.prod(shape))).reshape(shape)
            return ids

        per_variable = {}  # variable index -> list of (elements, segments)
        segment, groups = 0, []
        for group in trace.groups():
            if not self._eligible(group):
                continue
            view = GroupView(group, trace, model)
            for member in view.members(self.roles, transform=element_ids):
                rows = member.matrix.astype(np.int64)
                channel = np.repeat(np.arange(group.size), rows.shape[1])
                ids = rows.ravel()
                keep = ids > 0
                ids, channel = ids[keep], channel[keep]
                which = np.searchsorted(bounds, ids, side="right") - 1
                for v in np.unique(which):
                    sel = which == v
                    per_variable.setdefault(int(v), []).append((ids[sel] - bounds[v], segment + channel[sel]))
            groups.append(np.full(group.size, len(groups)))
            segment += group.size
        self.segments = segment
        self.group_of_segment = np.concatenate(groups) if groups else np.zeros(0, dtype=np.int64)
        self._memberships = [
            _Membership(by_start[v], elements, segments)
            for v, parts in sorted(per_variable.items())
            for elements, segments in parts
        ]
        self._batches = 0
        self.on_structure_ready()

    def on_structure_ready(self):
        """Called once the channel segments are known (per-segment state can be made here)."""

    # -- the step ----------------------------------------------------------------------------
    def _step_size(self):
        if self.learning_rate is not None:
            return self.learning_rate
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if lr is None:
            raise ValueError("the model has no optimizer learning rate: pass learning_rate= to the sparsity callback")
        return float(keras.ops.convert_to_numpy(lr))

    def segment_norms(self, values):
        """The L2 norm of every channel segment's weights (``values``: ``{id(variable): flat array}``)."""
        squares = np.zeros(self.segments)
        for m in self._memberships:
            squares += np.bincount(m.segments, weights=values[id(m.variable)][m.elements] ** 2, minlength=self.segments)
        return np.sqrt(squares)

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if not self._memberships or self._batches % self.every:
            return
        sync = getattr(self.model, "jax_state_sync", None)
        if callable(sync):
            sync()  # under JAX, fit keeps the weights outside the variables between steps
        variables = {id(m.variable): m.variable for m in self._memberships}
        values = {
            key: np.asarray(keras.ops.convert_to_numpy(v.value), dtype=np.float64).ravel()
            for key, v in variables.items()
        }
        new = self.update(values, self._step_size() * self.every)
        for key, var in variables.items():
            var.assign(new[key].reshape(tuple(var.shape)).astype(var.dtype))

    def update(self, values, step):
        """New flat values of the penalized variables after one step of size ``step``."""
        raise NotImplementedError

    def _scale(self, values, pull, step):
        """``w * max(0, 1 - step * sum of the pulls of the segments w belongs to)``."""
        total = {key: np.zeros_like(v) for key, v in values.items()}
        for m in self._memberships:
            total[id(m.variable)][m.elements] += pull[m.segments]
        return {key: v * np.clip(1.0 - step * total[key], 0.0, None) for key, v in values.items()}


class BNScaleSparsity(SparsityCallback):
    """L1 on the normalization scales (Network Slimming): ``gamma`` shrinks by ``step * strength``
    towards zero and stops there (soft thresholding), so weak channels end exactly at zero.

    Example:
        >>> import keras, numpy as np
        >>> x = keras.Input((4,))
        >>> h = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3, name="d")(x))
        >>> model = keras.Model(x, keras.layers.Dense(1, name="out")(h))
        >>> model.compile(keras.optimizers.SGD(0.1), "mse")
        >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0, callbacks=[BNScaleSparsity(20.0)])
        >>> model.get_layer("bn").get_weights()[0].round(3).tolist()
        [0.0, 0.0, 0.0]
    """

    roles = ("norm",)

    def update(self, values, step):
        out = {key: v.copy() for key, v in values.items()}
        for m in self._memberships:
            w = out[id(m.variable)][m.elements]
            out[id(m.variable)][m.elements] = np.sign(w) * np.maximum(np.abs(w) - step * self.strength, 0.0)
        return out


class GroupLassoSparsity(SparsityCallback):
    """Group lasso over coupled groups: the penalty ``strength * sum_channels ||w_channel||``, the
    norm taken over all the channel's weights in its group.

    Args:
        strength: lambda.
        alpha: ``> 1`` pulls the weak channels of a group harder: channel c's pull is multiplied by
            ``alpha ** ((max - n_c) / (max - min))`` of its group's norms (1 for the strongest,
            ``alpha`` for the weakest), as Torch-Pruning's ``GroupNormPruner`` (its default is 4);
            1 is plain group lasso.
        every, learning_rate, layers, exclude: see :class:`SparsityCallback`.
    """

    def __init__(self, strength, alpha=1.0, every=1, learning_rate=None, layers=None, exclude=None):
        super().__init__(strength, every, learning_rate, layers, exclude)
        self.alpha = _positive(alpha, "alpha")
        if self.alpha < 1:
            raise ValueError(f"alpha must be >= 1, got {alpha!r}")

    def weakness(self, norms):
        """Per segment, in [0, 1]: 0 for the strongest channel of its group, 1 for the weakest."""
        out = np.zeros_like(norms)
        for g in np.unique(self.group_of_segment):
            sel = self.group_of_segment == g
            n = norms[sel]
            spread = n.max() - n.min()
            out[sel] = (n.max() - n) / spread if spread > 0 else 0.0
        return out

    def update(self, values, step):
        norms = self.segment_norms(values)
        pull = self.strength / np.maximum(norms, 1e-12)
        if self.alpha > 1:
            pull *= self.alpha ** self.weakness(norms)
        return self._scale(values, pull, step)


class GrowingRegularization(GroupLassoSparsity):
    """An L2 penalty per channel whose strength grows: every ``update_every`` batches each
    channel's strength increases by ``delta`` times its weakness in its group (1 for the weakest
    channel, 0 for the strongest), up to ``max_strength``; weak channels are squeezed out while
    strong ones are barely touched (Wang et al. 2021).

    Args:
        strength: the initial strength of every channel.
        delta: the growth per update.
        update_every: batches between updates.
        max_strength: the cap of a channel's strength.
        every, learning_rate, layers, exclude: see :class:`SparsityCallback`.
    """

    def __init__(
        self,
        strength=1e-4,
        delta=1e-4,
        update_every=10,
        max_strength=1.0,
        every=1,
        learning_rate=None,
        layers=None,
        exclude=None,
    ):
        super().__init__(strength, 1.0, every, learning_rate, layers, exclude)
        self.delta = _positive(delta, "delta", allow_zero=True)
        self.update_every = check_int(update_every, "update_every", 1)
        self.max_strength = _positive(max_strength, "max_strength")
        self.channel_strength = np.zeros(0)

    def on_structure_ready(self):
        self.channel_strength = np.full(self.segments, self.strength)

    def update(self, values, step):
        if self._batches % self.update_every == 0:
            grown = self.channel_strength + self.delta * self.weakness(self.segment_norms(values))
            self.channel_strength = np.minimum(grown, self.max_strength)
        return self._scale(values, self.channel_strength, step)


SPARSITY_METHODS = {"bn": BNScaleSparsity, "group": GroupLassoSparsity, "growing": GrowingRegularization}
"""The sparse-training callbacks by the names ``ridurre prune --sparse-method`` takes."""
