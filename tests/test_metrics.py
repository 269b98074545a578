"""Tests of ridurre.metrics: parameters, MACs, size on disk and latency."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers

from ridurre.metrics import (
    LatencyResult,
    LayerStats,
    ModelStats,
    compare,
    count_params,
    layer_stats,
    measure_latency,
    model_size_bytes,
    model_stats,
)
from ridurre.zoo.models import resnet_cifar, small_cnn, vgg16_cifar10


def _rel(value, reference):
    return abs(value - reference) / reference


def _single(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


# --------------------------------------------------------------------------
# Reference networks
# --------------------------------------------------------------------------


def test_vgg16_cifar10_matches_li_et_al():
    stats = model_stats(vgg16_cifar10())
    assert _rel(stats.total_params, 1.50e7) < 0.01
    assert _rel(stats.total_macs, 3.13e8) < 0.01
    assert len([r for r in stats.layers if r.class_name == "Conv2D"]) == 13


def test_resnet56_matches_he_et_al():
    model = resnet_cifar(depth=56)
    stats = model_stats(model)
    assert _rel(stats.total_params, 0.86e6) < 0.02
    assert _rel(stats.total_macs, 125e6) < 0.03
    assert stats.total_params == model.count_params()


def test_keras_resnet50():
    model = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    stats = model_stats(model)
    assert _rel(stats.total_params, 25.6e6) < 0.005
    # keras.applications.ResNet50 is ResNet v1 (stride in the first 1x1
    # convolution of a stage): 3.86e9 MACs, the "3.8e9 FLOPs" of He et al.
    # 2016, Table 1. The often-quoted 4.1e9 is torchvision's v1.5.
    assert _rel(stats.total_macs, 3.86e9) < 0.01
    assert _rel(stats.total_macs, 4.1e9) < 0.065
    assert stats.uncounted == []


def test_keras_mobilenetv2():
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    stats = model_stats(model)
    assert _rel(stats.total_macs, 300e6) < 0.10
    assert _rel(stats.total_params, 3.54e6) < 0.01
    assert stats.other_ops["normalization"] > 0


# --------------------------------------------------------------------------
# Layer rules, checked against hand-computed formulas
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, input_shape, expected",
    [
        # 8x8 output, 16 filters, 3x3 kernel, 4 input channels
        (layers.Conv2D(16, 3, padding="same"), (8, 8, 4), 8 * 8 * 16 * 9 * 4),
        # valid padding, stride 2: 3x3 output
        (layers.Conv2D(5, 3, strides=2), (8, 8, 2), 3 * 3 * 5 * 9 * 2),
        # grouped convolution divides by the groups
        (layers.Conv2D(8, 3, padding="same", groups=4), (6, 6, 8), 6 * 6 * 8 * 9 * 8 // 4),
        (layers.Conv2D(4, 3, padding="same", data_format="channels_first"), (3, 8, 8), 8 * 8 * 4 * 9 * 3),
        (layers.Conv1D(6, 5, padding="same"), (20, 3), 20 * 6 * 5 * 3),
        (layers.Conv3D(2, 3, padding="same"), (4, 4, 4, 3), 64 * 2 * 27 * 3),
        # transposed: every input position through the kernel
        (layers.Conv2DTranspose(3, 2, strides=2), (5, 5, 4), 5 * 5 * 4 * 4 * 3),
        (layers.Conv1DTranspose(3, 4, strides=2), (7, 2), 7 * 2 * 4 * 3),
        (layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2), (8, 8, 4), 8 * 8 * 8 * 9),
        (layers.DepthwiseConv1D(3), (10, 4), 8 * 4 * 3),
        (layers.SeparableConv2D(16, 3, padding="same"), (8, 8, 4), 8 * 8 * 4 * 9 + 8 * 8 * 4 * 16),
        (layers.SeparableConv1D(7, 3, depth_multiplier=2), (12, 3), 10 * 6 * 3 + 10 * 6 * 7),
        (layers.Dense(10), (32,), 32 * 10),
        # Dense on a rank-3 tensor counts every position
        (layers.Dense(10), (5, 32), 5 * 32 * 10),
    ],
)
def test_mac_rules(layer, input_shape, expected):
    model = _single(layer, input_shape)
    stats = model_stats(model)
    assert stats.total_macs == expected
    assert stats.total_params == model.count_params()
    assert stats.layers[0].macs == expected


def test_other_ops_are_separate_from_macs():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    y = layers.BatchNormalization()(x)
    z = layers.Add()([x, y])
    z = layers.MaxPooling2D(2)(z)
    z = layers.Flatten()(z)
    z = layers.Dropout(0.5)(z)
    model = keras.Model(inputs, z)
    stats = model_stats(model)
    assert stats.total_macs == 8 * 8 * 4 * 27
    assert stats.other_ops == {
        "activation": 256,  # the fused relu
        "normalization": 256,
        "elementwise": 256,  # one add per element
        "pooling": 64 * 4,  # 4x4x4 outputs, 2x2 window
    }
    by_name = {row.class_name: row for row in stats.layers}
    assert by_name["Flatten"].other_ops == 0 and by_name["Flatten"].macs == 0


def test_layer_stats_rows():
    rows = layer_stats(small_cnn())
    assert all(isinstance(row, LayerStats) for row in rows)
    names = [row.name for row in rows]
    assert names[:3] == ["conv1", "bn1", "relu1"]
    conv1 = rows[0]
    assert conv1.output_shape == (None, 8, 8, 16)
    assert conv1.channels == 16
    assert conv1.params == 9 * 16 + 16
    assert conv1.macs == 64 * 16 * 9
    flatten = rows[names.index("flatten")]
    assert flatten.channels == 2 * 2 * 32


# --------------------------------------------------------------------------
# Graph structure: nesting and sharing
# --------------------------------------------------------------------------


def _inner(shape=(8, 8, 4), name="inner"):
    inputs = keras.Input(shape)
    x = layers.Conv2D(6, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    return keras.Model(inputs, x, name=name)


def test_nested_model_is_recursed_with_prefixed_names():
    inner = _inner()
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 1, name="pre")(inputs)
    x = inner(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    stats = model_stats(model)
    names = [row.name for row in stats.layers]
    assert names == ["pre", "inner/conv", "inner/bn", "gap", "head"]
    expected = 64 * 4 * 3 + 64 * 6 * 9 * 4 + 6 * 2
    assert stats.total_macs == expected
    assert stats.total_params == model.count_params()
    assert sum(row.params for row in stats.layers) == model.count_params()


def test_nested_sequential_called_twice_counts_macs_per_call():
    inner = keras.Sequential([keras.Input((8, 8, 4)), layers.Conv2D(4, 3, padding="same", name="conv")], name="seq")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, inner(inner(inputs)))
    stats = model_stats(model)
    (row,) = stats.layers
    assert row.name == "seq/conv"
    assert row.calls == 2
    assert row.macs == 2 * 64 * 4 * 9 * 4
    assert row.params == 4 * 9 * 4 + 4 == stats.total_params


def test_nested_model_with_undefined_shape_is_retraced():
    inner = _inner(shape=(None, None, 4))
    inputs = keras.Input((16, 16, 4))
    model = keras.Model(inputs, inner(inputs))
    stats = model_stats(model)
    assert stats.total_macs == 256 * 6 * 9 * 4
    assert stats.layers[0].output_shape[1:] == (16, 16, 6)


def test_shared_layer_counts_macs_per_call_and_params_once():
    shared = layers.Conv2D(4, 3, padding="same", name="shared")
    inputs = keras.Input((8, 8, 4))
    model = keras.Model(inputs, shared(shared(inputs)))
    (row,) = model_stats(model).layers
    assert row.calls == 2
    assert row.macs == 2 * 64 * 4 * 9 * 4
    assert row.params == 148 == count_params(model)


def test_calls_from_other_models_are_ignored():
    shared = layers.Dense(4, name="shared")
    a_in, b_in = keras.Input((4,)), keras.Input((4,))
    model_a = keras.Model(a_in, shared(a_in))
    model_b = keras.Model(b_in, shared(shared(layers.Dense(4)(b_in))))
    assert model_stats(model_a).total_macs == 16
    assert model_stats(model_b).total_macs == 16 * 3
    assert model_stats(model_a).layers[0].calls == 1


def test_undefined_shapes_need_input_shape():
    inputs = keras.Input((None, None, 3))
    x = layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    with pytest.raises(ValueError, match="input_shape"):
        model_stats(model)
    stats = model_stats(model, input_shape=(10, 10, 3))
    assert stats.total_macs == 100 * 4 * 27
    assert stats.total_params == model.count_params()
    with pytest.raises(ValueError, match="input_shape"):
        model_stats(model, input_shape=(10, -1, 3))


def test_sequential_model():
    model = keras.Sequential([keras.Input((6,)), layers.Dense(5), layers.Dense(2)])
    stats = model_stats(model)
    assert stats.total_macs == 30 + 10
    assert stats.total_params == 35 + 12


def test_uncounted_layers_are_reported():
    inputs = keras.Input((5, 3))
    x = layers.RNN(layers.LSTMCell(4), name="rnn")(inputs)  # the generic RNN wrapper has no rule
    model = keras.Model(inputs, layers.Dense(2)(x))
    stats = model_stats(model)
    assert stats.uncounted == ["rnn"]
    assert stats.total_macs == 8
    assert stats.total_params == model.count_params()
    lstm = keras.Model(inputs, layers.Dense(2)(layers.LSTM(4, name="lstm")(inputs)))
    stats = model_stats(lstm)
    assert stats.uncounted == [] and stats.total_macs == 5 * 4 * 4 * (3 + 4) + 8  # steps * gates * units * (in + units)


# --------------------------------------------------------------------------
# Results, comparison and errors
# --------------------------------------------------------------------------


def test_to_dict_is_json_serialisable():
    stats = model_stats(small_cnn())
    assert isinstance(stats, ModelStats)
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["total_params"] == stats.total_params
    assert data["total_macs"] == stats.total_macs
    assert data["layers"][0]["name"] == "conv1"
    assert data["layers"][0]["output_shape"] == [None, 8, 8, 16]
    assert "conv1" in stats.summary()


def test_compare():
    before = model_stats(vgg16_cifar10(width_multiplier=0.5))
    after = model_stats(vgg16_cifar10(width_multiplier=0.25))
    report = compare(before, after)
    assert report["params_before"] == before.total_params
    assert report["macs_after"] == after.total_macs
    assert report["macs_ratio"] == pytest.approx(after.total_macs / before.total_macs)
    assert 0.2 < report["macs_ratio"] < 0.3  # half the width: ~1/4 MACs
    assert report["macs_reduction"] == pytest.approx(1 - report["macs_ratio"])
    assert report["params_compression"] == pytest.approx(before.total_params / after.total_params)
    with pytest.raises(TypeError, match="ModelStats"):
        compare(before, 3)


def test_rejects_non_models():
    with pytest.raises(TypeError, match="keras.Model"):
        model_stats("vgg16")
    with pytest.raises(TypeError, match="keras.Model"):
        count_params(layers.Dense(3))
    unbuilt = keras.Sequential([layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        model_stats(unbuilt)


def test_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    net = Net()
    net(np.zeros((1, 4), "float32"))
    assert count_params(net) == 15
    with pytest.raises(ValueError, match="Functional or Sequential"):
        model_stats(net)


# --------------------------------------------------------------------------
# Size on disk and latency
# --------------------------------------------------------------------------


def test_model_size_bytes_grows_with_weights():
    small = model_size_bytes(small_cnn(filters=(4,), dense_units=8))
    large = model_size_bytes(small_cnn(filters=(64, 64), dense_units=256))
    assert small > 0
    # float32 weights dominate the file of the larger model
    assert large - small > 4 * (64 * 9 * 64 + 4 * 64 * 256) * 0.9


def test_measure_latency_returns_sane_values():
    model = small_cnn()
    result = measure_latency(model, batch_size=4, warmup=1, repeats=5)
    assert isinstance(result, LatencyResult)
    assert result.median_ms > 0
    assert result.p90_ms >= result.median_ms
    assert (result.batch_size, result.repeats) == (4, 5)
    assert result.images_per_second == pytest.approx(4 * 1000 / result.median_ms)


def test_measure_latency_input_shape_and_validation():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="input_shape"):
        measure_latency(model)
    assert measure_latency(model, input_shape=(8, 8, 3), warmup=0, repeats=1).median_ms > 0
    for kwargs, name in [
        ({"batch_size": 0}, "batch_size"),
        ({"repeats": -1}, "repeats"),
        ({"warmup": "3"}, "warmup"),
        ({"batch_size": True}, "batch_size"),
        ({"input_shape": (8, 0, 3)}, "input_shape"),
    ]:
        with pytest.raises(ValueError, match=name):
            measure_latency(model, **{"input_shape": (8, 8, 3), **kwargs})


# --------------------------------------------------------------------------
# Backend independence
# --------------------------------------------------------------------------


@pytest.mark.jax
def test_metrics_run_on_jax_without_tensorflow():
    pytest.importorskip("jax")
    code = textwrap.dedent("""
        import sys
        from ridurre.metrics import model_stats, measure_latency
        import keras
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        stats = model_stats(model)
        measure_latency(model, warmup=0, repeats=1)
        print(stats.total_params, stats.total_macs,
              "tensorflow" in sys.modules)
    """)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    params, macs, tf_loaded = result.stdout.split()[-3:]
    assert int(params) == 40 + 16 + 10
    assert int(macs) == 64 * 4 * 9 + 8
    assert tf_loaded == "False"


def test_measure_latency_feeds_token_ids_to_an_integer_input():
    tokens = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(2, 4)(tokens)  # two ids: a random float cast to an id is out of range
    model = keras.Model(tokens, keras.layers.GlobalAveragePooling1D()(hidden))
    assert measure_latency(model, batch_size=64, warmup=0, repeats=2).median_ms > 0
    assert measure_latency(model, batch_size=64, warmup=0, repeats=2, compiled=True).median_ms > 0


def test_macs_of_a_nested_model_with_dict_inputs_of_unknown_length():
    """A text backbone (dict of token ids, any length) inside a model of fixed length: the
    nested model is retraced at the call's shapes with its own input structure and dtypes."""
    import keras

    from ridurre.metrics import model_stats

    tokens = {"ids": keras.Input((None,), dtype="int32", name="ids"), "mask": keras.Input((None,), name="mask")}
    h = keras.layers.Embedding(10, 4)(tokens["ids"]) * keras.ops.expand_dims(tokens["mask"], -1)
    backbone = keras.Model(tokens, keras.layers.Dense(6, name="dense")(h), name="backbone")
    outer = {"ids": keras.Input((5,), dtype="int32", name="ids"), "mask": keras.Input((5,), name="mask")}
    model = keras.Model(outer, backbone(outer))
    assert model_stats(model).total_macs == 5 * 4 * 6
