"""Dataset loaders that also work without internet.

Every loader returns a `Dataset` with float32 images (channels last) and
integer labels. The validation split is always carved from the training
split, never from the test split, and normalization statistics always come
from the final training split.

* `load_digits`: scikit-learn's bundled 8x8 digits (no download).
* `load_cifar10` and `load_mnist`: ``keras.datasets`` downloads when
  ``path=None``, or local copies in the official formats.
* `load_npz`: your own arrays in an ``.npz`` file.
* `load_dataset`: one entry point for all of the above.
* `make_ssvep_dataset`: synthetic SSVEP-like EEG for EEGNet experiments.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import os
import pickle
import tarfile
import zipfile

import numpy as np

from ridurre._validation import check_int, check_number

__all__ = [
    "Dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_npz",
    "make_ssvep_dataset",
]

_NORMALIZE = ("unit", "meanstd", None)


@dataclasses.dataclass
class Dataset:
    """Train/validation/test arrays with integer labels.

    Empty splits are arrays with zero rows (never ``None``).

    Attributes:
        x_train, y_train: Training inputs (float32) and integer labels.
        x_val, y_val: Validation split, carved from the training data.
        x_test, y_test: Test split.
        num_classes: Number of classes.
        name: Short name of the data, e.g. ``"digits"``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str

    def __repr__(self):
        return (
            f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
            f"x_train={self.x_train.shape}, x_val={self.x_val.shape}, "
            f"x_test={self.x_test.shape})"
        )


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _fraction(value, name):
    return check_number(value, name, 0, 1, high_open=True)


def _optional_count(value, name):
    return None if value is None else check_int(value, name, 1)


def _check_normalize(normalize):
    if normalize not in _NORMALIZE:
        raise ValueError(f"`normalize` must be one of 'unit', 'meanstd' or None, got {normalize!r}.")
    return normalize


def _labels(y, source):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = y.argmax(axis=1)
    y = y.reshape(-1)
    if y.size and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"{source}: labels must be integers.")
    y = y.astype("int64")
    if y.size and y.min() < 0:
        raise ValueError(f"{source}: labels must be >= 0, found {y.min()}.")
    return y


def _split(y, fraction, rng):
    """Return sorted (keep, holdout) indices, stratified when possible."""
    n = len(y)
    n_out = int(round(n * fraction))
    if n_out == 0:
        return np.arange(n), np.empty(0, dtype="int64")
    classes, counts = np.unique(y, return_counts=True)
    if n_out < len(classes) or counts.min() < 2 or n - n_out < len(classes):
        order = rng.permutation(n)
        return np.sort(order[n_out:]), np.sort(order[:n_out])
    # Largest-remainder allocation of the holdout size over the classes.
    share = counts * n_out / n
    take = np.floor(share).astype(int)
    rest = n_out - take.sum()
    take[np.argsort(take - share)[:rest]] += 1
    holdout = []
    for cls, k in zip(classes, take):
        members = rng.permutation(np.flatnonzero(y == cls))
        holdout.append(members[:k])
    holdout = np.sort(np.concatenate(holdout))
    keep = np.setdiff1d(np.arange(n), holdout)
    return keep, holdout


def _take(x, y, count, rng):
    """A stratified random subset of ``count`` examples (all if fewer)."""
    if count is None or count >= len(y):
        return x, y
    _, idx = _split(y, count / len(y), rng)
    return x[idx], y[idx]


def _normalize(splits, normalize, scale):
    splits = [s.astype("float32") for s in splits]
    if normalize == "unit":
        return [s / np.float32(scale) for s in splits]
    if normalize == "meanstd":
        train = splits[0]
        if len(train) == 0:
            raise ValueError("normalize='meanstd' needs a non-empty training split.")
        axes = tuple(range(train.ndim - 1))
        mean = train.mean(axis=axes, dtype="float64").astype("float32")
        std = train.std(axis=axes, dtype="float64").astype("float32")
        std = np.where(std > 0, std, np.float32(1.0))
        return [(s - mean) / std for s in splits]
    return splits


