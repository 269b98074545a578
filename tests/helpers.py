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


def random_inputs(model, rng, n=3):
    """Random inputs for every model input: normal floats, or token ids below the vocabulary of
    the first Embedding for integer inputs."""
    import keras

    vocabulary = min((l.input_dim for l in _leaf_layers(model) if isinstance(l, keras.layers.Embedding)), default=10)
    out = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        if "int" in str(t.dtype):
            out.append(rng.integers(0, vocabulary, size=shape).astype("int32"))
        else:
            out.append(rng.normal(size=shape).astype("float32"))
    return out


def predict(model, xs):
    """The model's output on ``xs`` (a list, one array per input) as a numpy array (any backend)."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(model(xs if len(xs) > 1 else xs[0], training=False)))


def assert_close(pruned, reference):
    """Equal up to float32 rounding, relative to the largest value."""
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(pruned, reference, rtol=1e-4, atol=1e-4 * scale)


def random_jobs(model, rng, fraction=None, rules=None):
    """Random channels of random prunable groups, addressed through one of their producers:
    ``[(producer name, output positions)]``."""
    import ridurre

    jobs = []
    for group in ridurre.channel_groups(model, rules=rules):
        if not group.prunable or group.size < 2 or (fraction is None and rng.random() < 0.4):
            continue
        n = max(1, int(group.size * fraction)) if fraction else int(rng.integers(1, group.size))
        chosen = rng.choice(group.size, size=n, replace=False)
        producer = group.producers[int(rng.integers(len(group.producers)))]
        positions = [p for c in chosen for p in group.channels_of(producer)[c][:1]]
        jobs.append((producer, positions))
    return jobs


def apply_jobs(model, jobs, zero=False, rules=None, delete_inexact=False):
    """One Surgeon for all ``jobs``: the pruned model, or with ``zero`` the zeroed reference."""
    from ridurre.surgery import Surgeon

    surgeon = Surgeon(model, rules)
    for layer, channels in jobs:
        surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon.operate(zero=True, delete_inexact=delete_inexact) if zero else surgeon.operate()
