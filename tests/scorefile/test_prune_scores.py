"""Score-file pruning: the TensorFlow-free command, selection rules, and bad inputs."""

import argparse
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from helpers import ROOT  # noqa: E402
from keras import layers

from ridurre.app.scorefile_cli import build_parser, main
from ridurre.scorefile import (
    FilterScore,
    ScoreFileError,
    prune_by_scores,
    read_layer_mapping,
    read_model_file,
    read_scores,
    select_filters,
)

EXAMPLE_STATS = os.path.join(ROOT, "example", "filter_stats.csv")
EXAMPLE_MAPPING = os.path.join(ROOT, "example", "layer_mapping.csv")
OUTPUTS = ("pruned_weights.npz", "pruned_filters.txt", "pruning_visualization.png")


def eegnet(name="eegnet"):
    """A small EEGNet: temporal_conv (8 filters) ... separable_conv (16 filters)."""
    inp = keras.Input((4, 64, 1))
    x = layers.Conv2D(8, (1, 16), padding="same", use_bias=False, name="temporal_conv")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.DepthwiseConv2D((4, 1), depth_multiplier=2, use_bias=False, name="depthwise")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("elu")(x)
    x = layers.AveragePooling2D((1, 4))(x)
    x = layers.SeparableConv2D(16, (1, 8), padding="same", use_bias=False, name="separable_conv")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.Activation("elu")(x)
    x = layers.Flatten()(x)
    out = layers.Dense(4, activation="softmax", name="classifier")(x)
    model = keras.Model(inp, out, name=name)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    model = eegnet()
    paths = {"keras": str(d / "eegnet.keras"), "h5": str(d / "eegnet.h5")}
    model.save(paths["keras"])
    model.save(paths["h5"])
    return model, paths


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


# ----------------------------------------------------------------------------- without TF

TF_FREE = textwrap.dedent("""
    import sys
    sys.modules["tensorflow"] = None
    sys.modules["keras"] = None
    from ridurre.app.scorefile_cli import main
    status = main(sys.argv[1:])
    loaded = sorted(m for m in sys.modules
                    if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch")
                    and sys.modules[m] is not None)
    assert not loaded, loaded
    sys.exit(status)
""")


