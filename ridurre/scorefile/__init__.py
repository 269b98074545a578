"""Score-file pruning and mask mode, without TensorFlow or Keras.

* :mod:`ridurre.scorefile.modelfile`: read a saved ``.keras``/``.h5`` model with zipfile, h5py
  and numpy only (:func:`read_model_file`);
* :mod:`ridurre.scorefile.masks`: zero filters the way their layer rules say
  (:func:`zero_filters`), and load the zeroed weights back into a Keras model
  (:func:`apply_pruned_weights`, the one function here that needs Keras);
* :mod:`ridurre.scorefile.scores`: read and validate a score CSV, choose the filters, and
  prune a model file (:func:`prune_by_scores`).
"""

from ridurre.scorefile.masks import apply_pruned_weights, filter_layer_classes, has_filters, num_filters, zero_filters
from ridurre.scorefile.modelfile import LayerInfo, ModelFile, ModelFileError, read_model_file
from ridurre.scorefile.scores import (
    FilterScore,
    PruneResult,
    ScoreFileError,
    Selection,
    plot_pruning,
    prune_by_scores,
    read_layer_mapping,
    read_scores,
    select_filters,
)

__all__ = [
    "FilterScore",
    "LayerInfo",
    "ModelFile",
    "ModelFileError",
    "PruneResult",
    "ScoreFileError",
    "Selection",
    "apply_pruned_weights",
    "filter_layer_classes",
    "has_filters",
    "num_filters",
    "plot_pruning",
    "prune_by_scores",
    "read_layer_mapping",
    "read_model_file",
    "read_scores",
    "select_filters",
    "zero_filters",
]
