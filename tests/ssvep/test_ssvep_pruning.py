"""SSVEPScorePruning: iterative pruning by frequency response or by a score file."""

import os

import keras
import numpy as np
import pytest
from helpers import randomize_weights

from ridurre.pruning import ScoreFilterPruning
from ridurre.scorefile import ScoreFileError
from ridurre.ssvep import SSVEPScorePruning, find_temporal_layers, frequency_response_scores, write_scores_csv
from ridurre.surgery import zero_channels
from ridurre.zoo.models import eegnet, small_cnn

FS = 128.0
TAPS = 32
TARGETS = [10.0, 12.0]
FREQ = dict(fs=FS, target_freqs=TARGETS, harmonics=2, bandwidth=2.0)

# temporal filters 0, 2, 5, 7 respond to the stimuli (10, 12 Hz and the 20, 24 Hz harmonics);
# 1, 3, 4, 6 pass other frequencies or white noise
ON_TARGET = [0, 2, 5, 7]
OFF_TARGET = [1, 3, 4, 6]


def sinusoid(freq, phase=0.4):
    t = np.arange(TAPS) / FS
    return np.sin(2 * np.pi * freq * t + phase) * np.hanning(TAPS)


def planted_bank():
    noise = np.random.default_rng(3).normal(size=TAPS)
    columns = {
        0: sinusoid(10),
        2: sinusoid(12),
        5: sinusoid(20),
        7: sinusoid(11),
        1: sinusoid(40),
        3: sinusoid(52),
        4: noise,
        6: sinusoid(33),
    }
    return np.stack([columns[i] for i in range(8)], -1)[None, :, None, :].astype("float32")


def build(seed=0, planted=True):
    keras.utils.set_random_seed(seed)
    model = eegnet(num_classes=4, channels=4, samples=128, F1=8, D=2, F2=8, kernel_length=TAPS)
    randomize_weights(model, seed)
    if planted:
        model.get_layer("temporal_conv").set_weights([planted_bank()])
    return model


def compile_fn(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


def test_planted_kernels_score_as_expected():
    scores = frequency_response_scores(planted_bank(), **FREQ)
    assert scores[ON_TARGET].min() > 2 * scores[OFF_TARGET].max()


def test_frequency_response_pruning_removes_off_target_filters():
    model = build()
    before = weights_of(model)
    pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, maximum_prune_iterations=1, **FREQ)
    pruned, _ = pruning.run_pruning(model)

    assert pruning.temporal_layers == ["temporal_conv"]
    assert pruning.history[0].removed == {"temporal_conv": OFF_TARGET}
    # only the temporal layer was pruned; the depthwise channels 2f, 2f+1 went with filter f
    assert pruned.get_layer("temporal_conv").filters == 4
    assert pruned.get_layer("separable_conv").filters == 8
    depthwise = pruned.get_layer("spatial_depthwise").get_weights()[0]
    assert depthwise.shape == (4, 1, 4, 2)
    np.testing.assert_array_equal(depthwise, model.get_layer("spatial_depthwise").get_weights()[0][:, :, ON_TARGET])
    np.testing.assert_array_equal(pruned.get_layer("temporal_conv").get_weights()[0], planted_bank()[..., ON_TARGET])
    # the user's model is untouched
    for a, b in zip(before, weights_of(model)):
        np.testing.assert_array_equal(a, b)
    assert model.get_layer("temporal_conv").filters == 8


