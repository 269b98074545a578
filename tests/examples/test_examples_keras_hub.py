"""example/prune_keras_hub.py --quick: a keras-hub MobileNetV3 and a keras-hub BERT, built from
constructor arguments and trained briefly, pruned by the loop to 2x fewer MACs; the pruned
models load back with the same outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

pytest.importorskip("keras_hub")

import keras  # noqa: E402

from ridurre.zoo.keras_hub import custom_objects, hub_inputs  # noqa: E402

EXAMPLE = os.path.join(ROOT, "example", "prune_keras_hub.py")


@pytest.mark.slow
def test_quick_run_prunes_both_models_to_half_the_macs(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, EXAMPLE, "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["model"] for row in summary["rows"]] == ["image", "text"]
    for row in summary["rows"]:
        assert row["macs_reduction"] >= 2.0, row  # the loop stops at or below its target of 2.1x
        assert 0.0 <= row["after"]["accuracy"] <= 1.0 and row["before"]["accuracy"] > 0.2, row
        assert f"{row['model']}: accuracy" in result.stdout
        model = keras.models.load_model(tmp_path / f"{row['model']}.keras", custom_objects=custom_objects())
        xs = hub_inputs(model, batch=2, sequence_length=16)
        assert np.isfinite(np.asarray(model(xs))).all()
