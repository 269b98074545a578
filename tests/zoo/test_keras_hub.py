"""The keras-hub zoo (built from constructor arguments, random weights, no download) through
inlining and the surgeon.

For every backbone of ``ridurre.zoo.keras_hub.HUB_ZOO``, wrapped as inputs -> backbone ->
pooling -> Dense head: inlining computes the same function; the share of internal channels
that ``channel_groups`` finds prunable after inlining is at least what it was before and at
least the floor measured when this test was written (it only rises as rules are added); random
channels of a few sampled groups, then ~30 % of every prunable group in ONE surgery, give the
output of the zeroed original; where a LayerNormalization or an RMS norm mixes the pruned
channels the reference is ``Surgeon.operate(zero=True, delete_inexact=True)`` (those channels
deleted in both, the others zeroed), which the pruned model equals exactly too; the pruned model
saves and loads back with the same outputs.

The default run covers four backbones with composite layers; the others are marked ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import randomize_weights

pytest.importorskip("keras_hub")

import keras  # noqa: E402

from ridurre.graph import channel_groups, inline, trace_model  # noqa: E402
from ridurre.rules import GroupNormRule, LayerNormRule, RMSNormRule  # noqa: E402
from ridurre.rules.keras_hub import KerasHubRMSNormRule  # noqa: E402
from ridurre.surgery import Surgeon  # noqa: E402
from ridurre.zoo.keras_hub import HUB_ZOO, custom_objects, hub_classifier, hub_inputs  # noqa: E402

FAST = ("efficientnet_v2", "mobilenet_v3", "dinov2", "bert")
FRACTION = 0.3

# share of internal channels prunable after inlining, with the rules of this branch (a floor)
REACH_FLOOR = {
    "resnet_v1": 1.0,
    "resnet_v2": 0.95,
    "efficientnet_v1": 1.0,
    "efficientnet_v2": 1.0,
    "mobilenet_v3": 1.0,
    "cspdarknet": 1.0,
    "densenet": 1.0,
    "vit": 1.0,
    "deit": 1.0,
    "dinov2": 1.0,
    "mit": 1.0,
    "segformer": 1.0,
    "bert": 1.0,
    "gpt2": 0.96,
    "llama": 0.95,
    "gemma": 0.96,
}
MIXING = (LayerNormRule, RMSNormRule, KerasHubRMSNormRule, GroupNormRule)


def _randomized(model, seed):
    """Random weights, except DINOv2's position embeddings: keras-hub recomputes the interpolated
    ones from them when a model is loaded, so both keep their consistent initial values."""
    derived = {id(v): v.numpy() for v in model.weights if v.path.endswith("position_embeddings")}
    randomize_weights(model, seed)
    for v in model.weights:
        if id(v) in derived:
            v.assign(derived[id(v)])
    return model


def reach(groups) -> tuple[int, int]:
    """(prunable channels, internal channels): channels of groups not bound to a model input or output."""
    internal = [g for g in groups if g.prunable or not any(s in g.reason for s in ("model input", "model output"))]
    return sum(g.size for g in internal if g.prunable), sum(g.size for g in internal)


def _mixes_channels(trace, roots) -> bool:
    """Whether a normalization over the channel axis sees any of these units."""
    for use in trace.uses.values():
        if isinstance(use.rule, MIXING) and use.out_layout is not None:
            if np.isin(trace.units.roots(use.out_layout), roots).any():
                return True
    return False


def _surgery(model, trace, picks, structural):
    pruned, zeroed = Surgeon(model, trace=trace), Surgeon(model, trace=trace)
    for group, channels in picks:
        pruned.delete_group_channels(group, channels)
        zeroed.delete_group_channels(group, channels)
    return pruned.operate(), zeroed.operate(zero=True, delete_inexact=structural)


def _outputs(model, xs):
    return np.asarray(model(xs, training=False))


def _check(model, trace, picks, xs):
    roots = np.concatenate([g.roots[c] for g, c in picks])
    structural = _mixes_channels(trace, roots)
    assert structural == any(not g.exact for g, _ in picks)  # the trace flags what a norm mixes
    pruned, zeroed = _surgery(model, trace, picks, structural)
    assert pruned.count_params() < model.count_params()
    got = _outputs(pruned, xs)
    assert got.shape == _outputs(model, xs).shape and np.isfinite(got).all()
    reference = _outputs(zeroed, xs)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(reference).max())))
    return pruned


@pytest.mark.parametrize(
    "name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in HUB_ZOO], ids=list(HUB_ZOO)
)
def test_keras_hub_backbone(name, tmp_path):
    rng = np.random.default_rng(7)
    model = _randomized(hub_classifier(name), seed=7)
    result = inline(model)
    new = result.model
    xs = hub_inputs(model, batch=2, sequence_length=6, seed=1)
    np.testing.assert_allclose(_outputs(new, xs), _outputs(model, xs), rtol=1e-5, atol=1e-6)
    assert new.count_params() == model.count_params()
    for refusal in result.refused:
        assert refusal.reason and refusal.layer_class

    trace = trace_model(new)
    groups = trace.groups()
    prunable_channels, internal = reach(groups)
    assert prunable_channels >= reach(channel_groups(model))[0]  # inlining only ever adds prunable channels
    share = prunable_channels / internal
    assert share >= REACH_FLOOR[name] - 1e-9, f"{name}: {share:.3f} of internal channels prunable"
    prunable = [g for g in groups if g.prunable and g.size > 1]
    if not prunable:
        return

    sampled = [prunable[i] for i in rng.choice(len(prunable), size=min(3, len(prunable)), replace=False)]
    picks = [(g, rng.choice(g.size, size=int(rng.integers(1, g.size)), replace=False)) for g in sampled]
    _check(new, trace, picks, xs)

    every = [(g, rng.choice(g.size, size=max(1, int(g.size * FRACTION)), replace=False)) for g in prunable]
    pruned = _check(new, trace, every, xs)

    path = tmp_path / f"{name}.keras"
    pruned.save(path)
    loaded = keras.models.load_model(path, custom_objects=custom_objects())
    np.testing.assert_allclose(_outputs(loaded, xs), _outputs(pruned, xs), rtol=1e-6, atol=1e-6)


def test_text_inputs_reach_the_backbone_by_name():
    """The classifier wires each named input to the backbone's input of that name (a dict packed
    from a list would follow the sorted keys: token ids would land in the padding mask)."""
    model = hub_classifier("bert")
    xs = hub_inputs(model, batch=2, sequence_length=6, seed=1)
    other = {**xs, "token_ids": (xs["token_ids"] + 1) % 50}
    assert not np.allclose(_outputs(model, xs), _outputs(model, other))