def test_pruned_eegnet_equals_zeroed_model():
    model = build(seed=5)
    pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, maximum_prune_iterations=1, verify="exact", **FREQ)
    pruned, _ = pruning.run_pruning(model)
    removed = pruning.history[0].removed["temporal_conv"]
    zeroed = zero_channels(model, "temporal_conv", removed)
    x = np.random.default_rng(0).normal(size=(6, 4, 128, 1)).astype("float32")
    out_pruned = keras.ops.convert_to_numpy(pruned(x, training=False))
    out_zeroed = keras.ops.convert_to_numpy(zeroed(x, training=False))
    assert out_pruned.shape == (6, 4) and np.isfinite(out_pruned).all()
    np.testing.assert_allclose(out_pruned, out_zeroed, rtol=1e-4, atol=1e-5)
    # the pruned model runs through predict too, and is smaller
    assert pruned.predict(x, verbose=0).shape == (6, 4)
    assert pruned.count_params() < model.count_params()


def test_scores_are_recomputed_after_each_finetune():
    """The finetune turns filter 0 into a 50 Hz filter: the next iteration removes it."""
    calls = []

    def finetune(model, initial_epoch, end_epoch):
        calls.append((initial_epoch, end_epoch))
        layer = model.get_layer("temporal_conv")
        kernel = layer.get_weights()[0].copy()
        kernel[..., 0] = sinusoid(50)[None, :, None]
        layer.set_weights([kernel])

    model = build()
    pruning = SSVEPScorePruning(0.25, compile_fn, finetune, 2, maximum_prune_iterations=2, **FREQ)
    pruned, epoch = pruning.run_pruning(model)
    assert calls == [(0, 2), (2, 4)] and epoch == 4
    first = pruning.history[0].removed["temporal_conv"]
    assert set(first) <= set(OFF_TARGET) and len(first) == 2
    assert 0 in pruning.history[1].removed["temporal_conv"]  # filter 0 is still at position 0


def test_layers_adds_layers_ranked_by_l1_norm():
    model = build()
    pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, maximum_prune_iterations=1, layers=["separable_conv"], **FREQ)
    pruned, _ = pruning.run_pruning(model)
    removed = pruning.history[0].removed
    assert removed["temporal_conv"] == OFF_TARGET
    pointwise = model.get_layer("separable_conv").get_weights()[1]
    l1 = np.abs(pointwise).reshape(-1, 8).sum(0)
    assert removed["separable_conv"] == sorted(np.argsort(l1, kind="stable")[:4].tolist())
    assert pruned.get_layer("separable_conv").filters == 4


def test_explicit_temporal_layers_and_default_detection():
    model = build()
    assert find_temporal_layers(model) == ["temporal_conv"]
    for spec in ("temporal_conv", "temporal_.*", model.get_layer("temporal_conv"), ["temporal_conv"]):
        pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, maximum_prune_iterations=1, temporal_layers=spec, **FREQ)
        pruning.run_pruning(model)
        assert pruning.history[0].removed == {"temporal_conv": OFF_TARGET}


# ----------------------------------------------------------------------------- score files


STATS = [0.9, 0.0, 0.8, 0.7, 0.05, 0.1, 0.6, 0.5]  # filters 1 and 4 are the worst


def test_stats_file_pruning(tmp_path):
    model = build(planted=False)
    stats = tmp_path / "filter_stats.csv"
    write_scores_csv(stats, "temporal_conv", STATS)
    pruning = SSVEPScorePruning(0.25, compile_fn, None, 0, maximum_prune_iterations=1, stats=stats)
    pruned, _ = pruning.run_pruning(model)
    assert isinstance(pruning, ScoreFilterPruning)
    assert pruning.scored_layers == ["temporal_conv"]
    assert pruning.history[0].removed == {"temporal_conv": [1, 4]}
    assert pruned.get_layer("temporal_conv").filters == 6
    assert model.get_layer("temporal_conv").filters == 8


