"""Rules of the sequence layers: the recurrent layers (SimpleRNN, GRU, LSTM, ConvLSTM1D/2D/3D),
their ``Bidirectional`` wrapper and ``TimeDistributed``.

A recurrent layer's units are its channels. Unit j lives in every gate block of the kernel,
the recurrent kernel and the bias (``G`` blocks of ``units`` columns, in Keras's gate order:
LSTM ``i, f, c, o``; GRU ``z, r, h``), and in row j of the recurrent kernel, since the hidden
state feeds back: removing it slices all of them together. Zeroing unit j (its columns in every
block and its recurrent row) makes its output exactly zero for the usual activations and,
whatever the activations, leaves every other unit unchanged, so deleted == zeroed.

MACs are counted per time step times the steps: ``steps * G * units * (inputs + units)`` for
SimpleRNN (G=1), GRU (G=3) and LSTM (G=4); ConvLSTM multiplies that by the output positions
and the kernel size.
"""

from __future__ import annotations

import copy

import numpy as np

from ridurre.rules.base import ConfigView, LayerRule, Unsupported, channels_last, prod

__all__ = ["RecurrentRule", "BidirectionalRule", "TimeDistributedRule"]


def _check_single_call(layer, in_layouts, out_shapes):
    if getattr(layer, "stateful", False):
        raise Unsupported("stateful=True: the kept states have the old width")
    if len(in_layouts) != 1:
        raise Unsupported("initial_state or constants are given: only a single sequence input is supported")
    if len(out_shapes) != 1:
        raise Unsupported("return_state=True: only a single output is supported")


class RecurrentRule(LayerRule):
    """SimpleRNN, GRU (``reset_after`` either way), LSTM and ConvLSTM1D/2D/3D: units (filters)
    are channels, gate-aware.

    Args:
        gates: how many blocks of ``units`` columns the kernels and bias hold (1, 3 or 4).
        size_key: the config key of the width (``"units"``, or ``"filters"`` for ConvLSTM).
        convolutional: the kernels are convolutions (ConvLSTM): MACs count the positions and
            the kernel window.

    Example:
        >>> import numpy as np
        >>> rule = RecurrentRule(gates=4)
        >>> weights = {"kernel": np.ones((3, 8)), "recurrent_kernel": np.ones((2, 8)), "bias": np.arange(8.0)}
        >>> config, new = rule.slice(None, {"units": 2}, weights, None, np.array([True, False]))
        >>> config["units"], new["kernel"].shape, new["recurrent_kernel"].shape, new["bias"].tolist()
        (1, (3, 4), (1, 4), [0.0, 2.0, 4.0, 6.0])
    """

    produces = True
    channel_dependent = True
    cost = "activation"
    saved_weights = None  # the variables live in the layer's cell: mask mode reads them by position

    def __init__(self, gates: int, size_key: str = "units", convolutional: bool = False):
        self.gates = int(gates)
        self.size_key = size_key
        self.convolutional = convolutional

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
        _check_single_call(layer, in_layouts, out_shapes)
        return [ctx.new_units(int(out_shapes[0][-1]))]

    def _columns(self, unit_mask):
        return np.tile(np.asarray(unit_mask, dtype=bool), self.gates)

    def slice(self, layer, config, weights, in_keep, out_keep):
        weights = dict(weights)
        if in_keep is not None:
            weights["kernel"] = np.compress(in_keep, weights["kernel"], axis=-2)
        if out_keep is not None:
            cols = self._columns(out_keep)
            weights["kernel"] = weights["kernel"][..., cols]
            recurrent = np.compress(out_keep, weights["recurrent_kernel"], axis=-2)
            weights["recurrent_kernel"] = recurrent[..., cols]
            if "bias" in weights:
                weights["bias"] = weights["bias"][..., cols]
            config = {**config, self.size_key: int(np.count_nonzero(out_keep))}
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        weights = dict(weights)
        kernel = weights["kernel"].copy()
        if in_zero is not None:
            kernel[..., np.asarray(in_zero, dtype=bool), :] = 0
        if out_zero is not None:
            cols = self._columns(out_zero)
            kernel[..., cols] = 0
            recurrent = weights["recurrent_kernel"].copy()
            recurrent[..., np.asarray(out_zero, dtype=bool), :] = 0  # its state feeds no other unit
            recurrent[..., cols] = 0
            weights["recurrent_kernel"] = recurrent
            if "bias" in weights:
                bias = weights["bias"].copy()
                bias[..., cols] = 0
                weights["bias"] = bias
        weights["kernel"] = kernel
        return weights

    def _steps_and_shapes(self, in_shapes, out_shapes):
        steps = int(in_shapes[0][1])
        n_in, n_out = int(in_shapes[0][-1]), int(out_shapes[0][-1])
        return steps, n_in, n_out

    def macs(self, layer, in_shapes, out_shapes):
        steps, n_in, n_out = self._steps_and_shapes(in_shapes, out_shapes)
        per_position = self.gates * n_out * (n_in + n_out)
        if self.convolutional:
            positions = prod(out_shapes[0][-1 - len(layer.kernel_size) : -1])
            per_position *= prod(layer.kernel_size) * positions
        return steps * per_position

    def other_ops(self, layer, in_shapes, out_shapes):
        """The gate nonlinearities: ``G * units`` per position and time step."""
        steps, _, n_out = self._steps_and_shapes(in_shapes, out_shapes)
        positions = prod(out_shapes[0][-1 - len(layer.kernel_size) : -1]) if self.convolutional else 1
        return steps * positions * self.gates * n_out

    def output_weights(self, layer, weights):
        units = np.shape(weights["recurrent_kernel"])[-2]
        rows = []
        for name in ("kernel", "recurrent_kernel"):
            w = np.asarray(weights[name])
            w = w.reshape(w.shape[:-1] + (self.gates, units))
            rows.append(np.moveaxis(w, -1, 0).reshape(units, -1))
        return np.concatenate(rows, axis=1)