def _assemble(
    name,
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    normalize,
    scale,
    validation_split,
    subset,
    seed,
    test_subset=None,
    x_val=None,
    y_val=None,
    num_classes=None,
):
    rng = np.random.default_rng(seed)
    x_train, y_train = _take(x_train, y_train, subset, rng)
    if x_val is None:
        keep, held = _split(y_train, validation_split, rng)
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = x_train[keep], y_train[keep]
    x_test, y_test = _take(x_test, y_test, test_subset, rng)
    x_train, x_val, x_test = _normalize([x_train, x_val, x_test], normalize, scale)
    if num_classes is None:
        labels = [y for y in (y_train, y_val, y_test) if y.size]
        num_classes = int(max(y.max() for y in labels)) + 1 if labels else 0
    return Dataset(x_train, y_train, x_val, y_val, x_test, y_test, num_classes=num_classes, name=name)


# --------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------


def load_digits(normalize="unit", validation_split=0.1, test_split=0.2, seed=0, size=8):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline).

    Args:
        normalize: ``"unit"`` (pixels / 16, into [0, 1]), ``"meanstd"``
            (mean and std of the training split) or None (raw 0..16).
        validation_split: Fraction of the training split held out for
            validation, in [0, 1).
        test_split: Fraction of all images held out for testing, in [0, 1).
        seed: Seed of the stratified splits.
        size: Side of the images: 8, or a larger size they are upsampled to (bilinear), so
            that convolutions, not per-call overhead, dominate a CNN's time (``"digits32"`` in
            `load_dataset` is ``size=32``).

    Returns:
        A `Dataset` with images of shape ``(n, size, size, 1)`` and 10 classes.

    Example:

    >>> data = load_digits()
    >>> data.x_train.shape[1:], data.num_classes
    ((8, 8, 1), 10)
    >>> len(data.x_train) + len(data.x_val) + len(data.x_test)
    1797
    >>> load_digits(size=32).x_train.shape[1:]
    (32, 32, 1)
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    _check_normalize(normalize)
    _fraction(validation_split, "validation_split")
    _fraction(test_split, "test_split")
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ValueError(f"`size` must be an int >= 8, got {size!r}.")
    bunch = _sk_load_digits()
    x = bunch.images.reshape(-1, 8, 8, 1)
    if size != 8:
        from scipy.ndimage import zoom

        x = np.clip(zoom(x, (1, size / 8, size / 8, 1), order=1), 0.0, 16.0)
    y = bunch.target.astype("int64")
    keep, held = _split(y, test_split, np.random.default_rng(seed))
    return _assemble(
        "digits" if size == 8 else f"digits{size}",
        x[keep],
        y[keep],
        x[held],
        y[held],
        normalize=normalize,
        scale=16.0,
        validation_split=validation_split,
        subset=None,
        seed=seed,
        num_classes=10,
    )


# --------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and nothing else: the only callables a pickle may name
    are the ones that rebuild numpy arrays and bytes, so a crafted batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"it names {module}.{name}, which a CIFAR-10 batch never does (refused: it could run code)"
            )
        return super().find_class(module, name)


def _unpickle_cifar(data):
    batch = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    if not isinstance(batch, dict):
        raise TypeError(f"it holds a {type(batch).__name__}, not a dict")
    for value in batch.values():
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise TypeError("it holds an array of Python objects")
    return batch


