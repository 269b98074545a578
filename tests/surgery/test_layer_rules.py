"""Sequence layers (Embedding, SimpleRNN/GRU/LSTM, ConvLSTM, Bidirectional, TimeDistributed),
keras.applications' scale layers, Conv2D(groups=C) as depthwise and raw keras.ops calls:
deleted == zeroed on random inputs with random weights, what each rule refuses, and the
groups through a normalization over the channels (flagged, exact against a reference that
deletes them too, refused under exact_only)."""

import architectures as zoo
import keras
import numpy as np
import pytest
from helpers import apply_jobs, assert_close, predict, random_inputs, random_jobs, randomize_weights

import ridurre
from ridurre.metrics import model_stats
from ridurre.rules import RuleSet
from ridurre.surgery import Surgeon, delete_channels, zero_channels

L = keras.layers


def _groups(model, rules=None):
    return {g.producers: g for g in ridurre.channel_groups(model, rules=rules)}


@pytest.mark.parametrize("build", zoo.EXACT_LAYERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_pruned_output_equals_zeroed_original(build, seed):
    rng = np.random.default_rng(seed)
    model = randomize_weights(build(), seed)
    for fraction in (None, 0.5):  # random groups and channels, then half of every group
        jobs = random_jobs(model, rng, fraction=fraction) or random_jobs(model, rng, fraction=0.3)
        pruned, zeroed = apply_jobs(model, jobs), apply_jobs(model, jobs, zero=True)
        assert pruned.count_params() < model.count_params()
        xs = random_inputs(model, rng)
        assert_close(predict(pruned, xs), predict(zeroed, xs))
    assert all(g.exact for g in ridurre.channel_groups(model))


@pytest.mark.parametrize("build", zoo.EXACT_LAYERS + [zoo.normalized_stream], ids=lambda f: f.__name__)
def test_every_internal_group_is_prunable_and_counted(build):
    model = build()
    groups = ridurre.channel_groups(model)
    blocked = [g.reason for g in groups if not g.prunable and not g.reason.endswith(("model input", "model output"))]
    assert blocked == []
    stats = model_stats(model)
    assert stats.uncounted == [] and stats.total_macs > 0


def test_recurrent_weights_are_sliced_per_gate():
    model = randomize_weights(zoo.recurrent())
    pruned = delete_channels(model, "lstm", [0, 4])
    lstm = pruned.get_layer("lstm")
    assert lstm.units == 5
    assert [tuple(w.shape) for w in lstm.weights] == [(8, 20), (5, 20), (20,)]
    old = model.get_layer("lstm").get_weights()
    keep = np.tile(np.isin(np.arange(7), [0, 4], invert=True), 4)  # every gate block loses 0 and 4
    np.testing.assert_array_equal(lstm.get_weights()[0], old[0][:, keep])
    np.testing.assert_array_equal(lstm.get_weights()[1], old[1][[1, 2, 3, 5, 6]][:, keep])
    assert pruned.get_layer("gru").get_weights()[0].shape == (5, 18)
    pruned = delete_channels(model, "gru", [1])
    gru = pruned.get_layer("gru")
    assert [tuple(w.shape) for w in gru.weights] == [(7, 15), (5, 15), (2, 15)]  # reset_after: 2 bias rows
    assert [tuple(w.shape) for w in pruned.get_layer("gru_v1").weights] == [(5, 15), (5, 15), (15,)]


def test_bidirectional_removes_a_unit_from_both_directions(rng):
    model = randomize_weights(zoo.bidirectional())
    groups = _groups(model)
    assert groups[("bi_concat",)].size == 5  # 10 output positions: forward units, then backward units
    pruned = delete_channels(model, "bi_concat", [1, 6])  # unit 1 forward, unit 1 backward: one channel
    bi = pruned.get_layer("bi_concat")
    assert bi.forward_layer.units == bi.backward_layer.units == 4 and bi.output.shape[-1] == 8
    assert pruned.get_layer("bi_sum").forward_layer.cell.kernel.shape == (8, 12)
    pruned = delete_channels(model, "emb", [0, 7])
    assert pruned.get_layer("emb").embeddings.shape == (20, 6) and pruned.get_layer("emb").output_dim == 6
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zero_channels(model, "emb", [0, 7]), xs))


