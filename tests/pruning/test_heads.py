"""Attention heads and head dimensions in the loop, the sensitivity scan and ``ridurre prune``."""

import json

import keras
import numpy as np
import pytest
from helpers import compile_classifier, randomize_weights
from keras import layers as L

import ridurre
from ridurre.app.cli import main
from ridurre.sensitivity import channels_to_remove, scan


def _transformer(norm=False, t=6):
    x = keras.Input((t, 8))
    h = L.Dense(16, name="proj")(x)
    for i in range(2):
        a = L.MultiHeadAttention(4, 6, name=f"mha{i}")(h, h)
        h = L.Add()([h, a])
        if norm:
            h = L.LayerNormalization(name=f"ln{i}")(h)
        f = L.Dense(24, activation="relu", name=f"ffn{i}a")(h)
        h = L.Add()([h, L.Dense(16, name=f"ffn{i}b")(f)])
    g = L.GroupQueryAttention(4, 4, 2, name="gqa")(h, h)
    h = L.Add()([h, g])
    return keras.Model(x, L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling1D()(h)))


def _compile(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


def _heads(model):
    return {
        layer.name: (layer.num_heads if hasattr(layer, "num_heads") else layer.num_query_heads)
        for layer in model.layers
        if isinstance(layer, (L.MultiHeadAttention, L.GroupQueryAttention))
    }


def test_heads_are_kept_by_default_and_head_dims_pruned_like_channels():
    model = randomize_weights(_transformer())
    pruner = ridurre.Pruner("l1", _compile, pruning_factor=0.5, maximum_prune_iterations=1, verify="exact")
    pruned, _ = pruner.run_pruning(model)
    assert _heads(pruned) == {"mha0": 4, "mha1": 4, "gqa": 4}
    assert pruned.get_layer("mha0").key_dim == 3 and pruned.get_layer("proj").units == 8
    channels = pruner.history[0].channels
    assert channels["mha1:head_dims"] == 3 and channels["gqa:head_dims"] == 2 and channels["mha0:heads"] == 4


def test_head_factor_criterion_and_round_to():
    model = randomize_weights(_transformer(), seed=1)
    data = np.random.default_rng(0).normal(size=(32, 6, 8)).astype("float32")
    pruner = ridurre.Pruner(
        "l2",
        _compile,
        pruning_factor=0.25,
        head_pruning_factor=0.5,
        head_criterion="activation_mean",
        head_criterion_options={"data": data},
        round_to=4,
        maximum_prune_iterations=2,
        verify="exact",
    )
    pruned, _ = pruner.run_pruning(model)
    # heads: 4 -> 2 -> 1 (no rounding to 4); GQA: 2 key/value heads -> 1 with its 2 query heads, then
    # (one key/value head left: its query heads are the layer's heads) 2 -> 1
    assert _heads(pruned) == {"mha0": 1, "mha1": 1, "gqa": 1}
    assert pruner.history[0].channels["gqa:query_heads"] == 2
    assert pruned.get_layer("proj").units % 4 == 0 and pruned.get_layer("ffn0a").units % 4 == 0
    assert pruned.get_layer("mha0").key_dim >= 2  # head dimensions keep 2 (a Keras TF-backend bias bug)
    first = pruner.history[0]
    assert first.channels["mha0:heads"] == 2 and first.channels["gqa:kv_heads"] == 1
    assert "mha0:heads" in first.removed


def test_global_ranking_keeps_each_layers_head_share():
    model = randomize_weights(_transformer(), seed=2)
    pruner = ridurre.Pruner(
        "l1", _compile, pruning_factor=0.3, head_pruning_factor=0.25, ranking="global", maximum_prune_iterations=1
    )
    pruned, _ = pruner.run_pruning(model)
    assert _heads(pruned)["mha0"] == 3 and _heads(pruned)["mha1"] == 3


@pytest.mark.slow
def test_sensitivity_scan_and_cli_prune_heads(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 6, 8)).astype("float32")
    y = (x[:, :, 0].mean(axis=1) > 0).astype("int64") + (x[:, :, 1].mean(axis=1) > 0)
    keras.utils.set_random_seed(0)
    model = _transformer(norm=True)
    compile_classifier(model)
    model.fit(x, y, epochs=2, verbose=0)
    result = scan(model, x[:48], y[:48], ratios=[0.5], layers=["mha0:.*", "gqa:.*"], progress=False)
    expected = {"mha0:heads", "mha0:head_dims", "gqa:kv_heads", "gqa:query_heads", "gqa:head_dims"}
    assert set(result.layers) == expected
    assert all(np.isfinite(p.metric) for p in result.points)
    assert len(channels_to_remove(model, "mha0:heads", 0.5)) == 2
    pruning = ridurre.SensitivityPruning({"mha1:heads": 0.5, "ffn1a": 0.5}, _compile, None, 0)
    pruned, _ = pruning.run_pruning(model)
    assert _heads(pruned)["mha1"] == 2 and _heads(pruned)["mha0"] == 4 and pruned.get_layer("ffn1a").units == 12

    model_path, data_path = str(tmp_path / "t.keras"), str(tmp_path / "d.npz")
    model.save(model_path)
    np.savez(data_path, x=x, y=y)
    out = tmp_path / "run"
    args = ["--no-progress", "prune", "--model", model_path, "--data", data_path, "--ratio", "0.3"]
    args += ["--head-ratio", "0.5", "--iterations", "1", "--finetune-epochs", "0", "--output", str(out)]
    assert main(args) == 0
    final = keras.models.load_model(out / "models" / "final.keras")
    assert _heads(final) == {"mha0": 2, "mha1": 2, "gqa": 2}  # GQA: one key/value head of 2 with its 2 query heads
    assert json.load(open(out / "config.json"))["strategy"]["head_ratio"] == 0.5


