import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import compile_classifier  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def digits():
    from ridurre.zoo.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def trained_resnet(digits):
    """A small residual CNN trained on the bundled digits (about 97 % test accuracy)."""
    import keras

    from ridurre.zoo.models import small_resnet

    keras.utils.set_random_seed(0)
    model = small_resnet(filters=24)
    compile_classifier(model)
    model.fit(digits.x_train, digits.y_train, epochs=12, batch_size=32, verbose=0)
    return model
