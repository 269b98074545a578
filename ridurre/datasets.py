"""Compatibility: the dataset loaders live in :mod:`ridurre.zoo.datasets`."""

from ridurre.zoo.datasets import *  # noqa: F401,F403
from ridurre.zoo.datasets import __all__  # noqa: F401
