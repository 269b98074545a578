"""Rules of keras-hub's own layers: deleted == zeroed on small models built around each layer
(structure only through the RMS norms, whose statistics change), and the table matches the
classes of the installed keras-hub."""

import importlib

import numpy as np
import pytest
from helpers import randomize_weights

pytest.importorskip("keras_hub")

import keras  # noqa: E402

from ridurre.graph import channel_groups  # noqa: E402
from ridurre.rules import KERAS_HUB_RULES, get_rule  # noqa: E402
from ridurre.rules.keras_hub import DERIVED_CONFIG_KEYS  # noqa: E402
from ridurre.surgery import delete_channels, zero_channels  # noqa: E402


def _hub(path):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _class(suffix):
    return _hub(next(p for p in KERAS_HUB_RULES if p.endswith(suffix)))


@pytest.mark.parametrize("path", sorted(set(KERAS_HUB_RULES) | set(DERIVED_CONFIG_KEYS)))
def test_every_class_of_the_table_exists_in_keras_hub(path):
    cls = _hub(path)
    if path in KERAS_HUB_RULES:
        assert get_rule(cls.__new__(cls)) is KERAS_HUB_RULES[path]


def _sequence_model(layer, exact=True):
    x = keras.Input((6, 5))
    h = keras.layers.Dense(8, name="producer")(x)
    y = layer(h)
    if exact is None:  # PositionEmbedding: added to what it embeds
        y = keras.layers.Add()([h, y])
    y = keras.layers.Dense(3, name="consumer")(keras.layers.GlobalAveragePooling1D()(y))
    return randomize_weights(keras.Model(x, y), 3)