def test_stats_file_with_layer_ids_and_mapping(tmp_path):
    """The users' format: layer_id,filter_idx,similarity_score with a layer mapping file."""
    model = build(planted=False)
    stats = tmp_path / "filter_stats.csv"
    rows = [f"0,{i},{s}" for i, s in enumerate(STATS)]
    rows += [f"1,{i},{s}" for i, s in enumerate([0.3, 0.2, 0.9, 0.01, 0.5, 0.6, 0.7, 0.8])]
    stats.write_text("layer_id,filter_idx,similarity_score\n" + "\n".join(rows) + "\n")
    mapping = tmp_path / "layer_mapping.csv"
    mapping.write_text("layer_id,layer_name\n0,temporal_conv\n1,separable_conv\n")
    pruning = SSVEPScorePruning(
        0.25, compile_fn, None, 0, maximum_prune_iterations=1, stats=stats, layer_mapping=mapping
    )
    pruned, _ = pruning.run_pruning(model)
    assert pruning.history[0].removed == {"temporal_conv": [1, 4], "separable_conv": [1, 3]}
    assert pruned.get_layer("separable_conv").filters == 6


def test_stats_scores_follow_filters_across_iterations(tmp_path):
    model = build(planted=False)
    stats = tmp_path / "filter_stats.csv"
    write_scores_csv(stats, "temporal_conv", STATS)
    seen = []

    class Spy(SSVEPScorePruning):
        def score_channels(self, view):
            scores = super().score_channels(view)
            seen.append(scores.copy())
            return scores

    pruning = Spy(0.25, compile_fn, None, 0, maximum_prune_iterations=3, maximum_pruning_percent=0.9, stats=stats)
    pruned, _ = pruning.run_pruning(model)
    np.testing.assert_array_equal(seen[0], STATS)
    assert pruning.history[0].removed == {"temporal_conv": [1, 4]}
    # after removing [1, 4] the remaining filters keep the scores of the original [0, 2, 3, 5, 6, 7]
    np.testing.assert_array_equal(seen[1], np.array(STATS)[[0, 2, 3, 5, 6, 7]])
    # the next worst are original filters 5 (0.1, now at position 3) and then 7 (0.5, at 5)
    assert pruning.history[1].removed == {"temporal_conv": [3]}
    np.testing.assert_array_equal(seen[2], np.array(STATS)[[0, 2, 3, 6, 7]])
    assert pruning.history[2].removed == {"temporal_conv": [4]}
    survivors = [0, 2, 3, 6]
    np.testing.assert_array_equal(
        pruned.get_layer("temporal_conv").get_weights()[0],
        model.get_layer("temporal_conv").get_weights()[0][..., survivors],
    )


def test_stats_scores_follow_filters_after_resume(tmp_path):
    model = build(planted=False)
    stats = tmp_path / "filter_stats.csv"
    write_scores_csv(stats, "temporal_conv", STATS)
    out = tmp_path / "run"
    first = SSVEPScorePruning(0.25, compile_fn, None, 0, maximum_prune_iterations=1, stats=stats, output_dir=out)
    first.run_pruning(model)
    assert os.path.exists(out / "models" / "iteration_000.keras")
    resumed = SSVEPScorePruning(
        0.25, compile_fn, None, 0, maximum_prune_iterations=2, stats=stats, output_dir=out, resume=True
    )
    pruned, _ = resumed.run_pruning(model)
    assert [r.removed for r in resumed.history] == [{"temporal_conv": [1, 4]}, {"temporal_conv": [3]}]
    np.testing.assert_array_equal(
        pruned.get_layer("temporal_conv").get_weights()[0],
        model.get_layer("temporal_conv").get_weights()[0][..., [0, 2, 3, 6, 7]],
    )


