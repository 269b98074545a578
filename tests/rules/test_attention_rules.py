"""The attention and einsum rules on their own: equations read and refused, internal units, named
inputs, MACs of every new layer, what criteria see of heads."""

import keras
import numpy as np
import pytest
from helpers import randomize_weights
from keras import layers as L

import ridurre
from ridurre.criteria import GroupView, make_criterion
from ridurre.graph import trace_model
from ridurre.metrics import model_stats
from ridurre.rules import UnitMasks, Unsupported
from ridurre.rules.einsum import parse_einsum_dense
from ridurre.surgery import zero_channels


def _macs(model):
    return {row.name: row.macs for row in model_stats(model).layers}


@pytest.mark.parametrize(
    "equation, flow",
    [
        ("ab,bc->ac", "project"),
        ("btd,dnh->btnh", "project"),
        ("btnh,nhd->btd", "project"),
        ("...d,df->...f", "project"),
        ("btd,d->btd", "scale"),
        ("btd,tu->bud", "pass"),
        ("ab...,bc->ac...", "pass"),
    ],
)
def test_einsum_dense_equations_are_read(equation, flow):
    assert parse_einsum_dense(equation).channel_flow() == flow


@pytest.mark.parametrize("equation", ["abc,bd->acd", "abc,cd->adb"])
def test_einsum_dense_moving_the_channel_axis_is_refused_with_the_reason(equation):
    with pytest.raises(Unsupported, match="axis"):
        parse_einsum_dense(equation).channel_flow()
    x = keras.Input((4, 6))
    h = L.Dense(6, name="h")(x)
    y = L.EinsumDense(equation, output_shape=(6, 4) if equation.endswith("adb") else (6, 5), name="e")(h)
    model = keras.Model(x, L.Dense(2, name="out")(L.Flatten()(y)))
    group = next(g for g in ridurre.channel_groups(model) if g.producers == ("h",))
    assert not group.prunable and "e (EinsumDense)" in group.reason
    with pytest.raises(Unsupported, match="cannot read"):
        parse_einsum_dense("ab,bc,cd->ad")


def test_einsum_dense_with_lora_is_refused():
    x = keras.Input((4, 6))
    h = L.Dense(6, name="h")(x)
    e = L.EinsumDense("btd,du->btu", output_shape=(4, 5), name="e")
    y = e(h)
    e.enable_lora(2)
    model = keras.Model(x, L.Dense(2, name="out")(y))
    group = next(g for g in ridurre.channel_groups(model) if g.producers == ("h",))
    assert not group.prunable and "LoRA" in group.reason


def test_macs_of_einsum_and_attention_layers():
    t, s, d = 7, 5, 12
    x, e = keras.Input((t, d)), keras.Input((s, 10))
    h = L.EinsumDense("btd,dnh->btnh", output_shape=(t, 3, 4), bias_axes="nh", name="proj")(x)
    h = L.EinsumDense("btnh,nhd->btd", output_shape=(t, d), name="merge")(h)
    scores = keras.ops.einsum("btd,bsd->bts", h, L.Dense(d, name="kp")(e))
    a = L.MultiHeadAttention(3, 4, value_dim=5, name="mha")(h, h)
    c = L.MultiHeadAttention(2, 6, name="cross", output_shape=9)(h, e)
    g = L.GroupQueryAttention(4, 6, 2, name="gqa", use_gate=True)(a, a)
    out = L.Concatenate()([L.Flatten()(g), L.Flatten()(c), L.Flatten()(scores)])
    model = keras.Model([x, e], L.Dense(2, name="out")(out))
    macs = _macs(model)
    assert macs["proj"] == t * d * 3 * 4 and macs["merge"] == t * 3 * 4 * d
    assert [row.macs for row in model_stats(model).layers if row.class_name == "Einsum"] == [t * s * d]
    # q, k, v projections, the output projection, then heads x T x S x (key_dim + value_dim)
    assert macs["mha"] == t * d * 3 * 4 * 2 + t * d * 3 * 5 + t * 3 * 5 * d + 3 * t * t * (4 + 5)
    assert macs["cross"] == t * d * 2 * 6 + s * 10 * 2 * 6 * 2 + t * 2 * 6 * 9 + 2 * t * s * 12
    # GQA: query and gate for 6 heads, key and value for 2, output, 6 heads x T x T x 2 head_dim
    assert macs["gqa"] == t * d * 6 * 4 * 2 + t * d * 2 * 4 * 2 + t * 6 * 4 * d + 6 * t * t * 8
    stats = model_stats(model)
    assert stats.uncounted == [] and stats.other_ops["activation"] >= 3 * t * t + 2 * t * s + 6 * t * t


