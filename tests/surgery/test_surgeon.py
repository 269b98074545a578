"""Property and unit tests of the channel surgeon: delete_channels == zero_channels."""

import os

import architectures as zoo
import keras
import numpy as np
import pytest
from helpers import apply_jobs, assert_close, predict, random_inputs, random_jobs, randomize_weights

import ridurre
from ridurre.surgery import Surgeon, delete_channels, delete_layer, insert_layer, replace_layer, zero_channels


@pytest.mark.parametrize("build", zoo.EXACT, ids=lambda f: f.__name__)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_output_equals_zeroed_original(build, seed):
    rng = np.random.default_rng(seed)
    model = randomize_weights(build(), seed)
    jobs = random_jobs(model, rng)
    if not jobs:
        jobs = random_jobs(model, rng, fraction=0.3)
    pruned, zeroed = apply_jobs(model, jobs), apply_jobs(model, jobs, zero=True)
    assert pruned.count_params() < model.count_params()
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zeroed, xs))


@pytest.mark.parametrize("build", zoo.EXACT, ids=lambda f: f.__name__)
def test_pruning_every_group_at_once(build, rng):
    model = randomize_weights(build(), 7)
    jobs = random_jobs(model, rng, fraction=0.5)
    pruned, zeroed = apply_jobs(model, jobs), apply_jobs(model, jobs, zero=True)
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zeroed, xs))


def test_layer_normalization_changes_statistics_but_structure_holds(rng):
    model = randomize_weights(zoo.mlp())
    pruned = delete_channels(model, "h1", [0, 3, 5])
    assert pruned.get_layer("h1").units == 13
    assert pruned.get_layer("ln").gamma.shape == (13,)
    assert pruned.get_layer("h2").kernel.shape == (13, 10)
    assert np.isfinite(predict(pruned, random_inputs(model, rng))).all()


def test_channel_groups_couple_residual_branches():
    groups = {g.producers: g for g in ridurre.channel_groups(zoo.residual())}
    residual = groups[("stem", "r0b", "r1b")]
    assert residual.size == 8 and residual.prunable
    assert set(residual.carriers) == {"stem_bn"}
    assert {"r0a", "r1a", "down", "r2"} <= set(residual.consumers)
    assert groups[("down", "r2", "gate", "avg", "mx", "mn")].size == 12


def test_channel_groups_report_why_not_prunable():
    x = keras.Input((6,))
    h = keras.layers.Dense(4, name="h")(x)
    h = keras.layers.Lambda(lambda t: t * 2, name="double")(h)
    model = keras.Model(x, keras.layers.Dense(2, name="out")(h))
    reasons = {g.producers: g.reason for g in ridurre.channel_groups(model)}
    assert [r for p, r in reasons.items() if p[0].startswith("input:")] == ["carried by a model input"]
    assert "double" in reasons[("h",)] and "Lambda" in reasons[("h",)]
    with pytest.raises(ValueError, match="double"):
        delete_channels(model, "h", [0])
    with pytest.raises(ValueError, match="model output"):
        delete_channels(model, "out", [0])


def test_grouped_convolution_keeps_group_structure():
    model = randomize_weights(zoo.grouped())
    pruned = delete_channels(model, "g1", [1])  # one channel of every one of the 4 groups
    g1 = pruned.get_layer("g1")
    assert g1.filters == 8 and g1.groups == 4
    assert pruned.get_layer("g2").kernel.shape == (1, 1, 4, 6)
    # c0's 8 channels feed g1's 4 groups of 2: channel 0 of every group goes together
    pruned = delete_channels(model, "c0", [0])
    assert pruned.get_layer("c0").filters == 4 and pruned.get_layer("g1").kernel.shape == (3, 3, 1, 12)
    assert [g.size for g in ridurre.channel_groups(model) if g.producers == ("c0",)] == [2]


def test_depthwise_multiplier_carries_blocks():
    model = randomize_weights(zoo.depthwise(3))
    pruned = delete_channels(model, "expand", [2])
    assert pruned.get_layer("dw").kernel.shape == (3, 3, 5, 3)
    assert pruned.get_layer("bn1").gamma.shape == (15,)
    assert pruned.get_layer("sep").pointwise_kernel.shape == (1, 1, 30, 8)


def test_nested_model_is_rebuilt_nested(rng):
    model = randomize_weights(zoo.nested())
    pruned = delete_channels(model, "base/base_conv2", [0, 9])
    assert isinstance(pruned.get_layer("base"), keras.Model)
    assert pruned.get_layer("base").get_layer("base_conv2").filters == 8
    assert pruned.get_layer("adapter").kernel.shape == (1, 1, 8, 5)
    pruned = delete_channels(model, "head_hidden", [1])  # a layer inside a nested Sequential
    assert pruned.get_layer("head").get_layer("head_hidden").units == 6


