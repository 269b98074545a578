"""Depth pruning: finding residual branches and removing them exactly (ridurre.surgery.branches)."""

import keras
import numpy as np
import pytest
from fuzz_graphs import KINDS, _conv, _dense, _input_shape
from helpers import randomize_weights
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from ridurre.graph.layers import ChannelOffset
from ridurre.metrics import model_stats
from ridurre.surgery import (
    ResidualBranch,
    Surgeon,
    delete_channels,
    prune_branches,
    remove_branches,
    residual_branches,
    zero_channels,
)
from ridurre.zoo.models import resnet_cifar


def _zeroed_reference(model, branches):
    """The original with the input of each branch's last mixing layer zeroed (a Rescaling(0) before it)."""
    surgeon = Surgeon(model)
    for i, branch in enumerate(branches):
        surgeon.add_job("insert_layer", branch.mixing, new_layer=keras.layers.Rescaling(0.0, name=f"zero_{i}"))
    return surgeon.operate()


def _inputs(model, n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *model.input_shape[1:])).astype("float32")


@pytest.fixture(scope="module")
def resnet20():
    return randomize_weights(resnet_cifar(20, input_shape=(16, 16, 3)), seed=1)


def _blocks(model):
    """The blocks' residual branches (the projection shortcuts of stages 2 and 3 are branches too)."""
    return [b for b in residual_branches(model) if "shortcut" not in b.mixing]


def test_finds_every_block_of_a_cifar_resnet(resnet20):
    branches = residual_branches(resnet20)
    assert len(_blocks(resnet20)) == 9  # 3 stages of 3 basic blocks
    shortcuts = [b for b in branches if "shortcut" in b.mixing]
    assert [(b.merge, b.layers) for b in shortcuts] == [
        ("stage2_block1_add", ("stage2_block1_shortcut_conv", "stage2_block1_shortcut_bn")),
        ("stage3_block1_add", ("stage3_block1_shortcut_conv", "stage3_block1_shortcut_bn")),
    ]
    first = branches[0]
    assert first.layers == (
        "stage1_block1_conv1",
        "stage1_block1_bn1",
        "stage1_block1_relu1",
        "stage1_block1_conv2",
        "stage1_block1_bn2",
    )
    assert first.mixing == "stage1_block1_conv2" and first.merge == "stage1_block1_add"
    per_layer = {row.name: row.macs for row in model_stats(resnet20).layers}
    assert first.macs == per_layer["stage1_block1_conv1"] + per_layer["stage1_block1_conv2"]
    assert np.any(first.offset != 0)  # the BN's shift: the removal adds it back


@pytest.mark.parametrize("which", [[0], [2, 5], list(range(9))])
def test_removal_equals_the_zeroed_branch(resnet20, which):
    branches = [_blocks(resnet20)[i] for i in which]
    weights = [w.copy() for w in resnet20.get_weights()]
    pruned = remove_branches(resnet20, branches)
    x = _inputs(resnet20)
    expected = _zeroed_reference(resnet20, branches).predict(x, verbose=0)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)
    names = {layer.name for layer in pruned.layers}
    assert not names & {name for b in branches for name in b.layers}
    assert model_stats(pruned).total_macs == model_stats(resnet20).total_macs - sum(b.macs for b in branches)
    assert all(np.array_equal(a, b) for a, b in zip(weights, resnet20.get_weights()))  # the user's model
    assert len(_blocks(pruned)) == 9 - len(which)


