"""The KMeans / ResNet tutorial (example/model_pruning_example.py) runs end to end with --quick.

The example runs in a subprocess, as a user would run it, on the bundled digits (no download).
It is run in two parts to cover ``--resume`` at no extra cost: first stopped after two pruning
iterations (``--max-iterations 2``), then resumed with the default limits, which continues
from the second iteration's checkpoint until 40 % of the filters are gone.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT  # noqa: E402

EXAMPLE = os.path.join(ROOT, "example", "model_pruning_example.py")
LIMIT = 0.4  # the example's maximum_pruning_percent
TOLERANCE = 0.04  # "within a few points": 4 points of test accuracy (359 test digits)


def _run(*args):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, EXAMPLE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result.stdout


def _printed_accuracies(stdout):
    match = re.search(r"^\| test accuracy \| ([\d.]+)% \| ([\d.]+)% \|", stdout, re.MULTILINE)
    assert match, f"no before/after accuracy row in the output:\n{stdout}"
    return float(match.group(1)) / 100, float(match.group(2)) / 100


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    output = tmp_path_factory.mktemp("quick")
    first = _run("--quick", "--output", str(output), "--max-iterations", "2", "--final-epochs", "0")
    first_history = json.loads((output / "logs" / "history.json").read_text())
    second = _run("--quick", "--output", str(output), "--resume")
    return output, first, first_history, second


def test_the_quick_example_prunes_to_the_limit_and_keeps_accuracy(quick_run):
    output, _, _, stdout = quick_run
    for name in (
        "baseline.keras",
        "final.keras",
        "state.json",
        "summary.json",
        "logs/history.json",
        "logs/history.csv",
        "logs/epochs.csv",
    ):
        assert (output / name).is_file(), f"{name} is missing"
    history = json.loads((output / "logs" / "history.json").read_text())
    assert len(history) >= 2
    assert sorted(p.name for p in (output / "models").glob("iteration_*.keras")) == [
        f"iteration_{i:03d}.keras" for i in range(len(history))
    ]
    csv_lines = (output / "logs" / "history.csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("iteration,") and len(csv_lines) == len(history) + 1

    summary = json.loads((output / "summary.json").read_text())
    assert summary["mode"] == "quick" and summary["iterations"] == len(history)
    percent = summary["pruning_percent"]
    assert percent == pytest.approx(history[-1]["pruning_percent"])
    assert LIMIT - 0.1 < percent <= LIMIT + 1e-6, "it should stop at, and never beyond, 40 % of the filters"
    assert json.loads((output / "state.json").read_text())["finished"], "the 40 % limit should end the pruning"
    before, after = summary["before"], summary["after"]
    assert after["filters"] == pytest.approx(before["filters"] * (1 - percent), abs=0.5)
    assert after["params"] < before["params"] and after["macs"] < before["macs"]

    # the numbers printed are the numbers saved, and the pruned model is within a few points
    printed_before, printed_after = _printed_accuracies(stdout)
    assert printed_before == pytest.approx(before["accuracy"], abs=1e-4)
    assert printed_after == pytest.approx(after["accuracy"], abs=1e-4)
    assert before["accuracy"] > 0.9, "the unpruned ResNet-8 should learn the digits"
    assert printed_after >= printed_before - TOLERANCE
    assert "## Pruning history" in stdout
    assert len(re.findall(r"^\| \d+ \| \d+ \| ", stdout, re.MULTILINE)) == len(history)


def test_resume_continues_from_the_last_checkpoint(quick_run):
    output, first_stdout, first_history, _ = quick_run
    assert [r["iteration"] for r in first_history] == [0, 1], "--max-iterations 2 should stop after 2 iterations"
    assert "## Before / after pruning" in first_stdout
    history = json.loads((output / "logs" / "history.json").read_text())
    assert history[:2] == first_history, "resuming must keep the history of the first run"
    assert [r["iteration"] for r in history] == list(range(len(history))) and len(history) > 2
    epochs = [r["epoch"] for r in history]
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs), "epochs continue across the resume"