def _cifar_batch(data, source):
    try:
        batch = _unpickle_cifar(data)
        x = np.asarray(batch[b"data"], dtype="uint8")
        y = np.asarray(batch[b"labels"])
    except (KeyError, TypeError, ValueError, AttributeError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(
            f"{source} is not a CIFAR-10 python batch (a pickled dict with b'data' and b'labels'): {err}"
        ) from None
    if y.dtype.kind not in "iu":
        raise ValueError(f"{source}: b'labels' must be integers, got {y.dtype}")
    if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
        raise ValueError(
            f"{source}: expected b'data' of shape (N, 3072) and N labels, got {x.shape} and {len(y)} labels."
        )
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def _read_cifar_batches(read, source):
    xs, ys = [], []
    for i in range(1, 6):
        name = f"data_batch_{i}"
        data = read(name)
        if data is None:
            if i == 1:
                raise ValueError(f"{source} has no data_batch_1.")
            break
        x, y = _cifar_batch(data, f"{source}/{name}")
        xs.append(x)
        ys.append(y)
    test = read("test_batch")
    if test is None:
        raise ValueError(f"{source} has no test_batch.")
    x_test, y_test = _cifar_batch(test, f"{source}/test_batch")
    return np.concatenate(xs), np.concatenate(ys), x_test, y_test


def _load_cifar_local(path):
    if os.path.isdir(path):
        inner = os.path.join(path, "cifar-10-batches-py")
        root = inner if os.path.isdir(inner) else path

        def read(name):
            file = os.path.join(root, name)
            if not os.path.exists(file):
                return None
            with open(file, "rb") as f:
                return f.read()

        return _read_cifar_batches(read, root)
    if path.endswith(".npz"):
        return _npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
    if path.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}

            def read(name):
                member = members.get(name)
                return None if member is None else tar.extractfile(member).read()

            return _read_cifar_batches(read, path)
    raise ValueError(
        f"CIFAR-10 `path` {path!r} must be the 'cifar-10-batches-py' "
        "directory (or its parent), the 'cifar-10-python.tar.gz' archive, or "
        "an .npz with x_train, y_train, x_test and y_test."
    )


def load_cifar10(path=None, normalize="meanstd", validation_split=0.1, subset=None, seed=0, test_subset=None):
    """CIFAR-10 (50,000 + 10,000 32x32 colour images, 10 classes).

    With ``path=None`` the data comes from ``keras.datasets.cifar10``
    (downloaded on first use). Without internet, pass ``path``:

    * the official python-version directory ``cifar-10-batches-py`` (or the
      directory containing it): pickled ``data_batch_1`` ... ``data_batch_5``
      and ``test_batch``, each a dict with ``b'data'`` (uint8, ``(N, 3072)``,
      channel planes R, G, B of 32x32) and ``b'labels'``. They are pickles, read
      with an unpickler that admits nothing but that dict of bytes and arrays:
      a crafted file that names any other Python callable is refused, so
      loading never runs code from the file;
    * the official archive ``cifar-10-python.tar.gz`` itself;
    * an ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``
      (images ``(N, 32, 32, 3)``).

    Args:
        path: None, or a local directory / archive / ``.npz`` (see above).
        normalize: ``"meanstd"`` (per-channel mean and std of the training
            split, applied to all splits, as in easy-filter-pruning),
            ``"unit"`` (divide by 255) or None (raw 0..255 as float32).
        validation_split: Fraction of the training data held out for
            validation, in [0, 1) (stratified).
        subset: Optional number of training examples to keep (a stratified
            random sample drawn with ``seed``) for quick runs; the validation
            split is then carved from it.
        seed: Seed of the subset and the validation split.
        test_subset: Optional number of test examples to keep (stratified).

    Returns:
        A `Dataset` named ``"cifar10"``.

    Example (offline, with a local copy):

    >>> data = load_cifar10("~/data/cifar-10-batches-py",
    ...                     subset=5000)  # doctest: +SKIP
    >>> data.x_train.shape  # doctest: +SKIP
    (4500, 32, 32, 3)
    """
    _check_normalize(normalize)
    _fraction(validation_split, "validation_split")
    subset = _optional_count(subset, "subset")
    test_subset = _optional_count(test_subset, "test_subset")
    if path is None:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    else:
        path = _existing(path)
        x_train, y_train, x_test, y_test = _load_cifar_local(path)
    return _assemble(
        "cifar10",
        np.asarray(x_train),
        _labels(y_train, "cifar10"),
        np.asarray(x_test),
        _labels(y_test, "cifar10"),
        normalize=normalize,
        scale=255.0,
        validation_split=validation_split,
        subset=subset,
        seed=seed,
        test_subset=test_subset,
        num_classes=10,
    )


# --------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------


def _read_idx(file):
    opener = gzip.open if file.endswith(".gz") else open
    with opener(file, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{file} is not an IDX file of unsigned bytes.")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype="uint8", offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{file}: header announces shape {tuple(dims)} but holds {body.size} values.")
    return body.reshape(dims)


