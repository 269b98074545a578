"""End-to-end tests of the `ridurre` command, run in-process through ``ridurre.app.cli.main``."""

import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import compile_classifier

from ridurre.app.cli import main
from ridurre.metrics import model_stats

PROGRESS_OFF = ["--no-progress"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, digits):
    """A tiny CNN trained for one epoch on the digits, saved compiled (its optimizer is re-used)."""
    from ridurre.zoo.models import small_cnn

    keras.utils.set_random_seed(0)
    model = small_cnn(filters=(8, 16), dense_units=16)
    compile_classifier(model)
    model.fit(digits.x_train, digits.y_train, epochs=2, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("input") / "tiny.keras")
    model.save(path)
    return path


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ----------------------------------------------------------------------------- the command itself


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "prune", "stats", "export", "workflow", "prune-scores", "sensitivity"):
        assert command in out


@pytest.mark.parametrize("command", ["demo", "prune", "stats", "export", "workflow"])
def test_each_command_has_help_with_examples(capsys, command):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"ridurre {command}" in out


def test_lazy_commands_are_wired(capsys):
    assert main(["prune-scores", "--help"]) == 0
    assert "--stats" in capsys.readouterr().out
    assert main(["sensitivity", "--help"]) == 0
    assert "usage: ridurre sensitivity" in capsys.readouterr().out


