"""Tests of ridurre.models: architecture, counts, validation, training."""

import keras
import numpy as np
import pytest

from ridurre.metrics import model_stats
from ridurre.zoo.models import eegnet, resnet_cifar, small_cnn, small_resnet, vgg16_cifar10


def _class_names(model):
    return [type(layer).__name__ for layer in model.layers]


def _train_one_step(model, x, y):
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    after = model.get_weights()
    assert np.isfinite(loss)
    changed = sum(not np.allclose(b, a) for b, a in zip(before, after))
    assert changed > len(after) // 3
    return loss


# --------------------------------------------------------------------------
# VGG16-CIFAR10
# --------------------------------------------------------------------------


def test_vgg16_architecture():
    model = vgg16_cifar10()
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, 10)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert all(c.kernel_size == (3, 3) and c.padding == "same" for c in convs)
    assert convs[0].name == "block1_conv1" and convs[-1].name == "block5_conv3"
    names = [l.name for l in model.layers]
    for b, n in [(1, 2), (2, 2), (3, 3), (4, 3), (5, 3)]:
        for i in range(1, n + 1):
            conv = names.index(f"block{b}_conv{i}")
            assert names[conv + 1] == f"block{b}_bn{i}"
            assert names[conv + 2] == f"block{b}_relu{i}"
        assert f"block{b}_pool" in names
    assert names[-6:] == ["flatten", "fc1", "fc1_bn", "fc1_relu", "fc1_dropout", "predictions"]
    assert model.get_layer("fc1").units == 512
    assert model.get_layer("predictions").activation.__name__ == "softmax"
    stats = model_stats(model)
    assert stats.total_params == 15_001_418
    assert abs(stats.total_macs - 3.13e8) / 3.13e8 < 0.01


def test_vgg16_options():
    model = vgg16_cifar10(num_classes=100, width_multiplier=0.5, dropout=0.0, weight_decay=1e-4)
    assert model.output_shape == (None, 100)
    assert model.get_layer("block1_conv1").filters == 32
    assert model.get_layer("block5_conv3").filters == 256
    assert model.get_layer("fc1").units == 256
    assert "fc1_dropout" not in [l.name for l in model.layers]
    assert len(model.losses) == 13 + 2  # L2 on every kernel
    tiny = vgg16_cifar10(width_multiplier=0.001)
    assert tiny.get_layer("block1_conv1").filters == 1
    # Deterministic names: two builds give the same layer names.
    assert [l.name for l in tiny.layers] == [l.name for l in vgg16_cifar10(width_multiplier=0.01).layers]


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"input_shape": (16, 16, 3)}, "input_shape"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"num_classes": 0}, "num_classes"),
        ({"width_multiplier": 0}, "width_multiplier"),
        ({"dropout": 1.0}, "dropout"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_vgg16_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        vgg16_cifar10(**kwargs)


def test_vgg16_trains_one_step():
    model = vgg16_cifar10(width_multiplier=0.0625)
    rng = np.random.default_rng(0)
    _train_one_step(model, rng.normal(size=(4, 32, 32, 3)).astype("float32"), np.arange(4))


# --------------------------------------------------------------------------
# CIFAR ResNets
# --------------------------------------------------------------------------


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (56, 0.86e6)])
def test_resnet_cifar_counts(depth, params):
    model = resnet_cifar(depth=depth)
    stats = model_stats(model)
    assert abs(stats.total_params - params) / params < 0.02
    n = (depth - 2) // 6
    names = _class_names(model)
    assert names.count("Add") == 3 * n
    assert names.count("Conv2D") == depth - 1 + 2  # + two 1x1 shortcuts
    if depth == 56:
        assert abs(stats.total_macs - 125e6) / 125e6 < 0.03


def test_resnet_cifar_structure():
    model = resnet_cifar(depth=8, num_classes=7, width_multiplier=0.5, input_shape=(16, 16, 3))
    assert model.name == "resnet8_cifar"
    assert model.output_shape == (None, 7)
    assert model.get_layer("conv1").filters == 8
    assert model.get_layer("stage3_block1_conv2").filters == 32
    assert model.get_layer("stage1_block1_add").output.shape == (None, 16, 16, 8)
    assert model.get_layer("stage3_block1_add").output.shape == (None, 4, 4, 32)
    shortcut = model.get_layer("stage2_block1_shortcut_conv")
    assert shortcut.kernel_size == (1, 1) and shortcut.strides == (2, 2)
    assert isinstance(model.get_layer("stage2_block1_shortcut_bn"), keras.layers.BatchNormalization)
    names = [l.name for l in model.layers]
    assert "stage1_block1_shortcut_conv" not in names  # identity shortcut
    assert names[-2:] == ["avg_pool", "predictions"]


