"""The report (Markdown), the comparison tables and the plots, from synthetic run summaries."""

import json
import os

import numpy as np
import pytest

from ridurre.app import plots, report


def _summary(method="l1", verify="on"):
    return {
        "method": method,
        "criterion": report.criterion_description(method),
        "model": {"name": "small_cnn", "path": "model.keras", "sha256_before": "ab", "unchanged": True},
        "data": {"name": "digits", "train": 1294, "validation": 144, "test": 359, "split": "test"},
        "limits": {"ratio": None, "target_macs": 0.5, "step": 0.15, "iterations": 6, "finetune_epochs": 2},
        "compile": "the model's own (loss 'sparse_categorical_crossentropy')",
        "before": {
            "params": 53386,
            "macs": 347392,
            "size_bytes": 700_000,
            "accuracy": 0.97,
            "latency_ms": {"256": 10.0, "1": 2.0},
        },
        "after": {
            "params": 23356,
            "macs": 169496,
            "size_bytes": 330_000,
            "accuracy": 0.965,
            "latency_ms": {"256": 5.0, "1": 1.9},
        },
        "speedup": {"256": 2.0, "1": 2.0 / 1.9},
        "layers": [
            {
                "name": "conv1",
                "class": "Conv2D",
                "channels_before": 32,
                "channels_after": 20,
                "params_before": 320,
                "params_after": 200,
                "macs_before": 18432,
                "macs_after": 11520,
            },
            {
                "name": "predictions",
                "class": "Dense",
                "channels_before": 10,
                "channels_after": 10,
                "params_before": 1290,
                "params_after": 650,
                "macs_before": 1280,
                "macs_after": 640,
            },
        ],
        "iterations": [
            {
                "iteration": 0,
                "factor": 0.15,
                "params": 40000,
                "macs": 250000,
                "filters": 190,
                "metric": 0.96,
                "seconds": 3.0,
                "removed": {"conv1": [3, 7, 11], "fc1": list(range(30))},
            },
            {
                "iteration": 1,
                "factor": 0.15,
                "params": 23356,
                "macs": 169496,
                "filters": 160,
                "metric": 0.97,
                "seconds": 3.0,
                "removed": {"conv1": [0]},
            },
        ],
        "history": [
            {"step": 0, "params": 53386, "macs": 347392, "accuracy": 0.97},
            {"step": 1, "params": 40000, "macs": 250000, "accuracy": 0.96},
            {"step": 2, "params": 23356, "macs": 169496, "accuracy": 0.97},
        ],
        "verification": {"mode": verify, "checks": 0 if verify == "off" else 2, "reload_check": True},
        "seconds": 12.5,
        "wall_seconds": 30.0,
    }


def test_report_has_every_section():
    text = report.render_report(_summary())
    assert text.startswith("# Pruning report: small_cnn, method l1")
    for heading in ("## Before and after", "## Per layer", "## What was removed and why", "## Checks"):
        assert heading in text
    assert "| parameters | 53,386 | 23,356 | 2.29x fewer |" in text
    assert "| MACs per example | 347,392 | 169,496 | 2.05x fewer |" in text
    assert "| test accuracy | 97.00 % | 96.50 % | -0.50 points |" in text
    assert "| latency, batch 256 (measured) | 10.00 ms | 5.00 ms | 2.00x faster |" in text
    assert "| `conv1` | Conv2D | 32 → **20** | 320 → **200** | 18,432 → **11,520** |" in text
    assert "| `predictions` | Dense | 10 | 1,290 → **650** |" in text  # unchanged channels shown once
    assert "### Iteration 1 (factor 0.150): 33 channels removed" in text
    assert "- `conv1`: 3 channel(s): 3, 7, 11" in text
    assert "(6 more)" in text  # long index lists are shortened
    assert report.criterion_description("l1") in text
    assert "Forward-pass check after each of the 2 surgeries: **passed**" in text
    assert "Input model file unchanged (SHA-256 before and after): **yes**" in text
    for plot in ("history", "channels", "scores"):
        assert f"../plots/{plot}.png" in text


def test_report_with_checks_off_says_so():
    assert "**off** (`--verify off`)" in report.render_report(_summary(verify="off"))


def test_write_report_is_atomic_and_writes_summary_json(tmp_path):
    path = report.write_report(str(tmp_path / "reports" / "report.md"), _summary())
    assert open(path).read().startswith("# Pruning report")
    assert json.load(open(tmp_path / "reports" / "summary.json"))["method"] == "l1"
    assert not [f for f in os.listdir(tmp_path / "reports") if f.startswith(".tmp")]


def test_comparison_table_and_markdown():
    from rich.console import Console

    summaries = [_summary("l1"), _summary("kmeans")]
    console = Console(width=200, record=True)
    console.print(report.comparison_table(summaries, title="t"))
    text = console.export_text()
    for expected in ("original", "l1", "kmeans", "169,496 (2.05x)", "5.00 ms (2.00x)", "96.50 %"):
        assert expected in text
    md = report.comparison_markdown(summaries, wall=100.0)
    assert "| original | 53,386 | 347,392 (1.00x) | 97.00 % | 10.00 ms (1.00x) | 2.00 ms (1.00x) |" in md
    assert "[kmeans](kmeans/reports/report.md)" in md


@pytest.mark.parametrize("name", ["history", "channels", "scores", "comparison"])
def test_plots_write_png_files(tmp_path, name):
    s = _summary()
    path = str(tmp_path / "plots" / f"{name}.png")
    if name == "history":
        plots.plot_history(path, s["history"])
    elif name == "channels":
        plots.plot_channels(path, s["layers"])
    elif name == "scores":
        rng = np.random.default_rng(0)
        groups = [(f"conv{i}", rng.random(16), rng.random(16) < 0.3) for i in range(4)]
        plots.plot_scores(path, groups, criterion="L1 norm")
    else:
        plots.plot_comparison(
            path,
            [
                {"label": "original", "accuracy": 0.97, "macs": 3e5, "speedup": 1.0},
                {"label": "l1", "accuracy": 0.96, "macs": 1.5e5, "speedup": 1.9},
            ],
        )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_scaled_units():
    assert plots.scaled([2e6])[1] == "millions"
    assert plots.scaled([12])[1] == ""
