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

The richer contract, opt-in, for layers with several named inputs or with channels that appear
in no tensor (attention heads, head dimensions); every rule written for the simple one keeps
working unchanged:

* ``call_inputs``: the names of the call arguments holding channel tensors (``("query",
  "value", "key")``). ``propagate``, ``macs`` and ``other_ops`` then see one entry per name, in
  that order (``None`` for an argument not given); a tensor passed in any other argument
  (``attention_mask``) carries positions, not channels, and its units are left unprunable.
* **internal units**: in ``propagate``, ``ctx.new_units(n, internal="heads", kind="heads")``
  creates units that live inside the layer only. They form channel groups of their own, whose
  producer is named ``"<layer path>:heads"`` and whose :attr:`ChannelGroup.kind
  <ridurre.graph.ChannelGroup>` is ``kind``; ``ctx.block(layout, reason)`` makes units
  unprunable without giving up on the layer.
* ``slice_units`` / ``zero_units`` get a :class:`UnitMasks`: one mask per input, per output and
  per internal layout, instead of the single input's and output's masks of ``slice``/``zero``
  (which the default ``slice_units``/``zero_units`` call).
* ``unit_weights`` / ``unit_activations``: what criteria score for internal units (the weights
  producing each unit, its activity on data).

This module imports neither Keras nor TensorFlow: rules see layers through their attributes
(``layer.groups``, ``layer.axis``...), which a saved config provides as well (:class:`ConfigView`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Unsupported",
    "LayerRule",
    "PassThroughRule",
    "RescalingRule",
    "ConfigView",
    "UnitMasks",
    "COST_KINDS",
    "UNIT_KINDS",
    "HEAD_KINDS",
    "bias_add_can_misroute",
]

COST_KINDS = ("free", "activation", "normalization", "pooling", "elementwise", "other")
"""How a layer's work that is not multiply-accumulates is counted (``ModelStats.other_ops``)."""


UNIT_KINDS = ("channels", "heads", "query_heads", "head_dims")
"""What the units of a channel group are (``ChannelGroup.kind``): channels of tensors, whole
attention heads (a key/value head of grouped-query attention with its query heads), the query
heads sharing each key/value head, or one dimension of every head. The loop prunes heads by
their own ratio and query heads only when asked (see :class:`ridurre.BasePruning`)."""

HEAD_KINDS = ("heads", "query_heads")
"""The kinds counted in heads rather than channels: never rounded to ``round_to``."""


@dataclass
class UnitMasks:
    """Boolean masks over the positions of every layout of one layer (the rich contract).

    In :meth:`LayerRule.slice_units` a mask says which positions are KEPT; in
    :meth:`LayerRule.zero_units` which are GONE.

    Attributes:
        inputs: one mask per input (in ``call_inputs`` order when the rule names its inputs),
            ``None`` for an argument that was not given.
        outputs: one mask per output.
        internal: ``{name: mask}`` over the layer's internal units (``ctx.new_units(n,
            internal=name)``).

    Example:
        >>> import numpy as np
        >>> keep = UnitMasks([np.array([True, False])], [np.ones(3, bool)], {"heads": np.array([True, True])})
        >>> keep.single_input(kept=True).tolist(), keep.single_output(kept=True), keep.touched(kept=True)
        ([True, False], None, True)
    """

    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    internal: dict = field(default_factory=dict)

    @staticmethod
    def _changed(mask, kept):
        if mask is None:
            return None
        changed = not mask.all() if kept else mask.any()
        return mask if changed else None

    def single_input(self, kept: bool):
        """The mask of the only input, or ``None`` when there are several or it changes nothing."""
        return self._changed(self.inputs[0], kept) if len(self.inputs) == 1 else None

    def single_output(self, kept: bool):
        """The mask of the only output, or ``None`` when there are several or it changes nothing."""
        return self._changed(self.outputs[0], kept) if len(self.outputs) == 1 else None

    def touched(self, kept: bool) -> bool:
        """Whether any position of any layout is removed (``kept``: these are keep-masks)."""
        masks = list(self.inputs) + list(self.outputs) + list(self.internal.values())
        return any(self._changed(m, kept) is not None for m in masks)


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


