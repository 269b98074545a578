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


def layer_weights(layer, copy: bool = True) -> dict[str, np.ndarray]:
    """``{name: numpy array}`` of ``layer``'s variables, in order (see :func:`weight_names`).

    Args:
        layer: a built layer.
        copy: False reads the variables without copying them where the backend allows it
            (TensorFlow, JAX and PyTorch on CPU): read-only arrays that share the variables'
            memory, for a caller that uses them at once (the surgery slices each layer's weights
            as it rebuilds it, and a 200 MB embedding is then not held twice). They are valid
            until the variable is next assigned: on PyTorch they follow the assignment.

    Example:
        >>> import keras
        >>> dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).layers[0]
        >>> {name: value.shape for name, value in layer_weights(dense).items()}
        {'kernel': (3, 2), 'bias': (2,)}
        >>> view = layer_weights(dense, copy=False)["kernel"]
        >>> bool(np.array_equal(view, dense.kernel.numpy())), view.flags.writeable
        (True, False)
    """
    values = layer.get_weights() if copy else [_read_only(v) for v in layer.weights]
    return dict(zip(weight_names(layer), values))


def _read_only(variable) -> np.ndarray:
    """The value of a Keras variable as a read-only numpy array, sharing its memory when the
    backend allows it (a copy otherwise)."""
    import keras

    value = variable.value
    backend = keras.backend.backend()
    if backend == "tensorflow" and hasattr(value, "read_value"):
        array = np.asarray(value.read_value())  # the eager tensor's buffer: the variable's, copy on write
    elif backend == "jax":
        array = np.asarray(value)  # a CPU jax.Array's own (read-only) buffer
    elif backend == "torch":
        array = value.detach().cpu().numpy()  # the tensor's storage on CPU
    else:
        array = np.asarray(variable)
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


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