def test_limits_shrink_heads_without_rounding_them():
    model = randomize_weights(_transformer(), seed=3)
    pruner = ridurre.Pruner(
        "l1",
        _compile,
        pruning_factor=0.3,
        head_pruning_factor=0.5,
        round_to=8,
        target_speedup=1.4,
        maximum_prune_iterations=1,
    )
    pruned, _ = pruner.run_pruning(model)
    assert min(_heads(pruned).values()) < 4  # round_to=8 would keep every layer's 4 heads
    assert pruner.history[0].macs >= pruner._original_cost["macs"] / 1.4 - 1  # the limit is never crossed


def _masked_text_transformer():
    """Token ids padded with 0: Embedding(mask_zero=True) puts a NotEqual op in the graph, whose mask
    reaches the attention (and the mean), with a causal block after a bidirectional one."""
    x = keras.Input((7,), dtype="int32")
    h = L.Embedding(20, 12, mask_zero=True, name="embed")(x)
    for i, causal in enumerate((False, True)):
        a = L.MultiHeadAttention(3, 4, name=f"mha{i}")(h, h, use_causal_mask=causal)
        h = L.Add()([h, a])
        h = L.Add()([h, L.Dense(12, name=f"ffn{i}b")(L.Dense(16, activation="relu", name=f"ffn{i}a")(h))])
    return keras.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling1D()(h)))


def test_masked_causal_text_transformer_prunes_to_a_mac_limit_exactly():
    model = randomize_weights(_masked_text_transformer(), seed=4)
    tokens = np.random.default_rng(0).integers(0, 20, (16, 7)).astype("int32")
    tokens[:, 5:] = 0  # padding
    pruner = ridurre.Pruner(
        "l1",
        _compile,
        pruning_factor=0.3,
        head_pruning_factor=0.34,
        target_speedup=2,  # the limit plans the MACs of candidate steps from shapes alone
        maximum_prune_iterations=2,
        verify="exact",
    )
    pruned, _ = pruner.run_pruning(model)
    assert min(_heads(pruned).values()) < 3
    assert pruner.history[-1].macs >= pruner._original_cost["macs"] / 2 - 1
    assert pruned.get_layer("embed").output_dim < 12 and pruned.get_layer("embed").mask_zero
    assert np.isfinite(np.asarray(pruned(tokens))).all()


def _bert_like(t=8, vocabulary=20):
    """keras.layers only: token and position embeddings (positions from a cumsum of the ids), a padding
    attention mask built with keras.ops, post-norm blocks, a causal second block, the [CLS] token sliced."""
    tokens = keras.Input((t,), dtype="int32")
    positions = keras.ops.cumsum(keras.ops.ones_like(tokens), axis=1) - 1
    h = L.Embedding(vocabulary, 12, name="tok")(tokens) + L.Embedding(t, 12, name="pos")(positions)
    h = L.LayerNormalization(name="emb_ln")(h)
    keep = keras.ops.not_equal(tokens, 0)
    mask = keras.ops.logical_and(keep[:, None, :], keep[:, :, None])
    for i in range(2):
        a = L.MultiHeadAttention(3, 4, name=f"mha{i}")(h, h, attention_mask=mask, use_causal_mask=i == 1)
        h = L.LayerNormalization(name=f"ln{i}a")(h + a)
        f = L.Dense(20, activation="gelu", name=f"ffn{i}a")(h)
        h = L.LayerNormalization(name=f"ln{i}b")(h + L.Dense(12, name=f"ffn{i}b")(f))
    return keras.Model(tokens, L.Dense(2, name="cls")(L.Dense(8, activation="tanh", name="pooler")(h[:, 0, :])))


def test_a_bert_like_model_of_keras_layers_prunes_heads_ffn_and_hidden_size():
    model = randomize_weights(_bert_like(), seed=5)
    pruner = ridurre.Pruner(
        "l2", _compile, pruning_factor=0.3, head_pruning_factor=0.34, maximum_prune_iterations=1, verify="exact"
    )
    pruned, _ = pruner.run_pruning(model)
    assert _heads(pruned) == {"mha0": 2, "mha1": 2}
    assert pruned.get_layer("tok").output_dim == pruned.get_layer("pos").output_dim < 12
    assert pruned.get_layer("ffn0a").units < 20 and pruned.get_layer("pooler").units < 8
    assert pruner.history[0].inexact == ["tok"]  # the hidden size runs through the LayerNormalizations
    tokens = np.random.default_rng(0).integers(1, 20, (4, 8)).astype("int32")
    tokens[:, 6:] = 0
    assert np.isfinite(np.asarray(pruned(tokens))).all()
