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


def set_layer_weights(layer, weights: dict, take: bool = False) -> None:
    """Set ``layer``'s variables from ``{name: array}`` (every variable must be given).

    Variables that Keras named automatically get new names when a layer is rebuilt; when the
    names do not match but the count does, the values are taken in order.

    Args:
        layer: a built layer.
        weights: ``{name: array}``.
        take: the arrays are handed over: the caller drops them and never writes to them again.
            On TensorFlow a writeable array that owns its memory then becomes the variable's
            buffer without a copy, and any other array is copied once (Keras's own conversion
            of a numpy array holds two copies of it at once): what the surgery does with the
            weights it slices, so that rebuilding a layer holds its new weights once.

    Raises:
        KeyError: variables missing from ``weights``.
        ValueError: a shape that does not fit (from Keras).

    Example:
        >>> import keras, numpy as np
        >>> dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).layers[0]
        >>> set_layer_weights(dense, {"kernel": np.ones((3, 2)), "bias": np.zeros(2)})
        >>> float(layer_weights(dense)["kernel"].sum())
        6.0
        >>> handed = {"kernel": np.full((3, 2), 2, "float32"), "bias": np.zeros(2, "float32")}
        >>> set_layer_weights(dense, handed, take=True)
        >>> float(layer_weights(dense)["kernel"].sum())
        12.0
    """
    names = weight_names(layer)
    if all(n in weights for n in names):
        values = [weights[n] for n in names]
    elif len(names) == len(weights):  # unnamed variables get new automatic names in a clone
        values = list(weights.values())
    else:
        raise KeyError(f"weights {sorted(set(names) - set(weights))} of layer {layer.name!r} are missing")
    if not take:
        layer.set_weights(values)
        return
    if len(values) != len(layer.weights):
        layer.set_weights(values)  # Keras's own error
    handed = set()
    for variable, value in zip(layer.weights, values):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"Layer {layer.name} weight shape {tuple(variable.shape)} is not compatible with provided weight "
                f"shape {tuple(np.shape(value))}."
            )
        variable.assign(_handed_over(variable, value, handed))


_ALIGNMENT = 64  # bytes: TensorFlow's kernels require (Eigen's) aligned buffers, and abort on others


def _handed_over(variable, value, handed: set):
    """``value`` for ``variable.assign``: on TensorFlow, a tensor that uses the memory of a numpy
    array the caller hands over (owned, writeable, contiguous, aligned, of the variable's dtype,
    not handed over before in ``handed``), or else of an aligned copy of it; ``value`` itself
    on the other backends."""
    import keras

    if keras.backend.backend() != "tensorflow" or not isinstance(value, np.ndarray) or not value.size:
        return value
    if np.dtype(value.dtype).name != np.dtype(variable.dtype).name:
        return value
    owned = value.base is None or getattr(value.base, "nbytes", None) == value.nbytes
    address = value.__array_interface__["data"][0]
    if not (value.flags.writeable and value.flags.c_contiguous and owned) or address % _ALIGNMENT or address in handed:
        value = _aligned_copy(value)  # a view of a variable, shared or misaligned memory
        address = value.__array_interface__["data"][0]
    import tensorflow as tf

    try:
        tensor = tf.experimental.dlpack.from_dlpack(value.__dlpack__())
    except (AttributeError, BufferError, TypeError, ValueError, tf.errors.OpError):
        return value  # a dtype DLPack does not carry (bfloat16...): Keras's conversion
    handed.add(address)
    return tensor


def _aligned_copy(value: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``value`` whose memory starts at a multiple of :data:`_ALIGNMENT`."""
    buffer = np.empty(value.nbytes + _ALIGNMENT, np.uint8)
    start = -buffer.__array_interface__["data"][0] % _ALIGNMENT
    copy = buffer[start : start + value.nbytes].view(value.dtype).reshape(value.shape)
    copy[...] = value
    return copy