def test_a_branch_with_no_constant_left_adds_no_layer_and_the_result_saves_and_prunes(tmp_path):
    x = keras.Input((6, 6, 3), name="x")
    h = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="a")(x)
    h = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="b")(keras.layers.ReLU(name="r")(h))
    y = keras.layers.Add(name="add")([x, h])
    h2 = keras.layers.Conv2D(3, 1, bias_initializer="ones", name="c")(y)
    model = keras.Model(x, keras.layers.Add(name="add2")([y, h2]))
    branches = residual_branches(model)
    assert [(b.merge, np.any(b.offset != 0)) for b in branches] == [("add", False), ("add2", True)]
    pruned = remove_branches(model, branches)
    assert [layer.name for layer in pruned.layers] == ["x", "add2_offset"]
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    again = keras.saving.load_model(path, safe_mode=True)
    data = _inputs(model)
    np.testing.assert_allclose(again.predict(data, verbose=0), data + 1.0, rtol=1e-6, atol=1e-6)
    # the offset is a weight: sliced with the channels, zeroed with them (the surgery stays exact)
    rest = remove_branches(model, branches[:1])
    assert rest.get_layer("add2").__class__.__name__ == "Add"
    x = keras.Input((6, 6, 3), name="x")
    h = keras.layers.Conv2D(5, 1, name="stem")(x)
    h2 = keras.layers.Conv2D(5, 3, padding="same", bias_initializer="ones", name="c")(h)
    y = keras.layers.Conv2D(2, 1, name="head")(keras.layers.Add(name="add")([h, h2]))
    model = randomize_weights(keras.Model(x, y), seed=3)
    offset = remove_branches(model, residual_branches(model))
    assert type(offset.get_layer("add_offset")) is ChannelOffset
    pruned = delete_channels(offset, "stem", [1, 3])
    assert pruned.get_layer("add_offset").get_weights()[0].shape == (3,)
    np.testing.assert_allclose(
        pruned.predict(data, verbose=0), zero_channels(offset, "stem", [1, 3]).predict(data, verbose=0), atol=1e-5
    )


def test_what_is_not_a_branch():
    x = keras.Input((4,), name="x")
    d = keras.layers.Dense(4, name="d")(x)
    both = keras.layers.Add(name="both")([keras.layers.Dense(4, name="p")(x), d])  # both inputs are branches
    shared = keras.layers.Dense(4, name="shared")
    s = keras.layers.Add(name="s")([both, shared(shared(both))])  # a layer called twice
    three = keras.layers.Add(name="three")([s, keras.layers.Dense(4, name="q")(s), s])
    z = keras.layers.ReLU(name="act")(three)
    used_twice = keras.layers.Add(name="twice")([z, keras.layers.Dense(4, name="e")(z)])
    out = keras.layers.Concatenate()([used_twice, keras.layers.Dense(4, name="t")(used_twice)])
    model = keras.Model(x, out)
    found = {(b.merge, b.index) for b in residual_branches(model)}
    assert found == {("both", 0), ("both", 1), ("twice", 1)}
    with pytest.raises(ValueError, match="both inputs of 'both' are listed"):
        remove_branches(model, [b for b in residual_branches(model) if b.merge == "both"])
    assert residual_branches(keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])) == []


def test_bad_branches_are_refused(resnet20):
    with pytest.raises(TypeError, match="ResidualBranch"):
        remove_branches(resnet20, ["stage1_block1_add"])
    other = resnet_cifar(20, input_shape=(16, 16, 3))
    stale = ResidualBranch("stage1_block1_add", 0, ("nope",), "nope", 0, np.zeros(16))
    with pytest.raises(ValueError, match="is not a removable residual branch"):
        remove_branches(other, [stale])


def test_prune_branches_keeps_about_the_target_and_never_crosses_it(resnet20):
    macs = model_stats(resnet20).total_macs
    pruned, removed = prune_branches(resnet20, target_macs=0.6)
    kept = model_stats(pruned).total_macs / macs
    assert 0.6 <= kept < 0.6 + max(b.macs for b in removed) / macs
    # the data-driven score removes the branches that change the merge's output least
    data = _inputs(resnet20, n=8)
    pruned, by_data = prune_branches(resnet20, target_macs=0.85, data=data)
    change = {}  # how much removing each block that fits the budget changes its merge's output
    assert not any("shortcut" in b.mixing for b in removed + by_data)  # the projection shortcuts stay
    for branch in _blocks(resnet20):
        if branch.macs <= 0.15 * macs:
            probe = keras.Model(resnet20.inputs, resnet20.get_layer(branch.layers[-1]).output)
            out = probe.predict(data, verbose=0)
            change[(branch.merge, branch.index)] = float(np.mean(np.abs(out - branch.offset)))
    assert len(by_data) >= 1 and model_stats(pruned).total_macs >= 0.85 * macs
    assert change[(by_data[0].merge, by_data[0].index)] == pytest.approx(min(change.values()))
    with pytest.raises(ValueError, match="target_macs must be a number in"):
        prune_branches(resnet20, target_macs=1.5)
    with pytest.raises(ValueError, match="fits within target_macs"):
        prune_branches(resnet20, target_macs=0.999)
    with pytest.raises(ValueError, match="no removable residual branch"):
        prune_branches(keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)]), target_macs=0.5)


