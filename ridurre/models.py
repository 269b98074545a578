"""Compatibility: the reference models live in :mod:`ridurre.zoo.models`."""

from ridurre.zoo.models import *  # noqa: F401,F403
from ridurre.zoo.models import __all__  # noqa: F401
