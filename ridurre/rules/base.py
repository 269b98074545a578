"""The contract of a layer rule: :class:`LayerRule`, and the rule every weightless pass-through
layer uses, :class:`PassThroughRule`.

A rule answers, for one layer type, every question ridurre asks about a layer:

* ``propagate``: given the *layouts* of the layer's inputs (for each position of the channel
  axis, the id of the channel *unit* it carries), what are the layouts of its outputs, and which
  positions are coupled (must be pruned together)?
* ``slice``: given which input and output channel positions are kept, what are the new config
  and weights?
* ``zero``: given which input and output positions are pruned, what weights make the layer
  behave exactly as if they had been removed, with the same shapes?
* ``macs`` and ``other_ops``: what one call costs (see :mod:`ridurre.metrics`);
* ``output_weights``: the weights producing each output channel (what weight criteria score);
* ``input_weights``: the weights applied to each input channel (a consumer's kernel slice, a
  normalization's scale), what group-level criteria add to a channel's score;
* ``weight_names`` and ``filters``: how the layer looks in a saved file (mask mode reads files
  without Keras, see :mod:`ridurre.scorefile`).

Channels are always the last axis (``channels_last``). A layer with no rule, or whose rule
raises :class:`Unsupported`, makes every channel it touches unprunable, with the reason
recorded: ridurre never builds a silently wrong model.

This module imports neither Keras nor TensorFlow: rules see layers through their attributes
(``layer.groups``, ``layer.axis``...), which a saved config provides as well (:class:`ConfigView`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["Unsupported", "LayerRule", "PassThroughRule", "ConfigView", "COST_KINDS"]

COST_KINDS = ("free", "activation", "normalization", "pooling", "elementwise", "other")
"""How a layer's work that is not multiply-accumulates is counted (``ModelStats.other_ops``)."""


class Unsupported(Exception):
    """Raised by a rule when it cannot carry channels through a layer; the message is the reason."""


class ConfigView:
    """A saved layer seen as a layer: its config keys as attributes (``view.groups``).

    Rules read layer attributes; in mask mode there is no layer object, only its saved config.

    Example:
        >>> ConfigView("Conv2D", {"filters": 4, "groups": 2}).groups
        2
    """

    def __init__(self, class_name: str, config: dict):
        self.class_name = class_name
        self.config = dict(config or {})

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["config"][name]
        except KeyError:
            raise AttributeError(f"{self.__dict__['class_name']} config has no {name!r}") from None


def channels_last(layer) -> None:
    """Raise :class:`Unsupported` unless ``layer`` works on channels-last tensors."""
    fmt = getattr(layer, "data_format", None)
    if fmt not in (None, "channels_last"):
        raise Unsupported(f"data_format={fmt!r} is not supported (channels_last only)")


def is_last_axis(axis, rank: int) -> bool:
    """True when ``axis`` (int or 1-element list, may be negative) is the last axis of a tensor
    whose shape WITHOUT the batch axis has ``rank`` dimensions (the traced shapes have no batch
    axis, while a layer's ``axis`` counts it: BatchNormalization(axis=3) on (H, W, C) is the
    channel axis, as in every keras.applications model)."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis == -1 or axis == rank


def prod(values) -> int:
    """The product of a shape's dimensions, as an int."""
    return int(math.prod(int(v) for v in values))


def fused_activation(layer) -> bool:
    """Whether ``layer`` applies a nonlinearity of its own (``Dense(..., activation="relu")``)."""
    activation = getattr(layer, "activation", None)
    return activation is not None and getattr(activation, "__name__", "linear") != "linear"