def _delete_equals_zero(model, exact=True, layer="producer", channels=(1, 4, 6)):
    group = next(g for g in channel_groups(model) if layer in g.producers)
    assert group.prunable, group.reason
    pruned, zeroed = delete_channels(model, layer, list(channels)), zero_channels(model, layer, list(channels))
    xs = np.random.default_rng(0).normal(size=(4,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    got, want = np.asarray(pruned(xs)), np.asarray(zeroed(xs))
    assert pruned.count_params() < model.count_params() and np.isfinite(got).all()
    if exact:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    return pruned


def test_layer_scale():
    cls = _class("DINOV2LayerScale")
    _delete_equals_zero(_sequence_model(cls(hidden_dim=8, init_values=0.5, name="scale")))


def test_drop_path():
    cls = _class("DropPath")
    _delete_equals_zero(_sequence_model(cls(rate=0.2, name="drop")))


def test_position_embedding():
    cls = _class("PositionEmbedding")
    _delete_equals_zero(_sequence_model(cls(sequence_length=6, name="positions"), exact=None))


@pytest.mark.parametrize("suffix", ["LlamaLayerNorm", "gemma.rms_normalization.RMSNormalization"])
def test_rms_norms_are_pruned_structurally_and_zeroed_to_nothing(suffix):
    cls = _class(suffix)
    model = _sequence_model(cls(epsilon=1e-6, name="norm"))
    _delete_equals_zero(model, exact=False)
    # zeroing the norm's own channel makes its output channel exactly 0 (Gemma: 1 + scale = 0)
    norm = model.get_layer("norm")
    zeroed = zero_channels(model, "producer", [2])
    xs = np.random.default_rng(1).normal(size=(2, 6, 5)).astype("float32")
    probe = keras.Model(zeroed.inputs, zeroed.get_layer(norm.name).output)
    assert float(np.abs(np.asarray(probe(xs))[..., 2]).max()) == 0.0


@pytest.mark.parametrize("name", ["vit", "deit", "dinov2"])
def test_patch_embedding_stems(name):
    from ridurre.zoo.keras_hub import hub_backbone

    backbone = hub_backbone(name)
    stem = next(lay for lay in backbone.layers if type(lay).__name__.endswith(("Embedding", "Embeddings")))
    x = keras.Input((16, 16, 3))
    h = stem(x)
    y = keras.layers.Dense(3, name="consumer")(keras.layers.GlobalAveragePooling1D()(h))
    model = randomize_weights(keras.Model(x, y), 4)
    pruned = _delete_equals_zero(model, layer=stem.name, channels=(0, 5, 9))
    assert pruned.get_layer(stem.name).hidden_dim == 13


@pytest.mark.parametrize("tie_weights", [True, False])
@pytest.mark.parametrize("reverse", [True, False])
def test_reversible_embedding_prunes_the_hidden_dim_of_both_uses(tie_weights, reverse):
    """The hidden dimension of a tied (or untied) embedding is one group with the layers that
    produce the reverse call's input; the vocabulary logits stay."""
    cls = _class("modeling.reversible_embedding.ReversibleEmbedding")
    x = keras.Input((None,), dtype="int32")
    embedding = cls(20, 8, tie_weights=tie_weights, name="embedding")
    h = keras.layers.Dense(8, name="mixer")(embedding(x))
    y = embedding(h, reverse=True) if reverse else keras.layers.Dense(3, name="head")(h)
    model = randomize_weights(keras.Model(x, y), 5)
    groups = channel_groups(model)
    hidden = next(g for g in groups if "embedding" in g.producers)
    assert hidden.prunable and hidden.size == 8
    assert ("mixer" in hidden.producers) == reverse
    if reverse:
        assert not next(g for g in groups if g.producers == ("embedding:logits",)).prunable
    pruned, zeroed = delete_channels(model, "embedding", [1, 4, 6]), zero_channels(model, "embedding", [1, 4, 6])
    xs = np.random.default_rng(0).integers(0, 20, size=(3, 7))
    np.testing.assert_allclose(np.asarray(pruned(xs)), np.asarray(zeroed(xs)), rtol=1e-5, atol=1e-5)
    table = pruned.get_layer("embedding")
    assert table.output_dim == 5 and tuple(table.embeddings.shape) == (20, 5)
    if not tie_weights:
        assert tuple(table.reverse_embeddings.shape) == (5, 20)


def test_reversible_embedding_refuses_a_reverse_call_first():
    cls = _class("modeling.reversible_embedding.ReversibleEmbedding")
    x = keras.Input((6, 8))
    embedding = cls(20, 8, name="embedding")
    logits = embedding(keras.layers.Dense(8, name="mixer")(x), reverse=True)
    y = keras.layers.Dense(2, name="head")(embedding(keras.ops.argmax(logits, axis=-1)))
    group = next(g for g in channel_groups(keras.Model(x, y)) if "mixer" in g.producers)
    assert not group.prunable and "reverse call" in group.reason


def test_rotary_embedding_prunes_head_dims_in_rotation_pairs(tmp_path):
    """Features j and j + d/2 are one channel; the kept pairs keep their frequencies."""
    from ridurre.graph import trace_model
    from ridurre.graph.layers import RotaryEmbedding
    from ridurre.surgery import Surgeon

    x = keras.Input((6, 5))
    h = keras.layers.Dense(8, name="producer")(x)
    y = keras.layers.Dense(3, name="consumer")(RotaryEmbedding(max_wavelength=100, name="rope")(h))
    model = randomize_weights(keras.Model(x, keras.layers.GlobalAveragePooling1D()(y)), 6)
    trace = trace_model(model)
    group = next(g for g in trace.groups() if "producer" in g.producers)
    assert group.prunable and group.size == 4 and list(group.channels_of("producer")[1]) == [1, 5]
    pruned, zeroed = Surgeon(model, trace=trace), Surgeon(model, trace=trace)
    pruned.delete_group_channels(group, [1, 2])
    zeroed.delete_group_channels(group, [1, 2])
    pruned, zeroed = pruned.operate(), zeroed.operate(zero=True)
    xs = np.random.default_rng(0).normal(size=(2, 6, 5)).astype("float32")
    np.testing.assert_allclose(np.asarray(pruned(xs)), np.asarray(zeroed(xs)), rtol=1e-5, atol=1e-5)
    frequencies = RotaryEmbedding(max_wavelength=100).frequencies(8)
    assert pruned.get_layer("rope").inverse_frequencies == [frequencies[0], frequencies[3]]
    pruned.save(tmp_path / "rope.keras")
    loaded = keras.models.load_model(tmp_path / "rope.keras")
    np.testing.assert_allclose(np.asarray(loaded(xs)), np.asarray(pruned(xs)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("suffix", ["LlamaRotaryEmbedding", "modeling.rotary_embedding.RotaryEmbedding"])
def test_keras_hub_rotary_embeddings_have_an_equal_savable_stand_in(suffix):
    from ridurre.graph.standins import LAYER_STANDINS, layer_standin

    path = next(p for p in LAYER_STANDINS if p.endswith(suffix))
    layer = _hub(path)(max_wavelength=50)
    call = layer_standin(layer, path)
    xs = np.random.default_rng(1).normal(size=(2, 5, 3, 8)).astype("float32")
    call(keras.Input((5, 3, 8)))  # the first call builds the copy and checks it on random inputs
    np.testing.assert_allclose(np.asarray(call(xs)), np.asarray(layer(xs)), rtol=1e-5, atol=1e-5)