def test_a_nested_model_keeps_the_shape_of_an_input_without_a_channel_axis(rng):
    """Token ids (batch, sequence) have no channel axis: the rebuilt nested model still takes any
    sequence length (it was rebuilt for a sequence of one)."""
    ids, features = keras.Input((None,), dtype="int32"), keras.Input((None, 4))
    mask = keras.ops.expand_dims(keras.ops.cast(ids, "float32"), -1)
    inner = keras.Model([ids, features], keras.layers.Dense(6, name="inner_dense")(features) * mask, name="inner")
    outer_ids, outer_features = keras.Input((None,), dtype="int32"), keras.Input((None, 4))
    h = inner([outer_ids, keras.layers.Dense(4, name="embed")(outer_features)])
    model = randomize_weights(keras.Model([outer_ids, outer_features], keras.layers.Dense(2, name="head")(h)))
    pruned = delete_channels(model, "embed", [1])
    assert [tuple(t.shape) for t in pruned.get_layer("inner").inputs] == [(None, None), (None, None, 3)]
    xs = [np.ones((2, 5), "int32"), rng.normal(size=(2, 5, 4)).astype("float32")]
    reference = zero_channels(model, "embed", [1])
    np.testing.assert_allclose(predict(pruned, xs), predict(reference, xs), rtol=1e-5, atol=1e-5)


def test_shared_layers_keep_the_same_channels_in_every_call():
    groups = {g.producers: g for g in ridurre.channel_groups(zoo.shared())}
    assert ("shared_again",) in groups or any("shared_again" in p for p in groups)
    model = randomize_weights(zoo.shared())
    pruned = delete_channels(model, "shared_conv", [2])
    assert pruned.get_layer("shared_conv").filters == 5
    assert pruned.get_layer("shared_bn").gamma.shape == (5,)
    assert pruned.get_layer("mix").kernel.shape[2] in (9, 10)


def test_bad_input_is_rejected_with_the_layer_named():
    model = zoo.sequential_cnn()
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        delete_channels(model, "nope", [0])
    with pytest.raises(ValueError, match="out of range for layer 'c1'"):
        delete_channels(model, "c1", [8])
    with pytest.raises(ValueError, match=r"\[1\] are given more than once"):
        delete_channels(model, "c1", [1, 1])
    with pytest.raises(ValueError, match="every channel"):
        delete_channels(model, "c1", list(range(8)))
    with pytest.raises(TypeError, match="must be ints"):
        delete_channels(model, "c1", [0.5])
    with pytest.raises(TypeError, match="sequence of ints"):
        delete_channels(model, "c1", 3)
    with pytest.raises(ValueError, match="job must be one of"):
        Surgeon(model).add_job("explode", "c1")


def test_subclassed_model_gets_a_type_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 4)))
    with pytest.raises(TypeError, match="Functional or Sequential"):
        delete_channels(net, "dense", [0])


def test_the_input_model_is_never_changed(rng):
    model = randomize_weights(zoo.residual())
    config = model.get_config()
    weights = [w.copy() for w in model.get_weights()]
    xs = random_inputs(model, rng)
    before = predict(model, xs)
    delete_channels(model, "stem", [0, 1])
    zero_channels(model, "stem", [0, 1])
    assert model.get_config() == config
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(before, predict(model, xs))


def test_jobs_on_the_same_group_delete_the_union():
    model = randomize_weights(zoo.residual())
    surgeon = Surgeon(model)
    surgeon.add_job("delete_channels", "stem", channels=[0, 1])
    surgeon.add_job("delete_channels", "r1b", channels=[1, 2])
    surgeon.add_job("delete_channels", "down", channels=[0])
    pruned = surgeon.operate()
    assert pruned.get_layer("stem").filters == 5
    assert pruned.get_layer("r0b").filters == 5
    assert pruned.get_layer("down").filters == 11


def test_empty_channel_list_returns_an_equal_copy(rng):
    model = randomize_weights(zoo.sequential_cnn())
    copy = delete_channels(model, "c1", [])
    assert copy is not model
    xs = random_inputs(model, rng)
    np.testing.assert_allclose(predict(copy, xs), predict(model, xs), rtol=1e-6)