@pytest.mark.parametrize(
    "content, problem",
    [
        ("layer,filter,score\nnot_a_layer,0,0.5\n", "not in the model"),
        ("layer,filter,score\ntemporal_conv,9,0.5\n", "out of range"),
        ("layer,filter,score\ntemporal_conv,0,0.5\ntemporal_conv,1,0.4\n", "missing [2, 3, 4, 5, 6, 7]"),
        (
            "layer,filter,score\n" + "".join(f"spatial_depthwise,{i},0.5\n" for i in range(16)),
            "is not pruned by the loop",
        ),
    ],
)
def test_stats_file_that_does_not_fit_the_model(tmp_path, content, problem):
    stats = tmp_path / "filter_stats.csv"
    stats.write_text(content)
    pruning = SSVEPScorePruning(0.25, compile_fn, None, 0, maximum_prune_iterations=1, stats=stats)
    with pytest.raises(ValueError, match="filter_stats.csv") as info:
        pruning.run_pruning(build(planted=False))
    assert problem in str(info.value)
    if "not in the model" in problem:
        assert isinstance(info.value, ScoreFileError)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(fs=FS), "target_freqs"),
        (dict(fs=FS, target_freqs=[]), "target_freqs"),
        (dict(fs=FS, target_freqs=[10.0, 70.0]), "target_freqs"),
        (dict(fs=FS, target_freqs=[-1.0]), "target_freqs"),
        (dict(target_freqs=TARGETS), "fs"),
        (dict(fs=0, target_freqs=TARGETS), "fs"),
        (dict(fs=-128.0, target_freqs=TARGETS), "fs"),
        (dict(fs=float("nan"), target_freqs=TARGETS), "fs"),
        (dict(fs=FS, target_freqs=TARGETS, harmonics=0), "harmonics"),
        (dict(fs=FS, target_freqs=TARGETS, bandwidth=0), "bandwidth"),
        (dict(fs=FS, target_freqs=TARGETS, n_fft=0), "n_fft"),
        (dict(fs=FS, target_freqs=TARGETS, temporal_layers=[]), "temporal_layers"),
        (dict(fs=FS, target_freqs=TARGETS, temporal_layers="temporal_(conv"), "temporal_layers"),
        (dict(), "target_freqs"),
        (dict(stats="no/such/file.csv"), "stats"),
        (dict(stats=__file__, fs=FS, target_freqs=TARGETS), "stats"),
        (dict(stats=__file__, layer_mapping="no/such/mapping.csv"), "layer_mapping"),
        (dict(fs=FS, target_freqs=TARGETS, layer_mapping={0: "temporal_conv"}), "layer_mapping"),
        (dict(fs=FS, target_freqs=TARGETS, removal_factor=1.5), "pruning_factor"),
    ],
)
def test_bad_arguments(kwargs, argument):
    factor = kwargs.pop("removal_factor", 0.5)
    with pytest.raises(ValueError, match=argument):
        SSVEPScorePruning(factor, compile_fn, None, 0, **kwargs)


def test_scores_argument_is_refused():
    with pytest.raises(TypeError, match="ScoreFilterPruning"):
        SSVEPScorePruning(0.5, compile_fn, None, 0, scores={"temporal_conv": STATS}, **FREQ)


@pytest.mark.parametrize(
    "temporal_layers, problem",
    [
        ("no_such_layer", "matches no layer"),
        (["temporal_conv", "tempral_conv"], "'tempral_conv' matches no layer"),
        ("classifier", "'classifier' is a Dense, not a"),
        ("separable_conv", "'separable_conv' is a SeparableConv2D, not a"),
        ("temporal_bn|spatial_.*", "matches no temporal convolution"),
    ],
)
def test_bad_temporal_layers_for_the_model(temporal_layers, problem):
    model = build()
    pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, temporal_layers=temporal_layers, **FREQ)
    with pytest.raises(ValueError, match="temporal_layers") as info:
        pruning.run_pruning(model)
    assert problem in str(info.value)


def test_model_without_temporal_layers():
    model = small_cnn()
    pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, **FREQ)
    with pytest.raises(ValueError, match="temporal_layers="):
        pruning.run_pruning(model)
    # a 3x3 convolution cannot be read as FIR filters
    pruning = SSVEPScorePruning(0.5, compile_fn, None, 0, temporal_layers="conv1", **FREQ)
    with pytest.raises(ValueError, match="temporal_layers: layer 'conv1' cannot be scored"):
        pruning.run_pruning(model)