def _inner(layer, key):
    """The wrapped layer of a wrapper: the layer object, or a view of its config in a saved or
    sliced config (``{"layer": {"class_name": ..., "config": ...}}``)."""
    if isinstance(layer, ConfigView):
        sub = layer.config[{"layer": "layer", "forward": "layer", "backward": "backward_layer"}[key]]
        return ConfigView(sub["class_name"], sub["config"])
    return getattr(layer, {"layer": "layer", "forward": "forward_layer", "backward": "backward_layer"}[key])


def _split_named(weights):
    """A Bidirectional layer's weights (``0:kernel`` ... ``5:bias``) as the forward and backward
    layers' dicts, with the full names to put them back."""
    names = list(weights)
    half = len(names) // 2
    plain = [n.split(":", 1)[-1] for n in names]
    forward = {plain[i]: weights[names[i]] for i in range(half)}
    backward = {plain[i]: weights[names[i]] for i in range(half, len(names))}
    return names, forward, backward


class _WrapperRule(LayerRule):
    """A rule of a layer wrapping another: ``inner_rule(layer)`` finds the wrapped layer's rule
    (a layer object, or a :class:`ConfigView` of a saved or sliced config); the registry gives
    its own lookup (the global registry and the built-in table)."""

    def __init__(self, inner_rule=None):
        self._inner_rule = inner_rule or (lambda layer: None)

    def _rule_of(self, layer):
        return self._inner_rule(layer)


