"""Reshape layers with unknown sequence sizes: a reshape that keeps the size of the last axis
keeps every channel where it was (pruned == zeroed), one that changes it is refused."""

import keras
import numpy as np
from helpers import randomize_weights

from ridurre.graph import channel_groups
from ridurre.surgery import delete_channels, zero_channels


def _model(*targets):
    x = keras.Input((None, 2, 8))
    h = keras.layers.Dense(4, name="heads")(x)
    for target in targets:
        h = keras.layers.Reshape(target)(h)
    y = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    return randomize_weights(keras.Model(x, y), 5)


def test_a_reshape_keeping_the_last_size_is_followed_with_an_unknown_sequence():
    model = _model((-1, 1, 2, 4), (-1, 2, 4))
    heads = next(g for g in channel_groups(model) if "heads" in g.producers)
    assert heads.prunable and heads.size == 4
    pruned = delete_channels(model, "heads", [0, 2])
    assert [tuple(lay.target_shape) for lay in pruned.layers if isinstance(lay, keras.layers.Reshape)] == [
        (-1, 1, 2, 2),
        (-1, 2, 2),
    ]
    xs = np.random.default_rng(0).normal(size=(2, 5, 2, 8)).astype("float32")
    want = np.asarray(zero_channels(model, "heads", [0, 2])(xs))
    np.testing.assert_allclose(np.asarray(pruned(xs)), want, rtol=1e-5, atol=1e-5)


def test_a_reshape_of_the_last_axis_with_an_unknown_sequence_is_refused():
    model = _model((-1, 1, 8))
    heads = next(g for g in channel_groups(model) if "heads" in g.producers)
    assert not heads.prunable and "dimensions are unknown" in heads.reason
