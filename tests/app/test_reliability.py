"""What broke when ridurre was tried as a new user would (issue 14), through the command line: inputs
never overwritten, run directories that know their run (--resume, --overwrite), bad data and model
files refused with one line and exit status 2, limits met or reported, messages not passed through."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import ROOT, compile_classifier

from ridurre.app import jobs
from ridurre.app.cli import main
from ridurre.metrics import LatencyResult

QUIET = ["--no-progress"]


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, digits):
    """A small CNN trained for one epoch on the digits, saved compiled."""
    from ridurre.zoo.models import small_cnn

    keras.utils.set_random_seed(0)
    model = small_cnn(filters=(8, 16), dense_units=16)
    compile_classifier(model)
    model.fit(digits.x_train, digits.y_train, epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("tiny") / "tiny.keras")
    model.save(path)
    return path


@pytest.fixture
def fast_latency(monkeypatch):
    """Latency is not what these tests are about: skip the timing rounds."""
    monkeypatch.setattr(jobs, "measure_models", _fixed_latency)


def _fixed_latency(models, *args, **kwargs):
    result = {b: LatencyResult(1.0, 1.0, b, 1, float(b), runtime="keras") for b in (256, 1)}
    return {name: {"keras": result} for name in models}


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _prune(model, out, *extra):
    return main(
        QUIET
        + ["prune", "--model", model, "--data", "digits", "--iterations", "2"]
        + ["--finetune-epochs", "0", "--output", str(out), *extra]
    )


def _listing(directory):
    return sorted(os.path.relpath(os.path.join(r, f), directory) for r, _, fs in os.walk(directory) for f in fs)


def _weights(path):
    return keras.models.load_model(path, compile=False).get_weights()


# ----------------------------------------------------------------------------- 1: inputs never overwritten


def test_prune_scores_never_replaces_its_own_input(tmp_path, tiny_file, capsys):
    out = tmp_path / "out" / "same"
    out.mkdir(parents=True)
    model = out / "pruned_model.keras"
    shutil.copy(tiny_file, model)
    stats = tmp_path / "s.csv"
    stats.write_text("layer,filter,score\nconv1,0,0.1\nconv1,1,0.9\nconv1,2,0.5\n")
    before = _sha(model)
    args = ["prune-scores", "--stats", str(stats), "--percentage", "0.3", "--mode", "remove"]
    assert main(args + ["--model", str(model), "--output", str(out)]) == 2
    assert "--model" in capsys.readouterr().err and _sha(model) == before
    # through a symbolic link, and the score file named like an output
    link = tmp_path / "link.keras"
    link.symlink_to(model)
    assert main(args + ["--model", str(link), "--output", str(out), "--overwrite"]) == 2
    assert "would overwrite it" in capsys.readouterr().err and _sha(model) == before
    listed = tmp_path / "out2" / "pruned_filters.txt"
    listed.parent.mkdir()
    shutil.copy(stats, listed)
    args[2] = str(listed)
    assert main(args + ["--model", tiny_file, "--output", str(listed.parent), "--overwrite"]) == 2
    assert "--stats" in capsys.readouterr().err and listed.read_text().startswith("layer,filter")


def test_prune_refuses_data_inside_its_output(tmp_path, tiny_file, capsys, digits):
    out = tmp_path / "run"
    out.mkdir()
    np.savez(out / "data.npz", x=digits.x_train[:100], y=digits.y_train[:100])
    assert _prune(tiny_file, out, "--data", str(out / "data.npz"), "--overwrite") == 2
    assert "--output" in capsys.readouterr().err and _listing(out) == ["data.npz"]


# ----------------------------------------------------------------------------- 2, 4: --resume


@pytest.mark.slow
def test_the_cli_resumes_an_interrupted_run_to_the_same_weights(tmp_path, tiny_file, monkeypatch, fast_latency):
    args = ["--finetune-epochs", "1", "--iterations", "3", "--seed", "1"]
    assert _prune(tiny_file, tmp_path / "full", *args) == 0
    real = jobs.make_finetune_fn

    def interrupted(*a, **k):
        finetune = real(*a, **k)

        def call(model, initial_epoch, end_epoch):
            if initial_epoch == 1:
                raise KeyboardInterrupt
            return finetune(model, initial_epoch, end_epoch)

        call.bar = finetune.bar
        return call

    monkeypatch.setattr(jobs, "make_finetune_fn", interrupted)
    assert _prune(tiny_file, tmp_path / "cut", *args) == 130
    monkeypatch.setattr(jobs, "make_finetune_fn", real)
    assert _prune(tiny_file, tmp_path / "cut", *args) == 2  # not without --resume (or --overwrite)
    assert _prune(tiny_file, tmp_path / "cut", *args, "--resume") == 0
    log = (tmp_path / "cut" / "logs" / "ridurre.log").read_text()
    assert "continuing the run" in log and "after iteration 0" in log
    for a, b in zip(_weights(tmp_path / "cut/models/final.keras"), _weights(tmp_path / "full/models/final.keras")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "change, message",
    [
        (["--method", "random"], "strategy.method: 'l1' there, 'random' here"),
        (["--ratio", "0.4"], "strategy.ratio: None there, 0.4 here"),
        (["MODEL"], "the input model differs"),
        (["DATA"], "run_identity.data"),
    ],
    ids=["method", "ratio", "model", "data"],
)
def test_resume_refuses_a_run_of_other_settings_model_or_data(
    tmp_path, tiny_file, capsys, fast_latency, digits, change, message
):
    out = tmp_path / "run"
    assert _prune(tiny_file, out) == 0
    listing = {p: _sha(out / p) for p in _listing(out) if not p.endswith(".log")}
    model = tiny_file
    if change == ["MODEL"]:
        other = keras.models.load_model(tiny_file)
        other.set_weights([w * 1.01 for w in other.get_weights()])
        model = str(tmp_path / "other.keras")
        other.save(model)
        change = []
    elif change == ["DATA"]:
        np.savez(tmp_path / "d.npz", x=digits.x_train, y=digits.y_train)
        change = ["--data", str(tmp_path / "d.npz")]
    capsys.readouterr()
    assert _prune(model, out, *change, "--resume") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert {p: _sha(out / p) for p in listing} == listing  # nothing replaced


# ----------------------------------------------------------------------------- 5: reused output directories


def test_a_reused_output_directory_needs_overwrite_which_removes_the_old_run(tmp_path, tiny_file, fast_latency, capsys):
    out = tmp_path / "run"
    assert _prune(tiny_file, out, "--iterations", "4", "--step", "0.15", "--ratio", "0.7") == 0
    assert "models/iteration_003.keras" in _listing(out)
    (out / "notes.txt").write_text("mine")
    assert _prune(tiny_file, out) == 2
    assert "--resume continues the run it holds, --overwrite replaces it" in capsys.readouterr().err
    assert _prune(tiny_file, out, "--resume", "--overwrite") == 2
    assert _prune(tiny_file, out, "--overwrite") == 0
    files = _listing(out)
    assert "models/iteration_001.keras" in files and "models/iteration_002.keras" not in files
    assert "notes.txt" in files  # not the run's: left alone
    assert len(json.loads((out / "logs" / "history.json").read_text())) == 2


def test_prune_scores_mask_then_remove_needs_overwrite(tmp_path, tiny_file, capsys):
    stats = tmp_path / "s.csv"
    stats.write_text("layer,filter,score\n" + "".join(f"conv1,{i},{i / 10}\n" for i in range(8)))
    out = tmp_path / "out"
    base = ["prune-scores", "--model", tiny_file, "--stats", str(stats), "--percentage", "0.25", "--output", str(out)]
    assert main(base + ["--mode", "remove"]) == 0
    assert main(base) == 2
    assert "not empty" in capsys.readouterr().err and "pruned_model.keras" in os.listdir(out)
    assert main(base + ["--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["pruned_filters.txt", "pruned_weights.npz", "pruning_visualization.png"]
    assert "removed" in capsys.readouterr().out


# ----------------------------------------------------------------------------- 6: bad data


@pytest.mark.parametrize("kind", ["nan", "empty", "inf-in-validation"])
def test_bad_data_is_refused_before_anything_is_written(tmp_path, tiny_file, capsys, kind):
    x = np.random.default_rng(0).normal(size=(60, 8, 8, 1)).astype("float32")
    y = np.arange(60) % 10
    arrays = {"x": x, "y": y}
    if kind == "nan":
        arrays["x"] = np.full_like(x, np.nan)
    elif kind == "empty":
        arrays = {"x": x[:0], "y": y[:0]}
    else:
        x_val = x[:10].copy()
        x_val[3, 0, 0, 0] = np.inf
        arrays.update(x_val=x_val, y_val=y[:10])
    np.savez(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "run"
    assert _prune(tiny_file, out, "--data", str(tmp_path / "bad.npz")) == 2
    err = capsys.readouterr().err
    expected = {"nan": "NaN or infinite value(s) in x_train", "empty": "no training examples (0 rows)"}
    assert expected.get(kind, "NaN or infinite value(s) in x_val") in err and err.count("\n") == 1
    assert not out.exists()


# ----------------------------------------------------------------------------- 8: targets and --layers


def test_the_readme_macs_target_is_reached_or_reported(tmp_path, tiny_file, fast_latency, capsys):
    out = tmp_path / "run"
    args = ["--target-macs", "0.5", "--iterations", "4"]
    assert _prune(tiny_file, out, *args) == 0
    summary = json.loads((out / "reports" / "summary.json").read_text())
    met = summary["limits"]["met"]["macs"]
    assert met["met"] and 0.45 <= met["reached"] <= 0.5 + 1e-9, met
    assert 0.5 * summary["before"]["macs"] <= summary["after"]["macs"] <= 0.55 * summary["before"]["macs"]
    assert "Limits met" in (out / "reports" / "report.md").read_text()
    # a fixed small step cannot get there in 4 iterations: a warning, and exit status 3 when asked
    assert _prune(tiny_file, tmp_path / "short", *args, "--step", "0.1", "--require-target") == 3
    err = capsys.readouterr().err
    assert "Limit not met" in err and "the iterations ran out (4 of 4)" in err
    report = (tmp_path / "short" / "reports" / "report.md").read_text()
    assert "**not met**" in report


def test_layers_matching_nothing_is_an_error(tmp_path, tiny_file, capsys):
    assert _prune(tiny_file, tmp_path / "run", "--layers", "conv9") == 2
    assert "'conv9' match(es) no layer" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_accuracy_aware_run_checks_its_layers_and_resumes(tmp_path, tiny_file, fast_latency, capsys):
    """What is asked of a pruner before the run (its layers, the run it would resume) needs no metric."""
    out = tmp_path / "run"
    args = ["--max-accuracy-drop", "0.5", "--iterations", "1"]
    assert _prune(tiny_file, out, *args, "--layers", "conv9") == 2
    assert "'conv9' match(es) no layer" in capsys.readouterr().err
    assert _prune(tiny_file, out, *args, "--layers", "conv1") == 0
    assert _prune(tiny_file, out, *args, "--layers", "conv1", "--resume") == 0
    log = (out / "logs" / "ridurre.log").read_text()
    assert "continuing the run" in log and "after iteration 0" in log


# ----------------------------------------------------------------------------- 9: exit codes


@pytest.mark.parametrize("where", ["under-a-file", "proc"])
def test_an_unwritable_output_exits_2_naming_it(tmp_path, tiny_file, capsys, where):
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = str(blocker / "run") if where == "under-a-file" else "/proc/ridurre-test/run"
    assert _prune(tiny_file, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("ridurre prune: error: --output") and err.count("\n") == 1 and ".tmp" not in err
    stats = tmp_path / "s.csv"
    stats.write_text("layer,filter,score\nconv1,0,0.1\nconv1,1,0.9\n")
    args = ["prune-scores", "--model", tiny_file, "--stats", str(stats), "--percentage", "0.5", "--output", out]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--output" in err and err.count("\n") == 1 and ".tmp" not in err


def test_a_csv_field_over_the_limit_exits_2_naming_the_file_and_line(tmp_path, tiny_file, capsys):
    stats = tmp_path / "s.csv"
    stats.write_text("layer,filter,score\nconv1,0,0.1\nconv1,1," + "9" * 140_000 + "\n")
    args = ["prune-scores", "--model", tiny_file, "--stats", str(stats), "--percentage", "0.5"]
    assert main(args + ["--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{stats}, line 3: not a valid CSV row (field larger than field limit" in err and len(err) < 300
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- 10: messages


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory, tiny_file):
    d = tmp_path_factory.mktemp("odd")
    data = open(tiny_file, "rb").read()
    (d / "truncated.keras").write_bytes(data[: len(data) // 2])
    (d / "empty.keras").write_bytes(b"")
    (d / "text.keras").write_text("model = 'tiny'\n")
    (d / "text.npz").write_text("x,y\n1,2\n")
    (d / "objects.npz").write_bytes(b"")
    np.savez(d / "objects.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4))
    (d / "layers.py").write_text(
        "import keras\n\n\nclass Doubling(keras.layers.Layer):\n    def call(self, x):\n        return 2 * x\n"
    )
    code = (
        "import keras, sys\n"
        f"sys.path.insert(0, {str(d)!r})\n"
        "from layers import Doubling\n"
        "x = keras.Input((8, 8, 1))\n"
        "h = keras.layers.Conv2D(4, 3, name='c')(x)\n"
        "h = keras.layers.Lambda(lambda t: t * 2, name='lam')(Doubling(name='dbl')(h))\n"
        "out = keras.layers.Dense(10)(keras.layers.Flatten()(h))\n"
        f"keras.Model(x, out).save({str(d / 'custom.keras')!r})\n"
        "h = keras.layers.Conv2D(4, 3, name='c')(x)\n"
        "out = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2)(h)))\n"
        f"keras.Model(x, out).save({str(d / 'lambda.keras')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=300)
    return d


@pytest.mark.parametrize(
    "name, expected",
    [
        ("truncated.keras", "a truncated or damaged zip archive, not a complete .keras model"),
        ("empty.keras", "the file is empty (0 bytes), not a Keras model"),
        ("text.keras", "a text file, not a Keras model"),
        ("custom.keras", "the model uses 'Doubling', not a Keras class and not given: pass --custom-objects"),
        ("lambda.keras", "the model has a Lambda layer"),
    ],
)
@pytest.mark.parametrize("command", ["prune", "stats", "sensitivity"])
def test_bad_model_files_get_one_line_naming_file_and_cause(odd_files, tmp_path, capsys, name, expected, command):
    path = str(odd_files / name)
    args = {
        "prune": ["prune", "--model", path, "--output", str(tmp_path / "o")],
        "stats": ["stats", path],
        "sensitivity": ["sensitivity", "--model", path, "--data", "digits", "--output", str(tmp_path / "o")],
    }[command]
    assert main(QUIET + args) == 2
    err = capsys.readouterr().err
    assert f"{path}: {expected}" in err and err.count("\n") == 1 and len(err) < 400, err
    assert "File not found" not in err and "config=" not in err and not (tmp_path / "o").exists()


def test_custom_objects_and_unsafe_opt_in(odd_files, capsys):
    custom = str(odd_files / "custom.keras")
    assert main(["stats", custom, "--custom-objects", str(odd_files / "layers.py")]) == 2  # still its Lambda
    assert "--unsafe" in capsys.readouterr().err
    assert main(["stats", custom, "--custom-objects", str(odd_files / "layers.py"), "--unsafe", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_params"] > 0


@pytest.mark.parametrize(
    "name, expected",
    [("text.npz", "is a text file, not an .npz archive"), ("objects.npz", "array 'x' holds Python objects")],
)
def test_bad_npz_files_get_a_message_of_their_own(odd_files, tmp_path, tiny_file, capsys, name, expected):
    assert _prune(tiny_file, tmp_path / "run", "--data", str(odd_files / name)) == 2
    err = capsys.readouterr().err
    assert expected in err and "allow_pickle" not in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- 11: small ones


def test_an_h5_model_logs_every_line_once(tmp_path, tiny_file):
    h5 = tmp_path / "tiny.h5"
    keras.models.load_model(tiny_file).save(h5)
    code = (
        "import sys\nfrom ridurre.app import jobs\n"
        "from ridurre.metrics import LatencyResult\n"
        "jobs.measure_models = lambda models, *a, **k: {n: {'keras': {b: LatencyResult(1.0, 1.0, b, 1, float(b)) "
        "for b in (256, 1)}} for n in models}\n"
        "from ridurre.app.cli import main\n"
        f"sys.exit(main(['--no-progress', 'prune', '--model', {str(h5)!r}, '--data', 'digits', '--ratio', '0.2',"
        f" '--iterations', '1', '--finetune-epochs', '0', '--output', {str(tmp_path / 'run')!r}]))\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split(" - ", 1)[-1] for line in result.stderr.splitlines() if "iteration 0:" in line]
    assert len(lines) == 1, result.stderr[-3000:]


def test_the_global_no_progress_flag_reaches_the_subcommand(monkeypatch, tmp_path, tiny_file):
    from ridurre.app import sensitivity_cli

    seen = {}

    def fake_scan(*args, **kwargs):
        seen["progress"] = kwargs["progress"]
        raise KeyboardInterrupt

    monkeypatch.setattr(sensitivity_cli, "scan", fake_scan)
    for argv in (["--no-progress", "sensitivity"], ["sensitivity", "--no-progress"], ["sensitivity"]):
        seen.clear()
        args = argv + ["--model", tiny_file, "--data", "digits", "--output", str(tmp_path / "o")]
        assert main(args) == 130
        assert seen["progress"] is (argv == ["sensitivity"]), argv


def test_a_large_score_file_is_streamed(tmp_path, tiny_file, capsys):
    import tracemalloc

    stats = tmp_path / "big.csv"
    with open(stats, "w") as f:
        f.write("layer,filter,score\n")
        for i in range(24):  # lines 2-25
            f.write(f"conv1,{i},{i}\n" if i < 8 else f"conv2,{i - 8},{i}\n")
        f.write("# a comment\n" * 8)  # lines 26-33
        f.write("conv1,99,0.5\n")  # line 34: filter index out of range
        row = "conv2,1,0.25" + "," * 200 + "\n"
        f.write(row * (20_000_000 // len(row)))  # about 20 MB that need not be read
    tracemalloc.start()
    code = main(["prune-scores", "--model", tiny_file, "--stats", str(stats), "--percentage", "0.3"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2 and f"{stats}, line 34: filter index 99 is out of range" in capsys.readouterr().err
    assert peak < 5_000_000, peak  # the old reader held the whole file (and its lines) in memory


def test_mask_mode_equals_remove_mode_on_conv_batchnorm(tmp_path):
    from helpers import randomize_weights

    from ridurre.scorefile import apply_pruned_weights

    x = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 3, name="conv2")(h)
    model = randomize_weights(keras.Model(x, keras.layers.Dense(3, name="out")(keras.layers.Flatten()(h))), seed=3)
    path = tmp_path / "m.keras"
    model.save(path)
    stats = tmp_path / "s.csv"
    stats.write_text("layer,filter,score\n" + "".join(f"conv,{i},{s}\n" for i, s in enumerate([5, 1, 4, 2, 6, 3])))
    base = ["prune-scores", "--model", str(path), "--stats", str(stats), "--percentage", "0.5"]
    assert main(base + ["--output", str(tmp_path / "mask")]) == 0
    assert main(base + ["--output", str(tmp_path / "remove"), "--mode", "remove"]) == 0
    masked = apply_pruned_weights(model, tmp_path / "mask" / "pruned_weights.npz")
    removed = keras.models.load_model(tmp_path / "remove" / "pruned_model.keras")
    assert removed.get_layer("conv").filters == 3
    data = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype("float32")
    np.testing.assert_allclose(masked.predict(data, verbose=0), removed.predict(data, verbose=0), rtol=1e-4, atol=1e-5)
