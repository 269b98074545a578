"""Where a command's messages go: a run's log file (``logs/ridurre.log``) and the console."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["attach_log_file", "log_failure", "detach", "console"]

logger = logging.getLogger("ridurre")


def attach_log_file(output_dir):
    """Copy the ``ridurre`` log to ``output_dir/logs/ridurre.log``; returns the handler to :func:`detach`."""
    path = os.path.join(output_dir, "logs", "ridurre.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def log_failure(handler, exc):
    """Put the traceback of a failed run in the log file only (the console gets one line)."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "run failed: %s", (exc,), sys.exc_info())
    handler.handle(record)


def detach(handler):
    """Stop copying the log to the file of :func:`attach_log_file`."""
    logger.removeHandler(handler)
    handler.close()


def console():
    """A rich console on stdout, wide enough that tables piped to a file stay unwrapped."""
    from rich.console import Console

    out = Console()
    if not out.is_terminal:
        out.width = max(out.width, 220)  # the latency of each runtime makes wide tables
    return out
