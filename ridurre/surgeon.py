"""Compatibility: the channel surgeon lives in :mod:`ridurre.surgery`; ``from ridurre.surgeon
import delete_channels`` keeps working."""

from ridurre.surgery import (  # noqa: F401
    Surgeon,
    delete_channels,
    delete_layer,
    insert_layer,
    plan_layers,
    replace_layer,
    zero_channels,
)

__all__ = ["Surgeon", "delete_channels", "zero_channels", "delete_layer", "insert_layer", "replace_layer"]
