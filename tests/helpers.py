"""Helpers shared by the tests (import them with ``from helpers import ...``)."""

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""The repository's root directory."""


def randomize_weights(model, seed=0):
    """Give every weight random values (variances positive) so that slicing them matters."""
    rng = np.random.default_rng(seed)
    for layer in _leaf_layers(model):
        if not layer.weights:
            continue
        values = []
        for var, value in zip(layer.weights, layer.get_weights()):
            if "variance" in var.name:
                values.append(rng.uniform(0.5, 2.0, size=value.shape).astype(value.dtype))
            elif "count" in var.name:
                values.append(value)
            else:
                scale = 1.0 / np.sqrt(max(1, np.prod(value.shape[:-1]))) if value.ndim > 1 else 0.5
                values.append((rng.normal(size=value.shape) * scale).astype(value.dtype))
        layer.set_weights(values)
    return model


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


def compile_classifier(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
