"""Per-layer sensitivity: the scan (masks and rebuilt points), ratio choice, resume, the CLI, and
SensitivityPruning."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import compile_classifier, randomize_weights

from ridurre import graph
from ridurre import surgery as surgeon
from ridurre.app.sensitivity_cli import build_parser, run
from ridurre.pruning import BasePruning
from ridurre.sensitivity import (
    DEFAULT_RATIOS,
    SensitivityPoint,
    SensitivityPruning,
    SensitivityResult,
    channels_to_remove,
    choose_ratios,
    scan,
)
from ridurre.sensitivity.scan import _Masker
from ridurre.zoo.models import small_cnn, small_resnet


@pytest.fixture(scope="module")
def cnn(digits):
    """small_cnn trained a few epochs on the digits (about 95 % validation accuracy)."""
    keras.utils.set_random_seed(0)
    model = small_cnn()
    compile_classifier(model)
    model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def scanned(cnn, digits):
    before = [w.copy() for w in cnn.get_weights()]
    result = scan(cnn, digits.x_val, digits.y_val, progress=False)
    return result, before


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict_on_batch(x), axis=1) == y))


# -- the scan -------------------------------------------------------------------------------
def test_scan_covers_every_prunable_layer_and_ratio(scanned, cnn, digits):
    result, _ = scanned
    assert result.layers == ["conv1", "conv2", "fc1"]  # the classifier is not prunable
    assert result.ratios == list(DEFAULT_RATIOS)
    assert (result.criterion, result.metric_name, result.higher_is_better, result.mode) == (
        "l1",
        "accuracy",
        True,
        "mask",
    )
    assert result.baseline == pytest.approx(
        cnn.evaluate(digits.x_val, digits.y_val, verbose=0, return_dict=True)["accuracy"]
    )
    assert result.baseline > 0.85
    point = {(p.layer, p.ratio): p for p in result.points}
    assert (point["conv2", 0.5].channels_removed, point["conv2", 0.5].channels_total) == (16, 32)
    assert point["conv1", 0.9].channels_removed == 14  # keeps ceil(16 * 0.1) = 2
    table = result.table()
    for layer in result.layers:  # removing 90 % of a layer hurts more than removing 10 %
        assert table[layer][0.9] < table[layer][0.1], (layer, table[layer])
        assert table[layer][0.1] >= result.baseline - 0.05


def test_the_scan_leaves_the_model_unchanged(scanned, cnn):
    _, before = scanned
    for a, b in zip(before, cnn.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_masked_point_equals_the_really_pruned_model(scanned, cnn, digits):
    result, _ = scanned
    table = result.table()
    for layer, ratio in [("conv2", 0.5), ("fc1", 0.8), ("conv1", 0.3)]:
        channels = channels_to_remove(cnn, layer, ratio)
        pruned = surgeon.delete_channels(cnn, layer, channels)
        compile_classifier(pruned)
        value = pruned.evaluate(digits.x_val, digits.y_val, verbose=0, return_dict=True)["accuracy"]
        assert value == pytest.approx(table[layer][ratio], abs=1e-9)


def test_masks_are_exact_on_coupled_residual_groups(digits):
    keras.utils.set_random_seed(1)
    model = randomize_weights(small_resnet(filters=8), seed=3)
    x = digits.x_val[:64]

    def mean_output(m, xv, yv):
        return float(np.mean(m.predict_on_batch(xv) * np.arange(10)))

    result = scan(
        model, x, None, ratios=[0.25, 0.75], layers="stem_conv|block1_conv1", metric_fn=mean_output, progress=False
    )
    assert result.layers == ["stem_conv", "block1_conv1"]
    assert graph.channel_groups(model)[1].producers == ("stem_conv", "block1_conv2", "block2_conv2")
    for p in result.points:
        pruned = surgeon.delete_channels(model, p.layer, channels_to_remove(model, p.layer, p.ratio))
        assert mean_output(pruned, x, None) == pytest.approx(p.metric, rel=1e-5, abs=1e-6)


def test_masks_are_exact_on_recurrent_layers_and_flag_normalized_ones(tmp_path, caplog):
    import architectures as zoo

    def mean_output(m, xv, yv):
        return float(np.mean(m.predict_on_batch(xv) * np.arange(1, m.outputs[0].shape[-1] + 1)))

    model = randomize_weights(zoo.recurrent(), seed=5)
    x = np.random.default_rng(0).normal(size=(16, 6, 4)).astype("float32")
    result = scan(model, x, None, ratios=[0.4], layers="lstm|gru_v1", metric_fn=mean_output, progress=False)
    assert result.approximate == {}
    for p in result.points:
        pruned = surgeon.delete_channels(model, p.layer, channels_to_remove(model, p.layer, p.ratio))
        assert mean_output(pruned, x, None) == pytest.approx(p.metric, rel=1e-5, abs=1e-6)

    model = randomize_weights(zoo.normalized_stream(), seed=5)
    x = np.random.default_rng(0).normal(size=(16, 5, 6)).astype("float32")
    with caplog.at_level("WARNING", logger="ridurre"):
        result = scan(model, x, None, ratios=[0.5], metric_fn=mean_output, progress=False, output_dir=tmp_path)
    assert result.approximate == {"proj": ["ln", "rms"], "ffn3": ["unit"]}
    assert "approximate the pruned model" in caplog.text
    assert SensitivityResult.from_json(os.path.join(tmp_path, "sensitivity.json")).approximate == result.approximate
    point = next(p for p in result.points if p.layer == "ffn1")  # exact: no normalization after it
    pruned = surgeon.delete_channels(model, "ffn1", channels_to_remove(model, "ffn1", 0.5))
    assert mean_output(pruned, x, None) == pytest.approx(point.metric, rel=1e-5, abs=1e-6)


def test_zeroed_weights_are_those_of_plan_layers(cnn):
    model = surgeon.Surgeon(cnn).operate()
    trace = graph.trace_model(model)
    group = next(g for g in trace.groups() if g.producers[0] == "conv2")
    deleted = group.roots[[1, 5, 6, 30]]
    plans = surgeon.plan_layers(trace, deleted, zero=True)
    masker = _Masker(trace, group)
    masker.apply(deleted)
    for use in trace.uses.values():
        if use.layer.weights:
            expected = plans[id(use.layer)][1]
            for name, a in graph.layer_weights(use.layer).items():
                np.testing.assert_array_equal(a, expected[name])
    masker.restore()
    for a, b in zip(model.get_weights(), cnn.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("criterion", ["l2", "random", "kmeans", "bn", "activation_mean", "apoz"])
def test_every_criterion_of_the_loop(criterion, cnn, digits):
    result = scan(
        cnn,
        digits.x_val,
        digits.y_val,
        ratios=[0.5],
        layers="conv2",
        criterion=criterion,
        data=digits.x_train[:128],
        progress=False,
    )
    assert [(p.layer, p.channels_removed) for p in result.points] == [("conv2", 16)]
    assert result.criterion == {"bn": "bn_scale"}.get(criterion, criterion)
    assert 0.0 <= result.points[0].metric <= 1.0


def test_finetuned_points_are_rebuilt_models(cnn, digits):
    widths = []

    def finetune(model):
        widths.append(model.get_layer("conv2").filters)
        model.fit(digits.x_train[:256], digits.y_train[:256], epochs=1, verbose=0)

    result = scan(cnn, digits.x_val, digits.y_val, ratios=[0.75], layers=["conv2"], finetune_fn=finetune, progress=True)
    assert widths == [8] and result.mode == "rebuild"
    assert all(0.0 <= p.metric <= 1.0 for p in result.points)


def test_scan_validates_its_arguments(cnn, digits):
    x, y = digits.x_val, digits.y_val
    for bad in (0.0, 1.0, 1.5, "abc", [], [0.2, float("nan")]):
        with pytest.raises(ValueError, match="ratios"):
            scan(cnn, x, y, ratios=bad, progress=False)
    with pytest.raises(ValueError, match="Unknown criterion 'l3'"):
        scan(cnn, x, y, criterion="l3", progress=False)
    with pytest.raises(ValueError, match="data="):
        scan(cnn, x, y, criterion="apoz", progress=False)
    with pytest.raises(ValueError, match="no prunable layer to scan matches"):
        scan(cnn, x, y, layers="predictions", progress=False)
    with pytest.raises(ValueError, match="not compiled"):
        scan(small_cnn(), x, y, progress=False)
    with pytest.raises(ValueError, match="resume=True needs output_dir"):
        scan(cnn, x, y, resume=True, progress=False)
    with pytest.raises(ValueError, match="y_val has 3"):
        scan(cnn, x, y[:3], progress=False)
    with pytest.raises(ValueError, match="metric 'auc'"):
        scan(cnn, x, y, metric="auc", ratios=[0.5], layers="conv1", progress=False)


# -- resume ---------------------------------------------------------------------------------
def test_an_interrupted_scan_resumes_without_recomputing(tmp_path, cnn, digits):
    calls = []

    def metric(fail_after=None):
        def accuracy(model, x, y):
            if fail_after is not None and len(calls) >= fail_after:
                raise KeyboardInterrupt("simulated interruption")
            calls.append(1)
            return _accuracy(model, x, y)

        return accuracy

    kwargs = dict(ratios=[0.25, 0.5, 0.75], progress=False)
    x, y = digits.x_val, digits.y_val
    with pytest.raises(KeyboardInterrupt):
        scan(cnn, x, y, metric_fn=metric(fail_after=5), output_dir=tmp_path / "a", **kwargs)
    partial = SensitivityResult.from_csv(tmp_path / "a" / "sensitivity.csv")
    assert len(partial.points) == 4  # baseline + 4 points evaluated before the interruption
    assert not [f for f in os.listdir(tmp_path / "a") if f.startswith(".tmp")]
    calls.clear()
    resumed = scan(cnn, x, y, metric_fn=metric(), output_dir=tmp_path / "a", resume=True, **kwargs)
    assert len(calls) == 9 - 4  # neither the baseline nor a finished point was recomputed
    calls.clear()
    full = scan(cnn, x, y, metric_fn=metric(), output_dir=tmp_path / "b", **kwargs)
    assert len(calls) == 1 + 9
    assert (tmp_path / "a" / "sensitivity.csv").read_text() == (tmp_path / "b" / "sensitivity.csv").read_text()
    assert resumed == full
    with pytest.raises(ValueError, match="criterion 'l1', not 'l2'"):
        scan(cnn, x, y, metric_fn=metric(), output_dir=tmp_path / "a", resume=True, criterion="l2", **kwargs)


# -- results, choice ------------------------------------------------------------------------
def test_results_round_trip_and_plot(tmp_path, scanned):
    result, _ = scanned
    paths = result.save(tmp_path / "out")
    assert SensitivityResult.from_json(paths["json"]) == result
    assert SensitivityResult.from_csv(paths["csv"], "accuracy") == result
    header = open(paths["csv"]).readline().strip().split(",")
    assert header == ["layer", "ratio", "metric", "criterion", "channels_removed", "channels_total"]
    assert open(paths["png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    ax = result.plot().axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() == "accuracy" and "l1" in ax.get_title()
    assert len(ax.lines) == 3 + 1 and ax.lines[-1].get_linestyle() == "--"  # one curve per layer + baseline


def _hand_made(higher=True):
    P = SensitivityPoint
    points = [
        P("a", 0.2, 0.90, 2, 10),
        P("a", 0.4, 0.875, 4, 10),
        P("a", 0.6, 0.89, 6, 10),
        P("a", 0.8, 0.50, 8, 10),
        P("b", 0.2, 0.70, 2, 10),
        P("b", 0.4, float("nan"), 4, 10),
    ]
    return SensitivityResult(0.90, "l1", "accuracy", higher, points)


def test_choose_ratios_on_a_hand_made_result():
    result = _hand_made()
    assert choose_ratios(result) == {"a": 0.6, "b": 0.0}
    assert choose_ratios(result, max_drop=0.02, monotone=True) == {"a": 0.2, "b": 0.0}
    assert choose_ratios(result, max_drop=0.0) == {"a": 0.2, "b": 0.0}
    assert choose_ratios(result, min_metric=0.5) == {"a": 0.8, "b": 0.2}
    assert choose_ratios(result, max_drop=1.0) == {"a": 0.8, "b": 0.2}  # NaN never passes
    loss = SensitivityResult(
        0.30, "l1", "loss", False, [SensitivityPoint("a", 0.5, 0.31, 5, 10), SensitivityPoint("a", 0.9, 0.40, 9, 10)]
    )
    assert choose_ratios(loss, max_drop=0.05) == {"a": 0.5}
    assert choose_ratios(loss, min_metric=0.5) == {"a": 0.9}
    for bad in (-0.1, "x", float("nan")):
        with pytest.raises(ValueError, match="max_drop"):
            choose_ratios(result, max_drop=bad)
    with pytest.raises(ValueError, match="min_metric"):
        choose_ratios(result, min_metric="high")


# -- SensitivityPruning ---------------------------------------------------------------------
def test_sensitivity_pruning_prunes_each_layer_to_its_ratio(cnn):
    ratios = {"conv1": 0.5, "conv2": 0.25, "fc1": 0.75}
    pruning = SensitivityPruning(ratios, compile_classifier, None, 0, nb_steps=2)
    assert isinstance(pruning, BasePruning)
    pruned, _ = pruning.run_pruning(cnn)
    assert [pruned.get_layer(n).filters for n in ("conv1", "conv2")] == [8, 24]
    assert pruned.get_layer("fc1").units == 16
    assert [r.channels for r in pruning.history][0] == {"conv1": 12, "conv2": 28, "fc1": 40, "predictions": 10}
    assert len(pruning.history) == 2
    # one step with the scan's criterion removes exactly the scan's channels
    one = SensitivityPruning({"conv2": 0.5}, compile_classifier, None, 0)
    one.run_pruning(cnn)
    assert one.history[0].removed == {"conv2": channels_to_remove(cnn, "conv2", 0.5)}
    # the loop's limits still apply: 20 % of the 112 filters at most
    limited = SensitivityPruning(
        {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5},
        compile_classifier,
        None,
        0,
        maximum_pruning_percent=0.2,
        criterion="kmeans",
    )
    limited.run_pruning(cnn)
    assert 0.15 < limited.history[-1].pruning_percent <= 0.2


def test_sensitivity_pruning_validates(cnn):
    with pytest.raises(ValueError, match=r"ratios\['conv1'\]"):
        SensitivityPruning({"conv1": 1.0}, compile_classifier, None, 0)
    with pytest.raises(ValueError, match="nb_steps"):
        SensitivityPruning({"conv1": 0.5}, compile_classifier, None, 0, nb_steps=0)
    with pytest.raises(ValueError, match="ranking"):
        SensitivityPruning({"conv1": 0.5}, compile_classifier, None, 0, ranking="global")
    with pytest.raises(ValueError, match="no_such"):
        SensitivityPruning({"no_such": 0.5}, compile_classifier, None, 0).run_pruning(cnn)
    with pytest.raises(ValueError, match="cannot be pruned"):
        SensitivityPruning({"predictions": 0.5}, compile_classifier, None, 0).run_pruning(cnn)


# -- the command line -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_cnn(cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "cnn.keras"
    cnn.save(path)
    return str(path)


def _cli(*argv):
    return run(build_parser().parse_args(list(argv)))


def test_cli_writes_the_scan_and_the_chosen_ratios(tmp_path, saved_cnn, capsys):
    out = tmp_path / "out"
    code = _cli(
        "--model",
        saved_cnn,
        "--data",
        "digits",
        "--ratios",
        "0.5,0.9",
        "--layers",
        "conv.*",
        "--output",
        str(out),
        "--no-progress",
        "--batch-size",
        "64",
    )
    assert code == 0
    assert sorted(os.listdir(out)) == ["chosen_ratios.json", "sensitivity.csv", "sensitivity.json", "sensitivity.png"]
    chosen = json.loads((out / "chosen_ratios.json").read_text())
    assert set(chosen) == {"conv1", "conv2"} and all(r in (0.0, 0.5, 0.9) for r in chosen.values())
    assert "chosen ratios" in capsys.readouterr().out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--model": "missing.keras"}, "missing.keras: no such model file"),
        ({"--ratios": "0.2,1.5"}, "--ratios"),
        ({"--ratios": "abc"}, "--ratios"),
        ({"--criterion": "l3"}, "Unknown criterion"),
        ({"--data": "nope"}, "--data"),
        ({"--data": "WRONG_SHAPE"}, "do not fit the model's input"),
        ({"--layers": "conv("}, "regular expression"),
        ({"--layers": "nothing"}, "no prunable layer"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(change, message, tmp_path, saved_cnn, capsys):
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((40, 4, 4, 1), "float32"), y=np.arange(40) % 10)
    options = {"--model": saved_cnn, "--data": "digits", "--output": str(tmp_path / "out")}
    options.update({k: str(wrong) if v == "WRONG_SHAPE" else v for k, v in change.items()})
    argv = [item for pair in options.items() for item in pair] + ["--no-progress"]
    assert _cli(*argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("loss", ["categorical_crossentropy", None])
def test_cli_handles_one_hot_losses_and_uncompiled_models(loss, tmp_path, cnn, digits):
    model = keras.models.clone_model(cnn)
    model.set_weights(cnn.get_weights())
    if loss is not None:
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    model.save(tmp_path / "m.keras")
    out = tmp_path / "out"
    assert (
        _cli(
            "--model",
            str(tmp_path / "m.keras"),
            "--data",
            "digits",
            "--layers",
            "fc1",
            "--ratios",
            "0.5",
            "--output",
            str(out),
            "--no-progress",
        )
        == 0
    )
    result = SensitivityResult.from_json(out / "sensitivity.json")
    assert result.metric_name == "accuracy"
    assert result.baseline == pytest.approx(_accuracy(cnn, digits.x_val, digits.y_val), abs=1e-6)
