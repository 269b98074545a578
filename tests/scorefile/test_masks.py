"""The TensorFlow-free model reader, filter zeroing, atomic writes, and apply_pruned_weights."""

import io
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras import layers

from ridurre._io import atomic_writer, save_npz_atomic
from ridurre.app.scorefile_cli import main
from ridurre.scorefile import ModelFileError, apply_pruned_weights, num_filters, read_model_file, zero_filters


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            rng.uniform(0.5, 1.5, size=w.shape).astype(w.dtype) * rng.choice([-1, 1], size=w.shape)
            for w in model.get_weights()
        ]
    )
    return model


def zoo_model():
    """Every weight layout the reader must know, plus a nested model."""
    inp = keras.Input((4, 32, 1))
    x = layers.Conv2D(8, (1, 5), padding="same", use_bias=False, name="temporal_conv")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.DepthwiseConv2D((4, 1), depth_multiplier=2, name="depthwise")(x)
    x = layers.BatchNormalization(center=False, name="bn2")(x)
    x = layers.SeparableConv2D(6, (1, 3), padding="same", name="separable_conv")(x)
    x = layers.Conv2DTranspose(5, (1, 3), name="up")(x)
    x = layers.Conv2D(4, 1, name="conv")(x)
    x = layers.Conv2D(4, 1, name="conv_b")(x)
    x = layers.Flatten()(x)
    inner = keras.Sequential(
        [
            keras.Input((x.shape[-1],)),
            layers.Dense(6, name="hidden"),
            layers.BatchNormalization(scale=False, name="inner_bn"),
        ],
        name="head",
    )
    x = inner(x)
    out = layers.Dense(3, use_bias=False, name="dense")(x)
    return randomized(keras.Model(inp, out, name="zoo"))


def leaf_layers(model, prefix=""):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer, prefix + layer.name + "/")
        else:
            yield prefix + layer.name, layer


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    model = zoo_model()
    paths = {"keras": str(d / "zoo.keras"), "h5": str(d / "zoo.h5")}
    model.save(paths["keras"])
    model.save(paths["h5"])
    return model, paths


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_reader_matches_keras(zoo, fmt):
    model, paths = zoo
    mf = read_model_file(paths[fmt])
    assert mf.format == fmt and mf.model_class == "Functional"
    assert mf.layer_names == [l.name for l in model.layers]
    assert mf.class_names == [type(l).__name__ for l in model.layers]
    for path, layer in leaf_layers(model):
        info = mf.layer(path)
        assert info.class_name == type(layer).__name__
        assert list(info.weight_names) == [v.name for v in layer.weights], path
        got = mf.weights.get(path, [])
        assert len(got) == len(layer.weights), path
        for a, b in zip(got, layer.get_weights()):
            np.testing.assert_array_equal(a, b)
    assert mf.layer("hidden").path == "head/hidden"  # unique names resolve without the path
    assert mf.configs["depthwise"]["depth_multiplier"] == 2
    assert mf.num_filters("depthwise") == 16 and mf.num_filters("up") == 5


def test_reader_sequential_leaves_out_its_input_layer(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), layers.Dense(4, name="d0"), layers.Dropout(0.2), layers.Dense(3, name="d1")]
    )
    for ext in ("keras", "h5"):
        model.save(tmp_path / f"seq.{ext}")
        mf = read_model_file(tmp_path / f"seq.{ext}")
        assert mf.model_class == "Sequential"
        assert mf.layer_names == [l.name for l in model.layers]


def test_reader_without_layer_names_in_the_weights_file(zoo, tmp_path):
    """Keras versions before 3.15 do not store the layer name: groups are found by class."""
    model, paths = zoo
    stripped = tmp_path / "old.keras"
    with zipfile.ZipFile(paths["keras"]) as src, zipfile.ZipFile(stripped, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "model.weights.h5":
                buf = io.BytesIO(data)
                with h5py.File(buf, "a") as f:
                    f.visititems(lambda n, o: o.attrs.pop("name", None) if n.endswith("vars") else None)
                data = buf.getvalue()
            dst.writestr(item, data)
    mf = read_model_file(stripped)
    for path, layer in leaf_layers(model):
        for a, b in zip(mf.weights.get(path, []), layer.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_reader_bfloat16(tmp_path):
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2, dtype="bfloat16", name="d")])
    model.save(tmp_path / "bf16.keras")
    kernel = read_model_file(tmp_path / "bf16.keras").named_weights("d")["kernel"]
    assert kernel.dtype == np.float32
    np.testing.assert_array_equal(kernel, np.asarray(model.get_layer("d").kernel, dtype="float32"))


