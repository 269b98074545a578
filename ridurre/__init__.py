"""ridurre: channel pruning for Keras 3.

Score the channels of a trained model, physically remove the weakest (coupled channels
together), recompile and fine-tune through your own callbacks, and repeat.

The public API is imported lazily, so ``import ridurre`` is cheap and the TensorFlow-free
score-file path (``python -m ridurre.prune_scores --mode mask``) never imports Keras.
"""

import importlib

__version__ = "1.0.0.dev0"

_EXPORTS = {
    # surgery
    "channel_groups": "ridurre.graph",
    "ChannelGroup": "ridurre.graph",
    "Surgeon": "ridurre.surgeon",
    "delete_channels": "ridurre.surgeon",
    "zero_channels": "ridurre.surgeon",
    "delete_layer": "ridurre.surgeon",
    "insert_layer": "ridurre.surgeon",
    "replace_layer": "ridurre.surgeon",
    "register_rule": "ridurre.rules",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ridurre' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
