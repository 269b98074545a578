"""Layers that inlining puts in a recorded graph where a composite's call computes something
from the unknown batch or sequence size (see :mod:`ridurre.graph.inline`). They are registered
with Keras as ``ridurre>...``: a saved model holding one loads once ``ridurre.graph`` is imported
(or with ``ridurre.zoo.keras_hub.custom_objects()``).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["CausalMask"]


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