def _find_idx(root, stem):
    for suffix in ("", ".gz"):
        for name in (stem, stem.replace("-idx", ".idx")):
            file = os.path.join(root, name + suffix)
            if os.path.exists(file):
                return file
    raise ValueError(f"{root} has no {stem} (or {stem}.gz) file.")


def _load_mnist_local(path):
    if os.path.isdir(path):
        npz = os.path.join(path, "mnist.npz")
        if os.path.exists(npz):
            path = npz
        else:
            arrays = [
                _read_idx(_find_idx(path, stem))
                for stem in (
                    "train-images-idx3-ubyte",
                    "train-labels-idx1-ubyte",
                    "t10k-images-idx3-ubyte",
                    "t10k-labels-idx1-ubyte",
                )
            ]
            return tuple(arrays)
    if path.endswith(".npz"):
        return _npz_arrays(path, ("x_train", "y_train", "x_test", "y_test"))
    raise ValueError(
        f"MNIST `path` {path!r} must be keras' mnist.npz or a directory "
        "holding it or the four IDX files (train-images-idx3-ubyte[.gz], "
        "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz])."
    )


def load_mnist(path=None, normalize="unit", validation_split=0.1, subset=None, seed=0, test_subset=None):
    """MNIST (60,000 + 10,000 28x28 grey digits, 10 classes).

    With ``path=None`` the data comes from ``keras.datasets.mnist``
    (downloaded on first use). Without internet, pass ``path``: the
    ``mnist.npz`` file keras uses (``x_train``, ``y_train``, ``x_test``,
    ``y_test``), or a directory holding it or the four IDX files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (optionally
    ``.gz``).

    Args:
        path: None, or a local ``.npz`` or directory (see above).
        normalize: ``"unit"`` (divide by 255), ``"meanstd"`` (mean and std
            of the training split) or None (raw 0..255 as float32).
        validation_split: Fraction of the training data held out for
            validation, in [0, 1) (stratified).
        subset: Optional number of training examples to keep (stratified,
            drawn with ``seed``).
        seed: Seed of the subset and the validation split.
        test_subset: Optional number of test examples to keep (stratified).

    Returns:
        A `Dataset` named ``"mnist"`` with images ``(n, 28, 28, 1)``.

    Example (offline, with a local copy):

    >>> data = load_mnist("~/data/mnist.npz", subset=1000)  # doctest: +SKIP
    >>> data.x_train.shape  # doctest: +SKIP
    (900, 28, 28, 1)
    """
    _check_normalize(normalize)
    _fraction(validation_split, "validation_split")
    subset = _optional_count(subset, "subset")
    test_subset = _optional_count(test_subset, "test_subset")
    if path is None:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    else:
        x_train, y_train, x_test, y_test = _load_mnist_local(_existing(path))
    x_train, x_test = np.asarray(x_train), np.asarray(x_test)
    if x_train.ndim == 3:
        x_train, x_test = x_train[..., None], x_test[..., None]
    return _assemble(
        "mnist",
        x_train,
        _labels(y_train, "mnist"),
        x_test,
        _labels(y_test, "mnist"),
        normalize=normalize,
        scale=255.0,
        validation_split=validation_split,
        subset=subset,
        seed=seed,
        test_subset=test_subset,
        num_classes=10,
    )


# --------------------------------------------------------------------------
# .npz files and dispatch
# --------------------------------------------------------------------------


def _existing(path):
    path = os.path.expanduser(os.fspath(path))
    if not os.path.exists(path):
        raise ValueError(f"`path` {path!r} does not exist.")
    return path


def _not_an_npz(path):
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return f"{path} is empty (0 bytes), not an .npz archive."
    if head.startswith(b"\x93NUMPY"):
        return f"{path} is a single .npy array, not an .npz archive of named arrays (numpy.savez writes one)."
    if b"\0" not in head:
        return f"{path} is a text file, not an .npz archive (numpy.savez writes a zip of arrays)."
    return f"{path} is not an .npz archive (numpy.savez writes a zip of arrays)."


