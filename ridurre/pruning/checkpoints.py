"""The loop's records on disk: ``logs/history.{json,csv}`` and ``state.json`` (for resuming).

Every file is written atomically (:mod:`ridurre._io`): nothing half-written is left on disk.
"""

from __future__ import annotations

import csv
import io
import json
import os

from ridurre._io import atomic_path, save_model_atomic, write_text_atomic  # noqa: F401 - re-exported

__all__ = ["write_history", "save_state", "load_state"]

STATE_FILE = "state.json"


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
