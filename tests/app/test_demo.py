"""`ridurre demo --quick`: the whole demo job, shortened (the full demo is `make demo`): 32x32 digits,
Keras, LiteRT and ONNX Runtime latency."""

import json

from ridurre.app.cli import main


def test_quick_demo_prunes_to_half_the_macs_and_reports(capsys, tmp_path):
    out = tmp_path / "demo"
    code = main(["--no-progress", "demo", "--quick", "--methods", "l1,kmeans", "--output", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.load(open(out / "summary.json"))
    assert [run["method"] for run in summary["runs"]] == ["l1", "kmeans"]
    for run in summary["runs"]:
        assert run["before"]["macs"] / run["after"]["macs"] >= 2.0
        assert run["after"]["accuracy"] > 0.5
        assert set(run["speedup"]) == {"32", "1"} and all(v > 0 for v in run["speedup"].values())
        # every model is exported and timed in LiteRT and ONNX Runtime too, beside the MACs reduction
        assert set(run["runtimes"]) == {"keras", "litert", "onnx"}
        for row in run["runtimes"].values():
            assert set(row["speedup"]) == {"32", "1"} and all(v > 0 for v in row["speedup_over_macs"].values())
        method_dir = out / run["method"]
        for path in (
            "config.json",
            "models/original.keras",
            "models/iteration_000.keras",
            "models/final.keras",
            "logs/history.csv",
            "logs/history.json",
            "logs/ridurre.log",
            "reports/report.md",
            "plots/history.png",
            "plots/channels.png",
            "plots/scores.png",
        ):
            assert (method_dir / path).exists(), path
    assert (out / "models" / "original.keras").exists() and (out / "comparison.png").exists()
    summary_md = (out / "summary.md").read_text()
    assert "| original |" in summary_md and "litert b=1 (speed-up)" in summary_md and "onnx b=32" in summary_md
    assert "## Latency where the model runs" in (out / "l1" / "reports" / "report.md").read_text()
    for word in ("original", "l1", "kmeans", "speed-up", "litert", "onnx"):
        assert word in captured.out


def test_demo_rejects_unknown_methods(capsys, tmp_path):
    assert main(["demo", "--methods", "l1,magic", "--output", str(tmp_path / "d")]) == 2
    assert "--methods: expected comma-separated names" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
