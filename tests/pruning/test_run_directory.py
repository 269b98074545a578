"""What a run directory belongs to (resume only the same run, from anywhere), what a new run does with
an old one, leftovers of interrupted writes, non-finite weights, limits met or missed (issue 14), and
the fingerprint of the settings, which run outputs are no part of."""

import json
import logging
import os

import keras
import numpy as np
import pytest
from helpers import compile_classifier

import ridurre
from ridurre.pruning.checkpoints import STATE_FILE, model_fingerprint
from ridurre.sensitivity import SensitivityPruning


@pytest.fixture(scope="module")
def tiny(digits):
    """A small CNN trained for one epoch on 300 digits."""
    from ridurre.zoo.models import small_cnn

    keras.utils.set_random_seed(0)
    model = small_cnn(filters=(8, 16), dense_units=16)
    compile_classifier(model)
    model.fit(digits.x_train[:300], digits.y_train[:300], epochs=1, batch_size=64, verbose=0)
    return model


def _finetune(digits):
    def finetune(model, initial_epoch, end_epoch):
        keras.utils.set_random_seed(initial_epoch)
        return model.fit(
            digits.x_train[:200],
            digits.y_train[:200],
            batch_size=50,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            shuffle=False,
            verbose=0,
        )

    return finetune


def _pruner(output_dir, criterion="l1", factor=0.2, iterations=3, finetune=None, **options):
    return ridurre.Pruner(
        criterion,
        compile_classifier,
        finetune,
        1 if finetune else 0,
        pruning_factor=factor,
        maximum_prune_iterations=iterations,
        maximum_pruning_percent=None,
        output_dir=output_dir,
        resume=True,
        **options,
    )


def _interrupted_after_first_iteration(output_dir, model, digits, **options):
    finetune = _finetune(digits)

    def cut(m, initial_epoch, end_epoch):
        if initial_epoch == 1:
            raise KeyboardInterrupt("power cut")
        return finetune(m, initial_epoch, end_epoch)

    with pytest.raises(KeyboardInterrupt):
        _pruner(output_dir, finetune=cut, **options).run_pruning(model)
    assert json.loads(open(os.path.join(output_dir, STATE_FILE)).read())["iteration"] == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"criterion": "random"}, "criterion"),
        ({"factor": 0.3}, "pruning_factor 0.2 there, 0.3 here"),
        ({"model": "other"}, "the input model differs"),
        ({"round_to": 2}, "round_to null there, 2 here"),
    ],
    ids=["method", "factor", "model", "round_to"],
)
def test_resume_refuses_a_directory_of_another_run(tmp_path, tiny, digits, change, message):
    _interrupted_after_first_iteration(tmp_path, tiny, digits)
    before = sorted(p.name for p in (tmp_path / "models").iterdir())
    model = tiny
    if change.pop("model", None):
        model = keras.models.clone_model(tiny)  # the same architecture, other weights
    pruner = _pruner(tmp_path, finetune=_finetune(digits), **change)
    with pytest.raises(ValueError, match="holds another run") as info:
        pruner.resume_state(model)
    assert message in str(info.value)
    with pytest.raises(ValueError, match="holds another run"):
        pruner.run_pruning(model)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == before  # nothing touched


def test_resume_works_from_another_working_directory(tmp_path, monkeypatch, tiny, digits):
    monkeypatch.chdir(tmp_path)
    _interrupted_after_first_iteration("run", tiny, digits)
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["checkpoint"] == os.path.join("models", "iteration_000.keras")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    pruner = _pruner(os.path.join("..", "run"), finetune=_finetune(digits))
    assert pruner.resume_state(tiny)["iteration"] == 0
    pruned, epoch = pruner.run_pruning(tiny)
    assert epoch == 3 and [r.iteration for r in pruner.history] == [0, 1, 2]


def test_a_new_run_replaces_the_files_of_an_earlier_one(tmp_path, tiny, caplog):
    _pruner(tmp_path, iterations=4).run_pruning(tiny)
    assert len(os.listdir(tmp_path / "models")) == 4
    (tmp_path / "models" / "mine.keras").write_text("not the loop's")
    fresh = _pruner(tmp_path, iterations=2)
    fresh._resume = False
    with caplog.at_level(logging.WARNING, logger="ridurre"):
        fresh.run_pruning(tiny)
    assert sorted(os.listdir(tmp_path / "models")) == ["iteration_000.keras", "iteration_001.keras", "mine.keras"]
    assert [h["iteration"] for h in json.loads((tmp_path / "logs" / "history.json").read_text())] == [0, 1]
    assert "held an earlier run" in caplog.text


def test_a_resumed_run_removes_and_reports_leftover_temporaries(tmp_path, tiny, digits, caplog):
    _interrupted_after_first_iteration(tmp_path, tiny, digits)
    leftover = tmp_path / "models" / ".iteration_001.keras.k3j2.tmp.keras"
    leftover.write_bytes(b"PK half a zip")
    with caplog.at_level(logging.WARNING, logger="ridurre"):
        _pruner(tmp_path, finetune=_finetune(digits)).run_pruning(tiny)
    assert not leftover.exists()
    assert "interrupted write" in caplog.text and ".iteration_001.keras.k3j2.tmp.keras" in caplog.text


def test_non_finite_weights_after_finetuning_stop_the_run(tmp_path, tiny):
    def finetune_to_nan(model, initial_epoch, end_epoch):
        layer = model.get_layer("fc1")
        kernel = layer.get_weights()[0]
        kernel[0, 0] = np.nan
        layer.set_weights([kernel, layer.get_weights()[1]])

    pruner = _pruner(tmp_path / "run", finetune=finetune_to_nan)
    with pytest.raises(RuntimeError, match=r"iteration 0: after finetuning.*non-finite weights.*fc1"):
        pruner.run_pruning(tiny)
    assert not (tmp_path / "run" / STATE_FILE).exists()


