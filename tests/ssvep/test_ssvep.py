"""SSVEP frequency-response scores of temporal convolution kernels."""

import keras
import numpy as np
import pytest
from keras import layers

from ridurre.scorefile import read_model_file, read_scores
from ridurre.ssvep import frequency_response_scores, score_model_layer, write_scores_csv

FS = 128.0
TAPS = 64


def sinusoid(freq, taps=TAPS, fs=FS, phase=0.3):
    t = np.arange(taps) / fs
    return np.sin(2 * np.pi * freq * t + phase) * np.hanning(taps)


def eegnet_kernel(columns):
    """Stack 1-D filters into EEGNet's temporal_conv layout (1, K, 1, F)."""
    return np.stack(columns, axis=-1)[None, :, None, :]


def test_sinusoid_at_the_stimulus_frequency_scores_highest():
    noise = np.random.default_rng(0).normal(size=TAPS)
    kernel = eegnet_kernel([sinusoid(7), sinusoid(10), sinusoid(13), noise])
    scores = frequency_response_scores(kernel, FS, [10.0], harmonics=2, bandwidth=1.0)
    assert scores.shape == (4,)
    assert np.argmax(scores) == 1
    assert scores[1] > 0.6 and max(scores[0], scores[2], scores[3]) < 0.2
    # Each of the other sinusoids wins for its own frequency.
    for i, f in enumerate((7.0, 10.0, 13.0)):
        assert np.argmax(frequency_response_scores(kernel, FS, [f], bandwidth=1.0)) == i


def test_scores_are_energy_shares():
    kernel = eegnet_kernel([sinusoid(10), np.zeros(TAPS), np.random.default_rng(1).normal(size=TAPS)])
    scores = frequency_response_scores(kernel, FS, [10.0, 12.0])
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[1] == 0.0  # a dead filter
    # Bands that cover the whole spectrum hold all the energy (Parseval, one-sided weights).
    full = frequency_response_scores(kernel, FS, [32.0], harmonics=1, bandwidth=32.0)
    np.testing.assert_allclose(full[[0, 2]], 1.0)
    # The same filter, three layouts.
    col = sinusoid(10)
    one = frequency_response_scores(col, FS, [10.0])
    np.testing.assert_allclose(frequency_response_scores(col[:, None], FS, [10.0]), one)
    np.testing.assert_allclose(frequency_response_scores(col[:, None, None], FS, [10.0]), one)


def test_harmonics_count():
    kernel = eegnet_kernel([sinusoid(20)])
    assert frequency_response_scores(kernel, FS, [10.0], harmonics=1, bandwidth=2.0)[0] < 0.05
    assert frequency_response_scores(kernel, FS, [10.0], harmonics=2, bandwidth=2.0)[0] > 0.75
    assert frequency_response_scores(kernel, FS, [10.0], harmonics=2, bandwidth=0.5)[0] > 0.3


def test_input_channels_add_their_energy():
    k = np.stack([sinusoid(10), sinusoid(30)], axis=-1)[:, :, None]  # Conv1D (K, C=2, F=1)
    both = frequency_response_scores(k, FS, [10.0], harmonics=1, bandwidth=1.0)[0]
    alone = frequency_response_scores(sinusoid(10), FS, [10.0], harmonics=1, bandwidth=1.0)[0]
    np.testing.assert_allclose(both, alone / 2, rtol=0.05)  # the 30 Hz channel adds as much energy


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        (dict(fs=0), "fs must be a positive"),
        (dict(target_freqs=[70.0]), r"must lie in \(0, 64\) Hz"),
        (dict(target_freqs=[]), "target_freqs is empty"),
        (dict(bandwidth=0), "bandwidth must be positive"),
        (dict(harmonics=0), "harmonics must be an integer >= 1"),
        (dict(n_fft=16), "n_fft=16 is shorter than the 64 filter taps"),
        (dict(kernel=np.ones((3, 5, 1, 2))), "2 spatial axes longer than 1"),
    ],
)
def test_invalid_arguments(kwargs, problem):
    args = dict(kernel=eegnet_kernel([sinusoid(10)]), fs=FS, target_freqs=[10.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=problem):
        frequency_response_scores(**args)


def eegnet():
    inp = keras.Input((4, 128, 1))
    x = layers.Conv2D(4, (1, TAPS), padding="same", use_bias=False, name="temporal_conv")(inp)
    x = layers.DepthwiseConv2D((4, 1), depth_multiplier=2, use_bias=False, name="depthwise")(x)
    x = layers.SeparableConv2D(8, (1, 8), padding="same", name="separable_conv")(x)
    model = keras.Model(inp, x)
    kernel = eegnet_kernel([sinusoid(7), sinusoid(10), sinusoid(13), sinusoid(30)])
    model.get_layer("temporal_conv").set_weights([kernel.astype("float32")])
    return model


def test_score_model_layer_sources_agree_and_feed_prune_scores(tmp_path):
    model = eegnet()
    path = tmp_path / "eegnet.keras"
    model.save(path)
    stats = tmp_path / "filter_stats.csv"
    kwargs = dict(fs=FS, target_freqs=[10.0, 15.0], bandwidth=1.0)
    from_file = score_model_layer(str(path), "temporal_conv", output=stats, **kwargs)
    from_model = score_model_layer(model, "temporal_conv", **kwargs)
    from_dict = score_model_layer(
        {"temporal_conv": model.get_layer("temporal_conv").get_weights()}, "temporal_conv", **kwargs
    )
    np.testing.assert_allclose(from_file, from_model, rtol=1e-6)
    np.testing.assert_allclose(from_dict, from_model, rtol=1e-6)
    assert np.argmax(from_file) == 1

    mf = read_model_file(path)
    rows = read_scores(stats, mf)
    assert [(s.layer, s.filter) for s in rows] == [("temporal_conv", i) for i in range(4)]
    np.testing.assert_allclose([s.score for s in rows], from_file)

    depthwise = score_model_layer(mf, "depthwise", **kwargs)
    assert depthwise.shape == (8,)  # 4 input channels x multiplier 2, index c * 2 + m
    with pytest.raises(ValueError, match="SeparableConv2D: its outputs mix input channels"):
        score_model_layer(mf, "separable_conv", **kwargs)


def test_write_scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    write_scores_csv(path, {"a": [0.5, 0.25], "b": np.array([1e-3])})
    assert path.read_text() == "layer,filter,score\na,0,0.5\na,1,0.25\nb,0,0.001\n"
    with pytest.raises(ValueError, match="finite"):
        write_scores_csv(path, "a", [np.nan])
    with pytest.raises(ValueError, match="invalid layer name"):
        write_scores_csv(path, "a,b", [1.0])
    assert path.read_text().startswith("layer,filter,score\na,0,0.5")  # unchanged
    assert [p.name for p in tmp_path.iterdir()] == ["scores.csv"]
