"""The channel surgeon: kerassurgeon's operations for Keras 3 (see :mod:`ridurre.surgery.surgeon`),
planned once per surgery and rebuilt in one ``clone_model`` (:mod:`ridurre.surgery.rebuild`)."""

from ridurre.surgery.branches import ResidualBranch, prune_branches, remove_branches, residual_branches
from ridurre.surgery.rebuild import plan_layers, rebuild
from ridurre.surgery.surgeon import (
    Surgeon,
    delete_channels,
    delete_layer,
    insert_layer,
    replace_layer,
    zero_channels,
)

__all__ = [
    "ResidualBranch",
    "Surgeon",
    "delete_channels",
    "delete_layer",
    "insert_layer",
    "plan_layers",
    "prune_branches",
    "rebuild",
    "remove_branches",
    "replace_layer",
    "residual_branches",
    "zero_channels",
]
