"""The same small BN CNNs in Keras and in plain torch, their data, and what both frameworks share.

Used by ``bench/compare_torch_pruning.py``: one architecture spec builds a Keras model and a
torch module with identical layers (convolution -> BatchNormalization -> ReLU [-> max pool],
global average pooling, a dense classifier), so that weights copy exactly from one to the other
and both frameworks train from the same initial weights, on the same batches in the same order,
with the same optimizer settings:

- BatchNormalization: Keras ``momentum=0.9, epsilon=1e-5`` (torch's ``momentum=0.1, eps=1e-5``;
  Keras's own default of 0.99 keeps stale statistics for hundreds of batches after a pruning
  step, which is not a criterion's fault);
- Adam ``lr=1e-3, epsilon=1e-8`` (torch's default epsilon), a fresh optimizer at every step;
- batch ``i`` of epoch ``e`` is the same examples in both (:func:`batch_order`).

Data: MNIST-1D, generated offline by the ``mnist1d`` package (its own generator and template
set, data seed 42, cached as ``.npz``), and scikit-learn's bundled 8x8 digits (a fixed
stratified 75/25 split). Both are channels-last for Keras and channels-first for torch.

torch is imported lazily: this module is importable (and its MACs counter usable) without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

BN_MOMENTUM_KERAS = 0.9  # = torch's momentum 0.1 (Keras weights the old statistics, torch the new batch)
BN_EPSILON = 1e-5
ADAM_EPSILON = 1e-8


@dataclass(frozen=True)
class Architecture:
    """A plain BN CNN: ``blocks`` of (filters, kernel size, max pool after it), GAP, dense."""

    name: str
    dims: int  # 1 (Conv1D on sequences) or 2 (Conv2D on images)
    input_shape: tuple  # channels last, as Keras takes it
    blocks: tuple  # ((filters, kernel, pool), ...)
    classes: int = 10

    @property
    def widths(self) -> list[int]:
        return [b[0] for b in self.blocks]


ARCHITECTURES = {
    "mnist1d": Architecture("mnist1d", 1, (40, 1), ((32, 5, False), (64, 3, True), (64, 3, True), (128, 3, False))),
    "digits": Architecture("digits", 2, (8, 8, 1), ((16, 3, False), (32, 3, True), (32, 3, False), (64, 3, False))),
}


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """Train and test arrays, channels last (Keras) and channels first (torch)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def torch_x(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(x, -1, 1))

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test, "
            f"input {self.x_train.shape[1:]}, {len(np.unique(self.y_train))} classes"
        )


def load_mnist1d(samples: int = 5000, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """MNIST-1D made by the ``mnist1d`` package's generator (no download), 80/20 split, cached."""
    cache = Path(cache_dir or Path.home() / ".cache" / "ridurre-bench") / f"mnist1d_{samples}_seed42.npz"
    if not cache.exists():
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = samples
        data = make_dataset(args)  # seeded by args.seed (42): the same arrays every time
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, x=data["x"], y=data["y"], x_test=data["x_test"], y_test=data["y_test"])
        os.replace(tmp, cache)
    with np.load(cache) as d:
        x, x_test = (d[k][..., None].astype(np.float32) for k in ("x", "x_test"))
        return Dataset("mnist1d", x, d["y"].astype(np.int64), x_test, d["y_test"].astype(np.int64))


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], a fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 8, 8, 1)
    xtr, xte, ytr, yte = train_test_split(x, y.astype(np.int64), test_size=0.25, stratify=y, random_state=0)
    return Dataset("digits", xtr, ytr, xte, yte)


def load_dataset(name: str, mnist1d_samples: int = 5000, cache_dir=None) -> Dataset:
    if name == "mnist1d":
        return load_mnist1d(mnist1d_samples, cache_dir)
    if name == "digits":
        return load_digits()
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(ARCHITECTURES)}")


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the training examples in ``epoch``: the same in both frameworks."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# --------------------------------------------------------------------------- Keras


