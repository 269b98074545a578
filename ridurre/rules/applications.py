"""Rules of the layers that ``keras.applications`` models define for themselves: ConvNeXt's
``LayerScale`` and ``StochasticDepth``, InceptionResNetV2's ``CustomScaleLayer``.

They are matched by class name AND by being defined in ``keras.applications``
(:func:`ridurre._compat.builtin_kind`), so a user's own ``LayerScale`` is not mistaken for them.
"""

from __future__ import annotations

import numpy as np

from ridurre.rules.base import LayerRule, PassThroughRule
from ridurre.rules.merge import MergeRule

__all__ = ["LayerScaleRule", "application_rules"]


class LayerScaleRule(PassThroughRule):
    """ConvNeXt's ``LayerScale``: ``x * gamma`` with one scale per channel (``projection_dim``
    of them). Its variable has no name of its own, so every weight over the channels is sliced.

    Example:
        >>> import numpy as np
        >>> config, weights = LayerScaleRule().slice(None, {"projection_dim": 3}, {"variable": np.arange(3.0)},
        ...                                          None, np.array([True, False, True]))
        >>> config["projection_dim"], weights["variable"].tolist()
        (2, [0.0, 2.0])
    """

    def __init__(self):
        super().__init__(cost="elementwise")
        self.channel_dependent = True

    def slice(self, layer, config, weights, in_keep, out_keep):
        if out_keep is None:
            return config, weights
        weights = {k: (v[..., out_keep] if v.ndim and v.shape[-1] == len(out_keep) else v) for k, v in weights.items()}
        return {**config, "projection_dim": int(np.count_nonzero(out_keep))}, weights

    def zero(self, layer, weights, in_zero, out_zero):
        if out_zero is None:
            return weights
        new = {}
        for k, v in weights.items():
            if v.ndim and v.shape[-1] == len(out_zero):
                v = v.copy()
                v[..., out_zero] = 0
            new[k] = v
        return new


def application_rules() -> dict[str, LayerRule]:
    """The rules of ``keras.applications``' own layers, by class name.

    Example:
        >>> sorted(application_rules())
        ['CustomScaleLayer', 'LayerScale', 'StochasticDepth']
    """
    return {
        "LayerScale": LayerScaleRule(),
        "StochasticDepth": PassThroughRule(cost="free"),  # identity at inference; per sample in training
        "CustomScaleLayer": MergeRule(),  # inputs[0] + inputs[1] * scale, scale a float
    }