def test_a_model_with_nan_weights_is_refused(tiny):
    broken = keras.models.clone_model(tiny)
    weights = tiny.get_weights()
    weights[0] = np.full_like(weights[0], np.nan)
    broken.set_weights(weights)
    with pytest.raises(RuntimeError, match="non-finite weights"):
        _pruner(None).run_pruning(broken)


def test_layers_matching_no_layer_are_an_error(tiny):
    with pytest.raises(ValueError, match=r"'conv9' match\(es\) no layer of model 'small_cnn'"):
        _pruner(None, layers=["conv1", "conv9"]).run_pruning(tiny)
    with pytest.raises(ValueError, match="select.* no prunable channel group"):
        _pruner(None, layers=["predictions"]).run_pruning(tiny)


def test_steps_sized_to_a_macs_target_reach_it(tiny):
    # the README's example: --target-macs 0.5 --iterations 4 ended at 58 % of the MACs with a step of
    # 1 - 0.5 ** (1 / 8) (channels of a conv shrink its MACs twice, except the first and last layers')
    options = dict(maximum_pruning_percent=None, max_macs_reduction=0.5, maximum_prune_iterations=4)
    fixed = ridurre.Pruner("l1", compile_classifier, pruning_factor=1 - 0.5 ** (1 / 8), **options)
    pruned = fixed.run_pruning(tiny)[0]
    report = fixed.limits_report(pruned)["macs"]
    assert not report["met"] and report["reached"] < 0.45 and "iterations ran out" in report["why"]

    sized = ridurre.Pruner("l1", compile_classifier, size_steps_to_limits=True, **options)
    pruned = sized.run_pruning(tiny)[0]
    report = sized.limits_report(pruned)["macs"]
    assert report["met"] and 0.45 < report["reached"] <= 0.5 + 1e-9, report
    assert len(sized.history) == 4
    macs = [r.macs for r in sized.history]
    assert all(a > b for a, b in zip(macs, macs[1:]))  # every step prunes


def test_sizing_needs_a_limit_and_an_iteration_count():
    with pytest.raises(ValueError, match="size_steps_to_limits needs"):
        ridurre.Pruner("l1", compile_classifier, size_steps_to_limits=True, maximum_pruning_percent=0.5)


# What state.json recorded as the settings of ridurre.Pruner("l1", ...) with its defaults before the run
# outputs (history, baseline_metric, best_iteration) left the public attributes: run directories written
# then must still resume.
DEFAULT_SETTINGS = {
    "criterion": {"class": "L1Criterion", "normalizer": "mean", "reduction": "mean", "scope": "group"},
    "exclude": None,
    "guard": None,
    "head_criterion": None,
    "head_pruning_factor": None,
    "inline_composites": True,
    "keep_best": False,
    "latency_table": None,
    "layer_factors": [],
    "layers": None,
    "limits": {"filters": 0.9, "latency": None, "macs": None, "params": None},
    "max_fraction_per_layer": None,
    "method": "Pruner",
    "min_channels": 1,
    "nb_finetune_epochs": 0,
    "options": {},
    "prune_bins": None,
    "pruning_factor": 0.1,
    "ranking": "local",
    "round_to": None,
    "run_identity": {"data": "abc"},
    "seed": 0,
    "size_steps_to_limits": False,
    "start_epoch": 0,
    "verify": True,
}


def test_a_run_directory_of_the_default_settings_written_earlier_still_resumes(tmp_path, tiny):
    tiny.save(tmp_path / "iteration_000.keras")
    state = {
        "iteration": 0,
        "factor": 0.1,
        "epoch": 0,
        "checkpoint": "iteration_000.keras",
        "history": [],
        "finished": False,
        "guard": None,
        "fingerprint": {"model": model_fingerprint(tiny), "settings": DEFAULT_SETTINGS},
    }
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    pruner = ridurre.Pruner("l1", compile_classifier, output_dir=tmp_path, resume=True)
    pruner.run_identity = {"data": "abc"}
    assert pruner.resume_state(tiny)["iteration"] == 0
    pruner.run_identity = {"data": "other"}
    with pytest.raises(ValueError, match="run_identity.data 'abc' there, 'other' here"):
        pruner.resume_state(tiny)


def test_what_a_run_produces_is_read_only_and_no_option(tiny):
    pruner = ridurre.Pruner(
        "l1",
        compile_classifier,
        pruning_factor=0.25,
        maximum_prune_iterations=1,
        max_metric_drop=1.0,
        evaluate_fn=lambda model: 0.5,
        keep_best=True,
    )
    settings = pruner._settings()
    assert (pruner.history, pruner.baseline_metric, pruner.best_iteration) == ([], None, None)
    pruner.run_pruning(tiny)
    assert (len(pruner.history), pruner.baseline_metric, pruner.best_iteration) == (1, 0.5, 0)
    assert pruner._settings() == settings and settings["options"] == {}
    for name in ("history", "baseline_metric", "best_iteration"):
        with pytest.raises(AttributeError):
            setattr(pruner, name, None)
    ratios = SensitivityPruning({"conv1": 0.5}, compile_classifier, None, 0, nb_steps=2)
    assert ratios._settings()["options"] == {"data": None, "nb_steps": 2, "ratios": {"conv1": 0.5}}
