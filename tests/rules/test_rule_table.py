"""One layer table: a rule taught once serves tracing, surgery, MACs, criteria and mask mode;
rules can be given per call, and subclasses of built-in layers are matched only when asked."""

import os

import keras
import numpy as np
import pytest
from helpers import randomize_weights

import ridurre
from ridurre.metrics import model_stats
from ridurre.rules import RULES, PassThroughRule, RuleSet, get_rule, register_rule, registered, rule_for_class_name
from ridurre.rules.conv import ConvRule
from ridurre.scorefile import num_filters, read_model_file, zero_filters
from ridurre.surgery import delete_channels, zero_channels


@keras.saving.register_keras_serializable("ridurre_tests")
class ChannelScale(keras.layers.Layer):
    """A per-channel scale (LayerScale-like): ridurre knows nothing about it."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale


class MyConv(keras.layers.Conv2D):
    """A user's subclass of Conv2D (same weights and config)."""


SCALE_RULE = PassThroughRule(per_channel_weights=("scale",), zero_to={"scale": 0.0}, saved_weights=(("scale", None),))


def _model(layer_cls=keras.layers.Conv2D):
    x = keras.Input((6, 6, 2))
    h = layer_cls(5, 3, padding="same", name="conv")(x)
    h = ChannelScale(name="scale")(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(h))
    return randomize_weights(keras.Model(x, out), seed=4)


def _close(a, b, xs):
    return np.allclose(a.predict(xs, verbose=0), b.predict(xs, verbose=0), atol=1e-5)


def test_rules_given_for_one_call_do_not_leak():
    model = _model()
    conv = next(g for g in ridurre.channel_groups(model) if "conv" in g.producers)
    assert not conv.prunable and "no rule for ChannelScale" in conv.reason
    rules = {ChannelScale: SCALE_RULE}
    conv = next(g for g in ridurre.channel_groups(model, rules=rules) if "conv" in g.producers)
    assert conv.prunable and conv.carriers == ("scale",)
    assert get_rule(model.get_layer("scale")) is None  # nothing registered globally
    xs = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    pruned = delete_channels(model, "conv", [1, 3], rules=rules)
    assert pruned.get_layer("scale").scale.shape == (3,)
    assert _close(pruned, zero_channels(model, "conv", [1, 3], rules=rules), xs)
    with pytest.raises(ValueError, match="no rule for ChannelScale"):
        delete_channels(model, "conv", [1])


def test_registered_for_a_block_only():
    with registered(ChannelScale, SCALE_RULE):
        assert get_rule(ChannelScale()) is SCALE_RULE
    assert get_rule(ChannelScale()) is None
    with pytest.raises(TypeError, match="LayerRule"):
        register_rule(ChannelScale, object())
    with pytest.raises(TypeError, match="RuleSet"):
        ridurre.channel_groups(_model(), rules=[SCALE_RULE])


def test_subclasses_of_built_in_layers_are_matched_on_request():
    model = _model(MyConv)
    rules = {ChannelScale: SCALE_RULE}
    conv = next(g for g in ridurre.channel_groups(model, rules=rules) if "conv" in g.producers)
    assert not conv.prunable and "no rule for MyConv" in conv.reason
    for subclass_rules in (RuleSet(rules, subclasses=True), RuleSet({**rules, MyConv: ConvRule("filters")})):
        conv = next(g for g in ridurre.channel_groups(model, rules=subclass_rules) if "conv" in g.producers)
        assert conv.prunable
    xs = np.random.default_rng(1).normal(size=(4, 6, 6, 2)).astype("float32")
    subclass_rules = RuleSet(rules, subclasses=True)
    pruned = delete_channels(model, "conv", [0], rules=subclass_rules)
    assert type(pruned.get_layer("conv")) is MyConv and pruned.get_layer("conv").filters == 4
    assert _close(pruned, zero_channels(model, "conv", [0], rules=subclass_rules), xs)


def test_a_taught_layer_is_counted_by_the_metrics():
    class ScaleWithCost(PassThroughRule):
        def macs(self, layer, in_shapes, out_shapes):
            return int(np.prod(out_shapes[0][1:]))  # one multiply per element

    model = _model()
    stats = model_stats(model)
    assert stats.uncounted == ["scale"]
    with registered(ChannelScale, ScaleWithCost(per_channel_weights=("scale",))):
        stats = model_stats(model)
    assert stats.uncounted == []
    assert {row.name: row.macs for row in stats.layers}["scale"] == 6 * 6 * 5
    assert model_stats(model, rules={ChannelScale: ScaleWithCost()}).uncounted == []


class FilterScaleRule(PassThroughRule):
    """Mask mode can zero the 'filters' of a taught layer too: its rule says how many it has."""

    def filters(self, config, weights):
        return len(weights["scale"])


def test_mask_mode_reads_a_taught_layer_through_its_rule(tmp_path):
    model = _model()
    path = os.path.join(tmp_path, "m.keras")
    model.save(path)
    rule = FilterScaleRule(per_channel_weights=("scale",), zero_to={"scale": 0.0}, saved_weights=(("scale", None),))
    assert read_model_file(path).layer("scale").weight_names == ("0",)  # unknown layout: by position
    with pytest.raises(ValueError, match="no filters"):
        num_filters("ridurre_tests>ChannelScale", {"scale": np.ones(5)})
    with registered(ChannelScale, rule):
        assert rule_for_class_name("ridurre_tests>ChannelScale") is rule
        info = read_model_file(path).layer("scale")
        assert info.weight_names == ("scale",)
        assert num_filters(info.class_name, {"scale": np.ones(5)}) == 5
        zeroed = zero_filters(info.class_name, {"scale": np.ones(5)}, [0, 2])
    np.testing.assert_array_equal(zeroed["scale"], [0, 1, 0, 1, 1])
    assert ChannelScale not in RULES._rules


def test_builtin_rules_are_found_by_class_name_without_keras_objects():
    for name, rule_type in (
        ("Conv2D", "ConvRule"),
        ("Dense", "DenseRule"),
        ("BatchNormalization", "BatchNormRule"),
        ("DepthwiseConv2D", "DepthwiseRule"),
        ("SeparableConv1D", "SeparableRule"),
    ):
        assert type(rule_for_class_name(name)).__name__ == rule_type
    assert rule_for_class_name("Lambda") is None
    assert rule_for_class_name("BatchNormalization").weight_names({"scale": False}) == (
        "beta",
        "moving_mean",
        "moving_variance",
    )