def test_time_distributed_slices_the_wrapped_layer():
    model = randomize_weights(zoo.time_distributed())
    pruned = delete_channels(model, "td_conv", [0, 2])
    assert pruned.get_layer("td_conv").layer.filters == 3
    assert pruned.get_layer("td_bn").layer.gamma.shape == (3,)
    assert pruned.get_layer("td_dense").layer.kernel.shape == (3, 6)


def test_depthwise_convolution_written_as_groups():
    # ConvNeXt's depthwise convolutions are Conv2D(filters=C, groups=C): delete_channels(model,
    # "..._depthwise_conv", range(48)) on 192 channels used to say "every channel of the group"
    x = keras.Input((6, 6, 3))
    h = L.Conv2D(16, 1, name="expand")(x)
    h = L.Conv2D(16, 7, padding="same", groups=16, name="depthwise_conv")(h)
    h = L.BatchNormalization(name="bn")(h)
    out = L.Dense(2, name="out")(L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="project")(h)))
    model = randomize_weights(keras.Model(x, out))
    assert _groups(model)[("expand",)].size == 16
    pruned = delete_channels(model, "depthwise_conv", range(4))
    dw = pruned.get_layer("depthwise_conv")
    assert (dw.filters, dw.groups, tuple(dw.kernel.shape)) == (12, 12, (7, 7, 1, 12))
    assert pruned.get_layer("expand").filters == 12 and pruned.get_layer("project").kernel.shape == (1, 1, 12, 4)
    xs = random_inputs(model, np.random.default_rng(0))
    assert_close(predict(pruned, xs), predict(zero_channels(model, "depthwise_conv", range(4)), xs))


def test_scale_layers_of_keras_applications():
    model = randomize_weights(zoo.scale_layers())
    group = _groups(model)[("stem", "pw", "branch")]
    assert {"ls", "dw", "dw2", "bn"} <= set(group.carriers) | set(group.consumers)
    pruned = delete_channels(model, "stem", [1, 5])
    assert pruned.get_layer("ls").projection_dim == 6 and pruned.get_layer("ls").weights[0].shape == (6,)
    assert pruned.get_layer("dw2").filters == 12 and pruned.get_layer("dw2").groups == 6


def test_rescaling_per_channel_is_sliced_with_the_channels(tmp_path):
    x = keras.Input((5, 5, 2))
    h = L.Conv2D(4, 3, padding="same", name="stem")(x)
    h = L.Rescaling(np.array([0.5, 1.0, 1.5, 2.0], "float32"), offset=np.arange(4, dtype="float32"), name="rs")(h)
    model = randomize_weights(keras.Model(x, L.Conv2D(3, 1, name="head")(h)))
    pruned = delete_channels(model, "stem", [1, 2])
    assert np.asarray(pruned.get_layer("rs").offset).tolist() == [0.0, 3.0]
    assert np.asarray(pruned.get_layer("rs").scale).tolist() == [0.5, 2.0]
    xs = random_inputs(model, np.random.default_rng(0))
    assert_close(predict(pruned, xs), predict(zero_channels(model, "stem", [1, 2]), xs))
    pruned.save(tmp_path / "p.keras")
    assert_close(predict(keras.saving.load_model(tmp_path / "p.keras"), xs), predict(pruned, xs))


def test_raw_ops_split_on_the_channel_axis():
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(8, 1, name="c")(x)
    a, b = keras.ops.split(h, [3], axis=-1)
    out = L.Dense(2, name="out")(
        keras.ops.concatenate([L.Conv2D(2, 1, name="ca")(a), L.Conv2D(2, 1, name="cb")(b)], axis=-1)
    )
    model = randomize_weights(keras.Model(x, out))
    pruned = delete_channels(model, "c", [0, 4, 7])
    assert pruned.get_layer("ca").kernel.shape == (1, 1, 2, 2) and pruned.get_layer("cb").kernel.shape == (1, 1, 3, 2)
    xs = random_inputs(model, np.random.default_rng(2))
    assert_close(predict(pruned, xs), predict(zero_channels(model, "c", [0, 4, 7]), xs))
    with pytest.raises(ValueError, match="empty section 0"):
        delete_channels(model, "c", [0, 1, 2])


