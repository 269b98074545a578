"""Subclassed composite layers for the inlining tests (importable, so that a fresh process can
load a saved model that uses them)."""

import keras
from keras import ops

PACKAGE = "ridurre_tests"


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvBlock(keras.layers.Layer):
    """Conv -> BatchNorm -> swish, with an optional residual (an MBConv-like block)."""

    def __init__(self, filters, residual=False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.residual = filters, residual
        self.conv = keras.layers.Conv2D(filters, 3, padding="same", name="conv")
        self.norm = keras.layers.BatchNormalization(name="norm")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.norm.build(input_shape[:-1] + (self.filters,))

    def call(self, x, training=None):
        y = ops.silu(self.norm(self.conv(x), training=training))
        return x + y if self.residual else y

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "residual": self.residual}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeedForward(keras.layers.Layer):
    """Dense -> gelu -> Dropout -> Dense with a residual, and a second output (the hidden units)."""

    def __init__(self, hidden, rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.rate = hidden, rate
        self.expand = keras.layers.Dense(hidden, name="expand")
        self.dropout = keras.layers.Dropout(rate, name="dropout")
        self.project = None

    def build(self, input_shape):
        self.expand.build(input_shape)
        self.project = keras.layers.Dense(input_shape[-1], name="project")
        self.project.build(input_shape[:-1] + (self.hidden,))

    def call(self, x, training=None):
        h = self.dropout(ops.gelu(self.expand(x)), training=training)
        return x + self.project(h), None

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "rate": self.rate}


@keras.saving.register_keras_serializable(package=PACKAGE)
class Stack(keras.layers.Layer):
    """Composites inside a composite: ``depth`` FeedForward blocks and a LayerNormalization."""

    def __init__(self, hidden, depth=2, rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.depth, self.rate = hidden, depth, rate
        self.blocks = [FeedForward(hidden, rate, name=f"block_{i}") for i in range(depth)]
        self.norm = keras.layers.LayerNormalization(name="norm")

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)
        self.norm.build(input_shape)

    def call(self, x, training=None):
        for block in self.blocks:
            x, _ = block(x, training=training)
        return self.norm(x)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "depth": self.depth, "rate": self.rate}


class ValueBranch(keras.layers.Layer):
    """Python control flow on a tensor value: cannot be one graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def compute_output_shape(self, input_shape):  # the call itself runs eagerly only
        return input_shape[:-1] + (4,)

    def call(self, x):
        if ops.sum(x) > 0:
            return self.dense(x)
        return x


class TrainingBranch(keras.layers.Layer):
    """Python control flow on ``training``: the graph recorded in one phase is wrong in the other."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x, training=None):
        y = self.dense(x)
        return y * 0.5 if training else y


class OwnScale(keras.layers.Layer):
    """Reads its own variable in ``call`` (outside any layer call)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def build(self, input_shape):
        self.dense.build(input_shape)
        self.scale = self.add_weight(shape=(4,), initializer="ones", name="scale")

    def call(self, x):
        return self.dense(x) * self.scale


class EagerOp(keras.layers.Layer):
    """Leaves Keras for numpy: a backend-specific computation."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def compute_output_shape(self, input_shape):  # the call itself runs eagerly only
        return input_shape[:-1] + (4,)

    def call(self, x):
        return self.dense(ops.convert_to_numpy(x))


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchReshape(keras.layers.Layer):
    """Reshapes with the batch size read from the tensor (``None`` while building the graph),
    as keras-hub's MiT layers do: recorded at two sizes, it becomes a batch-preserving Reshape."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        batch = ops.shape(x)[0]
        return ops.reshape(self.dense(x), (batch, 2, 2))


class Scale(keras.layers.Layer):
    """A leaf layer (no sublayers): never inlined, it needs a rule."""

    def call(self, x):
        return 2.0 * x


class ConstantLookup(keras.layers.Layer):
    """Calls a sublayer on a constant (position embeddings): its weights end up baked in."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.positions = keras.layers.Embedding(4, 4)
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        return self.dense(x) + self.positions(ops.arange(4))


class CausalMix(keras.layers.Layer):
    """Builds a causal mask from the sequence length, as keras-hub's decoder blocks do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        n = ops.shape(x)[1]
        mask = ops.tril(ops.ones((n, n)))
        return self.dense(ops.matmul(mask, x))


@keras.saving.register_keras_serializable(package=PACKAGE)
class CausalSelfAttention(keras.layers.Layer):
    """Single-head causal self-attention whose mask is built from ``ops.shape(x)``, as keras-hub's
    decoder blocks build theirs: recorded at two sizes, the mask becomes a CausalMask layer."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.query = keras.layers.Dense(units, name="query")
        self.key = keras.layers.Dense(units, name="key")
        self.value = keras.layers.Dense(units, name="value")

    def build(self, input_shape):
        for dense in (self.query, self.key, self.value):
            dense.build(input_shape)

    def call(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        positions = ops.arange(length)
        mask = ops.expand_dims(ops.expand_dims(positions, 1) >= ops.expand_dims(positions, 0), 0)
        mask = ops.broadcast_to(mask, (batch, length, length))
        scores = ops.matmul(self.query(x), ops.transpose(self.key(x), (0, 2, 1)))
        scores = ops.where(mask, scores, -1e9)
        return ops.matmul(ops.softmax(scores, axis=-1), self.value(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}