def test_structural_jobs(rng):
    model = randomize_weights(zoo.residual())
    xs = random_inputs(model, rng)
    reference = predict(model, xs)
    identity = delete_layer(insert_layer(model, "r0b", keras.layers.Identity(name="noop")), "noop")
    assert_close(predict(identity, xs), reference)
    relu6 = replace_layer(model, "stem_bn", keras.layers.Identity(name="no_bn"))
    assert "stem_bn" not in [l.name for l in relu6.layers] and "no_bn" in [l.name for l in relu6.layers]
    with pytest.raises(ValueError, match="output shape"):
        delete_layer(model, "down")
    # structural and channel jobs in one rebuild
    surgeon = Surgeon(model)
    surgeon.add_job("insert_layer", "r0a", new_layer=keras.layers.BatchNormalization(name="new_bn"))
    surgeon.add_job("delete_channels", "stem", channels=[3])
    both = surgeon.operate()
    assert both.get_layer("new_bn").gamma.shape == (7,)
    seq = zoo.sequential_cnn()
    assert "dropout" not in [l.name for l in delete_layer(seq, seq.layers[-2]).layers]


def test_group_jobs_on_a_given_trace(rng):
    """The loop's path: the trace it made and group channels, no layer names; the same result as
    layer jobs, with or without layer edits in the same rebuild."""
    model = randomize_weights(zoo.residual())
    xs = random_inputs(model, rng)
    trace = ridurre.graph.trace_model(model)
    group = next(g for g in trace.groups() if "stem" in g.producers)
    surgeon = Surgeon(model, trace=trace)
    assert surgeon.trace is trace
    surgeon.delete_group_channels(group, [1, 4])
    by_group = surgeon.operate()
    zeroed = surgeon.operate(zero=True)
    positions = sorted(int(p) for j in (1, 4) for p in group.channels_of("stem")[j])
    by_name = delete_channels(model, "stem", positions)
    assert_close(predict(by_group, xs), predict(by_name, xs))
    assert_close(predict(by_group, xs), predict(zeroed, xs))
    edited = Surgeon(model, trace=trace)
    edited.delete_group_channels(group, [1, 4])
    edited.add_job("insert_layer", "r0a", new_layer=keras.layers.Identity(name="noop"))
    both = edited.operate()
    assert "noop" in [l.name for l in both.layers] and both.get_layer("stem").filters == 6
    assert_close(predict(both, xs), predict(by_name, xs))
    with pytest.raises(ValueError, match="not a group of this surgeon's trace"):
        Surgeon(model).delete_group_channels(group, [0])
    with pytest.raises(ValueError, match="out of range"):
        Surgeon(model, trace=trace).delete_group_channels(group, [8])
    head = next(g for g in trace.groups() if not g.prunable and "out" in g.producers)
    with pytest.raises(ValueError, match="reaches a model output"):
        Surgeon(model, trace=trace).delete_group_channels(head, [0])
    with pytest.raises(ValueError, match="Trace of this very model"):
        Surgeon(zoo.residual(), trace=trace)


def test_pruned_model_saves_and_loads(tmp_path, rng):
    model = randomize_weights(zoo.residual())
    pruned = delete_channels(model, "stem", [1, 2, 3])
    path = os.path.join(tmp_path, "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    xs = random_inputs(model, rng)
    np.testing.assert_allclose(predict(loaded, xs), predict(pruned, xs), rtol=1e-6)


def test_explicit_channel_axis_counts_the_batch_dimension(rng):
    # keras.applications writes BatchNormalization(axis=3) and Concatenate(axis=3) for NHWC tensors
    x = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(x)
    b = keras.layers.Conv2D(5, 1, name="b")(x)
    h = keras.layers.Concatenate(axis=3, name="cat")([a, b])
    h = keras.layers.BatchNormalization(axis=3, name="bn")(h)
    out = keras.layers.Dense(2, name="out")(keras.layers.GlobalAveragePooling2D()(h))
    model = randomize_weights(keras.Model(x, out))
    groups = {g.producers: g for g in ridurre.channel_groups(model)}
    assert groups[("a",)].prunable and groups[("a",)].size == 4 and groups[("b",)].size == 5
    pruned, zeroed = delete_channels(model, "b", [1, 3]), zero_channels(model, "b", [1, 3])
    assert pruned.get_layer("bn").gamma.shape == (7,)
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zeroed, xs))


def test_raw_keras_ops_in_the_graph(rng):
    # hard-swish as keras.applications.MobileNetV3 writes it: x * relu6(x + 3) / 6
    x = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", name="c")(x)
    h = h * keras.layers.ReLU(6.0)(h + 3.0) * (1.0 / 6.0)
    scaled = keras.layers.Conv2D(4, 1, name="d")(h) * np.arange(4, dtype="float32")  # a per-channel constant
    out = keras.layers.Dense(2, name="out")(
        keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([h, scaled]))
    )
    model = randomize_weights(keras.Model(x, out))
    groups = {g.producers: g for g in ridurre.channel_groups(model)}
    assert groups[("c",)].prunable
    assert not groups[("d",)].prunable and "constant array" in groups[("d",)].reason
    pruned, zeroed = delete_channels(model, "c", [0, 5]), zero_channels(model, "c", [0, 5])
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zeroed, xs))


