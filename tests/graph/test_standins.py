"""Stand-ins: MiT's hand-written attention recorded as a MultiHeadAttention with its heads and
head dimensions as groups; Gemma's decoder blocks inlined through their RMS norms' savable copies
and their attention's stand-in (same function with padded positions, head dimensions pruned in
rotation pairs, delete == zero); a stand-in that computes something else is refused."""

import numpy as np
import pytest
from helpers import randomize_weights

pytest.importorskip("keras_hub")

import keras  # noqa: E402
from keras_hub.src.models.gemma.gemma_attention import CachedGemmaAttention  # noqa: E402
from keras_hub.src.models.gemma.rms_normalization import RMSNormalization  # noqa: E402
from keras_hub.src.models.mit.mit_layers import SegFormerMultiheadAttention  # noqa: E402

from ridurre.graph import inline, standins, trace_model  # noqa: E402
from ridurre.graph._recording import Refused  # noqa: E402
from ridurre.rules.keras_hub import class_path  # noqa: E402
from ridurre.surgery import Surgeon  # noqa: E402


def _model(sr_ratio):
    x = keras.Input((16, 8))
    h = keras.layers.Dense(8, name="embed")(x)
    h = SegFormerMultiheadAttention(8, 2, sr_ratio)(h)  # its constructor takes no name
    y = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return randomize_weights(keras.Model(x, y), 11)


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_mit_attention_becomes_multi_head_attention(sr_ratio):
    model = _model(sr_ratio)
    result = inline(model)
    assert result.inlined == {"SegFormerMultiheadAttention": 1} and not result.refused
    new = result.model
    xs = np.random.default_rng(0).normal(size=(2, 16, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(new(xs)), np.asarray(model(xs)), rtol=1e-5, atol=1e-5)
    trace = trace_model(new)
    groups = {g.producers[0]: g for g in trace.groups()}
    name = next(lay.name for lay in model.layers if isinstance(lay, SegFormerMultiheadAttention))
    heads, dims = groups[f"{name}/{name}_attention:heads"], groups[f"{name}/{name}_attention:head_dims"]
    assert heads.prunable and heads.size == 2 and dims.prunable and dims.size == 4
    residual = next(g for g in groups.values() if "embed" in g.producers)
    assert residual.prunable and residual.exact  # the sr branch's LayerNorm normalizes the convolution's channels
    picks = [(heads, [1]), (dims, [0, 3]), (residual, [2, 5])]
    pruned, reference = Surgeon(new, trace=trace), Surgeon(new, trace=trace)
    for group, channels in picks:
        pruned.delete_group_channels(group, channels)
        reference.delete_group_channels(group, channels)
    pruned, reference = pruned.operate(), reference.operate(zero=True, delete_inexact=True)
    assert pruned.count_params() < new.count_params()
    np.testing.assert_allclose(np.asarray(pruned(xs)), np.asarray(reference(xs)), rtol=1e-5, atol=1e-5)


def test_a_stand_in_that_computes_something_else_is_refused(monkeypatch):
    def wrong(layer, x):
        return layer.proj_drop(layer.proj(x))

    monkeypatch.setitem(standins.STANDINS, "keras_hub.src.models.mit.mit_layers.SegFormerMultiheadAttention", wrong)
    result = inline(_model(1))
    assert not result.inlined and "stand-in does not reproduce" in result.refused[0].reason


def _gemma_inputs():
    ids = np.random.default_rng(2).integers(0, 50, size=(2, 6)).astype("int32")
    padding = np.ones((2, 6), "int32")
    padding[1, :2] = 0  # left padding: the first two queries of the second row attend to nothing
    return {"token_ids": ids, "padding_mask": padding}


def test_gemma_decoder_blocks_are_inlined_and_pruned_in_rotation_pairs():
    from ridurre.zoo.keras_hub import hub_classifier

    model = randomize_weights(hub_classifier("gemma"), 4)
    result = inline(model)
    assert result.inlined == {"GemmaDecoderBlock": 2, "CachedGemmaAttention": 2} and not result.refused
    new, xs = result.model, _gemma_inputs()
    np.testing.assert_allclose(np.asarray(new(xs)), np.asarray(model(xs)), rtol=1e-5, atol=1e-6)
    trace = trace_model(new)
    query = next(g for g in trace.groups() if any(p.endswith("decoder_block_0/attention/query") for p in g.producers))
    assert query.prunable and query.size == 2  # 4 head dims rotated in 2 pairs, shared by queries and keys
    value = next(g for g in trace.groups() if any(p.endswith("decoder_block_1/attention/value") for p in g.producers))
    pruned, reference = Surgeon(new, trace=trace), Surgeon(new, trace=trace)
    for surgeon in (pruned, reference):
        surgeon.delete_group_channels(query, [1])
        surgeon.delete_group_channels(value, [0, 3])
    pruned, reference = pruned.operate(), reference.operate(zero=True)
    backbone = next(lay for lay in pruned.layers if lay.name.startswith("gemma_backbone"))
    attention = backbone.get_layer("decoder_block_0").get_layer("attention")
    assert tuple(attention.get_layer("query").kernel.shape) == (4, 16, 2)
    np.testing.assert_allclose(np.asarray(pruned(xs)), np.asarray(reference(xs)), rtol=1e-5, atol=1e-5)


def test_gemma_rms_normalization_gets_a_savable_copy():
    layer = RMSNormalization(epsilon=1e-6, dtype=keras.DTypePolicy("float32"), name="norm")
    layer.build((None, 4))
    layer.scale.assign(np.arange(4, dtype="float32"))
    copy = standins.LAYER_STANDINS[class_path(RMSNormalization)](layer)
    assert type(copy) is RMSNormalization and copy.name == "norm"
    type(copy).from_config(copy.get_config())  # the original's config cannot be rebuilt


def test_gemma_attention_refuses_what_it_does_not_follow():
    layer = CachedGemmaAttention(head_dim=4, num_query_heads=2, num_key_value_heads=1)
    x = keras.Input((None, 8))
    for mask, reason in ((keras.Input((None, None)), "whole numbers"), (None, "attention mask")):
        with pytest.raises(Refused, match=reason):
            standins.gemma_attention(layer, x, attention_mask=mask)
    layer.use_sliding_window_attention = True
    with pytest.raises(Refused, match="sliding-window"):
        standins.gemma_attention(layer, x, attention_mask=keras.Input((None, None), dtype="int32"))