def test_reader_rejects_non_models(tmp_path):
    (tmp_path / "notes.keras").write_text("hello")
    with zipfile.ZipFile(tmp_path / "archive.keras", "w") as z:
        z.writestr("readme.txt", "no config")
    model = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    model.save_weights(tmp_path / "only.weights.h5")
    for name, problem in [
        ("notes.keras", "not a Keras model"),
        ("missing.keras", "no such file"),
        ("archive.keras", "zip archive without config.json"),
        ("only.weights.h5", "without a model_config attribute"),
    ]:
        with pytest.raises(ModelFileError, match=problem) as info:
            read_model_file(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


# ----------------------------------------------------------------------------- zeroing


def test_zero_filters_each_layout():
    rng = np.random.default_rng(0)
    k, b = rng.normal(size=(3, 3, 2, 6)), rng.normal(size=6)
    out = zero_filters("Conv2D", {"kernel": k, "bias": b}, [1, 4])
    assert not out["kernel"][..., [1, 4]].any() and not out["bias"][[1, 4]].any()
    np.testing.assert_array_equal(out["kernel"][..., [0, 2, 3, 5]], k[..., [0, 2, 3, 5]])
    assert k[..., 1].all()  # the input is not modified

    t = rng.normal(size=(3, 3, 5, 2))  # Conv2DTranspose: (..., filters, in)
    out = zero_filters("Conv2DTranspose", {"kernel": t}, [3])
    assert not out["kernel"][..., 3, :].any() and out["kernel"][..., 2, :].all()

    d = rng.normal(size=(3, 3, 4, 2))  # DepthwiseConv2D: output c * 2 + m
    out = zero_filters("DepthwiseConv2D", {"kernel": d, "bias": np.ones(8)}, [5])
    assert not out["kernel"][..., 2, 1].any() and out["bias"].tolist() == [1] * 5 + [0, 1, 1]
    assert np.count_nonzero(out["kernel"] == 0) == 9

    sep = {
        "depthwise_kernel": rng.normal(size=(3, 3, 4, 1)),
        "pointwise_kernel": rng.normal(size=(1, 1, 4, 7)),
        "bias": np.ones(7),
    }
    out = zero_filters("SeparableConv2D", sep, [0, 6])
    np.testing.assert_array_equal(out["depthwise_kernel"], sep["depthwise_kernel"])
    assert not out["pointwise_kernel"][..., [0, 6]].any()
    assert num_filters("SeparableConv2D", sep) == 7 and num_filters("Conv2DTranspose", {"kernel": t}) == 5


def test_zero_filters_errors():
    with pytest.raises(ValueError, match=r"out of range for a Dense layer with 3 filters \(0..2\)"):
        zero_filters("Dense", {"kernel": np.ones((2, 3))}, [3])
    with pytest.raises(ValueError, match="BatchNormalization layers have no filters"):
        zero_filters("BatchNormalization", {"gamma": np.ones(3)}, [0])


# ----------------------------------------------------------------------------- writing


def test_atomic_writes_leave_the_target_alone_on_failure(tmp_path):
    target = tmp_path / "weights.npz"
    save_npz_atomic(target, {"a/kernel": np.arange(3)})
    with pytest.raises(RuntimeError):
        with atomic_writer(target, "wb") as f:
            f.write(b"partial")
            raise RuntimeError("disk full")
    assert np.load(target)["a/kernel"].tolist() == [0, 1, 2]
    assert os.listdir(tmp_path) == ["weights.npz"]


# ----------------------------------------------------------------------------- Keras side


def plain_model():
    """No BatchNorm after the convolutions: zeroed filters give zero outputs."""
    inp = keras.Input((4, 32, 1))
    x = layers.Conv2D(8, (1, 5), padding="same", activation="relu", name="temporal_conv")(inp)
    x = layers.DepthwiseConv2D((4, 1), depth_multiplier=2, name="depthwise")(x)
    x = layers.SeparableConv2D(6, (1, 3), padding="same", activation="relu", name="separable_conv")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(5, name="hidden")(x)
    return randomized(keras.Model(inp, layers.Dense(2, name="out")(x), name="plain"), seed=3)


PRUNED = {"temporal_conv": [1, 6], "depthwise": [0, 5, 11], "separable_conv": [2], "hidden": [4]}


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_applied_npz_equals_zeroing_by_hand(tmp_path, fmt):
    model = plain_model()
    before = [w.copy() for w in model.get_weights()]
    model.save(tmp_path / f"plain.{fmt}")
    stats = tmp_path / "stats.csv"
    rows = [
        f"{layer},{f},{-1.0 if f in PRUNED[layer] else 1.0}"
        for layer, n in [("temporal_conv", 8), ("depthwise", 16), ("separable_conv", 6), ("hidden", 5)]
        for f in range(n)
    ]
    stats.write_text("layer,filter,score\n" + "\n".join(rows) + "\n")
    assert (
        main(
            [
                "--model",
                str(tmp_path / f"plain.{fmt}"),
                "--stats",
                str(stats),
                "--min-score",
                "0",
                "--output",
                str(tmp_path / "out"),
            ]
        )
        == 0
    )
    npz_path = tmp_path / "out" / "pruned_weights.npz"
    assert sorted(np.load(npz_path).files) == [
        "depthwise/bias",
        "depthwise/kernel",
        "hidden/bias",
        "hidden/kernel",
        "separable_conv/bias",
        "separable_conv/depthwise_kernel",
        "separable_conv/pointwise_kernel",
        "temporal_conv/bias",
        "temporal_conv/kernel",
    ]

    new = apply_pruned_weights(model, npz_path)
    assert new is not model
    for a, b in zip(model.get_weights(), before):  # the argument is untouched
        np.testing.assert_array_equal(a, b)

    # The same model, zeroed by hand in Keras.
    by_hand = keras.models.clone_model(model)
    by_hand.set_weights(model.get_weights())
    t = by_hand.get_layer("temporal_conv")
    k, b = t.get_weights()
    k[..., PRUNED["temporal_conv"]] = 0
    b[PRUNED["temporal_conv"]] = 0
    t.set_weights([k, b])
    d = by_hand.get_layer("depthwise")
    k, b = d.get_weights()
    for f in PRUNED["depthwise"]:
        k[:, :, f // 2, f % 2] = 0
    b[PRUNED["depthwise"]] = 0
    d.set_weights([k, b])
    s = by_hand.get_layer("separable_conv")
    dk, pk, b = s.get_weights()
    pk[..., PRUNED["separable_conv"]] = 0
    b[PRUNED["separable_conv"]] = 0
    s.set_weights([dk, pk, b])
    h = by_hand.get_layer("hidden")
    k, b = h.get_weights()
    k[:, PRUNED["hidden"]] = 0
    b[PRUNED["hidden"]] = 0
    h.set_weights([k, b])
    for a, b in zip(new.get_weights(), by_hand.get_weights()):
        np.testing.assert_array_equal(a, b)

    x = np.random.default_rng(0).normal(size=(3, 4, 32, 1)).astype("float32")
    for name, pruned in PRUNED.items():
        probe = keras.Model(new.inputs, new.get_layer(name).output)
        y = np.asarray(probe.predict(x, verbose=0))
        assert not y[..., pruned].any(), name
        kept = [c for c in range(y.shape[-1]) if c not in pruned]
        assert np.abs(y[..., kept]).sum(axis=tuple(range(y.ndim - 1))).all(), name


def test_apply_pruned_weights_errors(tmp_path):
    model = plain_model()
    npz = tmp_path / "w.npz"
    save_npz_atomic(npz, {"temporal_conv/kernel": np.zeros((1, 5, 1, 7))})
    with pytest.raises(
        ValueError,
        match=r"'temporal_conv' weight 'kernel': file has "
        r"\(1, 5, 1, 7\), model has \(1, 5, 1, 8\)",
    ):
        apply_pruned_weights(model, npz)
    save_npz_atomic(npz, {"spatial_conv/kernel": np.zeros(3)})
    with pytest.raises(ValueError, match="layer 'spatial_conv' is not in model 'plain'"):
        apply_pruned_weights(model, npz)
    save_npz_atomic(npz, {"hidden/gamma": np.zeros(5)})
    with pytest.raises(ValueError, match=r"layer 'hidden' has no weight 'gamma' \(it has \['bias', 'kernel'\]\)"):
        apply_pruned_weights(model, npz)


def test_apply_pruned_weights_nested_and_compiled(zoo, tmp_path):
    model, _ = zoo
    model.compile(optimizer="adam", loss="mse")
    npz = tmp_path / "w.npz"
    save_npz_atomic(npz, {"head/hidden/bias": np.arange(6, dtype="float32")})
    new = apply_pruned_weights(model, npz)
    assert new.compiled
    np.testing.assert_array_equal(new.get_layer("head").get_layer("hidden").get_weights()[1], np.arange(6))
    assert model.get_layer("head").get_layer("hidden").get_weights()[1].any()
