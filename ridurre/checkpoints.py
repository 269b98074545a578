"""Atomic writes of models, histories and loop state: nothing half-written is ever left on disk.

Every file is written to a temporary name in the destination directory and then renamed with
``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from contextlib import contextmanager

__all__ = ["atomic_path", "save_model_atomic", "write_text_atomic", "write_history", "save_state", "load_state"]

STATE_FILE = "state.json"


@contextmanager
def atomic_path(path, suffix=""):
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Example:
        >>> import os, tempfile
        >>> target = os.path.join(tempfile.mkdtemp(), "out.txt")
        >>> with atomic_path(target) as tmp:
        ...     _ = open(tmp, "w").write("done")
        >>> open(target).read()
        'done'
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix or os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files; give them the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text_atomic(path, text):
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def save_model_atomic(model, path):
    """Save a Keras model as ``.keras`` atomically (the extension must be ``.keras``)."""
    if not str(path).endswith(".keras"):
        raise ValueError(f"model checkpoints are .keras files, got {path!r}")
    with atomic_path(path, suffix=".keras") as tmp:
        os.remove(tmp)  # keras refuses to overwrite silently in some versions
        model.save(tmp)


def write_history(logs_dir, history):
    """Write the loop's history as ``history.json`` and ``history.csv`` in ``logs_dir``."""
    write_text_atomic(os.path.join(logs_dir, "history.json"), json.dumps(history, indent=2, default=str))
    columns = ["iteration", "factor", "epoch", "filters", "params", "macs", "pruning_percent", "metric", "seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns + ["removed_channels"], lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({**{c: row.get(c) for c in columns},
                         "removed_channels": sum(len(v) for v in row.get("removed", {}).values())})
    write_text_atomic(os.path.join(logs_dir, "history.csv"), buffer.getvalue())


def save_state(output_dir, state):
    """Record the loop's progress (``state.json``) so that an interrupted run can resume."""
    write_text_atomic(os.path.join(output_dir, STATE_FILE), json.dumps(state, indent=2, default=str))


def load_state(output_dir):
    """The saved progress of a run in ``output_dir``, or ``None`` when there is none."""
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    if not os.path.exists(state.get("checkpoint", "")):
        raise ValueError(f"{path}: its checkpoint {state.get('checkpoint')!r} is missing; cannot resume")
    return state
