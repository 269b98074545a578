"""Do the criteria differ? Prune a 1-D BatchNorm CNN trained on MNIST-1D with each criterion.

Usage::

    python bench/criteria_mnist1d.py [--seeds 0,1,2] [--levels 2,3,5] [--criteria random,l1,...]
                                     [--epochs 30] [--steps 3] [--finetune-epochs 3] [--quick]
                                     [--json results.json]

MNIST-1D (Greydanus 2020) is generated offline by the ``mnist1d`` package (``pip install
mnist1d``; 4,000 training and 1,000 test sequences of length 40, 10 classes). For every seed a
1-D CNN (four Conv1D-BatchNorm-ReLU blocks of 32-64 channels, global average pooling, a Dense
classifier; 0.74 M MACs) is trained with Adam for ``--epochs`` epochs, then pruned to 2x, 3x and
5x fewer MACs with each criterion by ``ridurre.Pruner``: ``--steps`` iterative steps, each
followed by ``--finetune-epochs`` epochs of a freshly compiled Adam(1e-3), the last step shrunk
to meet the MACs target (``target_speedup``). Every criterion starts from the same trained model
of its seed. Rows print mean ± standard deviation of the test accuracy over the seeds, the MACs
reduction reached and the wall time of a run.

Criteria (names of ``ridurre.criteria`` with options):

- ``random``; ``l1``, ``l2``, ``bn_scale``, ``fpgm``, ``kmeans``, ``lamp`` (global ranking):
  group-level scores (producers, consumers, BatchNorm scales);
- ``l1_producers``, ``bn_producers``: ridurre 0.0.2's producer-only scores;
- ``taylor``, ``hessian``: gradients of the loss on 512 training examples;
- ``hrank``, ``apoz``: activations on 512 training examples;
- ``l1+group_lasso``, ``bn+slimming``: the same trained model sparse-trained first
  (``--sparse-epochs`` epochs with ``GroupLassoSparsity(alpha=4)`` or ``BNScaleSparsity``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ridurre  # noqa: E402
from ridurre.metrics import model_stats  # noqa: E402
from ridurre.pruning.sparse import BNScaleSparsity, GroupLassoSparsity  # noqa: E402

DEFAULT_CRITERIA = (
    "random,l1,l1_producers,l2,bn_scale,bn_producers,lamp,fpgm,kmeans,taylor,hessian,hrank,l1+group_lasso,bn+slimming"
)


def load_mnist1d(seed=42):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    x_train = data["x"].astype("float32")[..., None]
    x_test = data["x_test"].astype("float32")[..., None]
    mean, sd = x_train.mean(), x_train.std()
    return (x_train - mean) / sd, data["y"].astype("int64"), (x_test - mean) / sd, data["y_test"].astype("int64")


def cnn(seed):
    keras.utils.set_random_seed(seed)
    x = keras.Input((40, 1))
    h = x
    for i, (width, kernel) in enumerate([(32, 5), (64, 3), (64, 3), (64, 3)]):
        h = keras.layers.Conv1D(width, kernel, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.ReLU()(h)
        if i == 1:
            h = keras.layers.MaxPooling1D(2)(h)
    out = keras.layers.Dense(10, activation="softmax", name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(x, out)


def compile_fn(model):
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


def criterion_spec(name, x_train, y_train):
    """(criterion, criterion_options, Pruner options, sparse callback or None) of a row name."""
    sample = slice(0, 512)
    data = {"data": x_train[sample]}
    grads = {"data": x_train[sample], "labels": y_train[sample], "batch_size": 64}
    table = {
        "l1_producers": ("l1", {"scope": "producers"}, {}, None),
        "bn_producers": ("bn_scale", {"scope": "producers"}, {}, None),
        "lamp": ("lamp", {}, {"ranking": "global", "min_channels": 4}, None),
        "taylor": ("taylor", grads, {}, None),
        "hessian": ("hessian", grads, {}, None),
        "hrank": ("hrank", data, {}, None),
        "apoz": ("apoz", data, {}, None),
        "l1+group_lasso": ("l1", {}, {}, lambda: GroupLassoSparsity(1e-2, alpha=4.0)),
        "bn+slimming": ("bn_scale", {}, {}, lambda: BNScaleSparsity(1e-2)),
    }
    return table.get(name, (name, {}, {}, None))


def run_one(name, trained, data, level, args, seed):
    x_train, y_train, x_test, y_test = data
    criterion, options, extra, sparse = criterion_spec(name, x_train, y_train)
    started = time.perf_counter()
    model = trained
    if sparse is not None:
        model = keras.models.clone_model(trained)
        model.set_weights(trained.get_weights())
        compile_fn(model)
        keras.utils.set_random_seed(seed)
        model.fit(x_train, y_train, batch_size=64, epochs=args.sparse_epochs, verbose=0, callbacks=[sparse()])

    def finetune(m, initial_epoch, end_epoch):
        keras.utils.set_random_seed(seed * 1000 + initial_epoch)
        return m.fit(x_train, y_train, batch_size=64, initial_epoch=initial_epoch, epochs=end_epoch, verbose=0)

    step = 1.0 - (1.0 / level) ** (1.0 / (2 * args.steps))
    pruner = ridurre.Pruner(
        criterion,
        compile_fn,
        finetune,
        args.finetune_epochs,
        pruning_factor=step,
        criterion_options=options,
        target_speedup=level,
        maximum_prune_iterations=args.steps + 2,
        maximum_pruning_percent=None,
        seed=seed,
        **extra,
    )
    pruned, _ = pruner.run_pruning(model)
    macs = model_stats(trained).total_macs / model_stats(pruned).total_macs
    seconds = time.perf_counter() - started
    return {"accuracy": accuracy(pruned, x_test, y_test), "macs_reduction": macs, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--levels", default="2,3,5")
    parser.add_argument("--criteria", default=DEFAULT_CRITERIA)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--sparse-epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one seed, 2x only, 3 criteria, 3 epochs")
    parser.add_argument("--json", help="write every run's numbers there (and read them back to resume)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.levels, args.criteria, args.epochs, args.finetune_epochs = "0", "2", "random,l1,taylor", 3, 1
        args.sparse_epochs = 1
    seeds = [int(s) for s in args.seeds.split(",")]
    levels = [float(v) for v in args.levels.split(",")]
    names = args.criteria.split(",")
    results = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else {}
    data = load_mnist1d()
    print(f"MNIST-1D: {len(data[0])} train, {len(data[2])} test; load average {os.getloadavg()[0]:.1f}", flush=True)
    for seed in seeds:
        trained = cnn(seed)
        compile_fn(trained)
        keras.utils.set_random_seed(seed)
        trained.fit(data[0], data[1], batch_size=64, epochs=args.epochs, verbose=0)
        base = accuracy(trained, data[2], data[3])
        results.setdefault("unpruned", {})[str(seed)] = base
        print(f"seed {seed}: unpruned {100 * base:.2f} %, {model_stats(trained).total_macs:,} MACs", flush=True)
        for level in levels:
            for name in names:
                key = f"{name}@{level:g}x"
                if str(seed) in results.get(key, {}):
                    continue
                row = run_one(name, trained, data, level, args, seed)
                results.setdefault(key, {})[str(seed)] = row
                reached = f"{row['macs_reduction']:.2f}x MACs, {row['seconds']:.0f} s"
                print(f"  {key:>22}: {100 * row['accuracy']:.2f} % ({reached})", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(results, indent=1))
    print()
    print("| criterion | " + " | ".join(f"{v:g}x MACs" for v in levels) + " |")
    print("|---|" + "---:|" * len(levels))
    for name in names:
        cells = []
        for level in levels:
            done = results.get(f"{name}@{level:g}x", {})
            runs = [done[str(s)] for s in seeds if str(s) in done]
            if not runs:
                cells.append("n/a")
                continue
            acc = [100 * r["accuracy"] for r in runs]
            spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
            reached = statistics.mean(r["macs_reduction"] for r in runs)
            cells.append(f"{statistics.mean(acc):.2f} ± {spread:.2f} ({reached:.2f}x)")
        print(f"| {name} | " + " | ".join(cells) + " |")
    base = [100 * results["unpruned"][str(s)] for s in seeds]
    print(f"\nunpruned: {statistics.mean(base):.2f} ± {statistics.stdev(base) if len(base) > 1 else 0:.2f} %")


if __name__ == "__main__":
    main()
