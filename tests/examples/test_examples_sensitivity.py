"""The layer-sensitivity example (quick mode) and ``python -m ridurre.sensitivity``, as subprocesses."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "example" / "layer_sensitivity_vgg16_cifar10.py"
ENV = {
    **os.environ,
    "KERAS_BACKEND": "tensorflow",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("example")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--output", "tmp"],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return cwd / "tmp", proc.stdout


def test_quick_mode_writes_every_output(quick_run):
    out, stdout = quick_run
    for name in (
        "trained.keras",
        "sensitivity.csv",
        "sensitivity.json",
        "sensitivity.png",
        "chosen_ratios.json",
        "pruned.keras",
        "report.json",
        "report.md",
    ):
        assert (out / name).is_file(), name
    assert not [f for f in os.listdir(out) if f.startswith(".tmp")]
    assert "| before |" in stdout and "| after |" in stdout


def test_quick_mode_report_is_sane(quick_run):
    out, _ = quick_run
    report = json.loads((out / "report.json").read_text())
    before, after = report["before"], report["after"]
    assert before["test_accuracy"] > 0.8 and before["val_accuracy"] > 0.8
    assert after["test_accuracy"] > 0.6
    assert after["params"] < before["params"] and after["macs"] < before["macs"]
    chosen = json.loads((out / "chosen_ratios.json").read_text())
    sensitivity = json.loads((out / "sensitivity.json").read_text())
    assert sorted(chosen) == sorted(sensitivity["layers"]) and len(chosen) == 14  # 13 convolutions + fc1
    assert sensitivity["baseline"] == pytest.approx(before["val_accuracy"])
    for layer, (total, remaining) in report["channels"].items():
        keep = int(np.ceil(round(total * (1 - chosen[layer]), 9)))
        assert remaining == keep, (layer, total, remaining, chosen[layer])


def test_the_module_runs_as_a_command_and_refuses_bad_data(quick_run, tmp_path):
    out, _ = quick_run
    model = str(out / "trained.keras")
    command = [sys.executable, "-m", "ridurre.sensitivity", "--model", model, "--no-progress"]
    bad = subprocess.run(
        command + ["--data", "digits", "--output", str(tmp_path / "bad")],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "do not fit the model's input" in bad.stderr
    assert not (tmp_path / "bad").exists()
