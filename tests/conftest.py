import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


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


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def digits():
    from ridurre.datasets import load_digits

    return load_digits()


def compile_classifier(model):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


@pytest.fixture(scope="session")
def trained_resnet(digits):
    """A small residual CNN trained on the bundled digits (about 97 % test accuracy)."""
    import keras
    from ridurre.models import small_resnet

    keras.utils.set_random_seed(0)
    model = small_resnet(filters=24)
    compile_classifier(model)
    model.fit(digits.x_train, digits.y_train, epochs=12, batch_size=32, verbose=0)
    return model