class BidirectionalRule(_WrapperRule):
    """Bidirectional around a recurrent layer: forward unit j and backward unit j are one
    channel, removed together (Keras gives both directions one width). With
    ``merge_mode="concat"`` the channel is at positions j and ``units + j``; with ``"sum"``,
    ``"ave"`` and ``"mul"`` at position j. ``merge_mode=None`` (two outputs) is refused.

    Example:
        >>> BidirectionalRule().produces
        True
    """

    produces = True
    channel_dependent = True
    cost = "activation"

    def _parts(self, layer):
        forward, backward = _inner(layer, "forward"), _inner(layer, "backward")
        rules = self._rule_of(forward), self._rule_of(backward)
        if not all(isinstance(r, RecurrentRule) for r in rules):
            name = forward.class_name if isinstance(forward, ConfigView) else type(forward).__name__
            raise Unsupported(f"wraps {name}, not a recurrent layer ridurre knows")
        return (forward, rules[0]), (backward, rules[1])

    @staticmethod
    def _widths(layer):
        forward, backward = _inner(layer, "forward"), _inner(layer, "backward")
        return int(forward.units), int(backward.units)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        self._parts(layer)
        mode = layer.merge_mode
        if mode not in ("concat", "sum", "ave", "mul"):
            raise Unsupported(f"merge_mode={mode!r} is not supported")
        _check_single_call(layer, in_layouts, out_shapes)
        n_forward, n_backward = self._widths(layer)
        if n_forward != n_backward:
            raise Unsupported(f"{n_forward} forward and {n_backward} backward units")
        units = ctx.new_units(n_forward)
        return [np.tile(units, 2) if mode == "concat" else units]

    def _halves(self, layer, mask):
        if mask is None:
            return None, None
        n_forward, _ = self._widths(layer)
        if layer.merge_mode == "concat":
            return mask[:n_forward], mask[n_forward:]
        return mask, mask

    def slice(self, layer, config, weights, in_keep, out_keep):
        (forward, f_rule), (backward, b_rule) = self._parts(layer)
        names, f_weights, b_weights = _split_named(weights)
        f_out, b_out = self._halves(layer, out_keep)
        config = copy.deepcopy(config)
        f_config, f_weights = f_rule.slice(forward, config["layer"]["config"], f_weights, in_keep, f_out)
        b_config, b_weights = b_rule.slice(backward, config["backward_layer"]["config"], b_weights, in_keep, b_out)
        config["layer"]["config"], config["backward_layer"]["config"] = f_config, b_config
        for key in ("layer", "backward_layer"):
            config[key].pop("build_config", None)  # built for the old width: build on the new input
        return config, dict(zip(names, list(f_weights.values()) + list(b_weights.values())))

    def zero(self, layer, weights, in_zero, out_zero):
        (forward, f_rule), (backward, b_rule) = self._parts(layer)
        names, f_weights, b_weights = _split_named(weights)
        f_out, b_out = self._halves(layer, out_zero)
        f_weights = f_rule.zero(forward, f_weights, in_zero, f_out)
        b_weights = b_rule.zero(backward, b_weights, in_zero, b_out)
        return dict(zip(names, list(f_weights.values()) + list(b_weights.values())))

    def _inner_shapes(self, layer, out_shapes):
        n_forward, n_backward = self._widths(layer)
        shape = tuple(out_shapes[0][:-1])
        return [shape + (n_forward,)], [shape + (n_backward,)]

    def macs(self, layer, in_shapes, out_shapes):
        (forward, f_rule), (backward, b_rule) = self._parts(layer)
        f_shapes, b_shapes = self._inner_shapes(layer, out_shapes)
        return f_rule.macs(forward, in_shapes, f_shapes) + b_rule.macs(backward, in_shapes, b_shapes)

    def other_ops(self, layer, in_shapes, out_shapes):
        (forward, f_rule), (backward, b_rule) = self._parts(layer)
        f_shapes, b_shapes = self._inner_shapes(layer, out_shapes)
        merge = prod(out_shapes[0][1:]) if layer.merge_mode != "concat" else 0
        return f_rule.other_ops(forward, in_shapes, f_shapes) + b_rule.other_ops(backward, in_shapes, b_shapes) + merge

    def output_weights(self, layer, weights):
        (forward, f_rule), (backward, b_rule) = self._parts(layer)
        _, f_weights, b_weights = _split_named(weights)
        f_rows, b_rows = f_rule.output_weights(forward, f_weights), b_rule.output_weights(backward, b_weights)
        if layer.merge_mode == "concat":
            width = max(f_rows.shape[1], b_rows.shape[1])
            pad = [np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in (f_rows, b_rows)]
            return np.concatenate(pad, axis=0)
        return np.concatenate([f_rows, b_rows], axis=1)


class TimeDistributedRule(_WrapperRule):
    """TimeDistributed around a layer with a rule: the wrapped layer's rule, applied to every
    time step (the shapes seen by it have no time axis; MACs are the wrapped layer's times the
    steps). The wrapped layer's rule comes from the global registry and the built-in table
    (rules given for one call are not consulted for it).

    Example:
        >>> TimeDistributedRule().channel_dependent
        True
    """

    produces = True  # what the wrapped layer produces is scored like a producer's channels
    channel_dependent = True

    def _wrapped(self, layer):
        inner = _inner(layer, "layer")
        rule = self._rule_of(inner)
        if rule is None:
            name = inner.class_name if isinstance(inner, ConfigView) else type(inner).__name__
            raise Unsupported(f"ridurre has no rule for the wrapped {name} layer")
        return inner, rule

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        inner, rule = self._wrapped(layer)
        if any(len(s) < 2 for s in list(in_shapes) + list(out_shapes)):
            raise Unsupported("the input has no time axis")
        return rule.propagate(inner, in_layouts, [s[1:] for s in in_shapes], [s[1:] for s in out_shapes], ctx)

    def slice(self, layer, config, weights, in_keep, out_keep):
        inner, rule = self._wrapped(layer)
        config = copy.deepcopy(config)
        config["layer"]["config"], weights = rule.slice(inner, config["layer"]["config"], weights, in_keep, out_keep)
        config["layer"].pop("build_config", None)  # built for the old width: build on the new input
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        inner, rule = self._wrapped(layer)
        return rule.zero(inner, weights, in_zero, out_zero)

    @staticmethod
    def _per_step(shapes):
        return [(s[0],) + tuple(s[2:]) for s in shapes]

    def macs(self, layer, in_shapes, out_shapes):
        inner, rule = self._wrapped(layer)
        return int(in_shapes[0][1]) * rule.macs(inner, self._per_step(in_shapes), self._per_step(out_shapes))

    def other_ops(self, layer, in_shapes, out_shapes):
        inner, rule = self._wrapped(layer)
        return int(in_shapes[0][1]) * rule.other_ops(inner, self._per_step(in_shapes), self._per_step(out_shapes))

    def output_weights(self, layer, weights):
        inner, rule = self._wrapped(layer)
        return rule.output_weights(inner, weights)
