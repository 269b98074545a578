"""Faults as tests (issue 14): a pruning run SIGKILLed while scoring, during surgery, half-way
through a checkpoint write and in the middle of a finetune, then resumed, ends with the same
weights as a run that was never interrupted, through the API and the command line."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import ROOT, compile_classifier

VICTIM = os.path.join(ROOT, "tests", "fault_victim.py")

# each run is resumed by the next one, which dies somewhere else; the last one finishes
KILLS = ["scoring:1", "surgery:1", "checkpoint:1", "finetune:2", None]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, digits):
    from ridurre.zoo.models import small_cnn

    keras.utils.set_random_seed(0)
    model = small_cnn(filters=(8, 16), dense_units=16)
    compile_classifier(model)
    model.fit(digits.x_train[:400], digits.y_train[:400], epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("faults") / "tiny.keras")
    model.save(path)
    return path


def _run(mode, model, output, kill=None):
    argv = [sys.executable, VICTIM, mode, model, str(output)] + (["--kill", kill] if kill else [])
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def _result(mode, output):
    path = os.path.join(output, "result.keras" if mode == "api" else os.path.join("models", "final.keras"))
    return keras.models.load_model(path, compile=False).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["api", "cli"])
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_weights(tmp_path, model_file, mode):
    reference = _run(mode, model_file, tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-3000:]
    output = tmp_path / "killed"
    for kill in KILLS:
        result = _run(mode, model_file, output, kill)
        if kill is None:
            assert result.returncode == 0, result.stderr[-3000:]
        else:
            assert result.returncode == -9, (kill, result.returncode, result.stderr[-3000:])
        if kill == "checkpoint:1":  # a half-written checkpoint under a temporary name, never under the final one
            models = os.listdir(output / "models")
            assert any(n.startswith(".iteration_001.keras.") for n in models), models
            assert "iteration_001.keras" not in models
        if kill == "finetune:2":  # the run after the torn checkpoint removed it and said so
            assert "interrupted write" in result.stderr + _log(output), result.stderr[-3000:]
    assert not [n for n in os.listdir(output / "models") if n.startswith(".")]
    for a, b in zip(_result(mode, output), _result(mode, tmp_path / "reference")):
        np.testing.assert_array_equal(a, b)


def _log(output):
    path = os.path.join(output, "logs", "ridurre.log")
    return open(path).read() if os.path.exists(path) else ""
