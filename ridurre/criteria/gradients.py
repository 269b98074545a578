"""Gradients of a model's loss with respect to its weights, on every Keras backend.

:func:`accumulate_gradients` runs the model on user data in batches (inference mode, so
BatchNormalization statistics are not touched and the model is not changed), takes the
gradient of the loss through the backend's own API (TensorFlow ``GradientTape``,
``jax.grad``, ``torch.autograd``) and keeps, per trainable variable, the mean gradient and the
mean squared batch gradient. Memory is bounded by one batch plus two arrays per variable.
Gradient criteria (Taylor, Hessian diagonal) read them through
:meth:`ridurre.criteria.GroupView.layer_gradients`.
"""

from __future__ import annotations

import keras
import numpy as np

__all__ = ["Gradients", "accumulate_gradients"]


class Gradients:
    """Gradient statistics of a model's trainable variables.

    Attributes:
        mean: ``{id(variable): mean over batches of dL/dw}``.
        mean_square: ``{id(variable): mean over batches of (dL/dw) ** 2}`` (an empirical
            Fisher estimate of the Hessian diagonal).
        batches: how many batches were used.
    """

    def __init__(self, mean, mean_square, batches):
        self.mean, self.mean_square, self.batches = mean, mean_square, batches


def _loss_function(model, loss):
    if loss is not None:
        fn = keras.losses.get(loss) if isinstance(loss, str) else loss

        def compute(y, y_pred):
            return keras.ops.mean(fn(y, y_pred))

        return compute
    if not getattr(model, "compiled", False) or getattr(model, "loss", None) is None:
        raise ValueError(
            f"gradients need a loss: compile model {model.name!r} with one (model.compile(loss=...)) "
            "or pass loss= to the criterion"
        )

    def compute(y, y_pred):
        return model.compute_loss(y=y, y_pred=y_pred, training=False)

    return compute


def _gradient_step(model, variables, loss_fn):
    """``step(x, y) -> [numpy gradient per variable]`` with the backend's gradient API."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        def step(x, y):
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=False))
            grads = tape.gradient(loss, variables)
            return [None if g is None else tf.convert_to_tensor(g) for g in grads]  # IndexedSlices: dense

    elif backend == "jax":
        import jax

        def loss_of(values, x, y):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return loss_fn(y, model(x, training=False))

        grad = jax.grad(loss_of)

        def step(x, y):
            return grad([v.value for v in variables], x, y)

    elif backend == "torch":
        import torch

        def step(x, y):
            with torch.enable_grad():
                loss = loss_fn(y, model(x, training=False))
                return torch.autograd.grad(loss, [v.value for v in variables], allow_unused=True)

    else:
        raise ValueError(f"gradients are not supported on the {backend!r} backend (tensorflow, jax or torch)")
    return step


def accumulate_gradients(model, x, y, batch_size=32, max_batches=None, loss=None) -> Gradients:
    """Mean and mean squared gradient of the loss over batches of ``(x, y)``.

    Args:
        model: a built Keras model, compiled with a loss unless ``loss`` is given.
        x, y: inputs and targets (numpy arrays of the same length; ``x`` may be a list of
            arrays for a model with several inputs).
        batch_size: examples per gradient.
        max_batches: use at most this many batches (``None``: all of ``x``).
        loss: a Keras loss (name or callable ``fn(y_true, y_pred)``) used instead of the
            model's compiled loss.

    Returns:
        A :class:`Gradients`.

    Raises:
        ValueError: no loss, no data, or ``x`` and ``y`` of different lengths.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
        >>> model.compile(loss="mse")
        >>> g = accumulate_gradients(model, np.ones((8, 3), "float32"), np.zeros((8, 2), "float32"), batch_size=4)
        >>> g.batches, g.mean[id(model.get_layer("d").kernel)].shape
        (2, (3, 2))
    """
    xs = x if isinstance(x, (list, tuple)) else [x]
    n = len(xs[0])
    if n == 0:
        raise ValueError("gradients need data: x holds no example")
    if y is None or len(y) != n:
        raise ValueError(f"gradients need targets: y must hold one target per example of x ({n}), got {y!r:.60}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    loss_fn = _loss_function(model, loss)
    variables = list(model.trainable_variables)
    step = _gradient_step(model, variables, loss_fn)
    total = [np.zeros(tuple(v.shape), dtype=np.float64) for v in variables]
    squares = [np.zeros(tuple(v.shape), dtype=np.float64) for v in variables]
    batches = 0
    for start in range(0, n, batch_size):
        if max_batches is not None and batches >= max_batches:
            break
        bx = [a[start : start + batch_size] for a in xs]
        bx = bx if isinstance(x, (list, tuple)) else bx[0]
        grads = step(bx, np.asarray(y[start : start + batch_size]))
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = np.asarray(keras.ops.convert_to_numpy(g), dtype=np.float64)
            total[i] += g
            squares[i] += g * g
        batches += 1
    mean = {id(v): t / batches for v, t in zip(variables, total)}
    mean_square = {id(v): s / batches for v, s in zip(variables, squares)}
    return Gradients(mean, mean_square, batches)
