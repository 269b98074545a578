"""Sparse-training callbacks: the channel structure they penalize, the exact step they take, and
that they work inside a plain ``model.fit`` on every backend."""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import ROOT, randomize_weights

from ridurre.criteria.view import GroupView
from ridurre.graph import trace_model
from ridurre.pruning.sparse import BNScaleSparsity, GroupLassoSparsity, GrowingRegularization


def _model(seed=0):
    x = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(3, 3, padding="same", name="next")(h)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = randomize_weights(keras.Model(x, out), seed=seed)
    model.compile(keras.optimizers.SGD(0.0), "mse")  # no gradient step: only the callback moves weights
    return model


def _fit(model, callback, batches=1):
    x = np.random.default_rng(0).normal(size=(4 * batches, 6, 6, 2)).astype("float32")
    model.fit(x, np.zeros((len(x), 2), "float32"), batch_size=4, epochs=1, verbose=0, callbacks=[callback])


def _channel_norms(model):
    """The L2 norm of each of conv's channels over its whole group, from the view."""
    trace = trace_model(model)
    group = next(g for g in trace.groups() if "conv" in g.producers)
    members = GroupView(group, trace, model).members()
    return np.sqrt(sum((m.matrix**2).sum(axis=1) for m in members))


def test_group_lasso_takes_one_exact_decoupled_step_over_the_coupled_group():
    model = _model()
    norms = _channel_norms(model)
    before = {l.name: [w.copy() for w in l.get_weights()] for l in model.layers if l.weights}
    callback = GroupLassoSparsity(0.5, learning_rate=0.1, layers=["conv"])
    _fit(model, callback)
    assert callback.segments == 4  # only conv's group is penalized
    factor = 1 - 0.1 * 0.5 / norms
    np.testing.assert_allclose(model.get_layer("conv").get_weights()[0], before["conv"][0] * factor, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("conv").get_weights()[1], before["conv"][1])  # biases aside
    np.testing.assert_allclose(model.get_layer("bn").get_weights()[0], before["bn"][0] * factor, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("bn").get_weights()[1], before["bn"][1])
    expected_next = before["next"][0] * factor[None, None, :, None]
    np.testing.assert_allclose(model.get_layer("next").get_weights()[0], expected_next, rtol=1e-5)
    np.testing.assert_allclose(model.get_layer("head").get_weights()[0], before["head"][0])


def test_alpha_pulls_the_weakest_channel_hardest():
    model = _model(seed=1)
    norms = _channel_norms(model)
    callback = GroupLassoSparsity(0.1, alpha=4.0, learning_rate=0.1, layers=["conv"])
    _fit(model, callback)
    shrink = 1 - _channel_norms(model) / norms
    weak, strong = np.argmin(norms), np.argmax(norms)
    np.testing.assert_allclose(shrink[strong], 0.01 / norms[strong], rtol=1e-4)
    np.testing.assert_allclose(shrink[weak], 0.01 * 4 / norms[weak], rtol=1e-4)


def test_bn_scale_sparsity_soft_thresholds_gamma_only():
    model = _model()
    gamma = model.get_layer("bn").get_weights()[0]
    kernel = model.get_layer("conv").get_weights()[0]
    _fit(model, BNScaleSparsity(0.5, learning_rate=0.4), batches=2)
    expected = np.sign(gamma) * np.maximum(np.abs(gamma) - 0.4, 0)
    np.testing.assert_allclose(model.get_layer("bn").get_weights()[0], expected, atol=1e-6)
    np.testing.assert_allclose(model.get_layer("conv").get_weights()[0], kernel)


def test_growing_regularization_grows_faster_for_weak_channels():
    model = _model(seed=2)
    norms = _channel_norms(model)
    callback = GrowingRegularization(strength=0.0, delta=0.01, update_every=1, learning_rate=0.01, layers=["conv"])
    _fit(model, callback, batches=5)
    strength = callback.channel_strength
    assert strength[np.argmin(norms)] == pytest.approx(0.05) and strength[np.argmax(norms)] == 0.0
    assert (_channel_norms(model) <= norms + 1e-7).all()


def test_sparsity_options_are_checked():
    with pytest.raises(ValueError, match="strength"):
        GroupLassoSparsity(-1)
    with pytest.raises(ValueError, match="alpha"):
        GroupLassoSparsity(0.1, alpha=0.5)
    with pytest.raises(ValueError, match="every"):
        BNScaleSparsity(0.1, every=0)


_BACKEND_SCRIPT = """
import numpy as np, keras
from ridurre.pruning.sparse import BNScaleSparsity, GroupLassoSparsity
x = keras.Input((6, 6, 2))
h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
h = keras.layers.BatchNormalization(name="bn")(h)
out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h)))
model = keras.Model(x, out)
model.compile(keras.optimizers.SGD(0.01), "mse")
data = np.random.default_rng(0).normal(size=(32, 6, 6, 2)).astype("float32")
kernel = model.get_layer("conv").get_weights()[0]
model.fit(data, np.zeros((32, 2), "float32"), batch_size=8, epochs=2, verbose=0,
          callbacks=[BNScaleSparsity(100.0), GroupLassoSparsity(5.0)])
assert np.abs(model.get_layer("bn").get_weights()[0]).max() == 0.0, model.get_layer("bn").get_weights()[0]
assert np.linalg.norm(model.get_layer("conv").get_weights()[0]) < 0.9 * np.linalg.norm(kernel)
print("OK")
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_callbacks_work_in_a_fit_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-c", _BACKEND_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
