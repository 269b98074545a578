"""Compatibility: the schedules live in :mod:`ridurre.pruning.schedules`."""

from ridurre.pruning.schedules import *  # noqa: F401,F403
from ridurre.pruning.schedules import __all__  # noqa: F401
