"""Inlining composite layers: same function, same weights, inner channels visible and prunable,
saved and loaded in a fresh process; refusals say why and leave no trace."""

import os
import subprocess
import sys

import composites as C
import keras
import numpy as np
import pytest
from helpers import ROOT, randomize_weights

import ridurre
from ridurre import _compat
from ridurre.graph import channel_groups, inline, inline_composites, is_composite
from ridurre.rules import PassThroughRule
from ridurre.surgery import Surgeon


def _image_model():
    x = keras.Input((8, 8, 3), name="image")
    h = keras.layers.Conv2D(6, 1, name="stem")(x)
    h = C.ConvBlock(6, residual=True, name="block_a")(h)
    h = C.ConvBlock(10, name="block_b")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(x, keras.layers.Dense(3, name="head")(h), name="images")


def _sequence_model(rate=0.0):
    x = keras.Input((5, 8), name="tokens")
    h = keras.layers.Dense(8, name="embed")(x)
    h = C.Stack(16, depth=2, rate=rate, name="stack")(h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(2, name="head")(h), name="sequences")


def _single(layer, shape=(4,)):
    if isinstance(layer, C.CausalMix):
        shape = (None, 4)
    x = keras.Input(shape)
    return keras.Model(x, keras.layers.Dense(3, name="head")(layer(x)))


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("build", [_image_model, _sequence_model])
def test_same_function_and_the_same_weights(build, rng):
    model = randomize_weights(build(), 3)
    result = inline(model)
    assert result.refused == ()
    new = result.model
    assert new is not model and new.name == model.name
    xs = rng.normal(size=(4,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    _close(model(xs, training=False), new(xs, training=False))
    # the weights are the very same variables (no copy), and all of them are there
    assert {id(v) for v in new.weights} == {id(v) for v in model.weights}
    assert new.count_params() == model.count_params()


def test_composites_become_nested_models_named_like_them():
    result = inline(_sequence_model())
    assert result.inlined == {"Stack": 1, "FeedForward": 2}
    stack = result.model.get_layer("stack")
    assert _compat.is_graph_model(stack)
    assert [lay.name for lay in stack.layers if _compat.is_graph_model(lay)] == ["block_0", "block_1"]
    assert [lay.name for lay in stack.get_layer("block_0").layers if lay.weights] == ["expand", "project"]


def test_inner_channels_become_prunable_groups():
    model = _sequence_model()
    assert not any(g.prunable for g in channel_groups(model))
    groups = {g.producers: g for g in channel_groups(inline_composites(model))}
    assert groups[("stack/block_0/expand",)].prunable and groups[("stack/block_0/expand",)].size == 16
    assert groups[("stack/block_1/expand",)].prunable


def test_the_trace_says_to_inline_a_composite():
    reasons = {g.reason for g in channel_groups(_image_model()) if not g.prunable}
    assert any("a composite layer: ridurre.inline_composites(model) traces its call" in r for r in reasons if r)


@pytest.mark.parametrize("build", [_image_model, _sequence_model])
@pytest.mark.parametrize("seed", [0, 1])
def test_pruning_inside_composites_equals_zeroing(build, seed):
    rng = np.random.default_rng(seed)
    model = inline_composites(randomize_weights(build(), seed))
    trace = ridurre.graph.trace_model(model)
    surgeons = Surgeon(model, trace=trace), Surgeon(model, trace=trace)
    groups = [g for g in trace.groups() if g.prunable and g.size > 1]
    assert groups
    for group in groups:
        chosen = rng.choice(group.size, size=max(1, group.size // 3), replace=False)
        for surgeon in surgeons:
            surgeon.delete_group_channels(group, chosen)
    pruned, zeroed = surgeons[0].operate(), surgeons[1].operate(zero=True)
    assert pruned.count_params() < model.count_params()
    xs = rng.normal(size=(3,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    if build is _sequence_model:  # the residual stream passes a LayerNormalization: structure only
        assert np.isfinite(np.asarray(pruned(xs))).all()
    else:
        _close(pruned(xs, training=False), zeroed(xs, training=False))


def test_the_training_phase_still_reaches_the_inner_layers(rng):
    model = _sequence_model(rate=0.5)
    new = inline_composites(model)
    xs = rng.normal(size=(8, 5, 8)).astype("float32")
    _close(model(xs, training=False), new(xs, training=False))
    assert not np.allclose(new(xs, training=True), new(xs, training=False))


def test_saved_and_loaded_in_a_fresh_process(tmp_path, rng):
    model = inline_composites(randomize_weights(_sequence_model(), 5))
    path = tmp_path / "inlined.keras"
    model.save(path)
    xs = rng.normal(size=(3, 5, 8)).astype("float32")
    np.save(tmp_path / "x.npy", xs)
    np.save(tmp_path / "y.npy", np.asarray(model(xs, training=False)))
    code = (
        "import numpy as np, keras, composites\n"
        f"model = keras.models.load_model({str(path)!r})\n"
        f"xs, ys = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'y.npy')!r})\n"
        "np.testing.assert_allclose(np.asarray(model(xs, training=False)), ys, rtol=1e-6, atol=1e-6)\n"
        "print('loaded', len(model.weights))\n"
    )
    path_entries = os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])
    env = {**os.environ, "PYTHONPATH": path_entries, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0 and "loaded" in done.stdout, done.stderr[-3000:]


REFUSED = [
    (C.ValueBranch, "cannot be traced on symbolic tensors"),
    (C.EagerOp, "cannot be traced on symbolic tensors"),
    (C.TrainingBranch, "branches on `training` in Python"),
    (C.OwnScale, "reads the variable"),
    (C.ConstantLookup, "does not use its weights"),
    (C.CausalMix, "depend on the batch or sequence size"),
]


@pytest.mark.parametrize("layer_class, reason", REFUSED, ids=[c.__name__ for c, _ in REFUSED])
def test_refusals_keep_the_layer_and_say_why(layer_class, reason, rng):
    layer = layer_class(name="odd")
    model = _single(layer)
    inner = _compat.sublayers(layer)
    calls_before = [len(_compat.layer_calls(sub)) for sub in inner]
    result = inline(model)
    assert [(r.path, r.layer_class) for r in result.refused] == [("odd", layer_class.__name__)]
    assert reason in result.refused[0].reason
    assert result.model is model  # nothing else to inline: the model itself comes back
    # the abandoned recordings left no graph nodes behind in the user's layers
    assert [len(_compat.layer_calls(sub)) for sub in inner] == calls_before
    blocked = [g.reason for g in channel_groups(model) if not g.prunable and g.reason and "odd" in g.reason]
    assert blocked and all("could not be inlined" in r and reason in r for r in blocked)


def test_a_keras_mask_is_refused():
    x = keras.Input((5,), dtype="int32")
    h = keras.layers.Embedding(10, 8, mask_zero=True)(x)
    h = C.Stack(16, depth=1, name="stack")(h)
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h)))
    result = inline(model)
    assert [r.layer_class for r in result.refused] == ["Stack"]
    assert "Keras mask" in result.refused[0].reason


def test_a_layer_with_a_rule_is_not_inlined():
    model = _image_model()
    rules = {C.ConvBlock: PassThroughRule()}
    assert not is_composite(model.get_layer("block_a"), rules)
    assert inline(model, rules).model is model


def test_a_leaf_layer_is_not_a_composite():
    assert not is_composite(C.Scale())
    assert inline(_single(C.Scale(name="scale"))).refused == ()


def test_a_shared_composite_is_one_nested_model_called_twice(rng):
    x = keras.Input((4, 4, 6))
    block = C.ConvBlock(6, residual=True, name="shared")
    model = keras.Model(x, block(block(x)))
    new = inline_composites(randomize_weights(model, 1))
    assert [lay.name for lay in new.layers].count("shared") == 1
    xs = rng.normal(size=(2, 4, 4, 6)).astype("float32")
    _close(model(xs, training=False), new(xs, training=False))
    conv_groups = [g for g in channel_groups(new) if "shared/conv" in g.producers]
    assert len(conv_groups) == 1


def test_the_given_model_is_never_changed(rng):
    model = randomize_weights(_image_model(), 2)
    before = [w.copy() for w in model.get_weights()]
    classes = [type(lay).__name__ for lay in model.layers]
    xs = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    expected = np.asarray(model(xs, training=False))
    ridurre.inline_composites(model)
    assert [type(lay).__name__ for lay in model.layers] == classes
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    _close(model(xs, training=False), expected)


def test_bad_input():
    with pytest.raises(TypeError, match="keras.Model"):
        inline_composites("model")


def test_the_loop_inlines_composites_and_prunes_inside_them():
    model = randomize_weights(_sequence_model(), 6)

    def compile_fn(m):
        m.compile(optimizer="adam", loss="mse")

    options = dict(pruning_factor=0.25, maximum_prune_iterations=1)
    pruned, _ = ridurre.Pruner("l1", compile_fn, **options).run_pruning(model)
    assert pruned.count_params() < model.count_params()
    assert pruned.get_layer("stack").get_layer("block_0").get_layer("expand").units < 16
    assert model.get_layer("stack").blocks[0].expand.units == 16  # the given model is untouched
    kept, _ = ridurre.Pruner("l1", compile_fn, inline_composites=False, **options).run_pruning(model)
    assert kept is model  # nothing prunable without inlining: the given model comes back


def test_a_reshape_by_the_batch_size_becomes_a_batch_preserving_reshape(tmp_path, rng):
    x = keras.Input((4,))
    h = C.BatchReshape(name="reshape_by_batch")(keras.layers.Dense(4, name="stem")(x))
    model = randomize_weights(keras.Model(x, keras.layers.Dense(3, name="head")(keras.layers.Flatten()(h))), 2)
    result = inline(model)
    assert result.refused == () and result.inlined == {"BatchReshape": 1}
    nested = result.model.get_layer("reshape_by_batch")
    assert [type(lay).__name__ for lay in nested.layers] == ["InputLayer", "Dense", "Reshape"]
    for batch in (1, 3, 6):
        xs = rng.normal(size=(batch, 4)).astype("float32")
        _close(model(xs), result.model(xs))
    result.model.save(tmp_path / "reshaped.keras")
    loaded = keras.models.load_model(tmp_path / "reshaped.keras")
    _close(loaded(xs), model(xs))


def test_a_causal_mask_built_from_the_sequence_length_becomes_a_layer(tmp_path, rng):
    x = keras.Input((None, 6), name="sequence")
    h = C.CausalSelfAttention(4, name="attend")(keras.layers.Dense(6, name="embed")(x))
    model = randomize_weights(keras.Model(x, keras.layers.Dense(2, name="head")(h)), 4)
    result = inline(model)
    assert result.refused == () and result.inlined == {"CausalSelfAttention": 1}
    layers = [type(lay).__name__ for lay in result.model.get_layer("attend").layers]
    assert "CausalMask" in layers and layers.count("Dense") == 3
    for batch, length in ((1, 3), (2, 9), (5, 4)):
        xs = rng.normal(size=(batch, length, 6)).astype("float32")
        _close(model(xs), result.model(xs))
    result.model.save(tmp_path / "causal.keras")
    _close(keras.models.load_model(tmp_path / "causal.keras")(xs), model(xs))
    # the mask's positions are never pruned; the channels read by the projections are
    groups = channel_groups(result.model)
    assert any(not g.prunable and "a mask over sequence positions" in g.reason for g in groups)
    assert next(g for g in groups if g.producers == ("embed",)).prunable
