"""Layers that inlining puts in a recorded graph where a composite's call computes something
from the unknown batch or sequence size (see :mod:`ridurre.graph.inline`), savable, prunable
stand-ins for keras-hub layers (:mod:`ridurre.graph.standins`), and the per-channel offset that
takes a removed residual branch's place (:mod:`ridurre.surgery.branches`). They are registered
with Keras as ``ridurre>...``: a saved model holding one loads once ``ridurre.graph`` is imported
(or with ``ridurre.zoo.keras_hub.custom_objects()``).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["CausalMask", "ChannelOffset", "RotaryEmbedding"]


@keras.saving.register_keras_serializable(package="ridurre")
class CausalMask(keras.layers.Layer):
    """The causal attention mask of a sequence, ``(batch, length, length)``, position i seeing
    positions up to i: what keras-hub's decoder blocks compute from ``ops.shape(x)``, as a layer
    that reads the shape when it runs. Only the shape of its input is used.

    Args:
        mask_dtype: dtype of the mask (``"bool"``, or a float dtype for 0/1 values).

    Example:
        >>> import numpy as np
        >>> mask = CausalMask()(np.zeros((2, 3, 4), "float32"))
        >>> np.asarray(mask)[1].astype(int).tolist()
        [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """

    def __init__(self, mask_dtype="bool", **kwargs):
        super().__init__(**kwargs)
        self.mask_dtype = mask_dtype
        self.built = True

    def call(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        positions = ops.arange(length)
        mask = ops.expand_dims(positions, 1) >= ops.expand_dims(positions, 0)
        return ops.cast(ops.broadcast_to(ops.expand_dims(mask, 0), (batch, length, length)), self.mask_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[1])

    def compute_output_spec(self, x):
        return keras.KerasTensor(self.compute_output_shape(x.shape), dtype=self.mask_dtype)

    def get_config(self):
        return {**super().get_config(), "mask_dtype": self.mask_dtype}


@keras.saving.register_keras_serializable(package="ridurre")
class ChannelOffset(keras.layers.Layer):
    """Adds a learned constant per channel (last axis): ``x + offset``. What a removed residual
    branch leaves behind (its output once its last convolution's input is zeroed); the channel
    rule slices ``offset`` with the channels and zeroes it for zeroed channels.

    Example:
        >>> import numpy as np
        >>> layer = ChannelOffset()
        >>> layer.build((None, 3))
        >>> layer.set_weights([np.array([1.0, 2.0, 3.0], "float32")])
        >>> np.asarray(layer(np.zeros((2, 3), "float32"))).tolist()
        [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    """

    def build(self, input_shape):
        self.offset = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="offset")
        self.built = True

    def call(self, x):
        return x + ops.cast(self.offset, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="ridurre")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoFormer) over the last axis, as keras-hub computes it: the
    features are two halves, feature ``j`` and ``j + d/2`` are rotated together by the angle
    ``position * inverse_frequencies[j]``. Unlike keras-hub's layer, the frequencies can be
    given explicitly, so that head dimensions pruned in pairs keep their own frequencies (the
    rule slices the list); ``None`` computes keras-hub's ``max_wavelength ** (-2j / d) /
    scaling_factor`` from the width ``d`` it is called on.

    Args:
        max_wavelength, scaling_factor: keras-hub's (linear scaling), used when
            ``inverse_frequencies`` is ``None``.
        inverse_frequencies: ``d/2`` frequencies, or ``None``.
        sequence_axis: the axis of positions (the features are the last axis).

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(1, 3, 2, 4)).astype("float32")
        >>> full = RotaryEmbedding()(x)
        >>> pair = RotaryEmbedding(inverse_frequencies=[0.01])(x[..., [1, 3]])  # pair 1 of 2, its frequency
        >>> bool(np.allclose(np.asarray(full)[..., [1, 3]], pair, atol=1e-6))
        True
    """

    def __init__(self, max_wavelength=10000, scaling_factor=1.0, inverse_frequencies=None, sequence_axis=1, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.scaling_factor = scaling_factor
        self.inverse_frequencies = None if inverse_frequencies is None else [float(f) for f in inverse_frequencies]
        self.sequence_axis = sequence_axis
        self.built = True

    def frequencies(self, width):
        """The ``width // 2`` inverse frequencies used on ``width`` features, as a list."""
        if self.inverse_frequencies is not None:
            return list(self.inverse_frequencies)
        exponents = np.arange(0, width, 2, dtype="float32") / np.float32(width)
        inverse = np.power(np.float32(self.max_wavelength), -exponents) / np.float32(self.scaling_factor)
        return inverse.astype("float32").tolist()

    def call(self, inputs, start_index=0):
        width = inputs.shape[-1]
        frequencies = ops.convert_to_tensor(np.asarray(self.frequencies(width), "float32"))
        x = ops.moveaxis(inputs, self.sequence_axis, 1)
        positions = ops.arange(ops.shape(x)[1], dtype="float32") + ops.cast(start_index, "float32")
        angles = ops.einsum("i,j->ij", positions, frequencies)
        angles = ops.concatenate([angles, angles], axis=-1)
        shape = [1] * len(x.shape)
        shape[1], shape[-1] = -1, width
        angles = ops.reshape(angles, shape)
        cos = ops.cast(ops.cos(angles), self.compute_dtype)
        sin = ops.cast(ops.sin(angles), self.compute_dtype)
        x1, x2 = ops.split(x, 2, axis=-1)
        rotated = ops.concatenate([-x2, x1], axis=-1)
        return ops.moveaxis(x * cos + rotated * sin, 1, self.sequence_axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_wavelength": self.max_wavelength,
            "scaling_factor": self.scaling_factor,
            "inverse_frequencies": self.inverse_frequencies,
            "sequence_axis": self.sequence_axis,
        }
