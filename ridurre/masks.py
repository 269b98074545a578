"""Compatibility: mask mode lives in :mod:`ridurre.scorefile`; ``from ridurre.masks import ...``
keeps working. Imports neither Keras nor TensorFlow."""

from ridurre._io import atomic_writer, save_npz_atomic  # noqa: F401
from ridurre.scorefile.masks import (  # noqa: F401
    apply_pruned_weights,
    filter_layer_classes,
    has_filters,
    num_filters,
    zero_filters,
)
from ridurre.scorefile.modelfile import LayerInfo, ModelFile, ModelFileError, read_model_file  # noqa: F401

__all__ = [
    "ModelFileError",
    "LayerInfo",
    "ModelFile",
    "read_model_file",
    "num_filters",
    "zero_filters",
    "atomic_writer",
    "save_npz_atomic",
    "apply_pruned_weights",
    "filter_layer_classes",
    "has_filters",
]
