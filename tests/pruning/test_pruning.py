"""End-to-end tests of the prune-and-finetune loop on the bundled digits data."""

import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
from helpers import (
    ROOT,  # noqa: E402
    compile_classifier,
)

import ridurre
from ridurre.metrics import model_stats
from ridurre.pruning import schedules


def _accuracy(model, data):
    return float(np.mean(np.argmax(model.predict(data.x_test, verbose=0), axis=1) == data.y_test))


def _finetune_on(data):
    def finetune(model, initial_epoch, end_epoch):
        keras.utils.set_random_seed(initial_epoch)
        return model.fit(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            batch_size=32,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            shuffle=False,
            verbose=0,
        )

    return finetune


def _compile_for_finetuning(model):
    # finetune at a lower learning rate than training: with Adam(1e-3) from scratch after every step the
    # accuracy of this small BatchNorm network swings by several points from epoch to epoch
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _conv_filters(model):
    return sum(l.filters for l in model.layers if isinstance(l, keras.layers.Conv2D))


METHODS = [
    (
        "random",
        lambda c, f: ridurre.RandomFilterPruning(
            0.15, c, f, 2, maximum_prune_iterations=2, maximum_pruning_percent=0.3
        ),
    ),
    (
        "kmeans",
        lambda c, f: ridurre.KMeansFilterPruning(
            0.85, c, f, 2, maximum_prune_iterations=2, maximum_pruning_percent=0.3
        ),
    ),
    (
        "l1",
        lambda c, f: ridurre.L1FilterPruning(0.15, c, f, 2, maximum_prune_iterations=2, maximum_pruning_percent=0.3),
    ),
    (
        "l2",
        lambda c, f: ridurre.L2FilterPruning(0.15, c, f, 2, maximum_prune_iterations=2, maximum_pruning_percent=0.3),
    ),
    (
        "bn",
        lambda c, f: ridurre.BNScaleFilterPruning(
            0.15, c, f, 2, maximum_prune_iterations=2, maximum_pruning_percent=0.3
        ),
    ),
    (
        "l1-global",
        lambda c, f: ridurre.L1FilterPruning(
            0.15, c, f, 2, maximum_prune_iterations=2, maximum_pruning_percent=0.3, ranking="global"
        ),
    ),
]


@pytest.mark.parametrize("name,make", METHODS, ids=[m[0] for m in METHODS])
def test_each_method_prunes_and_keeps_accuracy(name, make, trained_resnet, digits):
    base_accuracy = _accuracy(trained_resnet, digits)
    assert base_accuracy > 0.9
    pruning = make(_compile_for_finetuning, _finetune_on(digits))
    pruned, last_epoch = pruning.run_pruning(trained_resnet)
    assert last_epoch == 2 * len(pruning.history)
    assert pruned.count_params() < trained_resnet.count_params()
    assert 0 < pruning.history[-1].pruning_percent <= 0.3 + 1e-9
    assert _accuracy(pruned, digits) >= base_accuracy - 0.05, name


def test_activation_criteria_on_a_data_sample(trained_resnet, digits):
    for kind in ("mean", "apoz"):
        pruning = ridurre.ActivationFilterPruning(
            0.2, compile_classifier, _finetune_on(digits), 1, maximum_prune_iterations=1, data=digits.x_val, kind=kind
        )
        pruned, _ = pruning.run_pruning(trained_resnet)
        assert pruned.count_params() < trained_resnet.count_params()
    with pytest.raises(ValueError, match="kind must be one of"):
        ridurre.ActivationFilterPruning(0.2, compile_classifier, None, 0, data=digits.x_val, kind="max")


def test_the_original_api_works_unchanged(trained_resnet, digits):
    calls = []

    def compile_my_model(model):
        compile_classifier(model)

    def finetune_my_model(model, initial_epoch, finetune_epochs):
        calls.append((initial_epoch, finetune_epochs))
        model.fit(
            digits.x_train[:64], digits.y_train[:64], epochs=finetune_epochs, initial_epoch=initial_epoch, verbose=0
        )

    pruning = ridurre.KMeansFilterPruning(
        0.9, compile_my_model, finetune_my_model, 6, maximum_pruning_percent=0.4, maximum_prune_iterations=2
    )
    model, last_epoch = pruning.run_pruning(trained_resnet)
    assert calls == [(0, 6), (6, 12)] and last_epoch == 12
    assert isinstance(model, keras.Model)


@pytest.mark.parametrize("limit", [0.2, 0.35])
def test_maximum_pruning_percent_is_never_crossed(trained_resnet, limit):
    pruning = ridurre.L1FilterPruning(0.3, compile_classifier, None, 0, maximum_pruning_percent=limit)
    pruned, _ = pruning.run_pruning(trained_resnet)
    original = _conv_filters(trained_resnet)
    removed = 1 - _conv_filters(pruned) / original
    assert removed <= limit + 1e-9
    assert removed >= limit - 0.1, "the last step should be shrunk to land near the limit, not stop early"


