"""Attention and einsum layers: deleted == zeroed for every kind of group (heads, head dimensions,
the residual stream through query/key/value and the output projection), on random inputs with
randomized weights and biases; transformer blocks; every blocker of a group reported."""

import keras
import numpy as np
import pytest
from helpers import randomize_weights
from keras import layers as L

import ridurre
from ridurre.rules import PassThroughRule
from ridurre.surgery import Surgeon, delete_channels

T, S, D = 6, 5, 16


def _inputs(model, rng, n=3):
    xs = []
    for t in model.inputs:
        shape = (n,) + tuple(t.shape[1:])
        xs.append(rng.random(shape) > 0.25 if t.dtype == "bool" else rng.normal(size=shape).astype("float32"))
    return xs


def _predict(model, xs):
    out = model(xs if len(xs) > 1 else xs[0], training=False)
    return [np.asarray(o) for o in keras.tree.flatten(out)]


def _pruned_and_zeroed(model, group, idx):
    pruned, zeroed = Surgeon(model), Surgeon(model)
    pruned.delete_group_channels(pruned.trace.groups()[group.id], idx)
    zeroed.delete_group_channels(zeroed.trace.groups()[group.id], idx)
    return pruned.operate(), zeroed.operate(zero=True)


def _check_every_group(model, seed=0, expect=None):
    """Delete a random share of every prunable group (one group at a time, then all at once) and
    compare with the zeroed model; returns the groups by producer."""
    rng = np.random.default_rng(seed)
    groups = ridurre.channel_groups(model)
    by_producer = {g.producers: g for g in groups}
    for producers in expect or ():
        assert by_producer[producers].prunable, (producers, by_producer[producers].reasons)
    xs = _inputs(model, rng)
    reference = _predict(model, xs)
    plan = {}
    for group in groups:
        if not group.prunable or group.size < 2:
            continue
        # keep 2: Keras's TensorFlow backend adds a (heads, 1) bias along the wrong axis when the
        # sequence is as long as there are heads (keras.ops.add takes it for an NCHW bias)
        keep = 2 if group.size > 2 else 1
        idx = np.sort(rng.choice(group.size, size=int(rng.integers(1, group.size - keep + 1)), replace=False))
        plan[group.id] = idx
        pruned, zeroed = _pruned_and_zeroed(model, group, idx)
        assert pruned.count_params() < model.count_params(), group.producers
        changed = False
        for a, b, ref in zip(_predict(pruned, xs), _predict(zeroed, xs), reference):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()), err_msg=str(group))
            changed |= not np.allclose(a, ref, atol=1e-6)
        assert changed, f"deleting {idx} of {group.producers} changed nothing"
    surgeon, zeroing = Surgeon(model), Surgeon(model)
    for gid, idx in plan.items():
        surgeon.delete_group_channels(surgeon.trace.groups()[gid], idx)
        zeroing.delete_group_channels(zeroing.trace.groups()[gid], idx)
    for a, b in zip(_predict(surgeon.operate(), xs), _predict(zeroing.operate(zero=True), xs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(b).max()))
    return by_producer


# ----------------------------------------------------------------------------- models


def mha_block(**options):
    """Dense projection -> MultiHeadAttention (self) -> Add -> FFN -> Add -> pooled head."""
    x = keras.Input((T, 10))
    h = L.Dense(D, name="proj")(x)
    a = L.MultiHeadAttention(4, 6, name="mha", **options)(h, h)
    h = L.Add()([h, a])
    f = L.Dense(24, activation="relu", name="ffn1")(h)
    h = L.Add()([h, L.Dense(D, name="ffn2")(f)])
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h)))


def cross_attention(causal=False):
    """Decoder stream attending to an encoder stream, key given separately, a boolean mask."""
    x, e, m = keras.Input((T, 10)), keras.Input((S, 7)), keras.Input((T, S), dtype="bool", name="mask")
    h = L.Dense(D, name="dec")(x)
    enc = L.Dense(12, name="enc")(e)
    key = L.Dense(9, name="key_proj")(e)
    a = L.MultiHeadAttention(3, 5, value_dim=4, dropout=0.1, name="cross", output_shape=11)(
        h, enc, key=key, attention_mask=m, use_causal_mask=causal
    )
    y = L.Dense(3, name="head")(L.Flatten()(L.Concatenate()([h, a])))
    return keras.Model([x, e, m], y)