def bias_add_can_misroute(out_rank: int, first: int | None, axes: dict) -> bool:
    """Whether a bias added by ``keras.ops.add`` could be added on the wrong axis once pruned.

    Keras's TensorFlow backend turns ``ops.add(x, bias)`` into ``tf.nn.bias_add`` when the bias
    has a single axis longer than 1 whose size is that of ``x``'s axis 1 or last axis, and then
    adds it on axis 1 ("NCHW") unless the last axis has that size: a ``(heads, 1)`` bias of an
    attention projection whose output is ``(batch, 3 positions, 3 heads, 1)`` is added over the
    positions instead of the heads. Pruning can give a bias that shape (one head dimension left,
    as many heads as positions), and the pruned model would then differ from the original.

    Args:
        out_rank: the rank of ``x`` (with the batch axis).
        first: the size of ``x``'s axis 1 (``None``: unknown, not checked).
        axes: ``{axis of x: sizes}``: the sizes the bias may have on each of its axes that can be
            the only one longer than 1 once pruned (its other axes can all be pruned to 1).

    Returns:
        False on other backends. On TensorFlow, True when one of ``axes``, neither axis 1 nor
        the last, may have the size ``first`` (at least 2).

    Example:
        >>> import keras
        >>> risky = bias_add_can_misroute(4, 3, {2: range(1, 5)})  # (batch, 3 positions, <= 4 heads, 1)
        >>> risky == (keras.backend.backend() == "tensorflow"), bias_add_can_misroute(4, 5, {2: range(1, 5)})
        (True, False)
    """
    import keras

    if keras.backend.backend() != "tensorflow" or first is None or first < 2:
        return False
    return any(axis not in (1, out_rank - 1) and first in sizes for axis, sizes in axes.items())


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
        exact: removing channels that pass through the layer gives exactly the model in which
            they are zeroed. False for normalizations over the channel axis (LayerNormalization,
            RMS norms): the statistics of the remaining channels change. Groups through such a
            layer are pruned but flagged (``ChannelGroup.exact``), or refused under
            ``RuleSet(exact_only=True)``.
        inexact_reason: why the layer is not exact, for the flag and the refusal.
    """

    produces = False
    channel_dependent = False
    cost = "other"
    in_activation = False
    saved_weights: tuple | None = None
    exact = True
    inexact_reason = "changes the statistics of the channels it keeps"
    call_inputs: tuple | None = None
    """Names of the call arguments holding channel tensors, in the order the rule sees them
    (``None``: every input tensor, as the call flattens them); see the module docstring."""

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

    def slice_units(self, layer, config, weights, keep: UnitMasks):
        """``(config, weights)`` keeping the positions where ``keep``'s masks are True, for every
        input, output and internal layout. The default calls :meth:`slice` with the masks of a
        single input and output (``None`` for several), which is all a simple rule needs."""
        return self.slice(layer, config, weights, keep.single_input(True), keep.single_output(True))

    def zero_units(self, layer, weights, gone: UnitMasks):
        """Weights in which the positions where ``gone``'s masks are True contribute nothing; the
        default calls :meth:`zero` with the masks of a single input and output."""
        return self.zero(layer, weights, gone.single_input(False), gone.single_output(False))

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

    def unit_weights(self, layer, weights, internal: str) -> np.ndarray | None:
        """A ``(units, features)`` matrix for the internal layout ``internal``: row j holds the
        weights that unit j owns (an attention head's query, key, value and output weights);
        ``None`` when there are none."""
        return None

    def unit_activations(self, layer, args, kwargs) -> dict:
        """``{internal name: array (..., units)}``: the activity of each internal unit when the
        layer is called on concrete ``args``/``kwargs`` (numpy arrays where the model passed
        tensors), what the activation criteria score (empty: unknown)."""
        return {}

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


class RescalingRule(PassThroughRule):
    """``Rescaling``: channels pass through; a ``scale`` or ``offset`` given per channel (an array
    whose last axis is the channel axis, as Keras serializes it) is sliced with the channels.

    Example:
        >>> import numpy as np
        >>> offset = {"class_name": "__numpy__", "config": {"value": [1.0, 2.0, 3.0], "dtype": "float32"}}
        >>> new, _ = RescalingRule().slice(None, {"scale": 0.5, "offset": offset}, {}, None, np.array([1, 0, 1], bool))
        >>> new["scale"], new["offset"]["config"]["value"]
        (0.5, [1.0, 3.0])
    """

    def slice(self, layer, config, weights, in_keep, out_keep):
        if out_keep is None:
            return config, weights
        config = dict(config)
        for key in ("scale", "offset"):
            value = config.get(key)
            serialized = isinstance(value, dict) and value.get("class_name") == "__numpy__"  # get_config's form
            if serialized:
                value = np.asarray(value["config"]["value"], dtype=value["config"].get("dtype"))
            if isinstance(value, (np.ndarray, list, tuple)) and np.ndim(value) and np.shape(value)[-1] == len(out_keep):
                kept = np.asarray(value)[..., out_keep]
                if serialized:
                    kept = {**config[key], "config": {**config[key]["config"], "value": kept.tolist()}}
                config[key] = kept
        return config, weights
