"""Trace a Keras model into channel groups: which channels must be pruned together, and why a
group cannot be pruned (see :mod:`ridurre.graph.trace`)."""

from ridurre.graph.composite import is_composite, opaque_reason
from ridurre.graph.inline import Inlining, Refusal, inline, inline_composites
from ridurre.graph.trace import (
    ChannelGroup,
    LayerUse,
    Trace,
    all_layers,
    channel_groups,
    check_model,
    resolve_layer,
    trace_model,
)
from ridurre.graph.weights import layer_weights, set_layer_weights, weight_names

__all__ = [
    "ChannelGroup",
    "LayerUse",
    "Trace",
    "all_layers",
    "channel_groups",
    "check_model",
    "resolve_layer",
    "Inlining",
    "Refusal",
    "inline",
    "inline_composites",
    "is_composite",
    "opaque_reason",
    "trace_model",
    "layer_weights",
    "set_layer_weights",
    "weight_names",
]
