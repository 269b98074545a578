"""The loop's records on disk: ``logs/history.{json,csv}``, ``models/iteration_NNN.keras`` and
``state.json`` (for resuming), and what a run directory belongs to.

Every file is written atomically (:mod:`ridurre._io`): nothing half-written is left on disk under
a final name. ``state.json`` records the run's *fingerprint* (the input model's weights and the
loop's effective settings, :func:`run_fingerprint`) so that a resumed run refuses a directory
written by another model or configuration (:func:`check_same_run`), and its checkpoint path
relative to the run directory, so that a run resumes from any working directory.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import logging
import os

import numpy as np

from ridurre._io import atomic_path, remove_leftover_temporaries, save_model_atomic, write_text_atomic  # noqa: F401

logger = logging.getLogger("ridurre")

__all__ = [
    "write_history",
    "save_state",
    "load_state",
    "checkpoint_path",
    "describe",
    "model_fingerprint",
    "run_fingerprint",
    "check_same_run",
    "clear_run",
    "prepare_run_directory",
]

STATE_FILE = "state.json"
RUN_FILES = (STATE_FILE, "models/iteration_[0-9][0-9][0-9].keras", "logs/history.json", "logs/history.csv")
"""The files the loop writes in its output directory (glob patterns, relative to it)."""


def write_history(logs_dir, history):
    """Write the loop's history as ``history.json`` and ``history.csv`` in ``logs_dir``."""
    write_text_atomic(os.path.join(logs_dir, "history.json"), json.dumps(history, indent=2, default=str))
    columns = ["iteration", "factor", "epoch", "filters", "params", "macs", "pruning_percent", "metric", "seconds"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns + ["removed_channels"], lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(
            {
                **{c: row.get(c) for c in columns},
                "removed_channels": sum(len(v) for v in row.get("removed", {}).values()),
            }
        )
    write_text_atomic(os.path.join(logs_dir, "history.csv"), buffer.getvalue())


def save_state(output_dir, state):
    """Record the loop's progress (``state.json``) so that an interrupted run can resume."""
    write_text_atomic(os.path.join(output_dir, STATE_FILE), json.dumps(state, indent=2, default=str))


def checkpoint_path(output_dir, state):
    """The absolute path of the checkpoint ``state`` names (stored relative to ``output_dir``;
    absolute paths of older state files are taken as they are)."""
    return os.path.join(os.fspath(output_dir), state.get("checkpoint", ""))


def load_state(output_dir):
    """The saved progress of a run in ``output_dir``, or ``None`` when there is none.

    Raises:
        ValueError: the state file is unreadable, or its checkpoint is missing.
    """
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable run state ({exc}); cannot resume") from None
    if not os.path.isfile(checkpoint_path(output_dir, state)):
        raise ValueError(f"{path}: its checkpoint {state.get('checkpoint')!r} is missing; cannot resume")
    return state


def clear_run(output_dir):
    """Remove the files an earlier run of the loop left in ``output_dir`` (see :data:`RUN_FILES`);
    return them. Other files are left alone.

    Example:
        >>> import os, tempfile
        >>> d = tempfile.mkdtemp()
        >>> os.makedirs(os.path.join(d, "models"))
        >>> for name in ("state.json", "models/iteration_003.keras", "models/mine.keras"):
        ...     _ = open(os.path.join(d, name), "w").write("x")
        >>> [os.path.relpath(p, d) for p in clear_run(d)], sorted(os.listdir(os.path.join(d, "models")))
        (['state.json', 'models/iteration_003.keras'], ['mine.keras'])
    """
    removed = []
    for pattern in RUN_FILES:
        for path in sorted(glob.glob(os.path.join(glob.escape(os.fspath(output_dir)), pattern))):
            os.remove(path)
            removed.append(path)
    return removed


# ----------------------------------------------------------------------------- fingerprints


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def describe(value):
    """A JSON-friendly, deterministic description of an option value (arrays by shape and hash,
    callables by name, objects by class and attributes), for comparing two runs' settings.

    Example:
        >>> import numpy as np
        >>> describe({"ratio": 0.5, "data": np.zeros((2, 3)), "fn": len})
        {'ratio': 0.5, 'data': {'array': [2, 3], 'sha256': 'cfc3665941651aea'}, 'fn': 'builtins.len'}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) or hasattr(value, "__array__") and hasattr(value, "shape"):
        array = np.ascontiguousarray(np.asarray(value))
        return {"array": list(array.shape), "sha256": _digest(str(array.dtype).encode() + array.tobytes())}
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [describe(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if hasattr(value, "patterns") and isinstance(value.patterns, list):  # LayerPatterns
        return list(value.patterns)
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict):
        return {"class": type(value).__name__, **{k: describe(v) for k, v in sorted(attributes.items())}}
    return type(value).__name__


def model_fingerprint(model) -> dict:
    """What identifies a model's state: the hash of its layer classes and weights (names are left
    out, so the same model rebuilt from code with other automatic names matches), its name and
    parameter count (for messages)."""
    digest = hashlib.sha256()

    def leaves(layer):
        inner = getattr(layer, "layers", None)
        if inner:
            for sub in inner:
                yield from leaves(sub)
        else:
            yield layer

    for layer in leaves(model):
        digest.update(type(layer).__name__.encode())
        for value in layer.get_weights():
            value = np.ascontiguousarray(value)
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(value.tobytes())
    return {"sha256": digest.hexdigest()[:32], "name": model.name, "params": int(model.count_params())}


def run_fingerprint(model, settings: dict) -> dict:
    """The fingerprint of a run: :func:`model_fingerprint` of its input model and its settings
    (already :func:`describe`-d)."""
    return {"model": model_fingerprint(model), "settings": settings}


def _differences(saved, current, prefix=""):
    if isinstance(saved, dict) and isinstance(current, dict) and not ("array" in saved and "sha256" in saved):
        out = []
        for key in list(dict.fromkeys(list(saved) + list(current))):
            out += _differences(saved.get(key, "<not set>"), current.get(key, "<not set>"), f"{prefix}{key}.")
        return out
    if saved != current:
        return [f"{prefix.rstrip('.')} {_short(saved)} there, {_short(current)} here"]
    return []


def _short(value, limit=60):
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_same_run(saved, current, output_dir):
    """Raise ``ValueError`` unless the fingerprint ``saved`` in ``output_dir`` is ``current``'s;
    the message says what differs.

    Example:
        >>> saved = {"model": {"sha256": "ab", "name": "m", "params": 10}, "settings": {"criterion": "l1"}}
        >>> check_same_run(saved, saved, "run")
        >>> other = {"model": saved["model"], "settings": {"criterion": "random"}}
        >>> try:
        ...     check_same_run(saved, other, "run")
        ... except ValueError as exc:
        ...     print(str(exc).split(": ", 1)[1][:60])
        it holds another run (criterion 'l1' there, 'random' here);
    """
    if not isinstance(saved, dict) or "model" not in saved:
        raise ValueError(
            f"{output_dir}: its {STATE_FILE} does not record which model and settings it belongs to "
            "(written by an older ridurre); cannot resume it safely: start a new run in another directory"
        )
    problems = []
    model_then, model_now = saved.get("model", {}), current["model"]
    if model_then.get("sha256") != model_now["sha256"]:
        problems.append(
            f"the input model differs: {model_then.get('name')!r} with {model_then.get('params', 0):,} parameters "
            f"there, {model_now['name']!r} with {model_now['params']:,} here (or the same architecture with "
            "other weights)"
        )
    problems += _differences(saved.get("settings", {}), current["settings"])
    if problems:
        raise ValueError(
            f"{output_dir}: it holds another run ({'; '.join(problems)}); resume it with the same model and "
            "settings, or start a new run (another output directory, or resume=False to replace it)"
        )


def prepare_run_directory(output_dir, resume, fingerprint):
    """Get ``output_dir`` ready for a run: remove (and report) what interrupted atomic writes left
    there; for ``resume`` return the saved state after checking it belongs to ``fingerprint``
    (``None`` when there is none), else remove an earlier run's files (:func:`clear_run`).

    Raises:
        ValueError: resuming a directory of another run (:func:`check_same_run`).
    """
    leftovers = remove_leftover_temporaries(output_dir)
    if leftovers:
        logger.warning(
            "removed %d unfinished file(s) that an interrupted write left in %s: %s",
            len(leftovers),
            output_dir,
            ", ".join(os.path.relpath(p, output_dir) for p in leftovers),
        )
    if resume:
        state = load_state(output_dir)
        if state is not None:
            check_same_run(state.get("fingerprint"), fingerprint, output_dir)
        return state
    stale = clear_run(output_dir)
    if stale:
        logger.warning(
            "%s held an earlier run: removed its %d checkpoint and state file(s) (resume=True continues a run)",
            output_dir,
            len(stale),
        )
    return None
