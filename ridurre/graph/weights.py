"""A layer's weights by name: the one helper every module uses to read and write them."""

from __future__ import annotations

import numpy as np

__all__ = ["weight_names", "layer_weights", "set_layer_weights"]


def _short(name: str) -> str:
    # Keras 3 names variables "kernel"; Keras 2 style names look like "conv/kernel:0"
    return name.split("/")[-1].split(":")[0]


def weight_names(layer) -> list[str]:
    """The names of ``layer``'s variables in order (``["kernel", "bias"]``). A name used twice
    (a layer made of sublayers, such as MultiHeadAttention) is given with the sublayer's name
    (``"query/kernel"``), or else made unique with its position (``"0:kernel"``).

    Example:
        >>> import keras
        >>> bn = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization()]).layers[0]
        >>> weight_names(bn)
        ['gamma', 'beta', 'moving_mean', 'moving_variance']
    """
    names = [_short(v.name) for v in layer.weights]
    if len(set(names)) != len(names):
        paths = [str(getattr(v, "path", "")).split(":")[0].split("/") for v in layer.weights]
        names = ["/".join(p[-2:]) for p in paths]
        if len(set(names)) != len(names) or any(len(p) < 2 for p in paths):
            names = [f"{i}:{n}" for i, n in enumerate(_short(v.name) for v in layer.weights)]
    return names


def layer_weights(layer) -> dict[str, np.ndarray]:
    """``{name: numpy array}`` of ``layer``'s variables, in order (see :func:`weight_names`).

    Example:
        >>> import keras
        >>> dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).layers[0]
        >>> {name: value.shape for name, value in layer_weights(dense).items()}
        {'kernel': (3, 2), 'bias': (2,)}
    """
    return dict(zip(weight_names(layer), layer.get_weights()))


def set_layer_weights(layer, weights: dict) -> None:
    """Set ``layer``'s variables from ``{name: array}`` (every variable must be given).

    Variables that Keras named automatically get new names when a layer is rebuilt; when the
    names do not match but the count does, the values are taken in order.

    Raises:
        KeyError: variables missing from ``weights``.
        ValueError: a shape that does not fit (from Keras).

    Example:
        >>> import keras, numpy as np
        >>> dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).layers[0]
        >>> set_layer_weights(dense, {"kernel": np.ones((3, 2)), "bias": np.zeros(2)})
        >>> float(layer_weights(dense)["kernel"].sum())
        6.0
    """
    names = weight_names(layer)
    if all(n in weights for n in names):
        values = [weights[n] for n in names]
    elif len(names) == len(weights):  # unnamed variables get new automatic names in a clone
        values = list(weights.values())
    else:
        raise KeyError(f"weights {sorted(set(names) - set(weights))} of layer {layer.name!r} are missing")
    layer.set_weights(values)
