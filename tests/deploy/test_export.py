"""ridurre.deploy.export: each format verified in its runtime, int8 checked by accuracy, prune then
quantize, and bad input refused with nothing written."""

import os

import keras
import numpy as np
import pytest
from helpers import compile_classifier, randomize_weights

from ridurre._io import leftover_temporaries
from ridurre.deploy import ExportError, export, load_runtime, missing_packages
from ridurre.deploy import exporter as _exporter
from ridurre.surgery import delete_channels
from ridurre.zoo.datasets import load_digits
from ridurre.zoo.models import small_cnn

pytestmark = pytest.mark.skipif(
    any(missing_packages(f) for f in ("litert", "onnx")), reason="needs ridurre[deploy] (onnx, tf2onnx, LiteRT)"
)

PATHS = {"litert": "m.tflite", "onnx": "m.onnx", "saved_model": "m_saved"}


def _residual_model():
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    y = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="branch")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomize_weights(keras.Model(inputs, keras.layers.Dense(5, name="head")(x)), seed=3)


@pytest.mark.parametrize("fmt", ["litert", "onnx", "saved_model"])
def test_float_export_matches_the_keras_model_in_its_runtime(tmp_path, fmt):
    model = _residual_model()
    weights = [w.copy() for w in model.get_weights()]
    result = export(model, tmp_path / PATHS[fmt], format=fmt)
    assert result.format == fmt and not result.int8 and result.size_bytes > 0
    check = result.verification
    assert check["kind"] == "outputs" and check["max_abs_error"] <= check["atol"] and check["examples"] == 8
    # the artefact on disk, reloaded independently, reproduces the model on other inputs
    x = np.random.default_rng(7).normal(size=(5, 12, 12, 3)).astype("float32")
    got = load_runtime(str(tmp_path / PATHS[fmt]), threads=None if fmt == "saved_model" else 1)([x])[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-4, rtol=1e-3)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))  # never modified
    assert leftover_temporaries(tmp_path) == []


@pytest.fixture(scope="module")
def digits_pruned():
    """A small CNN trained on digits, 40 % of its conv channels deleted, finetuned briefly."""
    keras.utils.set_random_seed(0)
    data = load_digits(seed=0)
    model = small_cnn(filters=(16, 32), dense_units=32)
    compile_classifier(model)
    model.fit(data.x_train, data.y_train, epochs=8, batch_size=32, verbose=0)
    pruned = delete_channels(model, "conv2", list(range(13)))
    compile_classifier(pruned)
    pruned.fit(data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0)
    return model, pruned, data


@pytest.mark.slow
@pytest.mark.parametrize("fmt, drop", [("litert", 0.01), ("onnx", 0.02)])
def test_prune_then_int8_keeps_accuracy(tmp_path, digits_pruned, fmt, drop):
    # measured: LiteRT full-integer loses 0 to 1 test images of 359; ONNX Runtime's QDQ loses 4
    # (1.11 points) whatever the calibration method (MinMax, Entropy, Percentile) or size
    _, pruned, data = digits_pruned
    path = tmp_path / ("p8.tflite" if fmt == "litert" else "p8.onnx")
    result = export(
        pruned,
        path,
        fmt,
        int8=True,
        calibration_data=data.x_train,
        validation_data=(data.x_test, data.y_test),
        max_accuracy_drop=drop,
    )
    check = result.verification
    assert check["kind"] == "accuracy" and check["examples"] == len(data.x_test)
    assert check["keras_accuracy"] > 0.85 and check["keras_accuracy"] - check["exported_accuracy"] <= drop
    float_size = export(pruned, tmp_path / ("f" + path.suffix), fmt, verify=False).size_bytes
    # LiteRT stores int8 weights; ONNX Runtime's QDQ graph of this small model keeps some float parts
    assert result.size_bytes < (0.6 if fmt == "litert" else 1.0) * float_size


def test_keras_int8_quantization_works_on_a_pruned_model(digits_pruned, tmp_path):
    model, pruned, data = digits_pruned
    quantized = keras.models.clone_model(pruned)
    quantized.set_weights(pruned.get_weights())
    quantized.quantize("int8")
    acc = np.mean(quantized.predict(data.x_test, verbose=0).argmax(1) == data.y_test)
    ref = np.mean(pruned.predict(data.x_test, verbose=0).argmax(1) == data.y_test)
    assert ref - acc <= 0.01
    result = export(pruned, tmp_path / "sm8", "saved_model", int8=True, calibration_data=(data.x_val, data.y_val))
    assert result.verification["kind"] == "accuracy" and os.path.isdir(result.path)


def test_a_mismatching_export_raises_and_writes_nothing(tmp_path, monkeypatch):
    model = _residual_model()
    real = _exporter.load_runtime

    def off_by_one(path, fmt, threads=None):
        run = real(path, fmt, threads=threads)
        return lambda xs: [o + 1.0 for o in run(xs)]

    monkeypatch.setattr(_exporter, "load_runtime", off_by_one)
    with pytest.raises(ExportError, match="differ from the Keras model's by up to"):
        export(model, tmp_path / "m.onnx", "onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"path": "m.onnx", "format": "litert"}, ValueError, "must end with '.tflite'"),
        ({"path": "m.tflite", "format": "coreml"}, ValueError, "`format` must be one of litert, onnx, saved_model"),
        ({"path": "m.tflite", "int8": True}, ValueError, "needs `calibration_data`"),
        (
            {"path": "m.tflite", "int8": True, "calibration_data": np.zeros((4, 8, 8, 3))},
            ValueError,
            r"shape \(n, 12, 12, 3\)",
        ),
        ({"path": "m.tflite", "calibration_data": {"images": np.zeros(3)}}, ValueError, "must have an array `x`"),
        ({"path": "m.tflite", "int8": "yes"}, TypeError, "`int8` must be True or False"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(tmp_path, kwargs, error, message):
    kwargs = {**kwargs, "path": tmp_path / kwargs["path"]}
    with pytest.raises(error, match=message):
        export(_residual_model(), **kwargs)
    assert os.listdir(tmp_path) == []


def test_not_a_model_is_refused(tmp_path):
    with pytest.raises(TypeError, match="`model` must be a built keras.Model"):
        export("model.keras", tmp_path / "m.tflite")