def _read_npz(path):
    """``{name: array}`` of an ``.npz`` file; a file that is not one, or holds Python objects,
    gets a message saying so (numpy's own suggests ``allow_pickle``)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(_not_an_npz(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            out = {}
            for key in data.files:
                try:
                    out[key] = np.asarray(data[key])
                except ValueError as exc:
                    if "pickle" not in str(exc):
                        raise
                    raise ValueError(
                        f"{path}: array {key!r} holds Python objects, not numbers (refused: loading it could run "
                        "code); save numeric arrays"
                    ) from None
            return out
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path} is a damaged .npz archive ({exc}).") from None


def _npz_arrays(path, keys):
    data = _read_npz(path)
    missing = [k for k in keys if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the array(s) {missing}; it holds {sorted(data)}.")
    return tuple(data[k] for k in keys)


def load_npz(path, normalize=None, validation_split=0.1, seed=0):
    """Load your own data from an ``.npz`` file.

    The file holds ``x`` and ``y`` (or ``x_train`` and ``y_train``), and
    optionally ``x_val``/``y_val`` and ``x_test``/``y_test``. Without
    ``x_val`` a stratified validation split is carved from ``x``; without
    ``x_test`` the test split is empty. Labels may be integers or one-hot.

    Args:
        path: Path of the ``.npz`` file.
        normalize: None (keep values, as float32), ``"unit"`` (divide by
            255) or ``"meanstd"`` (per-channel statistics of the training
            split).
        validation_split: Fraction carved for validation when the file has
            no ``x_val``, in [0, 1).
        seed: Seed of that split.

    Returns:
        A `Dataset` named after the file.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> file = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> np.savez(file, x=np.zeros((20, 4, 4, 1)), y=np.arange(20) % 2)
    >>> data = load_npz(file, validation_split=0.25)
    >>> len(data.x_train), len(data.x_val), data.num_classes
    (15, 5, 2)
    """
    path = _existing(path)
    _check_normalize(normalize)
    _fraction(validation_split, "validation_split")
    arrays = _read_npz(path)
    files = set(arrays)
    prefix = "x" if "x" in files else "x_train"
    if prefix not in files or prefix.replace("x", "y", 1) not in files:
        raise ValueError(f"{path} must hold arrays 'x' and 'y' (or 'x_train' and 'y_train'); it holds {sorted(files)}.")
    splits = {}
    for split, xk, yk in (
        ("train", prefix, prefix.replace("x", "y", 1)),
        ("val", "x_val", "y_val"),
        ("test", "x_test", "y_test"),
    ):
        if (xk in files) != (yk in files):
            have, lack = (xk, yk) if xk in files else (yk, xk)
            raise ValueError(f"{path} holds {have!r} but not {lack!r}.")
        if xk not in files:
            continue
        x, y = arrays[xk], _labels(arrays[yk], f"{path}:{yk}")
        if len(x) != len(y):
            raise ValueError(f"{path}: {xk!r} has {len(x)} rows but {yk!r} has {len(y)} labels.")
        splits[split] = (x, y)
    x, y = splits["train"]
    empty = (x[:0], y[:0])
    x_val, y_val = splits.get("val", (None, None))
    x_test, y_test = splits.get("test", empty)
    name = os.path.splitext(os.path.basename(path))[0]
    return _assemble(
        name,
        x,
        y,
        x_test,
        y_test,
        normalize=normalize,
        scale=255.0,
        validation_split=validation_split,
        subset=None,
        seed=seed,
        x_val=x_val,
        y_val=y_val,
    )


_LOADERS = {
    "digits": load_digits,
    "digits32": functools.partial(load_digits, size=32),
    "mnist": load_mnist,
    "cifar10": load_cifar10,
}


def load_dataset(name_or_path, **kwargs):
    """Load a dataset by name (``"digits"``, ``"digits32"``, ``"mnist"``, ``"cifar10"``) or
    from a path to an ``.npz`` file.

    Args:
        name_or_path: A dataset name or the path of an ``.npz`` file.
        **kwargs: Passed on to the loader (`load_digits`, `load_mnist`,
            `load_cifar10` or `load_npz`).

    Returns:
        A `Dataset`.

    Example:

    >>> load_dataset("digits", validation_split=0.2).name
    'digits'
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"`name_or_path` must be a dataset name or a path, got {type(name_or_path).__name__}.")
    key = os.fspath(name_or_path)
    if key.lower().replace("-", "").replace("_", "") in _LOADERS:
        return _LOADERS[key.lower().replace("-", "").replace("_", "")](**kwargs)
    if key.endswith(".npz"):
        return load_npz(key, **kwargs)
    raise ValueError(f"Unknown dataset {key!r}: expected one of {sorted(_LOADERS)} or the path of an .npz file.")


