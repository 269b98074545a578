"""Tests of ridurre.datasets. Nothing here downloads: the CIFAR-10 and MNIST
loaders are tested on tiny files in the official formats written to tmp_path.
"""

import gzip
import pickle
import struct
import tarfile

import numpy as np
import pytest

from ridurre.zoo import datasets
from ridurre.zoo.datasets import (
    Dataset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    load_npz,
    make_ssvep_dataset,
)

# --------------------------------------------------------------------------
# Fixtures writing the official formats
# --------------------------------------------------------------------------


def _fake_images(n, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _write_cifar_batch(path, images, labels):
    """images (N, 32, 32, 3) -> the official row layout: R, G, B planes."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    with open(path, "wb") as f:
        pickle.dump(
            {
                b"batch_label": b"fake",
                b"data": data,
                b"labels": [int(v) for v in labels],
                b"filenames": [b"x.png"] * len(labels),
            },
            f,
        )


@pytest.fixture
def cifar_dir(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    images = _fake_images(50, (32, 32, 3), seed=1)
    labels = np.arange(50) % 10
    _write_cifar_batch(root / "data_batch_1", images[:20], labels[:20])
    _write_cifar_batch(root / "data_batch_2", images[20:40], labels[20:40])
    _write_cifar_batch(root / "test_batch", images[40:], labels[40:])
    return root, images, labels


def _write_idx(path, array, compress):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _mnist_arrays():
    x = _fake_images(40, (28, 28), seed=2)
    y = (np.arange(40) % 10).astype(np.uint8)
    return x[:30], y[:30], x[30:], y[30:]


# --------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------


def test_load_digits_shapes_and_splits():
    data = load_digits()
    assert isinstance(data, Dataset)
    assert data.name == "digits" and data.num_classes == 10
    assert data.x_train.shape[1:] == (8, 8, 1)
    assert data.x_train.dtype == np.float32
    assert data.y_train.dtype.kind == "i"
    n = len(data.x_train) + len(data.x_val) + len(data.x_test)
    assert n == 1797
    assert len(data.x_test) == round(1797 * 0.2)
    assert len(data.x_val) == round((1797 - len(data.x_test)) * 0.1)
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    # stratified: every class in each split, in proportion
    for y in (data.y_val, data.y_test):
        counts = np.bincount(y, minlength=10)
        assert counts.max() - counts.min() <= 3


def test_load_digits_splits_are_disjoint_and_seeded():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.y_test, c.y_test)
    train = {row.tobytes() for row in a.x_train}
    # digits has a few duplicate images; the splits must not share rows
    shared = sum(row.tobytes() in train for row in a.x_test)
    assert shared <= 3


def test_load_digits_meanstd_uses_training_statistics():
    data = load_digits(normalize="meanstd", validation_split=0.0)
    assert len(data.x_val) == 0 and data.x_val.shape[1:] == (8, 8, 1)
    assert abs(float(data.x_train.mean())) < 1e-5
    assert float(data.x_train.std()) == pytest.approx(1.0, abs=1e-4)
    raw = load_digits(normalize=None, validation_split=0.0)
    mean, std = raw.x_train.mean(), raw.x_train.std()
    np.testing.assert_allclose(data.x_test, (raw.x_test - mean) / std, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"normalize": "zscore"}, "normalize"),
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"test_split": "0.2"}, "test_split"),
    ],
)
def test_load_digits_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        load_digits(**kwargs)


# --------------------------------------------------------------------------
# CIFAR-10 from local files
# --------------------------------------------------------------------------


def test_cifar10_python_batches_directory(cifar_dir):
    root, images, labels = cifar_dir
    data = load_cifar10(root, normalize=None, validation_split=0.0)
    assert data.name == "cifar10" and data.num_classes == 10
    assert data.x_train.shape == (40, 32, 32, 3)
    assert data.x_test.shape == (10, 32, 32, 3)
    # pixels land at the right (row, column, channel)
    np.testing.assert_array_equal(data.x_test, images[40:].astype("float32"))
    np.testing.assert_array_equal(data.y_test, labels[40:])
    np.testing.assert_array_equal(np.sort(data.y_train), np.sort(labels[:40]))
    # the parent directory works too
    parent = load_cifar10(root.parent, normalize=None, validation_split=0.0)
    np.testing.assert_array_equal(parent.x_test, data.x_test)


def test_cifar10_meanstd_and_validation_from_train(cifar_dir):
    root, images, _ = cifar_dir
    data = load_cifar10(root, validation_split=0.25)
    assert len(data.x_train) == 30 and len(data.x_val) == 10
    assert len(data.x_test) == 10
    np.testing.assert_allclose(data.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(data.x_train.std(axis=(0, 1, 2)), 1, atol=1e-3)
    # the test split is normalised with the training statistics
    raw = load_cifar10(root, normalize=None, validation_split=0.25)
    mean = raw.x_train.mean(axis=(0, 1, 2))
    std = raw.x_train.std(axis=(0, 1, 2))
    np.testing.assert_allclose(data.x_test, (raw.x_test - mean) / std, atol=1e-4)
    unit = load_cifar10(root, normalize="unit")
    assert 0.0 <= unit.x_train.min() and unit.x_train.max() <= 1.0


def test_cifar10_subset(cifar_dir):
    root, _, _ = cifar_dir
    data = load_cifar10(root, subset=20, validation_split=0.5, test_subset=5)
    assert len(data.x_train) + len(data.x_val) == 20
    assert len(data.x_test) == 5
    assert np.bincount(np.concatenate([data.y_train, data.y_val])).tolist() == [2] * 10


def test_cifar10_tarball_and_npz(cifar_dir, tmp_path):
    root, images, labels = cifar_dir
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="cifar-10-batches-py")
    from_tar = load_cifar10(archive, normalize=None, validation_split=0.0)
    np.testing.assert_array_equal(from_tar.x_test, images[40:])
    npz = tmp_path / "cifar.npz"
    np.savez(
        npz,
        x_train=images[:40],
        y_train=labels[:40].reshape(-1, 1),
        x_test=images[40:],
        y_test=labels[40:].reshape(-1, 1),
    )
    from_npz = load_cifar10(npz, normalize=None, validation_split=0.0)
    np.testing.assert_array_equal(from_npz.x_train, images[:40])
    np.testing.assert_array_equal(from_npz.y_test, labels[40:])


def test_cifar10_bad_paths(cifar_dir, tmp_path):
    root, _, _ = cifar_dir
    (root / "test_batch").unlink()
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(root)
    with pytest.raises(ValueError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    with open(bad / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(bad)
    with pytest.raises(ValueError, match="subset"):
        load_cifar10(root, subset=0)


def test_cifar10_without_path_uses_keras(monkeypatch):
    import keras

    images = _fake_images(30, (32, 32, 3), seed=3)
    labels = (np.arange(30) % 10).reshape(-1, 1)
    monkeypatch.setattr(
        keras.datasets.cifar10, "load_data", lambda: ((images[:20], labels[:20]), (images[20:], labels[20:]))
    )
    data = load_cifar10(normalize=None, validation_split=0.0)
    assert data.x_train.shape == (20, 32, 32, 3)
    assert data.y_train.ndim == 1


# --------------------------------------------------------------------------
# MNIST from local files
# --------------------------------------------------------------------------


def test_mnist_npz(tmp_path):
    x_train, y_train, x_test, y_test = _mnist_arrays()
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_mnist(path, validation_split=0.0)
    assert data.x_train.shape == (30, 28, 28, 1)
    np.testing.assert_allclose(data.x_test[..., 0], x_test / 255.0, atol=1e-6)
    from_dir = load_mnist(tmp_path, validation_split=0.0)
    np.testing.assert_array_equal(from_dir.x_test, data.x_test)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    x_train, y_train, x_test, y_test = _mnist_arrays()
    suffix = ".gz" if compress else ""
    for name, array in [
        ("train-images-idx3-ubyte", x_train),
        ("train-labels-idx1-ubyte", y_train),
        ("t10k-images-idx3-ubyte", x_test),
        ("t10k-labels-idx1-ubyte", y_test),
    ]:
        _write_idx(tmp_path / (name + suffix), array, compress)
    data = load_mnist(tmp_path, normalize=None, validation_split=0.2)
    assert data.x_train.shape == (24, 28, 28, 1)
    assert data.x_val.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(data.x_test[..., 0], x_test)
    np.testing.assert_array_equal(data.y_test, y_test)


def test_mnist_bad_idx(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03")
    with pytest.raises(ValueError, match="IDX"):
        load_mnist(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="train-images-idx3-ubyte"):
        load_mnist(empty)


# --------------------------------------------------------------------------
# .npz files and dispatch
# --------------------------------------------------------------------------


def test_load_npz_carves_validation(tmp_path):
    path = tmp_path / "eeg.npz"
    x = np.random.default_rng(0).normal(size=(40, 4, 16, 1))
    np.savez(path, x=x, y=np.arange(40) % 4)
    data = load_npz(path, validation_split=0.25)
    assert data.name == "eeg" and data.num_classes == 4
    assert len(data.x_train) == 30 and len(data.x_val) == 10
    assert np.bincount(data.y_val).tolist() == [2, 3, 2, 3] or sorted(np.bincount(data.y_val).tolist()) == [2, 2, 3, 3]
    assert len(data.x_test) == 0 and data.x_test.shape[1:] == (4, 16, 1)
    assert data.x_train.dtype == np.float32


def test_load_npz_explicit_splits_and_one_hot(tmp_path):
    path = tmp_path / "mine.npz"
    eye = np.eye(3)
    np.savez(
        path,
        x=np.zeros((6, 2)),
        y=eye[[0, 1, 2, 0, 1, 2]],
        x_val=np.ones((3, 2)),
        y_val=[0, 1, 2],
        x_test=np.ones((2, 2)),
        y_test=[2, 2],
    )
    data = load_npz(path)
    assert len(data.x_train) == 6 and len(data.x_val) == 3
    assert data.y_train.tolist() == [0, 1, 2, 0, 1, 2]
    assert data.y_test.tolist() == [2, 2]


def test_load_npz_errors_name_file_and_key(tmp_path):
    path = tmp_path / "broken.npz"
    np.savez(path, x=np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"broken\.npz.*'y'"):
        load_npz(path)
    np.savez(path, x=np.zeros((4, 2)), y=[0, 1, 0])
    with pytest.raises(ValueError, match=r"broken\.npz.*4 rows.*3 labels"):
        load_npz(path)
    np.savez(path, x=np.zeros((4, 2)), y=[0, 1, 0, 1], x_val=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="y_val"):
        load_npz(path)


def test_load_dataset_dispatch(tmp_path):
    assert load_dataset("digits", validation_split=0.0).name == "digits"
    path = tmp_path / "toy.npz"
    np.savez(path, x=np.zeros((10, 3)), y=np.arange(10) % 2)
    assert load_dataset(str(path)).name == "toy"
    with pytest.raises(ValueError, match="cifar10.*digits.*mnist"):
        load_dataset("imagenet")
    # the names dispatch to the right loaders
    loaders = dict(datasets._LOADERS)
    digits32 = loaders.pop("digits32")
    assert loaders == {"digits": load_digits, "mnist": load_mnist, "cifar10": load_cifar10}
    assert digits32.func is load_digits and digits32.keywords == {"size": 32}
    data = load_dataset("digits32", validation_split=0.0)
    assert data.name == "digits32" and data.x_train.shape[1:] == (32, 32, 1)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0  # upsampled, then scaled as the 8x8 ones
    with pytest.raises(ValueError, match="`size` must be an int >= 8"):
        load_digits(size=4)


# --------------------------------------------------------------------------
# Synthetic SSVEP
# --------------------------------------------------------------------------


def test_ssvep_shapes_balance_and_determinism():
    x, y = make_ssvep_dataset(n_trials=40, channels=6, samples=128)
    assert x.shape == (40, 6, 128, 1) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [10, 10, 10, 10]
    x2, y2 = make_ssvep_dataset(n_trials=40, channels=6, samples=128)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = make_ssvep_dataset(n_trials=40, channels=6, samples=128, seed=1)
    assert not np.allclose(x, x3)


def test_ssvep_spectrum_peaks_at_stimulus_frequency():
    freqs = (8.0, 10.0, 12.0, 15.0)
    fs, samples = 128.0, 512
    x, y = make_ssvep_dataset(n_trials=80, samples=samples, fs=fs, stimulus_freqs=freqs, noise=1.0)
    bins = np.fft.rfftfreq(samples, 1 / fs)
    power = np.abs(np.fft.rfft(x[..., 0], axis=-1)) ** 2
    for k, f in enumerate(freqs):
        spectrum = power[y == k].mean(axis=(0, 1))
        assert bins[np.argmax(spectrum[1:]) + 1] == pytest.approx(f)
        # the second harmonic stands out of the noise too
        harmonic = spectrum[np.argmin(np.abs(bins - 2 * f))]
        assert harmonic > 5 * np.median(spectrum)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_trials": 0}, "n_trials"),
        ({"n_trials": 3}, "n_trials"),
        ({"channels": 0}, "channels"),
        ({"fs": -1.0}, "fs"),
        ({"noise": -0.5}, "noise"),
        ({"stimulus_freqs": (8.0,)}, "stimulus_freqs"),
        ({"stimulus_freqs": (8.0, 40.0)}, "Nyquist"),
        ({"harmonics": 0}, "harmonics"),
    ],
)
def test_ssvep_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_ssvep_dataset(**kwargs)


# --------------------------------------------------------------------------
# Untrusted files (issue 14)
# --------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs ``touch <path>``: what a crafted CIFAR batch file could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("where", ["data", "labels", "top"])
def test_a_crafted_cifar_batch_runs_no_code(cifar_dir, tmp_path, where):
    root, _, _ = cifar_dir
    marker = tmp_path / "pwned"
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    content = _Payload(marker) if where == "top" else {**batch, f"{where}".encode(): _Payload(marker)}
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump(content, f, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_1 is not a CIFAR-10 python batch.*system.*refused"):
        load_cifar10(root)
    assert not marker.exists()
    with tarfile.open(tmp_path / "cifar.tar.gz", "w:gz") as tar:  # the archive goes through the same reader
        tar.add(root, arcname="cifar-10-batches-py")
    with pytest.raises(ValueError, match="refused"):
        load_cifar10(tmp_path / "cifar.tar.gz")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_batches_of_every_pickle_protocol_load(cifar_dir, protocol):
    root, images, labels = cifar_dir
    for name in ("data_batch_1", "data_batch_2", "test_batch"):
        with open(root / name, "rb") as f:
            batch = pickle.load(f)
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
    data = load_cifar10(root, normalize=None, validation_split=0.0)
    np.testing.assert_array_equal(data.x_test, images[40:])


def test_files_that_are_not_npz_archives_say_so(tmp_path):
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match="is a text file, not an .npz archive") as info:
        load_npz(tmp_path / "text.npz")
    assert "allow_pickle" not in str(info.value)
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    with pytest.raises(ValueError, match="a single .npy array"):
        load_npz(tmp_path / "array.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([None, 1], dtype=object), y=np.arange(2))
    with pytest.raises(ValueError, match="array 'x' holds Python objects"):
        load_npz(tmp_path / "objects.npz")
