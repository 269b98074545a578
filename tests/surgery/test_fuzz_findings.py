"""What the surgeon fuzzer (``tests/surgery/test_fuzz.py``, ``bench/fuzz_surgeon.py``) found, each
on the minimal graph it shrank to: deleted == zeroed, or a refusal that says why."""

import keras
import numpy as np
import pytest
from helpers import randomize_weights
from keras import layers as L
from keras import ops

import ridurre
from ridurre.surgery import Surgeon

TENSORFLOW = keras.backend.backend() == "tensorflow"


def _pruned_and_zeroed(model, layer, channels):
    surgeon = Surgeon(model)
    surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon.operate(), surgeon.operate(zero=True)


def _assert_same(a, b, xs):
    np.testing.assert_allclose(np.asarray(a(xs)), np.asarray(b(xs)), rtol=1e-5, atol=1e-5)


def _group(model, producer):
    return next(g for g in ridurre.channel_groups(model) if g.producers[0] == producer)


def _attention_model(shape, heads, key_dim, seed=0):
    x = keras.Input(shape)
    h = L.Dense(4, name="h")(x)
    a = L.MultiHeadAttention(heads, key_dim, name="mha")(h, h)
    return randomize_weights(keras.Model(x, L.Dense(2)(L.Flatten()(a))), seed)


def test_head_dims_are_kept_when_a_pruned_bias_would_be_added_over_the_positions():
    """Three positions, three heads of two dimensions: one dimension left would give the query
    bias the shape (3, 1), which Keras's TensorFlow backend adds over the positions (ops.add takes
    it for an NCHW bias), so the pruned model would not be the zeroed one. The heads stay
    prunable (two dimensions remain)."""
    model = _attention_model((3, 5), heads=3, key_dim=2)
    dims = _group(model, "mha:head_dims")
    assert dims.prunable is not TENSORFLOW, dims.reasons
    if TENSORFLOW:
        assert "TensorFlow backend" in dims.reason
    assert _group(model, "mha:heads").prunable
    xs = np.random.default_rng(0).normal(size=(2, 3, 5)).astype("float32")
    _assert_same(*_pruned_and_zeroed(model, "mha:heads", [0]), xs)
    _assert_same(*_pruned_and_zeroed(model, "mha", [1, 3]), xs)  # the output units too


def test_longer_sequences_keep_their_heads_prunable():
    model = _attention_model((5, 4), heads=3, key_dim=2)
    assert _group(model, "mha:heads").prunable and _group(model, "mha:head_dims").prunable
    xs = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    _assert_same(*_pruned_and_zeroed(model, "mha:head_dims", [0]), xs)
    _assert_same(*_pruned_and_zeroed(model, "mha:heads", [2]), xs)


def test_attention_over_two_axes_with_one_key_dim_keeps_its_heads():
    """The fuzzer's graph: 3 x 3 images, three heads of one dimension (the original's bias is
    already misrouted; two heads would not be), attention over both spatial axes."""
    model = _attention_model((3, 3, 2), heads=3, key_dim=1)
    assert _group(model, "mha:heads").prunable is not TENSORFLOW


def test_einsum_dense_keeps_channels_whose_bias_would_be_added_on_another_axis():
    """A (2, units) bias on a (batch, 2, 2, units) output: one unit left, Keras's TensorFlow
    backend would add it over axis 1."""
    x = keras.Input((2, 3))
    h = L.EinsumDense("abc,cyz->abyz", output_shape=(2, 2, 4), bias_axes="yz", name="up")(x)
    model = randomize_weights(keras.Model(x, L.Dense(2)(L.Flatten()(h))))
    assert _group(model, "up").prunable is not TENSORFLOW
    x = keras.Input((3, 3))  # axis 1 longer than the bias's other axis: prunable on every backend
    h = L.EinsumDense("abc,cyz->abyz", output_shape=(3, 2, 4), bias_axes="yz", name="up")(x)
    model = randomize_weights(keras.Model(x, L.Dense(2)(L.Flatten()(h))))
    assert _group(model, "up").prunable
    xs = np.random.default_rng(2).normal(size=(2, 3, 3)).astype("float32")
    _assert_same(*_pruned_and_zeroed(model, "up", [0, 1, 2]), xs)


def test_an_attention_layer_returning_its_scores_is_addressed_by_its_name():
    """Its group lists it as a producer; it has two outputs, and the surgeon used to refuse it
    ("no single output whose channels can be deleted")."""
    x = keras.Input((4, 3))
    h = L.Dense(6, name="h")(x)
    a, _ = L.MultiHeadAttention(2, 3, name="mha")(h, h, return_attention_scores=True)
    model = randomize_weights(keras.Model(x, L.Dense(2)(L.Flatten()(a))))
    assert _group(model, "mha").prunable
    pruned, zeroed = _pruned_and_zeroed(model, "mha", [0, 2])
    assert pruned.get_layer("mha").get_config()["output_shape"] == (4,)
    _assert_same(pruned, zeroed, np.random.default_rng(3).normal(size=(2, 4, 3)).astype("float32"))


def test_channels_turned_into_token_ids_are_not_pruned():
    """Token ids computed from a layer's channels: the Embedding turns that axis into positions,
    so deleting a channel removed a position (the Dense after the Flatten no longer fit) and
    zeroing one changed a token id."""
    x = keras.Input((5,))
    h = L.Dense(4, name="h")(x)
    ids = ops.cast(ops.clip(ops.floor(ops.absolute(h) * 2.0), 0, 3), "int32")
    model = randomize_weights(keras.Model(x, L.Dense(2)(L.Flatten()(L.Embedding(4, 3, name="emb")(ids)))))
    h_group = _group(model, "h")
    assert not h_group.prunable and "token ids" in h_group.reason
    xs = np.random.default_rng(4).normal(size=(2, 5)).astype("float32")
    _assert_same(*_pruned_and_zeroed(model, "emb", [1]), xs)  # its own channels stay prunable


@pytest.mark.parametrize("reverse", [False, True])
def test_channels_turned_into_token_ids_of_a_reversible_embedding_are_not_pruned(reverse):
    """The same for ``ReversibleEmbedding`` (found by the fuzzer once it had a Kind: its rule did
    not block the ids' channels, and the rebuilt Dense after the Flatten no longer fit)."""
    x = keras.Input((5,))
    h = L.Dense(4, name="h")(x)
    ids = ops.cast(ops.clip(ops.floor(ops.absolute(h) * 2.0), 0, 3), "int32")
    embedding = L.ReversibleEmbedding(4, 3, tie_weights=False, name="emb")
    out = embedding(ids)
    out = embedding(out, reverse=True) if reverse else out
    model = randomize_weights(keras.Model(x, L.Dense(2)(L.Flatten()(out))))
    h_group = _group(model, "h")
    assert not h_group.prunable and "token ids" in h_group.reason
    xs = np.random.default_rng(4).normal(size=(2, 5)).astype("float32")
    _assert_same(*_pruned_and_zeroed(model, "emb", [1]), xs)