@pytest.mark.parametrize("depth", [0, 7, 9, 21, 57, 20.0, "20", True])
def test_resnet_cifar_depth_validation(depth):
    with pytest.raises(ValueError, match="depth"):
        resnet_cifar(depth=depth)


def test_resnet_cifar_trains_one_step():
    model = resnet_cifar(depth=8, width_multiplier=0.5)
    rng = np.random.default_rng(0)
    _train_one_step(model, rng.normal(size=(4, 32, 32, 3)).astype("float32"), np.arange(4))


# --------------------------------------------------------------------------
# EEGNet
# --------------------------------------------------------------------------


def test_eegnet_architecture():
    model = eegnet(num_classes=4, channels=8, samples=256)
    assert model.input_shape == (None, 8, 256, 1)
    assert model.output_shape == (None, 4)
    temporal = model.get_layer("temporal_conv")
    assert temporal.kernel_size == (1, 64) and not temporal.use_bias
    assert temporal.filters == 8
    spatial = model.get_layer("spatial_depthwise")
    assert spatial.kernel_size == (8, 1) and spatial.depth_multiplier == 2
    assert isinstance(spatial.depthwise_constraint, keras.constraints.MaxNorm)
    assert spatial.output.shape == (None, 1, 256, 16)
    separable = model.get_layer("separable_conv")
    assert separable.filters == 16 and separable.kernel_size == (1, 16)
    classifier = model.get_layer("classifier")
    assert classifier.kernel_constraint.max_value == 0.25
    assert model.get_layer("flatten").output.shape == (None, 16 * 256 // 32)
    # temporal 8*64, its BN 32, depthwise 8*8*2, BN 64, separable 16*16 +
    # 16*16, BN 64, classifier 128*4 + 4
    assert model.count_params() == 512 + 32 + 128 + 64 + 512 + 64 + 516


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"samples": 16}, "samples"),
        ({"channels": 0}, "channels"),
        ({"F1": 2.5}, "F1"),
        ({"D": 0}, "D"),
        ({"kernel_length": -1}, "kernel_length"),
        ({"dropout": -0.1}, "dropout"),
        ({"norm_rate": 0}, "norm_rate"),
    ],
)
def test_eegnet_validation(kwargs, name):
    args = {"num_classes": 4, **kwargs}
    with pytest.raises(ValueError, match=name):
        eegnet(**args)


def test_eegnet_trains_and_saves(tmp_path):
    model = eegnet(num_classes=3, channels=4, samples=64, kernel_length=32)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4, 64, 1)).astype("float32")
    _train_one_step(model, x, np.arange(6) % 3)
    path = tmp_path / "eegnet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


# --------------------------------------------------------------------------
# Small models
# --------------------------------------------------------------------------


def test_small_cnn():
    model = small_cnn()
    assert model.output_shape == (None, 10)
    names = [l.name for l in model.layers]
    assert names == [
        "input",
        "conv1",
        "bn1",
        "relu1",
        "pool1",
        "conv2",
        "bn2",
        "relu2",
        "pool2",
        "flatten",
        "fc1",
        "fc1_relu",
        "predictions",
    ]
    assert model.get_layer("flatten").output.shape == (None, 2 * 2 * 32)
    deep = small_cnn(filters=(4, 4, 4, 4))  # pooling stops at 1x1
    assert deep.get_layer("flatten").output.shape == (None, 4)
    with pytest.raises(ValueError, match="filters"):
        small_cnn(filters=())
    with pytest.raises(ValueError, match="dense_units"):
        small_cnn(dense_units=0)


def test_small_resnet():
    model = small_resnet(blocks=3, filters=8, num_classes=5)
    assert model.output_shape == (None, 5)
    assert _class_names(model).count("Add") == 3
    assert model.get_layer("block3_add").output.shape == (None, 8, 8, 8)
    with pytest.raises(ValueError, match="blocks"):
        small_resnet(blocks=0)


@pytest.mark.parametrize("builder", [small_cnn, small_resnet])
def test_small_models_train_one_step(builder):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 1)).astype("float32")
    _train_one_step(builder(), x, np.arange(8))
