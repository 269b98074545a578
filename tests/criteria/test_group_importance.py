"""Group-level importance: what each rule says a layer applies to an input channel, the members a
view gathers, and the criteria that score them (magnitude over the group, LAMP, FPGM, HRank,
Taylor and Hessian with gradients from every backend)."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import ROOT, compile_classifier, randomize_weights

import ridurre
from ridurre.criteria import make_criterion
from ridurre.criteria.gradients import accumulate_gradients
from ridurre.criteria.view import ActivationRecorder, GroupView
from ridurre.graph import layer_weights, trace_model
from ridurre.rules import get_rule

CONSUMERS = {
    "conv2d": lambda: keras.layers.Conv2D(6, 3, name="layer"),
    "grouped": lambda: keras.layers.Conv2D(6, 3, groups=2, name="layer"),
    "conv1d": lambda: keras.layers.Conv1D(5, 3, name="layer"),
    "transpose": lambda: keras.layers.Conv2DTranspose(5, 3, name="layer"),
    "dense": lambda: keras.layers.Dense(5, name="layer"),
    "depthwise": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="layer"),
    "batchnorm": lambda: keras.layers.BatchNormalization(name="layer"),
}


def _built(kind):
    shape = {"conv1d": (7, 4), "dense": (4,)}.get(kind, (7, 7, 4))
    x = keras.Input(shape)
    model = keras.Model(x, CONSUMERS[kind]()(x))
    return model.get_layer("layer")


@pytest.mark.parametrize("kind", sorted(CONSUMERS))
def test_input_weights_are_what_zeroing_an_input_channel_clears(kind):
    """Row c of input_weights holds exactly the weights (biases aside) the rule's own zero() clears
    for input c."""
    layer = _built(kind)
    rule = get_rule(layer)
    weights = {name: np.arange(1, v.size + 1, dtype=float).reshape(v.shape) for name, v in layer_weights(layer).items()}
    weights = {k: v for k, v in weights.items() if k not in ("bias", "beta", "moving_mean", "moving_variance")}
    rows = rule.input_weights(layer, weights)
    assert rows.shape[0] == 4
    if kind == "grouped":  # input c of each group is one coupled channel: zero() takes the first group's
        rows = np.concatenate([rows[:2], rows[2:]], axis=1)
    for c in range(len(rows)):
        mask = np.zeros(4, dtype=bool)
        mask[c] = True
        zeroed = rule.zero(layer, weights, mask, None) if kind != "batchnorm" else rule.zero(layer, weights, None, mask)
        cleared = sorted(float(v) for k in weights for v in weights[k][(zeroed[k] == 0) & (weights[k] != 0)])
        assert cleared == sorted(rows[c].tolist()), (kind, c)


def test_separable_input_weights_cover_the_depthwise_and_pointwise_weights_of_a_channel():
    layer = keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="layer")
    x = keras.Input((7, 7, 3))
    keras.Model(x, layer(x))
    w = layer_weights(layer)
    rows = get_rule(layer).input_weights(layer, w)
    assert rows.shape == (3, 3 * 3 * 2 + 2 * 5)
    np.testing.assert_array_equal(rows[1, :18], w["depthwise_kernel"][:, :, 1, :].ravel())
    np.testing.assert_array_equal(rows[1, 18:], w["pointwise_kernel"][0, 0, 2:4, :].ravel())


def _block(seed=0):
    """conv -> BN -> ReLU -> conv (consumer) and a Flatten -> Dense head."""
    x = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(3, 3, padding="same", name="next")(h)
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h))
    return randomize_weights(keras.Model(x, out), seed=seed)


def _view(model, producer="conv"):
    trace = trace_model(model)
    group = next(g for g in trace.groups() if producer in g.producers)
    return GroupView(group, trace, model, seed=0, n_remove=1)


def test_members_of_a_group_and_of_a_flattened_consumer():
    model = _block()
    members = _view(model).members()
    assert [(m.role, m.path, m.matrix.shape) for m in members] == [
        ("producer", "conv", (4, 18)),
        ("consumer", "next", (4, 27)),
        ("norm", "bn", (4, 1)),
    ]
    np.testing.assert_array_equal(members[2].matrix[:, 0], model.get_layer("bn").get_weights()[0])
    head = _view(model, "next").members(("consumer",))[0]
    kernel = model.get_layer("head").get_weights()[0]  # (6*6*3, 2): channel c at rows c, c+3, ...
    assert head.matrix.shape == (3, 36 * 2)
    np.testing.assert_array_equal(head.matrix[1], kernel[1::3].ravel())
    with pytest.raises(ValueError, match="roles must be among"):
        _view(model).members(("weights",))


def test_group_scores_see_what_the_producer_alone_cannot():
    """A channel whose BatchNorm scale and next-layer weights are zero is worthless, whatever its
    producing filter (here the largest): the group scores find it, the 0.0.2 producer scores do not."""
    model = _block()
    assert np.argmax(np.abs(model.get_layer("conv").get_weights()[0]).reshape(-1, 4).sum(axis=0)) == 2
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    gamma[2] = 0.0  # channel 2 is silenced by its BatchNorm
    bn.set_weights([gamma, beta, mean, var])
    nxt = model.get_layer("next")
    k, b = nxt.get_weights()
    k[:, :, 2, :] = 0.0  # and nobody reads it
    nxt.set_weights([k, b])
    view = _view(model)
    for name in ("l1", "l2", "lamp"):
        assert make_criterion(name).select(view, 1).tolist() == [2], name
        assert make_criterion(name, scope="producers").select(view, 1).tolist() != [2], name
    assert make_criterion("bn_scale").select(view, 1).tolist() == [2]


def test_group_criterion_options_are_checked_and_method_classes_keep_producer_scores():
    with pytest.raises(ValueError, match="scope must be one of"):
        make_criterion("l1", scope="layer")
    with pytest.raises(ValueError, match="reduction must be one of"):
        make_criterion("l1", reduction="median")
    with pytest.raises(ValueError, match="normalizer must be one of"):
        make_criterion("l1", normalizer="softmax")
    with pytest.raises(TypeError, match="criterion 'apoz'"):
        make_criterion("apoz", data=np.ones((2, 3)), scope="group")
    l1 = make_criterion("l1")
    assert (l1.scope, l1.reduction, l1.normalizer) == ("group", "mean", "mean")
    assert make_criterion("lamp").normalizer == "lamp"
    for cls in (ridurre.L1FilterPruning, ridurre.KMeansFilterPruning, ridurre.BNScaleFilterPruning):
        assert cls(0.5, compile_classifier, None, 0).criterion_object.scope == "producers"
    grouped = ridurre.L1FilterPruning(0.5, compile_classifier, None, 0, criterion_options={"scope": "group"})
    assert grouped.criterion_object.scope == "group"
    assert ridurre.Pruner("l1", compile_classifier).criterion_object.scope == "group"


def test_fpgm_removes_the_channel_at_the_geometric_median():
    model = _block(seed=2)
    conv = model.get_layer("conv")
    kernel, bias = conv.get_weights()
    kernel[..., 3] = kernel[..., :3].mean(axis=-1)  # the centre of the other three
    conv.set_weights([kernel, bias])
    assert make_criterion("fpgm", scope="producers").select(_view(model), 1).tolist() == [3]


def test_hrank_ranks_channels_by_the_rank_of_their_feature_maps():
    x = keras.Input((6, 6, 1))
    conv = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, name="conv")
    out = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(conv(x)))
    model = keras.Model(x, out)
    kernel = np.zeros((3, 3, 1, 3), "float32")
    kernel[1, 1, 0, 0] = 1.0  # identity: full-rank maps on random input
    kernel[1, 0, 0, 1] = kernel[1, 1, 0, 1] = kernel[1, 2, 0, 1] = 1.0  # a row sum: still high rank
    conv.set_weights([kernel])
    data = np.zeros((4, 6, 6, 1), "float32")
    data[:, :, :, 0] = np.random.default_rng(0).normal(size=(4, 6, 1))  # every row the same: rank 1 inputs
    data[:2] = np.random.default_rng(1).normal(size=(2, 6, 6, 1))
    scores = make_criterion("hrank", data=data).score(_view(model))
    assert scores[2] == 0.0 and scores[0] > 1 and scores[1] > 1


def _compiled_block():
    model = _block(seed=5)
    compile_classifier(model)
    return model


def test_taylor_and_hessian_scores_are_zero_for_a_channel_nobody_reads():
    model = _compiled_block()
    nxt = model.get_layer("next")
    k, b = nxt.get_weights()
    k[:, :, 1, :] = 0.0
    nxt.set_weights([k, b])
    rng = np.random.default_rng(0)
    data, labels = rng.normal(size=(40, 6, 6, 2)).astype("float32"), rng.integers(0, 2, 40)
    view = _view(model)
    for name in ("taylor", "hessian"):
        criterion = make_criterion(name, data=data, labels=labels, batch_size=16)
        scores = criterion.score(view)
        assert scores.shape == (4,) and scores[1] == 0 and scores.max() > 0
    before = [w.copy() for w in model.get_weights()]
    make_criterion("taylor", data=data, labels=labels).score(_view(model))
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # nothing changed (BN stats)


def test_gradient_criteria_need_labels_and_a_loss():
    data = np.zeros((4, 6, 6, 2), "float32")
    with pytest.raises(ValueError, match="labels="):
        make_criterion("taylor", data=data)
    with pytest.raises(ValueError, match="data="):
        make_criterion("hessian")
    uncompiled = _block()
    with pytest.raises(ValueError, match="compile model"):
        make_criterion("taylor", data=data, labels=np.zeros(4)).score(_view(uncompiled))
    scores = make_criterion("taylor", data=data, labels=np.zeros(4), loss="sparse_categorical_crossentropy")
    assert scores.score(_view(uncompiled)).shape == (4,)


_BACKEND_SCRIPT = """
import json, numpy as np, keras
from ridurre.criteria.gradients import accumulate_gradients
rng = np.random.default_rng(0)
x = keras.Input((6, 6, 2))
h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(x)
h = keras.layers.BatchNormalization(name="bn")(h)
h = keras.layers.ReLU()(h)
model = keras.Model(x, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h)))
model.set_weights([rng.normal(size=w.shape).astype("float32") ** 2 for w in model.get_weights()])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
data, labels = rng.normal(size=(24, 6, 6, 2)).astype("float32"), rng.integers(0, 3, 24)
g = accumulate_gradients(model, data, labels, batch_size=8)
print("RESULT", json.dumps([g.mean[id(v)].ravel().tolist() for v in model.trainable_variables]))
"""


def _gradients_under(backend):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": ROOT}
    result = subprocess.run(
        [sys.executable, "-c", _BACKEND_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return [np.asarray(v) for v in json.loads(line[len("RESULT ") :])]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gradients_agree_across_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    reference, other = _gradients_under("tensorflow"), _gradients_under(backend)
    assert len(reference) == len(other)
    for a, b in zip(reference, other):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_accumulate_gradients_checks_its_inputs():
    model = _compiled_block()
    x = np.zeros((4, 6, 6, 2), "float32")
    with pytest.raises(ValueError, match="one target per example"):
        accumulate_gradients(model, x, np.zeros(3))
    with pytest.raises(ValueError, match="batch_size"):
        accumulate_gradients(model, x, np.zeros(4), batch_size=0)
    g = accumulate_gradients(model, x, np.zeros(4), batch_size=3, max_batches=1)
    assert g.batches == 1


def test_gradient_criteria_in_the_loop_and_the_scan():
    from ridurre.sensitivity import scan

    model = _compiled_block()
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(32, 6, 6, 2)).astype("float32"), rng.integers(0, 2, 32)
    for name in ("taylor", "hessian"):
        pruner = ridurre.Pruner(
            name,
            compile_classifier,
            pruning_factor=0.5,
            maximum_prune_iterations=2,
            criterion_options={"data": x, "labels": y, "batch_size": 8},
        )
        pruned, _ = pruner.run_pruning(model)  # the second step scores the rebuilt, recompiled model
        assert len(pruner.history) == 2 and pruned.get_layer("conv").filters == 1
    result = scan(model, x, y, ratios=[0.5], layers="conv", criterion="taylor", progress=False)
    assert result.criterion == "taylor" and [p.channels_removed for p in result.points] == [2]


ARCHITECTURES = [
    "sequential_cnn",
    "residual",
    "concatenating",
    "depthwise",
    "grouped",
    "conv1d_3d",
    "squeeze_excite",
    "mlp",
    "nested",
    "shared",
    "group_norm",
]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_group_criteria_score_every_prunable_group_of_every_architecture(arch):
    import architectures

    model = randomize_weights(getattr(architectures, arch)(), seed=0)
    trace = trace_model(model)
    groups = [g for g in trace.groups() if g.prunable and g.size > 1]
    assert groups
    rng = np.random.default_rng(0)
    data = [rng.normal(size=(6,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    data = data[0] if len(data) == 1 else data
    labels = np.zeros((6,) + tuple(model.outputs[0].shape[1:]), "float32")
    criteria = [make_criterion(name) for name in ("l1", "l2", "lamp", "bn_scale", "fpgm", "kmeans")]
    criteria += [make_criterion(name, data=data) for name in ("activation_mean", "hrank")]
    criteria.append(make_criterion("taylor", data=data, labels=labels, loss="mse"))
    recorder = ActivationRecorder(model, trace)
    for group in groups:
        view = GroupView(group, trace, model, seed=0, n_remove=1, activations=recorder)
        roles = {m.role for m in view.members()}
        assert "producer" in roles, group.producers
        for criterion in criteria:
            if "data" in criterion.needs and not _top_level(group):
                continue  # activations are recorded for the top-level producers only
            scores = np.asarray(criterion.score(view))
            assert scores.shape == (group.size,) and np.isfinite(scores).all(), (arch, group.producers, criterion)


def _top_level(group):
    return all("/" not in p for p in group.producers)