def test_raw_reshape_that_keeps_the_channels_last():
    """MiT's ``ops.reshape(x, (-1, H * W, C))``: channels pass through, the target follows them."""
    x = keras.Input((4, 4, 2))
    h = L.Conv2D(8, 1, name="c")(x)
    flat = keras.ops.reshape(h, (-1, 16, 8))
    out = L.Dense(2, name="out")(L.GlobalAveragePooling1D()(L.Dense(5, name="d")(flat)))
    model = randomize_weights(keras.Model(x, out))
    assert _groups(model)[("c",)].prunable
    pruned = delete_channels(model, "c", [0, 4, 7])
    assert pruned.get_layer("d").kernel.shape == (5, 5)
    xs = random_inputs(model, np.random.default_rng(3))
    assert_close(predict(pruned, xs), predict(zero_channels(model, "c", [0, 4, 7]), xs))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda h: L.LSTM(4, return_state=True)(h)[0], "return_state"),
        (lambda h: L.Bidirectional(L.GRU(4), merge_mode=None)(h)[0], "merge_mode=None"),
        (lambda h: L.TimeDistributed(L.Lambda(lambda t: t * 2))(h), "wrapped Lambda"),
        (lambda h: h[..., :3], "indexes the channel axis"),
        (lambda h: keras.ops.pad(h, [[0, 0], [0, 0], [0, 1]]), "pads the channel axis"),
        (lambda h: keras.ops.mean(h, axis=-1, keepdims=True) * h, "reduces the channel axis"),
        (lambda h: keras.ops.split(h, 2, axis=2)[0], "axis=-1"),
        (lambda h: keras.ops.log(h), "no rule for Log"),
        (lambda h: keras.ops.transpose(h, (0, 2, 1)), "moves the channel axis"),
        (lambda h: keras.ops.clip(h, np.zeros(6, "float32"), 1.0), "array"),
        (lambda h: keras.ops.reshape(h, (-1, 5, 2, 3)), "does not keep"),
        (lambda h: keras.ops.reshape(h, (2, 5, 6)), "keeps the batch axis"),
        (lambda h: keras.ops.repeat(h, 2, axis=-1), "repeats the channels"),
    ],
    ids=[
        "return_state",
        "merge_none",
        "td_lambda",
        "getitem",
        "pad",
        "mean",
        "split_axis",
        "log",
        "transpose",
        "clip",
        "reshape_heads",
        "reshape_batch",
        "repeat_channels",
    ],
)
def test_what_the_rules_refuse(make, reason):
    x = keras.Input((5, 3))
    h = L.Dense(6, name="h")(x)
    out = L.Dense(2, name="out")(L.Flatten()(make(h)))
    group = _groups(keras.Model(x, out))[("h",)]
    assert not group.prunable and reason in group.reason


def test_criteria_score_every_output_of_a_repeated_channel():
    from ridurre.criteria import GroupView
    from ridurre.graph import trace_model

    for model, producer, shape in (
        (zoo.grouped(), "g1", (3, 4 * 2 * 9)),  # 4 groups repeat each of 3 channels; 2 inputs x 3x3 per filter
        (zoo.bidirectional(), "bi_concat", (5, 2 * 4 * (6 + 5))),  # both directions: 4 gates x (inputs + units)
    ):
        trace = trace_model(model)
        group = next(g for g in trace.groups() if g.producers == (producer,))
        assert [m.shape for m in GroupView(group, trace, model).weight_matrices()] == [shape]