def test_named_inputs_block_the_mask_and_keep_the_roles(rng):
    x, m = keras.Input((5, 8)), keras.Input((5, 5), name="mask")
    h = L.Dense(8, name="h")(x)
    v = L.Dense(6, name="v")(x)
    a = L.MultiHeadAttention(2, 3, name="mha")(query=h, value=v, attention_mask=m)  # all by keyword
    model = keras.Model([x, m], L.Dense(2, name="out")(L.Flatten()(a)))
    trace = trace_model(model)
    use = trace.layer_use(model.get_layer("mha"))
    assert [len(lay) if lay is not None else None for lay in use.in_layouts] == [8, 6, None]
    assert sorted(use.internal) == ["head_dims", "heads"]  # key_dim == value_dim: they go together
    mask = next(g for g in trace.groups() if g.producers == ("input:mask",))
    assert any("'attention_mask'" in r for r in mask.reasons)
    keep = UnitMasks([np.ones(8, bool)], [np.ones(3, bool)], {"heads": np.array([True, False])})
    assert keep.touched(kept=True) and keep.single_input(kept=True) is None  # only a head goes
    keep.internal["heads"][:] = True
    assert not keep.touched(kept=True)


def test_criteria_score_heads_by_their_weights_and_their_output():
    x = keras.Input((6, 8))
    h = L.Dense(8, name="proj")(x)
    a = L.MultiHeadAttention(4, 3, name="mha", use_gate=True)(h, h, use_causal_mask=True)
    model = randomize_weights(keras.Model(x, L.Dense(2, name="out")(L.Flatten()(L.Add()([h, a])))), seed=3)
    trace = trace_model(model)
    heads = next(g for g in trace.groups() if g.producers == ("mha:heads",))
    mha = model.get_layer("mha")
    kernels = [np.asarray(layer.kernel) for layer in (mha.query_dense, mha.key_dense, mha.value_dense)]
    kernels.append(np.asarray(mha._gate_dense.kernel))
    expected = sum(np.abs(k).sum(axis=(0, 2)) for k in kernels) + np.abs(np.asarray(mha.output_dense.kernel)).sum(
        axis=(1, 2)
    )
    view = GroupView(heads, trace, model)
    np.testing.assert_allclose(make_criterion("l1").score(view), expected, rtol=1e-5)
    # activation: the RMS of each head's contribution to the attention output, per position
    data = np.random.default_rng(0).normal(size=(5, 6, 8)).astype("float32")
    activity = view.activations(data)[0]  # (positions, heads)
    probe = keras.Model(model.inputs, mha.output)
    full = probe.predict(data, verbose=0)
    for head in range(4):
        zeroed = zero_channels(model, "mha:heads", [head])
        without = keras.Model(zeroed.inputs, zeroed.get_layer("mha").output).predict(data, verbose=0)
        rms = np.sqrt(np.mean((full - without) ** 2, axis=-1)).reshape(-1)
        np.testing.assert_allclose(activity[:, head], rms, rtol=1e-3, atol=1e-5)
    scores = make_criterion("activation_mean", data=data).score(view)
    np.testing.assert_allclose(scores, np.abs(activity).mean(axis=0), rtol=1e-5)