def run_tf_free(args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", TF_FREE, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_mask_mode_runs_without_tensorflow_or_keras(model_files, tmp_path, fmt):
    model, paths = model_files
    out = tmp_path / "pruned"
    proc = run_tf_free(
        [
            "--model",
            paths[fmt],
            "--stats",
            EXAMPLE_STATS,
            "--layer-mapping",
            EXAMPLE_MAPPING,
            "--percentage",
            "0.25",
            "--output",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)
    assert "pruned 6 of 24 scored filters" in proc.stdout

    # The 6 worst of the 24 example scores, whatever their layer (one global ranking).
    rows = [l.split(",") for l in open(EXAMPLE_STATS).read().split()[1:]]
    names = dict(l.split(",") for l in open(EXAMPLE_MAPPING).read().split()[1:])
    worst = sorted(rows, key=lambda r: float(r[2]))[:6]
    expected = {(names[r[0]], int(r[1])) for r in worst}

    listed = open(out / "pruned_filters.txt").read().splitlines()
    assert listed[0] == "layer\tfilter\tscore"
    assert {(l.split("\t")[0], int(l.split("\t")[1])) for l in listed[1:]} == expected

    npz = np.load(out / "pruned_weights.npz")
    assert sorted(npz.files) == [
        *(f"{bn}/{w}" for bn in ("bn1", "bn3") for w in ("beta", "gamma", "moving_mean", "moving_variance")),
        "separable_conv/depthwise_kernel",
        "separable_conv/pointwise_kernel",
        "temporal_conv/kernel",
    ]
    # the BatchNormalization right after each pruned layer outputs exactly zero for its pruned channels
    for bn, layer in (("bn1", "temporal_conv"), ("bn3", "separable_conv")):
        pruned = sorted(f for l, f in expected if l == layer)
        assert not npz[f"{bn}/gamma"][pruned].any() and not npz[f"{bn}/beta"][pruned].any()
        assert not npz[f"{bn}/moving_mean"][pruned].any()
        keep = [f for f in range(len(npz[f"{bn}/gamma"])) if f not in pruned]
        np.testing.assert_array_equal(npz[f"{bn}/gamma"][keep], model.get_layer(bn).get_weights()[0][keep])
    assert "note: zeroed the same channels of BatchNormalization 'bn1' after 'temporal_conv'" in proc.stdout
    original = {
        "temporal_conv/kernel": model.get_layer("temporal_conv").get_weights()[0],
        "separable_conv/depthwise_kernel": model.get_layer("separable_conv").get_weights()[0],
        "separable_conv/pointwise_kernel": model.get_layer("separable_conv").get_weights()[1],
    }
    for key, before in original.items():
        after = npz[key]
        layer = key.split("/")[0]
        pruned = sorted(f for l, f in expected if l == layer)
        if key.endswith("depthwise_kernel"):
            np.testing.assert_array_equal(after, before)
            continue
        assert not after[..., pruned].any()
        keep = [f for f in range(before.shape[-1]) if f not in pruned]
        np.testing.assert_array_equal(after[..., keep], before[..., keep])
    with open(out / "pruning_visualization.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_input_without_tensorflow(model_files, tmp_path):
    _, paths = model_files
    stats = write(
        tmp_path / "stats.csv",
        """
        layer,filter,score
        temporal_conv,0,0.5
        temporal_conv,8,0.1
    """,
    )
    out = tmp_path / "out"
    proc = run_tf_free(["--model", paths["h5"], "--stats", stats, "--min-score", "0.2", "--output", str(out)])
    assert proc.returncode == 2
    assert f"{stats}, line 3: filter index 8 is out of range" in proc.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- bad inputs

BAD_STATS = {
    "missing column": ("layer,filter\ntemporal_conv,0\n", 1, "no score column"),
    "unknown layer": (
        "layer,filter,score\ntemporal_conv,0,0.1\ntemporal_cnv,1,0.2\n",
        3,
        "layer 'temporal_cnv' is not in the model; did you mean 'temporal_conv'",
    ),
    "not prunable": ("layer,filter,score\nbn1,0,0.1\n", 2, "'bn1' (BatchNormalization) has no filters"),
    "filter out of range": (
        "layer,filter,score\nseparable_conv,16,0.1\n",
        2,
        "filter index 16 is out of range for layer 'separable_conv' (16 filters: 0..15)",
    ),
    "negative filter": ("layer,filter,score\nseparable_conv,-1,0.1\n", 2, "filter index -1 is out of range"),
    "non-integer filter": ("layer,filter,score\nseparable_conv,1.5,0.1\n", 2, "filter index '1.5' is not an integer"),
    "non-numeric score": (
        "layer,filter,score\ntemporal_conv,0,0.1\ntemporal_conv,1,high\n",
        3,
        "score 'high' is not a number",
    ),
    "nan score": ("layer,filter,score\ntemporal_conv,0,nan\n", 2, "score 'nan' is not a finite number"),
    "missing score": ("layer,filter,score\ntemporal_conv,0,\n", 2, "missing score value"),
    "duplicate row": (
        "layer,filter,score\ntemporal_conv,0,0.1\ntemporal_conv,1,0.3\n1,0,0.2\n",
        4,
        "duplicate row for layer 'temporal_conv' filter 0 (first on line 2)",
    ),
    "empty file": ("", 1, "empty score file"),
    "header only": ("layer,filter,score\n", 1, "no score rows"),
    "ambiguous score": (
        "layer,filter,score,similarity\ntemporal_conv,0,1,2\n",
        1,
        "ambiguous score columns score, similarity",
    ),
    "id out of range": (
        "layer_id,filter_idx,similarity\n99,0,0.1\n",
        2,
        "layer ID 99 is out of range: the model has 12 layers",
    ),
    "id is not a conv": ("layer_id,filter_idx,similarity\n0,0,0.1\n", 2, "(InputLayer) has no filters"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATS))
def test_bad_score_file(model_files, tmp_path, capsys, case):
    text, line, problem = BAD_STATS[case]
    _, paths = model_files
    stats = tmp_path / "stats.csv"
    stats.write_text(text)
    out = tmp_path / "out"
    status = main(["--model", paths["keras"], "--stats", str(stats), "--percentage", "0.5", "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert f"{stats}, line {line}: " in err and problem in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["stats.csv"]  # no temporary left behind


def test_integer_id_hint_mentions_layer_mapping(model_files, tmp_path):
    _, paths = model_files
    stats = write(tmp_path / "s.csv", "layer_id,filter_idx,score\n2,0,0.1\n")
    with pytest.raises(ScoreFileError, match="use --layer-mapping if your IDs mean"):
        prune_by_scores(paths["keras"], stats, tmp_path / "o", percentage=0.5)


@pytest.mark.parametrize(
    "mapping, line, problem",
    [
        ("layer_id,layer_name\n0,temporal_conv\n0,separable_conv\n", 3, "duplicate layer ID 0 (first on line 2)"),
        ("layer_id,layer_name\nzero,temporal_conv\n", 2, "layer ID 'zero' is not an integer"),
        ("layer_id,layer_name\n0,temporal_conv\n1,spatial_conv\n", 3, "layer 'spatial_conv' is not in the model"),
        ("id_of_layer,layer_name\n0,temporal_conv\n", 1, "no layer ID column"),
        ("", 1, "empty layer mapping file"),
    ],
)
def test_bad_layer_mapping(model_files, tmp_path, capsys, mapping, line, problem):
    _, paths = model_files
    mapping_path = tmp_path / "mapping.csv"
    mapping_path.write_text(mapping)
    status = main(
        [
            "--model",
            paths["keras"],
            "--stats",
            EXAMPLE_STATS,
            "--layer-mapping",
            str(mapping_path),
            "--percentage",
            "0.5",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and f"{mapping_path}, line {line}: {problem}" in err, err
    assert not (tmp_path / "out").exists()


def test_id_missing_from_mapping(model_files, tmp_path):
    _, paths = model_files
    mapping = write(tmp_path / "m.csv", "layer_id,layer_name\n0,temporal_conv\n")
    with pytest.raises(ScoreFileError, match=r"line 10: layer ID 1 is not in the layer mapping"):
        prune_by_scores(paths["keras"], EXAMPLE_STATS, tmp_path / "o", percentage=0.5, layer_mapping=mapping)


@pytest.mark.parametrize(
    "args, problem",
    [
        (["--percentage", "0.3", "--min-score", "0.1"], "give exactly one of --percentage"),
        ([], "give exactly one of --percentage"),
        (["--percentage", "0"], "strictly between 0 and 1"),
        (["--percentage", "1"], "strictly between 0 and 1"),
        (["--percentage", "30"], "strictly between 0 and 1"),
        (["--percentage", "-0.2"], "strictly between 0 and 1"),
        (["--percentage", "nan"], "strictly between 0 and 1"),
        (["--min-score", "inf"], "--min-score must be a finite number"),
    ],
)
def test_bad_criterion(model_files, tmp_path, capsys, args, problem):
    _, paths = model_files
    status = main(
        [
            "--model",
            paths["keras"],
            "--stats",
            EXAMPLE_STATS,
            "--layer-mapping",
            EXAMPLE_MAPPING,
            "--output",
            str(tmp_path / "out"),
            *args,
        ]
    )
    assert status == 2 and problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"this is not a model\n", "not a Keras model (neither a .keras zip archive nor an HDF5 file)"),
        (None, "no such file"),
    ],
)
def test_not_a_keras_model(tmp_path, capsys, content, problem):
    model = tmp_path / "model.keras"
    if content is not None:
        model.write_bytes(content)
    status = main(
        ["--model", str(model), "--stats", EXAMPLE_STATS, "--percentage", "0.3", "--output", str(tmp_path / "out")]
    )
    assert status == 2 and f"{model}: {problem}" in capsys.readouterr().err


def test_bad_input_leaves_existing_output_unchanged(model_files, tmp_path):
    _, paths = model_files
    out = tmp_path / "out"
    status = main(
        [
            "--model",
            paths["keras"],
            "--stats",
            EXAMPLE_STATS,
            "--layer-mapping",
            EXAMPLE_MAPPING,
            "--percentage",
            "0.25",
            "--output",
            str(out),
        ]
    )
    assert status == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write(tmp_path / "bad.csv", "layer,filter,score\ntemporal_conv,0,x\n")
    args = ["--model", paths["keras"], "--stats", bad, "--percentage", "0.25", "--output", str(out), "--overwrite"]
    assert main(args) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "out"]
    # A good run replaces the files in place (with --overwrite: the directory is not empty).
    assert (
        main(
            [
                "--model",
                paths["keras"],
                "--stats",
                EXAMPLE_STATS,
                "--layer-mapping",
                EXAMPLE_MAPPING,
                "--min-score",
                "0.02",
                "--output",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert len(open(out / "pruned_filters.txt").read().splitlines()) == 1 + 10


# ----------------------------------------------------------------------------- selection


def scores_of(layer, values):
    return [FilterScore(layer, i, v) for i, v in enumerate(values)]


def test_percentage_is_one_global_ranking():
    scores = scores_of("a", [0.1, 0.9, 0.8, 0.7]) + scores_of("b", [0.2, 0.3, 0.95, 0.05])
    sel = select_filters(scores, percentage=0.5)
    assert sel.by_layer() == {"a": [0], "b": [0, 1, 3]}
    assert sel.threshold == 0.3 and sel.n_scored == 8 and not sel.kept
    assert [s.score for s in sel.pruned] == [0.05, 0.1, 0.2, 0.3]


def test_percentage_rounds_down():
    scores = scores_of("a", [0.5, 0.1, 0.3])
    assert select_filters(scores, percentage=0.3).pruned == []
    assert select_filters(scores_of("a", range(100)), percentage=0.29).by_layer()["a"] == list(range(29))


def test_min_score_prunes_strictly_below():
    sel = select_filters(scores_of("a", [0.1, 0.2, 0.3]), min_score=0.2)
    assert sel.by_layer() == {"a": [0]} and sel.threshold == 0.2


def test_layer_keeps_its_best_filter(model_files, tmp_path, capsys):
    sel = select_filters(scores_of("a", [0.1, 0.3, 0.2]) + scores_of("b", [0.9]), min_score=0.5)
    assert sel.by_layer() == {"a": [0, 2]}
    assert [(s.layer, s.filter) for s in sel.kept] == [("a", 1)]
    # A partly scored layer can lose every scored filter: the unscored ones remain.
    sel = select_filters(scores_of("a", [0.1, 0.3]), min_score=0.5, num_filters={"a": 8})
    assert sel.by_layer() == {"a": [0, 1]} and not sel.kept

    _, paths = model_files
    stats = write(
        tmp_path / "s.csv", "layer,filter,score\n" + "".join(f"temporal_conv,{i},{i / 10}\n" for i in range(8))
    )
    assert (
        main(["--model", paths["keras"], "--stats", stats, "--min-score", "5", "--output", str(tmp_path / "out")]) == 0
    )
    assert "note: kept filter 7 of layer 'temporal_conv'" in capsys.readouterr().out
    listed = open(tmp_path / "out" / "pruned_filters.txt").read().splitlines()
    assert [l.split("\t")[1] for l in listed[1:]] == [str(i) for i in range(7)]


# ----------------------------------------------------------------------------- reading


def test_columns_synonyms_delimiters_and_comments(model_files, tmp_path):
    _, paths = model_files
    mf = read_model_file(paths["keras"])
    stats = write(
        tmp_path / "s.tsv",
        """
        # exported by the SSVEP analysis
        Layer_Name\tlayer_id\tFilter_Index\tsimilarity_score\tnotes
        separable_conv\t7\t3\t0.5\tfine

        temporal_conv\t1\t2.0\t-1e-3\t
    """,
    )
    got = read_scores(stats, mf)
    assert [(s.layer, s.filter, s.score, s.line) for s in got] == [
        ("separable_conv", 3, 0.5, 3),
        ("temporal_conv", 2, -0.001, 5),
    ]


def test_integer_ids_index_model_layers(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), layers.Dense(4, name="d0"), layers.Dropout(0.1), layers.Dense(3, name="d1")]
    )
    path = str(tmp_path / "seq.keras")
    model.save(path)
    stats = write(tmp_path / "s.csv", "layer,filter,score\n0,2,0.1\n2,1,0.2\n")
    got = read_scores(stats, read_model_file(path))
    assert [(s.layer, s.filter) for s in got] == [(model.layers[0].name, 2), (model.layers[2].name, 1)]
    assert read_layer_mapping(EXAMPLE_MAPPING) == {0: "temporal_conv", 1: "separable_conv"}
    assert [s.layer for s in read_scores(stats, read_model_file(path), {0: "d1", 2: "d0"})] == ["d1", "d0"]


# ----------------------------------------------------------------------------- command


def test_build_parser_extends_a_given_parser():
    top = argparse.ArgumentParser(prog="ridurre")
    sub = top.add_subparsers(dest="command")
    returned = build_parser(sub.add_parser("prune-scores"))
    args = top.parse_args(["prune-scores", "--model", "m.keras", "--min-score", "0.1"])
    assert returned.prog.endswith("prune-scores")
    assert (args.model, args.stats, args.output, args.min_score, args.percentage, args.mode, args.layer_mapping) == (
        "m.keras",
        "filter_stats.csv",
        "pruned_model",
        0.1,
        None,
        "mask",
        None,
    )


def test_help_and_usage_errors_return_a_status(capsys):
    assert main(["--help"]) == 0
    assert "--min-score" in capsys.readouterr().out
    assert main(["--stats", "x.csv"]) == 2  # --model is required
    assert main(["--model", "m", "--mode", "cut", "--percentage", "0.1"]) == 2


def test_remove_mode(model_files, tmp_path):
    model, paths = model_files
    out = tmp_path / "removed"
    assert (
        main(
            [
                "--model",
                paths["keras"],
                "--stats",
                EXAMPLE_STATS,
                "--layer-mapping",
                EXAMPLE_MAPPING,
                "--percentage",
                "0.25",
                "--mode",
                "remove",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    assert sorted(os.listdir(out)) == sorted(["pruned_model.keras", "pruned_filters.txt", "pruning_visualization.png"])
    pruned = keras.saving.load_model(out / "pruned_model.keras")
    listed = [l.split("\t") for l in open(out / "pruned_filters.txt").read().splitlines()[1:]]
    n_temporal = sum(l[0] == "temporal_conv" for l in listed)
    n_separable = sum(l[0] == "separable_conv" for l in listed)
    assert pruned.get_layer("temporal_conv").filters == 8 - n_temporal
    assert pruned.get_layer("separable_conv").filters == 16 - n_separable
    # The kept filters are unchanged.
    kept = [f for f in range(8) if ["temporal_conv", str(f)] not in [l[:2] for l in listed]]
    np.testing.assert_array_equal(
        pruned.get_layer("temporal_conv").get_weights()[0], model.get_layer("temporal_conv").get_weights()[0][..., kept]
    )
    x = np.random.default_rng(1).normal(size=(2, 4, 64, 1)).astype("float32")
    assert pruned.predict(x, verbose=0).shape == (2, 4)