def keras_model(arch: Architecture, widths=None) -> keras.Model:
    """The Keras network (layers ``conv{i}``, ``bn{i}``, ``fc``), with ``widths`` convolution filters."""
    widths = arch.widths if widths is None else widths
    conv = keras.layers.Conv1D if arch.dims == 1 else keras.layers.Conv2D
    pool = keras.layers.MaxPooling1D if arch.dims == 1 else keras.layers.MaxPooling2D
    gap = keras.layers.GlobalAveragePooling1D if arch.dims == 1 else keras.layers.GlobalAveragePooling2D
    x = inputs = keras.Input(arch.input_shape)
    for i, ((_, kernel, pooled), width) in enumerate(zip(arch.blocks, widths)):
        x = conv(int(width), kernel, padding="same", name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM_KERAS, epsilon=BN_EPSILON, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if pooled:
            x = pool(2, name=f"pool{i}")(x)
    x = gap(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(arch.classes, name="fc")(x), name=arch.name)


def keras_compile(model: keras.Model, lr: float = 1e-3) -> None:
    """A fresh Adam (torch's epsilon) and the logits cross-entropy."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr, epsilon=ADAM_EPSILON),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def keras_train(
    model, data: Dataset, first_epoch: int, end_epoch: int, seed: int, batch_size: int = 64, callbacks=None
):
    """Train epochs ``first_epoch .. end_epoch - 1`` on the shared batch order (one ``fit`` per epoch)."""
    for epoch in range(first_epoch, end_epoch):
        order = batch_order(seed, epoch, len(data.x_train))
        model.fit(
            data.x_train[order],
            data.y_train[order],
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )


def keras_accuracy(model, data: Dataset) -> float:
    logits = model.predict(data.x_test, batch_size=1024, verbose=0)
    return float((np.argmax(logits, axis=-1) == data.y_test).mean())


def keras_widths(model) -> list[int]:
    widths, i = [], 0
    while any(layer.name == f"conv{i}" for layer in model.layers):
        widths.append(int(model.get_layer(f"conv{i}").filters))
        i += 1
    return widths


def macs_of(arch: Architecture, widths) -> int:
    """MACs of the network with these widths, counted by ridurre's counter for both frameworks."""
    from ridurre.metrics import model_stats

    return int(model_stats(keras_model(arch, widths)).total_macs)


# --------------------------------------------------------------------------- torch


def torch_model(arch: Architecture, seed: int):
    """The torch twin (``features`` of conv/BN/ReLU/pool, ``fc``), initialized by torch from ``seed``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    conv = nn.Conv1d if arch.dims == 1 else nn.Conv2d
    norm = nn.BatchNorm1d if arch.dims == 1 else nn.BatchNorm2d
    pool = nn.MaxPool1d if arch.dims == 1 else nn.MaxPool2d
    gap = nn.AdaptiveAvgPool1d(1) if arch.dims == 1 else nn.AdaptiveAvgPool2d(1)
    layers, channels = [], arch.input_shape[-1]
    for filters, kernel, pooled in arch.blocks:
        layers += [conv(channels, filters, kernel, padding=kernel // 2), norm(filters, eps=BN_EPSILON), nn.ReLU()]
        if pooled:
            layers.append(pool(2))
        channels = filters
    layers += [gap, nn.Flatten()]
    return nn.Sequential(nn.Sequential(*layers), nn.Linear(channels, arch.classes))


def torch_widths(model) -> list[int]:
    from torch import nn

    return [m.out_channels for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]


def torch_train(model, data: Dataset, first_epoch, end_epoch, seed, batch_size=64, lr=1e-3, after_backward=None):
    """Train with a fresh Adam on the shared batch order; ``after_backward(model)`` runs before
    each optimizer step (Torch-Pruning's ``pruner.regularize`` for sparse training)."""
    import torch

    x, y = torch.from_numpy(data.torch_x(data.x_train)), torch.from_numpy(data.y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=ADAM_EPSILON)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    for epoch in range(first_epoch, end_epoch):
        order = torch.from_numpy(batch_order(seed, epoch, len(x)))
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            if after_backward is not None:
                after_backward(model)
            optimizer.step()
    model.eval()


def torch_logits(model, data: Dataset, x: np.ndarray) -> np.ndarray:
    """The torch model's outputs (evaluation mode) on channels-last inputs ``x``."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(data.torch_x(x))).numpy()


def torch_accuracy(model, data: Dataset) -> float:
    return float((torch_logits(model, data, data.x_test).argmax(-1) == data.y_test).mean())


def torch_gradients(model, data: Dataset, batches: int = 8, batch_size: int = 64, seed: int = 0) -> None:
    """Accumulate the loss gradients of ``batches`` training batches in ``.grad`` (what
    Torch-Pruning's Taylor and Hessian importances read)."""
    import torch

    x, y = torch.from_numpy(data.torch_x(data.x_train)), torch.from_numpy(data.y_train)
    order = torch.from_numpy(batch_order(seed, 10_000, len(x)))
    model.eval()  # the statistics the pruned model will be evaluated with
    model.zero_grad()
    loss_fn = torch.nn.CrossEntropyLoss()
    for b in range(batches):
        idx = order[b * batch_size : (b + 1) * batch_size]
        loss_fn(model(x[idx]), y[idx]).backward()


def torch_to_keras(tmodel, kmodel) -> None:
    """Copy the torch twin's weights (and BN statistics) into the Keras model, layer by layer."""
    from torch import nn

    convs = [m for m in tmodel.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    norms = [m for m in tmodel.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    fc = [m for m in tmodel.modules() if isinstance(m, nn.Linear)][-1]
    for i, (c, n) in enumerate(zip(convs, norms)):
        w = c.weight.detach().numpy()
        axes = (2, 1, 0) if w.ndim == 3 else (2, 3, 1, 0)  # (out, in, k...) -> (k..., in, out)
        kmodel.get_layer(f"conv{i}").set_weights([w.transpose(axes), c.bias.detach().numpy()])
        stats = [n.weight, n.bias, n.running_mean, n.running_var]
        kmodel.get_layer(f"bn{i}").set_weights([t.detach().numpy() for t in stats])
    kmodel.get_layer("fc").set_weights([fc.weight.detach().numpy().T, fc.bias.detach().numpy()])
