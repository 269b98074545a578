"""Atomic file writes: nothing half-written is ever left on disk under a final name.

Every file is written to a temporary name in its destination directory, flushed to disk
(``fsync``), given the usual file mode (``0o666`` less the umask) and renamed with
``os.replace``, which is atomic on POSIX and Windows. Temporary names look like
``.<final name>.<random>.tmp<extension>`` (see :func:`leftover_temporaries`). This module
imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import IO

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_writer",
    "atomic_directory",
    "write_text_atomic",
    "save_npz_atomic",
    "save_model_atomic",
    "file_sha256",
    "leftover_temporaries",
]

_TMP_MARK = ".tmp"


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: str) -> None:
    with contextlib.suppress(OSError):  # not every platform lets a directory be opened
        _fsync_path(directory)


def _usual_mode(directory: bool = False) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the final file.
        suffix: the temporary file's extension (default: ``path``'s, so that writers that look
            at the extension, such as ``model.save``, are happy).

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with atomic_path(target) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(target).read(), oct(os.stat(target).st_mode & 0o777) != "0o600"
        ('done', True)
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    ext = os.path.splitext(path)[1] if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=_TMP_MARK + ext, dir=directory)
    os.close(fd)
    try:
        yield tmp
        if os.path.exists(tmp):
            _fsync_path(tmp)
            os.chmod(tmp, _usual_mode())  # mkstemp creates 0600 files
        os.replace(tmp, path)
        _fsync_directory(directory)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary directory beside ``path``; on success it takes ``path``'s place.

    For writers that produce a directory (a TensorFlow SavedModel). An existing ``path`` is
    moved aside first and removed only once the new directory is in place; on an exception the
    temporary directory is removed and ``path`` is left as it was.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "saved_model")
        >>> with atomic_directory(target) as tmp:
        ...     _ = open(os.path.join(tmp, "a.pb"), "w").write("x")
        >>> os.listdir(target), leftover_temporaries(os.path.dirname(target))
        (['a.pb'], [])
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=_TMP_MARK, dir=parent)
    old = None
    try:
        yield tmp
        os.chmod(tmp, _usual_mode(directory=True))  # mkdtemp creates 0700 directories
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old.", suffix=_TMP_MARK, dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None and not os.path.exists(path):
                os.replace(old, path)
            raise
        _fsync_directory(parent)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and os.path.exists(leftover):
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "scores.csv")
        >>> with atomic_writer(target) as f:
        ...     _ = f.write("layer,filter,score\\n")
        >>> open(target).read()
        'layer,filter,score\\n'
    """
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_writer(path, "w", encoding="utf-8") as f:
        f.write(text)


def save_npz_atomic(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compressed: bool = False) -> None:
    """Save arrays to an ``.npz`` file atomically (the path is used as given).

    Example:
        >>> import numpy as np, os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "pruned_weights.npz")
        >>> save_npz_atomic(target, {"conv/kernel": np.zeros((3, 3, 1, 2))})
        >>> sorted(np.load(target).files)
        ['conv/kernel']
    """
    save = np.savez_compressed if compressed else np.savez
    with atomic_writer(path, "wb") as f:
        save(f, **{k: np.asarray(v) for k, v in arrays.items()})


def save_model_atomic(model, path: str | os.PathLike) -> None:
    """Save a Keras model as ``.keras`` atomically (the extension must be ``.keras``).

    Raises:
        ValueError: another extension.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"model checkpoints are .keras files, got {path!r}")
    with atomic_path(path, suffix=".keras") as tmp:
        os.remove(tmp)  # keras refuses to overwrite silently in some versions
        model.save(tmp)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (to show that an input was left untouched).

    Example:
        >>> import os, tempfile
        >>> p = os.path.join(tempfile.mkdtemp(), "f")
        >>> _ = open(p, "wb").write(b"")
        >>> file_sha256(p)[:12]
        'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def leftover_temporaries(directory: str | os.PathLike) -> list[str]:
    """Temporary files that an interrupted atomic write left in ``directory`` (not recursive).

    Example:
        >>> import tempfile
        >>> leftover_temporaries(tempfile.mkdtemp())
        []
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return []
    return sorted(
        os.path.join(directory, name) for name in os.listdir(directory) if name.startswith(".") and _TMP_MARK in name
    )
