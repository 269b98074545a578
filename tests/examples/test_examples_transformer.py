"""The transformer example (example/prune_transformer.py) runs end to end with --quick.

It runs in a subprocess, as a user would run it: a ViT on the bundled digits and a text
transformer on a synthetic masked-token task are trained, pruned (heads, head dimensions, FFN
widths and the hidden size through LayerNormalization) to at least 2x fewer MACs with the loop and
``verify="exact"``, finetuned, and compared.
"""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT  # noqa: E402

EXAMPLE = os.path.join(ROOT, "example", "prune_transformer.py")
TOLERANCE = 0.05  # 5 points of test accuracy (359 test digits, 180 test sequences)


@pytest.mark.slow
def test_the_quick_transformer_example_halves_the_macs_and_keeps_accuracy(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(
        [sys.executable, EXAMPLE, "--quick", "--output", str(tmp_path / "run")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["mode"] == "quick" and sorted(summary["models"]) == ["text", "vit"]
    for name, run in summary["models"].items():
        before, after = run["before"], run["after"]
        assert before["macs"] / after["macs"] >= 2.0, f"{name}: {before['macs']} -> {after['macs']} MACs"
        assert after["params"] < before["params"] / 1.8
        assert after["heads"] < before["heads"], f"{name}: no head was pruned"
        assert after["hidden"] < before["hidden"] and after["ffn"] < before["ffn"]
        assert before["accuracy"] > 0.8, f"{name} did not learn: {before['accuracy']:.2%}"
        assert after["accuracy"] >= before["accuracy"] - TOLERANCE, f"{name}: {before} -> {after}"
        assert before["latency_ms"] > 0 and after["latency_ms"] > 0
        assert run["inexact_groups"], "the hidden size runs through LayerNormalization: flagged inexact"
        for path in ("baseline.keras", "final.keras", "logs/history.json"):
            assert (tmp_path / "run" / name / path).is_file(), f"{name}/{path} is missing"
        # the table printed is the summary saved
        table = result.stdout.split(f"## {run['model']}:")[1]
        printed = re.search(r"\| MACs per example \| ([\d,]+) \| ([\d,]+) \|", table)
        assert printed and int(printed.group(2).replace(",", "")) == after["macs"]
