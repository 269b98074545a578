"""Stand-ins: MiT's hand-written attention recorded as a MultiHeadAttention with its heads and
head dimensions as groups; same function, delete == zero, and a stand-in that computes
something else is refused."""

import numpy as np
import pytest
from helpers import randomize_weights

pytest.importorskip("keras_hub")

import keras  # noqa: E402
from keras_hub.src.models.mit.mit_layers import SegFormerMultiheadAttention  # noqa: E402

from ridurre.graph import inline, standins, trace_model  # noqa: E402
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