def gqa_block(use_gate=False, cross=False):
    # more positions than its 6 query heads: with as many, the head dimensions are kept (a pruned
    # (heads, 1) bias would be added over the positions by Keras's TensorFlow backend)
    x = keras.Input((T + 1, 10))
    h = L.Dense(D, name="proj")(x)
    inputs = [x]
    value = h
    if cross:
        e = keras.Input((S, 7))
        inputs.append(e)
        value = L.Dense(D, name="enc")(e)
    a = L.GroupQueryAttention(4, 6, 2, use_gate=use_gate, name="gqa")(h, value, use_causal_mask=not cross)
    h = L.Add()([h, a])
    f = L.Dense(20, activation="gelu", name="ffn1")(h)
    h = L.Add()([h, L.Dense(D, name="ffn2")(f)])
    return keras.Model(inputs if cross else x, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h)))


def transformer(norm=True, blocks=2):
    """Dense projection -> blocks x (MHA, Add, LayerNormalization, FFN, Add, LayerNormalization)."""
    x = keras.Input((T, 10))
    h = L.Dense(D, name="proj")(x)
    for i in range(blocks):
        a = L.MultiHeadAttention(4, 4, dropout=0.1, name=f"mha{i}")(h, h, use_causal_mask=i == 1)
        h = L.Add()([h, a])
        if norm:
            h = L.LayerNormalization(name=f"ln{i}a")(h)
        f = L.Dense(32, activation="relu", name=f"ffn{i}a")(h)
        h = L.Add()([h, L.Dense(D, name=f"ffn{i}b")(L.Dropout(0.1)(f))])
        if norm:
            h = L.LayerNormalization(name=f"ln{i}b")(h)
    return keras.Model(x, L.Dense(3, name="head")(L.GlobalAveragePooling1D()(h)))


def einsum_attention():
    """Attention written by hand with EinsumDense and keras.ops.einsum (the keras-hub way)."""
    n, k = 3, 4
    x = keras.Input((T, 10))
    h = L.EinsumDense("btf,fd->btd", output_shape=(T, D), bias_axes="d", name="proj")(x)
    q = L.EinsumDense("btd,dnh->btnh", output_shape=(T, n, k), bias_axes="nh", name="q")(h)
    key = L.EinsumDense("btd,dnh->btnh", output_shape=(T, n, k), bias_axes="h", name="k")(h)
    v = L.EinsumDense("...d,dnh->...nh", output_shape=(n, k), bias_axes="nh", name="v")(h)
    probs = L.Softmax(axis=-1)(keras.ops.einsum("btnh,bsnh->bnts", q * (1.0 / np.sqrt(k)), key))
    context = keras.ops.einsum("bnts,bsnh->btnh", probs, v)
    h = L.Add()([h, L.EinsumDense("btnh,nhd->btd", output_shape=(T, D), bias_axes="d", name="o")(context)])
    h = L.EinsumDense("btd,d->btd", output_shape=(T, D), bias_axes="d", name="scale")(h)
    f = L.EinsumDense("...d,df->...f", output_shape=(20,), bias_axes="f", activation="relu", name="ffn1")(h)
    h = L.Add()([h, L.EinsumDense("...f,fd->...d", output_shape=(D,), name="ffn2")(f)])
    h = L.EinsumDense("ab...,bc->ac...", output_shape=(4,), name="pool")(h)  # mixes positions, keeps channels
    return keras.Model(x, L.Dense(3, name="head")(L.Flatten()(h)))


# ----------------------------------------------------------------------------- exactness


# dropout > 0 takes Keras's explicit attention path, which (unlike the fused one on JAX) allows
# value_dim != key_dim; in inference it drops nothing
@pytest.mark.parametrize(
    "options",
    [{}, {"use_bias": False}, {"use_gate": True, "value_dim": 3, "dropout": 0.1}],
    ids=["plain", "no_bias", "gate_value_dim"],
)
def test_multi_head_attention_every_group(options):
    model = randomize_weights(mha_block(**options), seed=1)
    dims = [("mha:key_dims",), ("mha:value_dims",)] if "value_dim" in options else [("mha:head_dims",)]
    groups = _check_every_group(model, expect=[("proj", "mha", "ffn2"), ("mha:heads",), ("ffn1",)] + dims)
    assert groups[("mha:heads",)].kind == "heads" and groups[("mha:heads",)].size == 4
    assert all(groups[d].kind == "head_dims" for d in dims)
    assert "mha" in groups[("proj", "mha", "ffn2")].consumers