# --------------------------------------------------------------------------
# Synthetic SSVEP
# --------------------------------------------------------------------------


def make_ssvep_dataset(
    n_trials=200,
    channels=8,
    samples=256,
    fs=128.0,
    stimulus_freqs=(8.0, 10.0, 12.0, 15.0),
    harmonics=2,
    noise=1.0,
    seed=0,
):
    """Synthetic SSVEP-like EEG trials, one class per stimulus frequency.

    A trial of class ``k`` is a sum of sinusoids at ``stimulus_freqs[k]``
    and its harmonics (amplitude ``1 / h`` for harmonic ``h``), each with a
    random phase, projected on the electrodes through a spatial pattern
    fixed per class and harmonic plus a small random per-trial mixing, with
    Gaussian noise of standard deviation ``noise`` added. Classes are
    balanced and shuffled. The same seed always gives the same data.

    Args:
        n_trials: Number of trials, at least the number of classes.
        channels: Number of electrodes.
        samples: Time samples per trial.
        fs: Sampling rate in Hz; every harmonic must stay below ``fs / 2``.
        stimulus_freqs: One positive frequency per class, in Hz.
        harmonics: Number of harmonics per stimulus (1 = fundamental only).
        noise: Standard deviation of the additive Gaussian noise (>= 0).
        seed: Seed of the random generator.

    Returns:
        ``(x, y)``: x of shape ``(n_trials, channels, samples, 1)`` float32
        (the input layout of `ridurre.models.eegnet`) and integer labels y.

    Example:

    >>> x, y = make_ssvep_dataset(n_trials=40, samples=128)
    >>> x.shape, x.dtype.name, sorted(set(y.tolist()))
    ((40, 8, 128, 1), 'float32', [0, 1, 2, 3])
    """
    for value, name in ((n_trials, "n_trials"), (channels, "channels"), (samples, "samples"), (harmonics, "harmonics")):
        check_int(value, name, 1)
    check_number(fs, "fs", low=0, low_open=True)
    check_number(noise, "noise", low=0)
    freqs = np.asarray(stimulus_freqs, dtype="float64").reshape(-1)
    if freqs.size < 2 or np.any(freqs <= 0) or len(set(freqs.tolist())) != freqs.size:
        raise ValueError(
            f"`stimulus_freqs` must hold at least two distinct positive frequencies, got {stimulus_freqs!r}."
        )
    if freqs.max() * harmonics >= fs / 2:
        raise ValueError(
            f"`stimulus_freqs` times `harmonics` ({freqs.max() * harmonics} "
            f"Hz) must stay below the Nyquist frequency fs / 2 = {fs / 2} Hz."
        )
    n_classes = freqs.size
    if n_trials < n_classes:
        raise ValueError(f"`n_trials` must be at least the number of classes ({n_classes}), got {n_trials}.")

    rng = np.random.default_rng(seed)
    # Fixed spatial pattern per class and harmonic: (classes, harmonics, ch).
    patterns = rng.uniform(0.2, 1.0, size=(n_classes, harmonics, channels))
    y = rng.permutation(np.arange(n_trials) % n_classes)
    t = np.arange(samples) / float(fs)
    x = np.empty((n_trials, channels, samples), dtype="float64")
    for i, k in enumerate(y):
        phases = rng.uniform(0, 2 * np.pi, size=harmonics)
        mixing = patterns[k] + 0.1 * rng.standard_normal((harmonics, channels))
        waves = np.stack(
            [np.sin(2 * np.pi * freqs[k] * (h + 1) * t + phases[h]) / (h + 1) for h in range(harmonics)]
        )  # (harmonics, samples)
        x[i] = mixing.T @ waves
    x += noise * rng.standard_normal(x.shape)
    return x[..., None].astype("float32"), y.astype("int64")
