"""example/ssvep_pruning.py runs end to end (quick mode) and keeps EEGNet's accuracy."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT  # noqa: E402

SCRIPT = os.path.join(ROOT, "example", "ssvep_pruning.py")


@pytest.mark.timeout(600)
def test_ssvep_pruning_example_quick(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--output", str(out)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    for name in (
        "eegnet.keras",
        "filter_stats.csv",
        "mask/pruned_weights.npz",
        "mask/pruned_filters.txt",
        "mask/pruning_visualization.png",
        "remove/pruned_model.keras",
        "ssvep_pruned.keras",
        "iterative/logs/history.json",
        "summary.json",
    ):
        assert (out / name).is_file(), f"{name} missing; stdout:\n{proc.stdout}"
    # the score file has one row per temporal filter
    lines = (out / "filter_stats.csv").read_text().splitlines()
    assert lines[0] == "layer,filter,score" and len(lines) == 1 + 8
    # the mask zeroes half of the temporal filters
    with np.load(out / "mask" / "pruned_weights.npz") as npz:
        kernel = npz["temporal_conv/kernel"]
    assert kernel.shape == (1, 64, 1, 8) and int((np.abs(kernel).sum(axis=(0, 1, 2)) == 0).sum()) == 4

    summary = json.loads((out / "summary.json").read_text())
    before, after = summary["accuracy_before"], summary["accuracy_after_finetune"]
    assert before > 0.9, proc.stdout
    assert after >= before - 0.05, proc.stdout
    models = summary["models"]
    iterative = next(v for k, v in models.items() if k.startswith("iterative"))
    assert iterative["temporal_filters"] < 8
    assert iterative["params"] < models["original"]["params"]
    assert iterative["macs"] < models["original"]["macs"]
    assert models["one-shot remove"]["temporal_filters"] == 4
    # the table is printed
    assert "temporal filters" in proc.stdout and "peak Hz" in proc.stdout