@pytest.mark.parametrize("causal", [False, True])
def test_cross_attention_with_key_mask_and_output_shape(causal):
    model = randomize_weights(cross_attention(causal), seed=2)
    groups = _check_every_group(model, seed=3, expect=[("dec",), ("enc",), ("key_proj",), ("cross",)])
    mask = groups[("input:mask",)]
    assert any("attention_mask" in r for r in mask.reasons)
    pruned = delete_channels(model, "cross", [0, 5, 10])
    assert pruned.get_layer("cross").get_config()["output_shape"] == (8,)


@pytest.mark.parametrize("variant", ["self", "gate", "cross"])
def test_group_query_attention_every_group(variant):
    model = randomize_weights(gqa_block(use_gate=variant == "gate", cross=variant == "cross"), seed=4)
    stream = ("proj", "enc", "ffn2") if variant == "cross" else ("proj", "ffn2")
    groups = _check_every_group(
        model, seed=5, expect=[stream, ("gqa:kv_heads",), ("gqa:query_heads",), ("gqa:head_dims",)]
    )
    assert groups[("gqa:kv_heads",)].size == 2 and groups[("gqa:query_heads",)].size == 3


def test_pruning_a_kv_head_removes_its_query_heads():
    model = randomize_weights(gqa_block(), seed=6)
    pruned = delete_channels(model, "gqa:kv_heads", [1])
    config = pruned.get_layer("gqa").get_config()
    assert (config["num_key_value_heads"], config["num_query_heads"]) == (1, 3)
    pruned = delete_channels(model, "gqa:query_heads", [0])
    config = pruned.get_layer("gqa").get_config()
    assert (config["num_key_value_heads"], config["num_query_heads"]) == (2, 4)
    pruned = delete_channels(model, "gqa:head_dims", [0, 1])
    assert pruned.get_layer("gqa").get_config()["head_dim"] == 2


def test_heads_and_head_dims_shrink_the_config_and_rescale_the_query():
    model = randomize_weights(mha_block(), seed=7)
    pruned = delete_channels(model, "mha:heads", [0, 2])
    mha = pruned.get_layer("mha")
    assert mha.num_heads == 2 and tuple(mha.query_dense.kernel.shape) == (D, 2, 6)
    assert tuple(mha.output_dense.kernel.shape) == (2, 6, D)
    pruned = delete_channels(model, "mha:head_dims", [1, 3])
    assert pruned.get_layer("mha").key_dim == 4 and pruned.get_layer("mha").value_dim == 4
    original = np.asarray(model.get_layer("mha").query_dense.kernel)[..., [0, 2, 4, 5]]
    np.testing.assert_allclose(np.asarray(pruned.get_layer("mha").query_dense.kernel), original * np.sqrt(4 / 6))
    with pytest.raises(ValueError, match="no internal units 'nope'"):
        delete_channels(model, "mha:nope", [0])
    with pytest.raises(ValueError, match="every channel"):
        delete_channels(model, "mha:heads", [0, 1, 2, 3])


def test_attention_over_two_axes_and_a_shared_layer():
    x, y = keras.Input((4, 5, 6)), keras.Input((4, 5, 6))
    mha = L.MultiHeadAttention(2, 3, attention_axes=(1, 2), name="mha")
    a = mha(L.Dense(8, name="p")(x), L.Dense(8, name="q")(y))
    b = mha(L.Dense(8, name="r")(y), L.Dense(8, name="s")(x))
    out = L.Dense(2, name="head")(L.Flatten()(L.Concatenate()([a, b])))
    model = randomize_weights(keras.Model([x, y], out), seed=8)
    groups = _check_every_group(model, seed=9, expect=[("mha",), ("mha:heads",), ("mha:head_dims",)])
    assert {frozenset(p) for p in groups if len(p) == 2} == {frozenset("pr"), frozenset("qs")}  # joined by sharing
    stats = ridurre.metrics.model_stats(model)
    macs = {row.name: row.macs for row in stats.layers}["mha"]
    # per call: q, k, v, o projections over 20 positions, plus 2 heads x 20 x 20 positions x (3 + 3)
    assert macs == 2 * (20 * 8 * 2 * 3 * 3 + 20 * 2 * 3 * 8 + 2 * 20 * 20 * 6)
    assert groups[("mha",)].size == 8