def test_macs_of_the_sequence_layers():
    rows = {row.name: row.macs for row in model_stats(zoo.recurrent()).layers}
    steps = 6
    assert rows["lstm"] == steps * 4 * 7 * (8 + 7)
    assert rows["gru"] == steps * 3 * 6 * (7 + 6)
    assert rows["gru_v1"] == steps * 3 * 5 * (6 + 5)
    assert rows["rnn"] == steps * 4 * (5 + 4)
    rows = {row.name: row.macs for row in model_stats(zoo.bidirectional()).layers}
    assert rows["emb"] == 0 and rows["bi_concat"] == 2 * 5 * 4 * 5 * (6 + 5)  # 5 steps after a valid Conv1D
    rows = {row.name: row.macs for row in model_stats(zoo.time_distributed()).layers}
    assert rows["td_conv"] == 4 * (4 * 4 * 5 * 9 * 2) and rows["td_dense"] == 4 * 5 * 6
    rows = {row.name: row.macs for row in model_stats(zoo.conv_lstm()).layers}
    assert rows["cl1"] == 3 * 36 * 4 * 4 * 9 * (2 + 4) and rows["cl2"] == 3 * 16 * 4 * 5 * 9 * (4 + 5)
    pruned = delete_channels(zoo.recurrent(), "lstm", [0, 1, 2])
    assert {row.name: row.macs for row in model_stats(pruned).layers}["lstm"] == steps * 4 * 4 * (8 + 4)


def test_normalization_over_the_channels_is_flagged_not_exact(rng):
    model = randomize_weights(zoo.normalized_stream())
    groups = _groups(model)
    stream, inner, gated = groups[("proj", "ffn2")], groups[("ffn1",)], groups[("ffn3",)]
    assert stream.prunable and not stream.exact and stream.inexact_layers == ("ln", "rms")
    assert inner.exact and not gated.exact and gated.inexact_layers == ("unit",)
    surgeon = Surgeon(model)
    for producer, channels in (("proj", [1, 6]), ("ffn1", [0, 3, 9]), ("ffn3", [2])):
        surgeon.add_job("delete_channels", producer, channels=channels)
    assert {g.producers for g in surgeon.inexact_groups()} == {("proj", "ffn2"), ("ffn3",)}
    pruned = surgeon.operate()
    xs = random_inputs(model, rng)
    # zeroing changes the normalizations' statistics: not the pruned model ...
    assert not np.allclose(predict(pruned, xs), predict(surgeon.operate(zero=True), xs), atol=1e-4)
    # ... but deleting those channels in the reference too makes the rest an exact check
    assert_close(predict(pruned, xs), predict(surgeon.operate(zero=True, delete_inexact=True), xs))


def test_exact_only_refuses_normalized_groups():
    model = zoo.normalized_stream()
    strict = RuleSet(exact_only=True)
    groups = _groups(model, rules=strict)
    assert groups[("ffn1",)].prunable
    for producers in (("proj", "ffn2"), ("ffn3",)):
        assert not groups[producers].prunable and "exact_only=True" in groups[producers].reason
    with pytest.raises(ValueError, match="exact_only"):
        delete_channels(model, "proj", [0], rules=strict)
    assert delete_channels(model, "ffn1", [0], rules=strict).get_layer("ffn1").units == 15


def test_the_cost_of_a_plan_through_raw_ops():
    """A squeeze-and-excite written with ``ops.mean`` (MobileNetV3 in keras-hub): planning the
    shapes only (what the loop's limits do) handles operations, which have no weights."""
    from ridurre.graph import trace_model
    from ridurre.surgery.rebuild import plan_layers

    x = keras.Input((6, 6, 3))
    h = L.Conv2D(8, 1, name="c")(x)
    h = h * keras.ops.sigmoid(L.Conv2D(8, 1, name="excite")(keras.ops.mean(h, axis=(1, 2), keepdims=True)))
    model = keras.Model(x, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(h)))
    trace = trace_model(model)
    group = next(g for g in trace.groups() if "c" in g.producers)
    plans = plan_layers(trace, group.roots[[0, 3]], shapes_only=True)
    assert plans[id(model.get_layer("c"))][1]["kernel"].shape == (1, 1, 3, 6)