def test_normalization_statistics_given_to_the_constructor_are_sliced(rng):
    # found by the fuzzer (tests/surgery/test_fuzz.py): the rebuilt layer broadcast the original 2
    # statistics onto 1 channel
    x = keras.Input((4, 2))
    h = keras.layers.Conv1D(3, 1, name="c")(x)
    h = keras.layers.Normalization(mean=np.array([0.5, 1.0, -1.0]), variance=np.array([1.0, 2.0, 0.5]), name="n")(h)
    model = randomize_weights(keras.Model(x, keras.layers.Dense(3)(keras.layers.Flatten()(h))))
    pruned, zeroed = delete_channels(model, "c", [1]), zero_channels(model, "c", [1])
    assert pruned.get_layer("n").get_config()["mean"] == [0.5, -1.0]
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zeroed, xs))


def test_a_layer_that_would_lose_every_channel_is_refused():
    # found by the fuzzer: a concatenation added to a convolution couples the channels of both sides of
    # the concatenation into one group; deleting every channel of one side built Conv2D(filters=0)
    x = keras.Input((4, 4, 2))
    a = keras.layers.Conv2D(3, 1, name="a")(x)
    b = keras.layers.Conv2D(2, 1, name="b")(x)
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Add()([h, keras.layers.Conv2D(5, 1, name="c")(x)])
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    assert [g.size for g in ridurre.channel_groups(model) if "c" in g.producers] == [5]
    with pytest.raises(ValueError, match="would leave layer 'a' with no output channels"):
        delete_channels(model, "c", [0, 1, 2])
    assert delete_channels(model, "c", [0, 1]).get_layer("a").filters == 1


@pytest.mark.parametrize("build", [zoo.residual, zoo.squeeze_excite, zoo.shared], ids=lambda f: f.__name__)
def test_the_rebuild_holds_one_layer_of_planned_weights_at_a_time(build, rng, monkeypatch):
    """A functional model's layers are planned one by one as they are rebuilt, each layer's
    weights set (and dropped) before the next layer is planned: never a whole pruned copy.
    (A Sequential model's are all planned before any is built: Keras clones every layer of a
    Sequential model before calling the first.)"""
    import sys

    rebuild_module = sys.modules["ridurre.surgery.rebuild"]
    outstanding, most, planned = [0], [0], []
    plan, set_weights = rebuild_module.LayerPlans._plan, rebuild_module.set_layer_weights

    def counting_plan(self, use):
        config, weights = plan(self, use)
        if weights and config != "model":  # a nested model's plan is its inputs' widths
            planned.append(use.layer.name)
            outstanding[0] += 1
            most[0] = max(most[0], outstanding[0])
        return config, weights

    def counting_set(layer, weights, take=False):
        outstanding[0] -= 1
        set_weights(layer, weights, take=take)

    monkeypatch.setattr(rebuild_module.LayerPlans, "_plan", counting_plan)
    monkeypatch.setattr(rebuild_module, "set_layer_weights", counting_set)
    model = randomize_weights(build(), 3)
    jobs = random_jobs(model, rng, fraction=0.5)
    pruned, zeroed = apply_jobs(model, jobs), apply_jobs(model, jobs, zero=True)
    layers = [layer for _, layer in ridurre.graph.all_layers(model)]
    weighted = [layer for layer in layers if layer.weights and not isinstance(layer, keras.Model)]
    assert len(planned) == 2 * len(weighted)  # each layer planned once per surgery
    assert most[0] == 1 and outstanding[0] == 0
    xs = random_inputs(model, rng)
    assert_close(predict(pruned, xs), predict(zeroed, xs))


def test_the_pruned_model_shares_no_memory_with_the_original(rng):
    """The surgery reads the original's variables without copying them and hands the sliced
    arrays over to the new variables: writing to either model afterwards leaves the other as it was."""
    model = randomize_weights(zoo.residual(), 4)
    xs = random_inputs(model, rng)
    jobs = random_jobs(model, rng, fraction=0.3)
    pruned, zeroed = apply_jobs(model, jobs), apply_jobs(model, jobs, zero=True)
    before, pruned_before = predict(model, xs), predict(pruned, xs)
    for _, layer in ridurre.graph.all_layers(model):
        for variable in layer.weights:
            variable.assign(np.zeros(variable.shape, variable.dtype))
    assert_close(predict(pruned, xs), pruned_before)
    assert_close(predict(zeroed, xs), pruned_before)
    for _, layer in ridurre.graph.all_layers(pruned):
        for variable in layer.weights:
            variable.assign(np.full(variable.shape, 0.5, variable.dtype))
    assert_close(predict(zeroed, xs), pruned_before)
    assert not np.allclose(predict(pruned, xs), pruned_before)
    assert before.shape == pruned_before.shape