def test_installed_console_script_and_no_tensorflow_import():
    script = os.path.join(os.path.dirname(sys.executable), "ridurre")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "prune" in result.stdout and "workflow" in result.stdout
    # building the whole parser (what `prune-scores --mode mask` needs) imports neither Keras nor TensorFlow
    code = (
        "import sys; from ridurre.app.cli import build_parser; build_parser('prune-scores'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('keras', 'tensorflow')]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert main(["prune", "--ratio", "abc"]) == 2
    assert "invalid float value" in capsys.readouterr().err


# ----------------------------------------------------------------------------- stats


def test_stats_json(capsys, model_file):
    assert main(["stats", model_file, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # one JSON object, nothing else on stdout
    expected = model_stats(keras.models.load_model(model_file))
    assert out["total_params"] == expected.total_params and out["total_macs"] == expected.total_macs
    assert out["size_bytes"] == os.path.getsize(model_file)
    assert [row["name"] for row in out["layers"]][:2] == ["conv1", "bn1"]


def test_stats_table(capsys, model_file):
    assert main(["stats", model_file]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "total" in out and "kB on disk" in out


def test_stats_missing_model(capsys, tmp_path):
    assert main(["stats", str(tmp_path / "nope.keras")]) == 2
    assert f"MODEL: {tmp_path / 'nope.keras'}: no such model file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- prune


def test_prune_end_to_end_with_file_env_and_cli(capsys, monkeypatch, tmp_path, model_file):
    config = tmp_path / "run.yaml"
    config.write_text(
        "strategy:\n  ratio: 0.2\n  iterations: 2\n  finetune_epochs: 1\n  seed: 1\nlayers:\n  exclude: [predictions]\n"
    )
    monkeypatch.setenv("RIDURRE_STRATEGY_RATIO", "0.25")  # env beats the file...
    monkeypatch.setenv("RIDURRE_STRATEGY_SEED", "3")
    out = tmp_path / "run"
    before = _sha(model_file)
    code = main(
        PROGRESS_OFF
        + [
            "prune",
            "--model",
            model_file,
            "--data",
            "digits",
            "--method",
            "l1",
            "--config",
            str(config),
            "--ratio",
            "0.4",  # ...and the CLI beats the env
            "--output",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    saved = json.load(open(out / "config.json"))
    assert saved["strategy"]["ratio"] == 0.4 and saved["strategy"]["seed"] == 3
    assert saved["strategy"]["iterations"] == 2 and saved["layers"]["exclude"] == ["predictions"]
    for name in ("original", "iteration_000", "iteration_001", "final"):
        assert (out / "models" / f"{name}.keras").exists(), name
    for name in ("history.csv", "history.json", "ridurre.log"):
        assert (out / "logs" / name).exists(), name
    for name in ("history", "channels", "scores"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000, name
    log = (out / "logs" / "ridurre.log").read_text()
    assert "Original model" in log and "iteration 0: filters" in log and "Final model" in log
    assert "Verification: 2/2 forward-pass checks passed" in log
    assert "iteration 1: filters" in captured.err  # the before/after lines reach the console at INFO
    text = (out / "reports" / "report.md").read_text()
    assert "## What was removed and why" in text and "smallest L1 norm" in text
    summary = json.load(open(out / "reports" / "summary.json"))
    assert summary["after"]["params"] < summary["before"]["params"]
    assert all(ms > 0 for ms in summary["after"]["latency_ms"].values())
    # latency in each installed runtime, with the realized speed-up next to the MACs reduction
    assert {"keras", "litert", "onnx"} <= set(summary["runtimes"])
    for row in summary["runtimes"].values():
        assert set(row["speedup"]) == {"256", "1"} and row["threads"] >= 1
        fewer = summary["before"]["macs"] / summary["after"]["macs"]
        assert row["speedup_over_macs"]["1"] == pytest.approx(row["speedup"]["1"] / fewer)
    assert "## Latency where the model runs" in text and "| litert |" in text and "| onnx |" in text
    assert "Exported original to litert" in log
    assert summary["model"]["unchanged"] is True and _sha(model_file) == before
    assert "predictions" not in {k for it in summary["iterations"] for k in it["removed"]}
    final = keras.models.load_model(out / "models" / "final.keras", safe_mode=True)
    assert final.get_layer("conv2").filters < 16
    assert "original" in captured.out and "speed-up" in captured.out  # the before/after table


def test_prune_dry_run_writes_nothing(capsys, tmp_path, model_file):
    out = tmp_path / "dry"
    assert (
        main(
            PROGRESS_OFF
            + [
                "prune",
                "--model",
                model_file,
                "--preset",
                "aggressive",
                "--finetune-epochs",
                "0",
                "--target-macs",
                "0.5",
                "--dry-run",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert not out.exists()
    assert "dry run" in text and "conv2" in text and "->" in text
    assert "nothing was written" in text


def _npz(path, shape, n=40, classes=10):
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n,) + shape).astype("float32"), y=np.arange(n) % classes)
    return str(path)


@pytest.mark.parametrize(
    "case",
    [
        "unknown-key",
        "out-of-range",
        "bad-env",
        "bad-cli",
        "missing-model",
        "missing-config",
        "wrong-shape",
        "too-many-classes",
        "output-holds-model",
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(capsys, monkeypatch, tmp_path, model_file, case):
    out = tmp_path / "out"
    args = ["prune", "--model", model_file, "--output", str(out)]
    expected = {
        "unknown-key": "strategy.ratoi: unknown key",
        "out-of-range": "strategy.min_channels: expected an integer >= 1, got 0 (from",
        "bad-env": "strategy.iterations: expected an integer >= 1, got 0 (from environment variable "
        "RIDURRE_STRATEGY_ITERATIONS)",
        "bad-cli": "strategy.ratio: expected a number in (0, 1) or null, got 1.0 (from command-line option --ratio)",
        "missing-model": "missing.keras: no such model file",
        "missing-config": "--config: no such file",
        "wrong-shape": "has inputs of shape (4, 4, 1) but the model 'small_cnn' expects (8, 8, 1)",
        "too-many-classes": "has 12 classes but the model 'small_cnn' has only 10 outputs",
        "output-holds-model": "--output: ",
    }[case]
    if case == "unknown-key":
        (tmp_path / "c.yaml").write_text("strategy:\n  ratoi: 0.3\n")
        args += ["--config", str(tmp_path / "c.yaml")]
    elif case == "out-of-range":
        (tmp_path / "c.json").write_text('{"strategy": {"min_channels": 0}}')
        args += ["--config", str(tmp_path / "c.json")]
    elif case == "bad-env":
        monkeypatch.setenv("RIDURRE_STRATEGY_ITERATIONS", "0")
    elif case == "bad-cli":
        args += ["--ratio", "1"]
    elif case == "missing-model":
        args[2] = str(tmp_path / "missing.keras")
    elif case == "missing-config":
        args += ["--config", str(tmp_path / "missing.yaml")]
    elif case == "wrong-shape":
        args += ["--data", _npz(tmp_path / "small.npz", (4, 4, 1))]
    elif case == "too-many-classes":
        args += ["--data", _npz(tmp_path / "many.npz", (8, 8, 1), classes=12)]
    elif case == "output-holds-model":
        out = os.path.dirname(model_file)
        args[-1] = out
    listing = sorted(os.listdir(out)) if os.path.isdir(out) else None
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.startswith("ridurre prune: error: ")
    if case == "output-holds-model":
        assert sorted(os.listdir(out)) == listing  # nothing added next to the input model
    else:
        assert not out.exists()


# ----------------------------------------------------------------------------- workflow


def test_workflow_stages_save_resume_and_evaluate(capsys, tmp_path):
    out = tmp_path / "wf"
    common = ["--output", str(out), "--epochs", "1", "--finetune-epochs", "1", "--ratio", "0.5"]
    assert main(PROGRESS_OFF + ["workflow"] + common) == 0
    text = capsys.readouterr().out
    for stage in ("unpruned", "pruned", "finetuned"):
        assert (out / "models" / f"{stage}.keras").exists()
        assert stage in text  # evaluated by default
    record = json.load(open(out / "workflow.json"))
    params = {row["model"]: row["params"] for row in record["evaluations"]}
    assert params["pruned"] < params["unpruned"] and params["pruned"] == params["finetuned"]
    assert (out / "logs" / "ridurre.log").exists()

    # evaluate only, resuming from the models the first run left in --output
    stamp = (out / "models" / "pruned.keras").stat().st_mtime_ns
    assert (
        main(
            PROGRESS_OFF
            + ["workflow", "--no-train", "--no-prune", "--no-finetune", "--eval-pruned", "--output", str(out)]
        )
        == 0
    )
    record = json.load(open(out / "workflow.json"))
    assert [row["model"] for row in record["evaluations"]] == ["pruned"]
    assert (out / "models" / "pruned.keras").stat().st_mtime_ns == stamp  # loaded, not rewritten

    # prune only, from --load-unpruned, into another directory
    other = tmp_path / "prune-only"
    assert (
        main(
            PROGRESS_OFF
            + [
                "workflow",
                "--load-unpruned",
                str(out / "models" / "unpruned.keras"),
                "--no-finetune",
                "--method",
                "kmeans",
                "--ratio",
                "0.3",
                "--output",
                str(other),
            ]
        )
        == 0
    )
    assert (other / "models" / "pruned.keras").exists() and not (other / "models" / "unpruned.keras").exists()

    # a stage whose input is missing: exit 2, nothing written
    empty = tmp_path / "empty"
    assert main(["workflow", "--no-train", "--output", str(empty)]) == 2
    assert "--load-unpruned" in capsys.readouterr().err and not empty.exists()
    # a run that would overwrite its own input
    assert (
        main(
            [
                "workflow",
                "--load-unpruned",
                str(out / "models" / "iteration_000.keras"),
                "--no-finetune",
                "--output",
                str(out),
            ]
        )
        == 2
    )
    assert "would overwrite its input" in capsys.readouterr().err


def test_finetuning_reuses_the_models_compile_config_or_a_default(model_file):
    from ridurre.app.jobs import make_compile_fn
    from ridurre.zoo.models import small_cnn

    compiled = keras.models.load_model(model_file, safe_mode=True)
    compile_fn, how = make_compile_fn(compiled)
    assert how.startswith("the model's own") and "sparse_categorical_crossentropy" in how
    fresh = small_cnn(filters=(8, 16), dense_units=16)
    compile_fn(fresh)
    assert type(fresh.optimizer).__name__ == type(compiled.optimizer).__name__
    compile_fn, how = make_compile_fn(small_cnn())  # never compiled: Adam + sparse crossentropy
    assert how.startswith("default (Adam")
    compile_fn(fresh)
    assert fresh.loss == "sparse_categorical_crossentropy"


# ----------------------------------------------------------------------------- export and latency


@pytest.mark.parametrize("fmt, name", [("litert", "tiny.tflite"), ("onnx", "tiny.onnx"), ("saved_model", "tiny_sm")])
def test_export_writes_a_verified_model(capsys, tmp_path, model_file, fmt, name):
    out = tmp_path / name
    before = _sha(model_file)
    assert main(["export", "--model", model_file, "--format", fmt, "--output", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == fmt and result["path"] == str(out) and out.exists()
    assert result["verification"]["max_abs_error"] <= result["verification"]["atol"]
    assert _sha(model_file) == before


def test_export_int8_with_calibration_data_reports_accuracy(capsys, tmp_path, model_file):
    out = tmp_path / "tiny8.tflite"
    args = ["export", "--model", model_file, "--int8", "--calibration-data", "digits", "--output", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"Wrote {out} (litert, int8" in text and "int8 accuracy" in text and "on 359 examples" in text


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--int8"], "--int8: needs --calibration-data"),
        (["--calibration-data", "digits"], "--calibration-data: only used with --int8"),
        (["--format", "onnx", "--output", "OUT/m.tflite"], "must end with '.onnx'"),
        (["--int8", "--calibration-data", "OUT/none.npz"], "--calibration-data: no such data file"),
        (["--int8", "--calibration-data", "mnist_like"], "--calibration-data: cannot load data"),
        (["--max-accuracy-drop", "2"], "--max-accuracy-drop: expected a number in [0, 1)"),
    ],
)
def test_export_bad_input_exits_2_and_writes_nothing(capsys, tmp_path, model_file, extra, message):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    extra = [e.replace("OUT", str(out_dir)) for e in extra]
    if "--output" not in extra:
        extra += ["--output", str(out_dir / "m.tflite")]
    assert main(["export", "--model", model_file, *extra]) == 2
    assert message in capsys.readouterr().err
    assert os.listdir(out_dir) == []


def test_export_refuses_a_missing_model_and_overwriting_the_input(capsys, tmp_path, model_file):
    assert main(["export", "--model", str(tmp_path / "nope.keras")]) == 2
    err = capsys.readouterr().err
    assert "--model: " in err and "nope.keras: no such model file" in err
    assert main(["export", "--model", model_file, "--output", model_file]) == 2
    assert "is the input model" in capsys.readouterr().err


def test_stats_latency_in_each_runtime_with_a_compared_model(capsys, tmp_path, model_file):
    from ridurre.surgery import delete_channels

    model = keras.models.load_model(model_file)
    pruned = delete_channels(model, "conv2", list(range(8)))
    pruned_file = str(tmp_path / "pruned.keras")
    pruned.save(pruned_file)
    args = ["stats", pruned_file, "--latency", "--compare", model_file, "--runtimes", "keras,onnx"]
    assert main([*args, "--batch-sizes", "1,4", "--rounds", "2", "--threads", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["latency"]) == {"model", "compared"}
    for name in ("model", "compared"):
        assert set(out["latency"][name]) == {"keras", "onnx"}
        assert set(out["latency"][name]["onnx"]) == {"1", "4"}
        assert out["latency"][name]["onnx"]["1"]["threads"] == 1 and out["latency"][name]["onnx"]["1"]["rounds"] == 2
    assert main([*args, "--rounds", "1"]) == 0
    text = capsys.readouterr().out
    assert "speed-up / MACs reduction" in text and "onnx" in text
    assert main(["stats", pruned_file, "--latency", "--runtimes", "tensorrt"]) == 2
    assert "--runtimes: expected comma-separated names" in capsys.readouterr().err
    assert main(["stats", pruned_file, "--compare", model_file]) == 2


def test_a_saved_latency_table_drives_ridurre_prune(capsys, tmp_path, model_file):
    table_file = tmp_path / "lut.json"
    args = ["stats", model_file, "--save-latency-table", str(table_file), "--runtimes", "onnx", "--batch-sizes", "1"]
    assert main([*args, "--rounds", "1", "--threads", "1"]) == 0
    table = json.load(open(table_file))
    assert table["runtime"] == "onnx" and table["threads"] == 1 and {"conv1", "conv2"} <= set(table["sizes"])
    # the timings of this busy machine are noise; the wiring is tested with savings that can reach the target
    table["saved_ms_per_channel"] = {key: 0.5 * table["base_ms"] / size for key, size in table["sizes"].items()}
    table_file.write_text(json.dumps(table))
    out = tmp_path / "run"
    prune = ["prune", "--model", model_file, "--latency-table", str(table_file), "--ranking", "global"]
    prune += ["--iterations", "2", "--finetune-epochs", "0", "--exclude", "predictions", "--runtimes", "keras"]
    assert main(PROGRESS_OFF + [*prune, "--target-latency", "0.8", "--output", str(out)]) == 0, capsys.readouterr().err
    saved = json.load(open(out / "config.json"))
    assert saved["strategy"]["latency_table"] == str(table_file)
    met = json.load(open(out / "reports" / "summary.json"))["limits"]["met"]
    assert set(met) == {"latency"} and met["latency"]["limit"] == pytest.approx(0.2), met
    assert "80.0 % of the latency the latency table predicts" in (out / "reports" / "report.md").read_text()
    # with a table, --target-macs still limits the MACs (the table only ranks the groups)
    by_macs = tmp_path / "by_macs"
    assert main(PROGRESS_OFF + [*prune, "--target-macs", "0.8", "--output", str(by_macs)]) == 0
    met = json.load(open(by_macs / "reports" / "summary.json"))["limits"]["met"]
    assert set(met) == {"macs"} and met["macs"]["limit"] == pytest.approx(0.2), met
    capsys.readouterr()
    no_table = ["prune", "--model", model_file, "--target-latency", "0.5", "--output", str(tmp_path / "r3")]
    assert main(no_table) == 2
    assert "--target-latency) needs a latency table" in capsys.readouterr().err
    assert not (tmp_path / "r3").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["prune", "--model", model_file, "--latency-table", str(bad), "--output", str(tmp_path / "r2")]) == 2
    assert "--latency-table: cannot read a latency table" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()


@pytest.mark.slow
def test_prune_with_gradients_sparse_training_and_an_accuracy_guard(capsys, tmp_path, model_file):
    import ridurre

    out = tmp_path / "guarded"
    args = ["prune", "--model", model_file, "--data", "digits", "--method", "taylor", "--ratio", "0.4"]
    args += ["--iterations", "3", "--finetune-epochs", "1", "--sparse-epochs", "1", "--sparse-method", "group"]
    args += ["--max-accuracy-drop", "0.0", "--normalizer", "lamp", "--ranking", "isomorphic", "--output", str(out)]
    code = main(PROGRESS_OFF + args)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.load(open(out / "reports" / "summary.json"))
    assert summary["criterion_options"] == {"scope": "group", "reduction": "mean", "normalizer": "lamp"}
    assert summary["sparse"]["method"] == "group" and summary["sparse"]["epochs"] == 1
    guard = summary["accuracy_aware"]
    assert guard["max_drop"] == 0.0 and guard["baseline"] == summary["history"][0]["accuracy"]
    for it in summary["iterations"]:  # a step is kept exactly when it does not fall below the baseline
        assert it["rolled_back"] == (it["metric"] < guard["baseline"]), it
    text = (out / "reports" / "report.md").read_text()
    assert "## Metric per iteration" in text and "Sparse training" in text and "Accuracy-aware" in text
    assert text.count("rolled back") >= sum(it["rolled_back"] for it in summary["iterations"])
    original = keras.models.load_model(out / "models" / "original.keras", safe_mode=True)
    final = keras.models.load_model(out / "models" / "final.keras", safe_mode=True)
    replayed = ridurre.PruningPlan.load(out / "plan.json").apply(original)
    assert [layer.output.shape for layer in replayed.layers] == [layer.output.shape for layer in final.layers]


def test_prune_removes_residual_blocks_first(capsys, tmp_path, digits, model_file):
    from ridurre.zoo.models import resnet_cifar

    keras.utils.set_random_seed(0)
    model = resnet_cifar(14, input_shape=digits.x_train.shape[1:])  # 2 blocks per stage
    compile_classifier(model)
    path = str(tmp_path / "resnet.keras")
    model.save(path)
    out = tmp_path / "run"
    args = ["prune", "--model", path, "--blocks", "0.7", "--target-macs", "0.5", "--iterations", "2"]
    args += ["--finetune-epochs", "0", "--exclude", "predictions", "--runtimes", "keras", "--output", str(out)]
    assert main(PROGRESS_OFF + args) == 0, capsys.readouterr().err
    summary = json.load(open(out / "reports" / "summary.json"))
    blocks = summary["blocks"]
    assert blocks["removed"] and blocks["macs_after"] / blocks["macs_before"] >= 0.7
    assert summary["limits"]["blocks"] == 0.7
    kept = summary["after"]["macs"] / summary["before"]["macs"]
    assert 0.5 - 1e-9 <= kept <= 0.55, kept  # the channels took the rest of the way, never past it
    assert "Residual blocks removed" in (out / "reports" / "report.md").read_text()
    pruned = keras.models.load_model(out / "models" / "final.keras", safe_mode=True)
    assert not {name.replace("_add", "_conv1") for name in blocks["removed"]} & {lay.name for lay in pruned.layers}
    # bad input: refused before anything is written
    for extra, message in (
        (["--blocks", "0.5"], "needs strategy.target_macs"),
        (["--blocks", "0.4", "--target-macs", "0.5"], "must keep more MACs than strategy.target_macs"),
    ):
        capsys.readouterr()
        bad = ["prune", "--model", path, *extra, "--output", str(tmp_path / "bad")]
        assert main(bad) == 2 and message in capsys.readouterr().err
    bad = ["prune", "--model", model_file, "--blocks", "0.8", "--target-macs", "0.5", "--output", str(tmp_path / "bad")]
    assert main(bad) == 2 and "has no residual block" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