class LayerRule:
    """Base rule. Subclasses override what differs; the defaults describe a weightless layer
    whose single output carries its single input's channels unchanged.

    Attributes:
        produces: the layer creates new channels (Conv, Dense): its output channels are scored.
        channel_dependent: the layer's config or weights depend on the number of channels, so
            when it is shared between several calls, all calls must keep the same channels.
        cost: how the layer's work is counted besides MACs: one of :data:`COST_KINDS`.
        in_activation: the layer is part of the activation of the producer before it
            (normalization, nonlinearity, dropout): activation criteria read channels after it.
        saved_weights: the layer's variables in creation order, as ``(name, config flag)`` pairs
            (a variable exists when its flag is true in the config, or always when the flag is
            ``None``); ``None`` when unknown. Saved files list variables in this order.
    """

    produces = False
    channel_dependent = False
    cost = "other"
    in_activation = False
    saved_weights: tuple | None = None

    # -- channels ----------------------------------------------------------------------------
    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        """The output layouts of one call (see the module docstring); raise :class:`Unsupported`."""
        if len(in_layouts) != 1 or len(out_shapes) != 1:
            raise Unsupported(f"expected one input and one output, got {len(in_layouts)} and {len(out_shapes)}")
        if out_shapes[0][-1] != in_shapes[0][-1]:
            raise Unsupported("the layer changes the number of channels")
        return [in_layouts[0]]

    def slice(self, layer, config, weights, in_keep, out_keep):
        """``(config, weights)`` with the input/output positions where ``*_keep`` is False removed."""
        return config, weights

    def zero(self, layer, weights, in_zero, out_zero):
        """Weights of the same shapes in which the positions where ``*_zero`` is True contribute
        nothing (``in_zero``/``out_zero`` may be ``None``: nothing there)."""
        return weights

    # -- cost --------------------------------------------------------------------------------
    def macs(self, layer, in_shapes, out_shapes) -> int:
        """Multiply-accumulates of one call for one example (shapes include the batch axis)."""
        return 0

    def other_ops(self, layer, in_shapes, out_shapes) -> int:
        """Element operations of one call counted under :attr:`cost` (0 when free)."""
        if self.cost == "free" or not out_shapes:
            return 0
        return prod(out_shapes[0][1:])

    # -- criteria ----------------------------------------------------------------------------
    def output_weights(self, layer, weights) -> np.ndarray | None:
        """A ``(output channels, features)`` matrix: row j holds the weights producing output
        channel j; ``None`` for a layer that does not produce channels."""
        return None

    def input_weights(self, layer, weights) -> np.ndarray | None:
        """A ``(input channels, features)`` matrix: row i holds the weights applied to input
        channel i (a consumer's kernel slice, a normalization's scale ``gamma``); ``None`` for a
        layer with no such weights. Biases are left out. Group-level criteria score a channel by
        these as well as by the weights producing it."""
        return None

    # -- saved files -------------------------------------------------------------------------
    def weight_names(self, config) -> tuple | None:
        """The names of the layer's variables in a saved file, in order; ``None`` when unknown."""
        if self.saved_weights is None:
            return None
        return tuple(name for name, flag in self.saved_weights if flag is None or config.get(flag, True))

    def filters(self, config, weights) -> int | None:
        """How many output channels (filters) mask mode can zero in a saved layer with these
        config and named weights; ``None`` for a layer without filters."""
        return None


class PassThroughRule(LayerRule):
    """Channels pass through unchanged.

    Args:
        per_channel_weights: names of weights whose last axis is the channel axis (PReLU's
            ``alpha``, BatchNormalization's ``gamma``...): they are sliced with the channels.
        zero_to: ``{weight: value}`` set for zeroed channels so that they output exactly zero
            (BatchNormalization: ``gamma`` and ``beta`` to 0).
        check: ``fn(layer, input shape)`` raising :class:`Unsupported` when the layer mixes
            channels after all (softmax over the channel axis, normalization of another axis).
        cost: see :attr:`LayerRule.cost`.
        in_activation: see :attr:`LayerRule.in_activation`.
        saved_weights: see :attr:`LayerRule.saved_weights`.

    Example:
        >>> import numpy as np
        >>> rule = PassThroughRule(per_channel_weights=("alpha",))
        >>> config, weights = rule.slice(None, {}, {"alpha": np.arange(4.0)}, None, np.array([1, 0, 1, 1], bool))
        >>> weights["alpha"].tolist()
        [0.0, 2.0, 3.0]
    """

    def __init__(
        self, per_channel_weights=(), zero_to=None, check=None, cost="other", in_activation=False, saved_weights=None
    ):
        if cost not in COST_KINDS:
            raise ValueError(f"cost must be one of {COST_KINDS}, got {cost!r}")
        self.per_channel_weights = tuple(per_channel_weights)
        self.channel_dependent = bool(per_channel_weights)
        self.zero_to = dict(zero_to or {})
        self.check = check
        self.cost = cost
        self.in_activation = bool(in_activation)
        if saved_weights is not None:
            self.saved_weights = tuple(saved_weights)

    def propagate(self, layer, in_layouts, in_shapes, out_shapes, ctx):
        channels_last(layer)
        if self.check is not None:
            self.check(layer, in_shapes[0])
        return super().propagate(layer, in_layouts, in_shapes, out_shapes, ctx)

    def slice(self, layer, config, weights, in_keep, out_keep):
        if out_keep is None:
            return config, weights
        return config, {
            k: (v[..., out_keep] if k in self.per_channel_weights and v.ndim and v.shape[-1] == len(out_keep) else v)
            for k, v in weights.items()
        }

    def zero(self, layer, weights, in_zero, out_zero):
        if out_zero is None:
            return weights
        new = dict(weights)
        for name, value in self.zero_to.items():
            if name in new and new[name].ndim and new[name].shape[-1] == len(out_zero):
                arr = new[name].copy()
                arr[..., out_zero] = value
                new[name] = arr
        return new

    def input_weights(self, layer, weights):
        """A normalization's scale: ``gamma`` as one column (``None`` without one)."""
        gamma = weights.get("gamma") if self.cost == "normalization" else None
        return None if gamma is None else np.asarray(gamma).reshape(-1, 1)

    def other_ops(self, layer, in_shapes, out_shapes):
        if self.cost == "activation" and type(layer).__name__ == "Activation" and not fused_activation(layer):
            return 0  # Activation("linear")
        return super().other_ops(layer, in_shapes, out_shapes)