@pytest.mark.slow
def test_keras_applications_resnet50_blocks_come_off_exactly():
    model = randomize_weights(keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3)), seed=2)
    branches = residual_branches(model)
    assert len({b.merge for b in branches}) == 16  # 4 stages of 3, 4, 6, 3 bottleneck blocks
    assert sum(b.mixing.endswith("_0_conv") for b in branches) == 4  # each stage's projection shortcut
    blocks = [b for b in branches if b.mixing.endswith("_3_conv")]
    assert len(blocks) == 16 and all(len(b.layers) == 8 for b in blocks)
    chosen = [blocks[1], blocks[7], blocks[14]]
    pruned = remove_branches(model, chosen)
    x = _inputs(model, n=2)
    expected = _zeroed_reference(model, chosen).predict(x, verbose=0)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_a_model_without_blocks_exports_and_matches(tmp_path, resnet20):
    from ridurre.deploy import export, missing_packages

    if missing_packages("onnx"):
        pytest.skip("needs ridurre[deploy] (onnx, onnxruntime)")
    pruned, removed = prune_branches(resnet20, target_macs=0.7)
    assert any(layer.__class__ is ChannelOffset for layer in pruned.layers)
    result = export(pruned, tmp_path / "pruned.onnx", "onnx")  # verified against Keras on sample inputs
    assert result.verification["kind"] == "outputs" and result.verification["max_abs_error"] < 1e-4


def _residual_graph(draw):
    """A stem, then 1-3 blocks ``h + chain(h)``: each chain starts with a convolution (or Dense)
    and goes on with 0-3 layers drawn from the surgeon fuzzer's kinds, then maybe a 1x1
    convolution back to ``h``'s channels; a chain whose output does not match ``h`` is not added."""
    x = keras.Input(_input_shape(draw))
    h = (_conv() if len(x.shape) >= 3 else _dense)(draw, x)
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        y = (_conv() if len(h.shape) >= 3 else _dense)(draw, h)
        names = ["mix"]
        for _ in range(draw(st.integers(0, 3))):
            usable = [k for k in KINDS if k.arity == 1 and k.accepts(tuple(y.shape[1:]))]
            kind = draw(st.sampled_from(usable))
            try:
                y = kind.build(draw, y)
            except (ValueError, TypeError):  # a kind that does not fit after all: leave it out
                continue
            names.append(kind.name)
            if not isinstance(y, keras.KerasTensor) or any(d is None for d in y.shape[1:]):
                break
        defined = isinstance(y, keras.KerasTensor) and all(d is not None for d in y.shape[1:])
        if defined and tuple(y.shape[1:-1]) == tuple(h.shape[1:-1]) and y.dtype == h.dtype:
            if y.shape[-1] != h.shape[-1]:
                cls = getattr(keras.layers, f"Conv{len(h.shape) - 2}D") if len(h.shape) >= 3 else None
                y = cls(h.shape[-1], 1)(y) if cls else keras.layers.Dense(h.shape[-1])(y)
                names.append("match")
            h = keras.layers.Add()([h, y])
            steps.append(names)
    return keras.Model(x, h), steps


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_removed_equals_zeroed_on_random_graphs(data):
    """Random residual graphs: every branch found comes off exactly (pruned == zeroed)."""
    model, steps = _residual_graph(data.draw)
    note(f"blocks: {steps}")
    model = randomize_weights(model, seed=data.draw(st.integers(0, 1000)))
    branches = residual_branches(model)
    event(f"{min(len(branches), 3)}{'+' if len(branches) > 3 else ''} branch(es) of {len(steps)} block(s)")
    chosen, merges = [], set()
    for branch in branches:
        if branch.merge not in merges and data.draw(st.booleans()):
            chosen.append(branch)
            merges.add(branch.merge)
    if not chosen:
        return
    note(f"removed: {[(b.merge, b.index, b.layers) for b in chosen]}")
    pruned = remove_branches(model, chosen)
    xs = np.random.default_rng(0).normal(size=(2, *model.input_shape[1:])).astype("float32")
    got = keras.ops.convert_to_numpy(pruned(xs, training=False))
    want = keras.ops.convert_to_numpy(_zeroed_reference(model, chosen)(xs, training=False))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    scale = max(1.0, float(np.abs(want[finite]).max())) if finite.any() else 1.0
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4 * scale)