def test_mac_and_param_limits_are_never_crossed(trained_resnet):
    base = model_stats(trained_resnet)
    pruning = ridurre.L1FilterPruning(
        0.3, compile_classifier, None, 0, maximum_pruning_percent=None, target_speedup=2.0
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    after = model_stats(pruned)
    assert after.total_macs >= base.total_macs / 2
    assert after.total_macs <= base.total_macs * 0.6
    pruning = ridurre.RandomFilterPruning(
        0.4, compile_classifier, None, 0, maximum_pruning_percent=None, max_params_reduction=0.3
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    assert pruned.count_params() >= 0.7 * trained_resnet.count_params()


def test_a_legacy_subclass_with_only_the_conv2d_hook_keeps_working(trained_resnet):
    seen = []

    class FirstFilters(ridurre.BasePruning):
        def run_pruning_for_conv2d_layer(self, pruning_factor, layer, layer_weight_mtx):
            seen.append((layer.name, layer_weight_mtx.shape))
            return [0, 1]

    pruning = FirstFilters(0.1, compile_classifier, None, 0, maximum_prune_iterations=1)
    pruned, _ = pruning.run_pruning(trained_resnet)
    assert seen and all(len(shape) == 4 for _, shape in seen)
    assert _conv_filters(pruned) < _conv_filters(trained_resnet)


def test_a_subclass_scoring_groups(trained_resnet):
    class Smallest(ridurre.BasePruning):
        def score_channels(self, view):
            return np.abs(view.weight_matrices()[0]).sum(axis=1)

    pruned, _ = Smallest(0.25, compile_classifier, None, 0, maximum_prune_iterations=1).run_pruning(trained_resnet)
    assert pruned.count_params() < trained_resnet.count_params()
    with pytest.raises(TypeError, match="must implement"):

        class Nothing(ridurre.BasePruning):
            pass

        Nothing(0.1, compile_classifier, None, 0)


def test_coupled_residual_channels_are_pruned_together(trained_resnet):
    pruning = ridurre.L1FilterPruning(0.25, compile_classifier, None, 0, maximum_prune_iterations=1)
    pruned, _ = pruning.run_pruning(trained_resnet)
    stem = pruned.get_layer("stem_conv").filters
    residual_outputs = [l.filters for l in pruned.layers if l.name.endswith("conv2")]
    assert residual_outputs and all(f == stem for f in residual_outputs)


def test_layer_selection_bounds_and_rounding(trained_resnet):
    names = [l.name for l in trained_resnet.layers if isinstance(l, keras.layers.Conv2D)]
    pruning = ridurre.L1FilterPruning(
        0.5, compile_classifier, None, 0, maximum_prune_iterations=1, exclude=["stem_conv"], round_to=8
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    for name in names:
        assert pruned.get_layer(name).filters % 8 == 0
    assert pruned.get_layer("stem_conv").filters == trained_resnet.get_layer("stem_conv").filters
    pruning = ridurre.L1FilterPruning(
        0.9,
        compile_classifier,
        None,
        0,
        maximum_prune_iterations=3,
        maximum_pruning_percent=None,
        min_channels=5,
        max_fraction_per_layer=0.5,
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    for name in names:
        before, after = trained_resnet.get_layer(name).filters, pruned.get_layer(name).filters
        assert after >= max(5, before - before // 2)
    pruning = ridurre.L1FilterPruning(
        0.5,
        compile_classifier,
        None,
        0,
        maximum_prune_iterations=1,
        layers=[r"block1_.*"],
        layer_factors={"block1_conv1": 0.25},
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    changed = {n for n in names if pruned.get_layer(n).filters != trained_resnet.get_layer(n).filters}
    assert changed == {"block1_conv1"}


def test_schedules_and_prune_bins(trained_resnet):
    seen = []

    def scheduler(factor, iteration):
        seen.append((factor, iteration))
        return schedules.linear(0.1, 0.3, 3)(factor, iteration)

    pruning = ridurre.RandomFilterPruning(
        0.1, compile_classifier, None, 0, maximum_prune_iterations=3, maximum_pruning_percent=None
    )
    pruning.run_pruning(trained_resnet, prune_factor_scheduler_fn=scheduler)
    assert [i for _, i in seen] == [0, 1, 2] and seen[0][0] == 0.1
    assert [round(r.factor, 3) for r in pruning.history] == [0.1, 0.167, 0.233]
    pruning = ridurre.RandomFilterPruning(0.1, compile_classifier, None, 0, maximum_prune_iterations=1)
    pruning.define_prune_bins([0, 20, 1000], [0.0, 0.5])
    pruned, _ = pruning.run_pruning(trained_resnet)
    assert pruned.get_layer("stem_conv").filters == 12  # 24 channels: the 0.5 bin


def test_errors_are_raised_with_context(trained_resnet):
    def broken_compile(model):
        raise RuntimeError("no optimizer today")

    with pytest.raises(RuntimeError, match="model_compile_fn failed after pruning iteration 0"):
        ridurre.L1FilterPruning(0.2, broken_compile, None, 0, maximum_prune_iterations=1).run_pruning(trained_resnet)
    for bad in (dict(removal_factor=1.5), dict(removal_factor="x")):
        with pytest.raises(ValueError, match="pruning_factor"):
            ridurre.L1FilterPruning(bad["removal_factor"], compile_classifier, None, 0)
    with pytest.raises(ValueError, match="ranking"):
        ridurre.L1FilterPruning(0.1, compile_classifier, None, 0, ranking="best")
    with pytest.raises(ValueError, match="round_to"):
        ridurre.L1FilterPruning(0.1, compile_classifier, None, 0, round_to=0)


def test_history_and_checkpoints_are_written(tmp_path, trained_resnet):
    pruning = ridurre.L1FilterPruning(0.2, compile_classifier, None, 0, maximum_prune_iterations=2, output_dir=tmp_path)
    pruned, _ = pruning.run_pruning(trained_resnet)
    history = json.loads((tmp_path / "logs" / "history.json").read_text())
    assert [h["iteration"] for h in history] == [0, 1]
    assert history[-1]["params"] == pruned.count_params()
    assert set(history[0]["removed"]) and history[0]["channels"]["stem_conv"] < 24
    assert (tmp_path / "logs" / "history.csv").read_text().startswith("iteration,")
    assert sorted(os.listdir(tmp_path / "models")) == ["iteration_000.keras", "iteration_001.keras"]
    assert not [f for f in os.listdir(tmp_path / "models") if f.startswith(".tmp")]


def test_an_interrupted_run_resumes_to_the_same_result(tmp_path, trained_resnet, digits):
    finetune = _finetune_on(digits)

    def make(output_dir, finetune_fn):
        return ridurre.L1FilterPruning(
            0.2,
            compile_classifier,
            finetune_fn,
            1,
            maximum_prune_iterations=3,
            maximum_pruning_percent=None,
            output_dir=output_dir,
            resume=True,
        )

    reference, ref_epoch = make(tmp_path / "full", finetune).run_pruning(trained_resnet)

    def crash_in_third(model, initial_epoch, end_epoch):
        if initial_epoch == 2:
            raise KeyboardInterrupt("power cut")
        return finetune(model, initial_epoch, end_epoch)

    with pytest.raises(KeyboardInterrupt):
        make(tmp_path / "cut", crash_in_third).run_pruning(trained_resnet)
    resumed_pruning = make(tmp_path / "cut", finetune)
    resumed, epoch = resumed_pruning.run_pruning(trained_resnet)
    assert epoch == ref_epoch == 3
    assert [r.iteration for r in resumed_pruning.history] == [0, 1, 2]
    assert [l.name for l in resumed.layers] == [l.name for l in reference.layers]
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_rebuilt_models_are_created_under_an_active_distribution_strategy():
    code = r"""
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras, ridurre
from ridurre.zoo.models import small_cnn
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
with strategy.scope():
    model = small_cnn()
seen = []
def compile_fn(m):
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
def finetune(m, a, b):
    seen.append(type(m.get_layer("conv1").kernel.value).__name__)
    x = np.random.rand(64, 8, 8, 1).astype("float32"); y = np.random.randint(0, 10, 64)
    return m.fit(x, y, epochs=b, initial_epoch=a, batch_size=16, verbose=0)
with strategy.scope():
    pruned, _ = ridurre.L1FilterPruning(0.25, compile_fn, finetune, 1, maximum_prune_iterations=2).run_pruning(model)
assert seen == ["MirroredVariable", "MirroredVariable"], seen
print("distributed ok", pruned.get_layer("conv1").filters)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed ok" in result.stdout


def test_the_readme_custom_criterion(trained_resnet):
    # the GeometricMedianPruning example of README.md, verbatim
    class GeometricMedianPruning(ridurre.BasePruning):
        def score_channels(self, view):
            w = np.concatenate(view.weight_matrices(), axis=1)
            return np.linalg.norm(w[:, None] - w[None], axis=-1).sum(axis=1)  # far from the rest = keep

    pruning = GeometricMedianPruning(0.25, compile_classifier, None, 0, maximum_prune_iterations=1)
    pruned, _ = pruning.run_pruning(trained_resnet)
    kernel = trained_resnet.get_layer("block1_conv1").get_weights()[0]
    w = kernel.reshape(-1, kernel.shape[-1]).T
    distances = np.linalg.norm(w[:, None] - w[None], axis=-1).sum(axis=1)
    expected_removed = set(np.argsort(distances, kind="stable")[:6].tolist())
    assert pruning.history[0].removed["block1_conv1"] == sorted(expected_removed)
    assert pruned.get_layer("block1_conv1").filters == 18


def test_fixed_scores_follow_every_producer_of_a_coupled_group(trained_resnet):
    # stem_conv, block1_conv2 and block2_conv2 are joined by the residual Adds: one group of 24
    rng = np.random.default_rng(3)
    scores = {name: rng.random(24) for name in ("stem_conv", "block1_conv2", "block2_conv2")}
    pruning = ridurre.ScoreFilterPruning(
        0.25,
        compile_classifier,
        None,
        0,
        maximum_prune_iterations=2,
        maximum_pruning_percent=None,
        layers=list(scores),
        scores=scores,
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    total = sum(scores.values())
    first = sorted(np.argsort(total, kind="stable")[:6].tolist())
    assert pruning.history[0].removed["stem_conv"] == first
    assert pruning.history[0].removed["block2_conv2"] == first
    survivors = np.setdiff1d(np.arange(24), first)
    second = sorted(np.argsort(total[survivors], kind="stable")[:4].tolist())  # 18 - ceil(18 * 0.75)
    assert pruning.history[1].removed["block1_conv2"] == second
    assert pruned.get_layer("stem_conv").filters == 14


def test_a_step_shrunk_to_fit_a_limit_keeps_round_to(trained_resnet):
    pruning = ridurre.L1FilterPruning(
        0.5, compile_classifier, None, 0, maximum_prune_iterations=1, maximum_pruning_percent=0.3, round_to=4
    )
    pruned, _ = pruning.run_pruning(trained_resnet)
    convs = [l for l in pruned.layers if isinstance(l, keras.layers.Conv2D)]
    assert all(l.filters % 4 == 0 for l in convs)
    assert pruning.history[0].pruning_percent <= 0.3 + 1e-9


def test_a_fifth_positional_argument_of_base_pruning_warns(trained_resnet):
    class Legacy(ridurre.BasePruning):  # a 0.0.2 subclass without an __init__ of its own
        def score_channels(self, view):
            return np.arange(view.size, dtype=float)

    with pytest.warns(UserWarning, match=r"nb_trained_for_epochs=4, maximum_prune_iterations=1"):
        pruning = Legacy(0.25, compile_classifier, None, 0, 4, 1)
    pruned, last_epoch = pruning.run_pruning(trained_resnet)
    assert last_epoch == 4 and len(pruning.history) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the method classes' own order is not ambiguous
        method = ridurre.L1FilterPruning(0.25, compile_classifier, None, 0, 1, 0.3)
    assert method._maximum_prune_iterations == 1 and method._limits.filters == 0.3
    with pytest.raises(TypeError, match="at most 7 positional"):
        Legacy(0.25, compile_classifier, None, 0, 4, 1, 0.5, 9)


def test_the_loop_prunes_sequence_models_and_reports_normalized_groups(caplog):
    """Embedding, a Bidirectional LSTM and a GRU; a LayerNormalization on the stream: with
    verify="exact" every group is checked, the normalized ones against a reference that deletes
    their channels too, and the record says which they were."""
    from helpers import randomize_weights

    x = keras.Input((6,), dtype="int32")
    h = keras.layers.Embedding(30, 12, name="emb")(x)
    h = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), name="bi")(h)
    h = keras.layers.LayerNormalization(name="ln")(h)
    h = keras.layers.GRU(10, name="gru")(h)
    model = randomize_weights(keras.Model(x, keras.layers.Dense(3, name="out")(h)))
    pruner = ridurre.Pruner(
        "l1",
        lambda m: m.compile("adam", "mse"),
        None,
        0,
        pruning_factor=0.25,
        maximum_prune_iterations=1,
        verify="exact",
    )
    with caplog.at_level("WARNING", logger="ridurre"):
        pruned, _ = pruner.run_pruning(model)
    assert pruned.get_layer("emb").output_dim == 9 and pruned.get_layer("gru").get_config()["units"] == 8
    bi = pruned.get_layer("bi")
    assert bi.forward_layer.units == bi.backward_layer.units == 6
    assert pruner.history[0].inexact == ["bi"]
    assert "pass through a normalization over the channels" in caplog.text
    strict = ridurre.Pruner(
        "l1",
        lambda m: m.compile("adam", "mse"),
        pruning_factor=0.25,
        maximum_prune_iterations=1,
        rules=ridurre.rules.RuleSet(exact_only=True),
    )
    pruned, _ = strict.run_pruning(model)
    assert pruned.get_layer("bi").forward_layer.units == 8 and strict.history[0].inexact == []
    assert model_stats(pruned).uncounted == []