def test_returned_attention_scores_keep_the_heads():
    x = keras.Input((T, 10))
    h = L.Dense(D, name="proj")(x)
    a, scores = L.MultiHeadAttention(4, 6, name="mha")(h, h, return_attention_scores=True)
    out = L.Dense(3, name="head")(L.Concatenate()([L.Flatten()(a), L.Flatten()(scores)]))
    model = randomize_weights(keras.Model(x, out), seed=10)
    groups = _check_every_group(model, expect=[("proj",), ("mha",), ("mha:head_dims",)])
    assert not groups[("mha:heads",)].prunable and "scores" in groups[("mha:heads",)].reason


@pytest.mark.parametrize("builder", [einsum_attention, lambda: transformer(norm=False)], ids=["einsum", "no_norm"])
def test_hand_written_and_stacked_attention_are_exact(builder):
    model = randomize_weights(builder(), seed=11)
    groups = _check_every_group(model, seed=12)
    if builder is einsum_attention:
        for producers in (("proj", "o", "ffn2"), ("q", "k"), ("v",), ("ffn1",)):
            assert groups[producers].prunable, groups[producers].reasons
        scores = [g for g in groups.values() if "einsum 'btnh,bsnh->bnts': its last axis" in (g.reason or "")]
        assert len(scores) == 1 and not scores[0].prunable  # positions, not channels


def test_transformer_blocks_through_layer_normalization_are_structurally_right(rng):
    model = randomize_weights(transformer(), seed=13)
    groups = {g.producers: g for g in ridurre.channel_groups(model)}
    stream = groups[("proj", "mha0", "ffn0b", "mha1", "ffn1b")]
    assert stream.prunable and {"ln0a", "ln0b", "ln1a", "ln1b"} <= set(stream.carriers)
    surgeon = Surgeon(model)
    for group in surgeon.trace.groups():
        if group.prunable and group.size >= 2:
            surgeon.delete_group_channels(group, list(range(group.size // 2)))
    pruned = surgeon.operate()
    assert pruned.get_layer("proj").units == 8 and pruned.get_layer("ln1b").gamma.shape == (8,)
    assert pruned.get_layer("mha1").num_heads == 2 and pruned.get_layer("mha1").key_dim == 2
    assert pruned.get_layer("ffn0a").units == 16
    out = _predict(pruned, _inputs(model, rng))[0]
    assert out.shape == (3, 3) and np.isfinite(out).all()
    assert pruned.count_params() < model.count_params() / 2.5


def test_a_pruned_attention_model_saves_and_loads(tmp_path, rng):
    model = randomize_weights(gqa_block(use_gate=True), seed=14)
    pruned = delete_channels(delete_channels(model, "gqa:kv_heads", [0]), "proj", [1, 2])
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    xs = _inputs(model, rng)
    np.testing.assert_allclose(_predict(loaded, xs)[0], _predict(pruned, xs)[0], rtol=1e-6)


# ----------------------------------------------------------------------------- reasons


@keras.saving.register_keras_serializable("ridurre_attention_tests")
class Scale(keras.layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


class Shift(Scale):
    def call(self, x):
        return x + self.scale


def test_every_blocker_of_a_group_is_reported_and_one_pass_fixes_them():
    x = keras.Input((T, 10))
    h = L.Dense(D, name="proj")(x)
    h = L.Add()([Scale(name="scale")(h), Shift(name="shift")(h)])
    a = L.MultiHeadAttention(2, 4, name="mha")(h, h)
    model = keras.Model(x, L.Dense(3, name="head")(L.Flatten()(L.Add()([h, a]))))
    group = next(g for g in ridurre.channel_groups(model) if "proj" in g.producers)
    assert not group.prunable and group.reason == group.reasons[0]
    assert any("scale (Scale)" in r for r in group.reasons) and any("shift (Shift)" in r for r in group.reasons)
    rule = PassThroughRule(per_channel_weights=("scale",))
    group = next(g for g in ridurre.channel_groups(model, rules={Scale: rule, Shift: rule}) if "proj" in g.producers)
    assert group.prunable and group.reasons == ()
