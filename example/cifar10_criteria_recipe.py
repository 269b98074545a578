"""Reproduce the published CIFAR-10 anchors: ResNet-56 and VGG16 pruned to 2x-2.5x fewer MACs with
each criterion, with and without sparse training.

The papers this recipe lines up with report CIFAR-10 test accuracy after pruning about half the
FLOPs of these two networks: L1 (Li et al. 2017), Network Slimming (Liu et al. 2017), FPGM (He
et al. 2019), HRank (Lin et al. 2020), Taylor (Molchanov et al. 2019), LAMP (Lee et al. 2021)
and DepGraph with sparse learning (Fang et al. 2023: ResNet-56 at 2.13x fewer MACs, +0.38
points). Compare the table this script writes with their tables; the recipe is the same for
every criterion, so differences between rows are the criteria's.

Recipe (for each architecture):

1. train the network from scratch: SGD with momentum 0.9 and Nesterov, learning rate 0.1 divided
   by 10 at 50 % and 75 % of ``--epochs`` (160), decoupled weight decay 5e-4, batch 128, random
   crops (4-pixel padding) and horizontal flips;
2. for each criterion (``--criteria``): ``ridurre.Pruner(criterion, ...)`` removes channels in
   ``--steps`` (5) steps until the model has ``--speedup`` (2.0) times fewer MACs, each step
   followed by ``--finetune-epochs`` (4) epochs at learning rate 0.01; gradient criteria use 1,024
   training images, activation criteria 512;
3. with ``--sparse``, two more rows: the trained model is first sparse-trained for
   ``--sparse-epochs`` (20) epochs at learning rate 0.01, with group lasso over the coupled
   channel groups (``GroupLassoSparsity(alpha=4)``, DepGraph's "SL") then pruned with ``l1``, and
   with L1 on the BatchNorm scales (``BNScaleSparsity``, Network Slimming) then pruned with
   ``bn_scale``;
4. every pruned model is finetuned for ``--final-epochs`` (40) more epochs (cosine decay from 0.01)
   and evaluated on the test set.

With a GPU and a local copy of CIFAR-10 (the ``cifar-10-batches-py`` directory or its
``.tar.gz``; without ``--cifar-path`` Keras downloads it)::

    python example/cifar10_criteria_recipe.py --arch resnet56 --cifar-path ~/data/cifar-10-batches-py \\
        --output runs/resnet56 --sparse
    python example/cifar10_criteria_recipe.py --arch vgg16 --speedup 2.5 --output runs/vgg16 --sparse \\
        --criteria l1,bn_scale,fpgm,taylor,hrank,random

A full ResNet-56 run (160 training epochs, then per criterion 5 x 4 finetune epochs and 40 final
epochs) is about 400 epochs of CIFAR-10: a few hours on one modern GPU. ``--baseline FILE``
reuses a trained model (the first run saves ``baseline.keras`` in ``--output``).

``--quick`` runs the same pipeline in a few minutes on a CPU, as a smoke test: bundled
scikit-learn digits scaled to 32x32x3 (no download), a ResNet-8 and a VGG16 at 1/8 width, one
training epoch and short schedules. Its accuracies mean nothing.

Output in ``--output``: ``baseline.keras``, one directory per criterion (ridurre's checkpoints,
``logs/history.json``, ``plan.json``), ``final_<criterion>.keras``, ``summary.json`` and
``summary.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import os
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
from ridurre.zoo.datasets import load_cifar10, load_digits  # noqa: E402
from ridurre.zoo.models import resnet_cifar, vgg16_cifar10  # noqa: E402

CRITERIA = "random,l1,bn_scale,fpgm,lamp,taylor,hessian,hrank"
SPARSE_ROWS = {  # row: (criterion, sparse-training callback, its options)
    "l1+group_lasso": ("l1", GroupLassoSparsity, {"alpha": 4.0}),
    "bn+slimming": ("bn_scale", BNScaleSparsity, {}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--arch", choices=("resnet56", "vgg16"), default="resnet56")
    p.add_argument("--criteria", default=CRITERIA, help=f"comma-separated criteria (default: {CRITERIA})")
    p.add_argument("--sparse", action="store_true", help="add the sparse-training rows (group lasso, slimming)")
    p.add_argument("--speedup", type=float, default=2.0, help="prune to this many times fewer MACs (default 2)")
    p.add_argument("--cifar-path", help="local CIFAR-10 (directory, .tar.gz or .npz); default: keras download")
    p.add_argument("--baseline", help="a trained .keras model to start from instead of training one")
    p.add_argument("--epochs", type=int, default=160, help="training epochs of the baseline")
    p.add_argument("--steps", type=int, default=5, help="pruning steps")
    p.add_argument("--finetune-epochs", type=int, default=4, help="finetune epochs after each step")
    p.add_argument("--final-epochs", type=int, default=40, help="finetune epochs after pruning")
    p.add_argument("--sparse-epochs", type=int, default=20)
    p.add_argument("--sparse-strength", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="cifar10_recipe_output")
    p.add_argument("--quick", action="store_true", help="a CPU smoke test on bundled digits (no download)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.steps, args.finetune_epochs, args.final_epochs, args.sparse_epochs = 1, 2, 1, 1, 1
        args.batch_size = 64
        args.sparse_strength = 1e-2
    return args


# -- data and models ------------------------------------------------------------------------
def load_data(args):
    """``(x_train, y_train, x_test, y_test)`` (float32 images, integer labels)."""
    if args.quick:
        digits = load_digits(validation_split=0.0)

        def scale(x):  # 8x8x1 in [0, 1] -> 32x32x3, each pixel a 4x4 block
            return np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3).astype("float32")

        return scale(digits.x_train), digits.y_train, scale(digits.x_test), digits.y_test
    data = load_cifar10(args.cifar_path, normalize="meanstd", validation_split=0.0)
    return data.x_train, data.y_train, data.x_test, data.y_test


def build_model(args):
    if args.arch == "resnet56":
        return resnet_cifar(depth=8, width_multiplier=0.5) if args.quick else resnet_cifar(depth=56)
    return vgg16_cifar10(width_multiplier=0.125 if args.quick else 1.0)


class Augmented(keras.utils.PyDataset):
    """Random 4-pixel-padded crops and horizontal flips, reshuffled every epoch (numpy only)."""

    def __init__(self, x, y, batch_size, seed):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = np.pad(self.x[idx], ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
        h, w = self.x.shape[1:3]
        dy, dx = self.rng.integers(0, 9, size=2)
        x = x[:, dy : dy + h, dx : dx + w]
        flip = self.rng.random(len(idx)) < 0.5
        x[flip] = x[flip, :, ::-1]
        return x, self.y[idx]


def sgd(learning_rate):
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=5e-4)


def compile_with(model, learning_rate):
    model.compile(sgd(learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"])


def train_baseline(args, data):
    x_train, y_train = data[:2]
    model = build_model(args)
    steps = int(np.ceil(len(x_train) / args.batch_size)) * args.epochs
    boundaries = [int(steps * 0.5), int(steps * 0.75)]
    compile_with(model, keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [0.1, 0.01, 0.001]))
    keras.utils.set_random_seed(args.seed)
    model.fit(Augmented(x_train, y_train, args.batch_size, args.seed), epochs=args.epochs, verbose=2)
    return model


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, batch_size=512, verbose=0), axis=1) == y))


# -- one row of the table -------------------------------------------------------------------
def criterion_options(name, data):
    x_train, y_train = data[:2]
    cls = ridurre.criteria.criterion_class(name)
    options = {}
    if "gradients" in cls.needs:
        options.update(data=x_train[:1024], labels=y_train[:1024], batch_size=128)
    elif "data" in cls.needs:
        options.update(data=x_train[:512])
    return options


def prune_row(row, baseline, args, data, out):
    """Prune (and finetune) a copy of ``baseline`` the way ``row`` says; the numbers of the row."""
    x_train, y_train, x_test, y_test = data
    criterion, sparse = (SPARSE_ROWS[row][0], SPARSE_ROWS[row]) if row in SPARSE_ROWS else (row, None)
    started = time.perf_counter()
    model = keras.models.clone_model(baseline)
    model.set_weights(baseline.get_weights())
    if sparse is not None:
        _, callback_class, options = sparse
        compile_with(model, 0.01)
        keras.utils.set_random_seed(args.seed)
        model.fit(
            Augmented(x_train, y_train, args.batch_size, args.seed),
            epochs=args.sparse_epochs,
            verbose=2,
            callbacks=[callback_class(args.sparse_strength, **options)],
        )

    def finetune(m, initial_epoch, end_epoch):
        batches = Augmented(x_train, y_train, args.batch_size, args.seed + initial_epoch)
        return m.fit(batches, initial_epoch=initial_epoch, epochs=end_epoch, verbose=2)

    step = 1.0 - (1.0 / args.speedup) ** (1.0 / (2 * args.steps))
    pruner = ridurre.Pruner(
        criterion,
        lambda m: compile_with(m, 0.01),
        finetune,
        args.finetune_epochs,
        pruning_factor=step,
        criterion_options=criterion_options(criterion, data),
        target_speedup=args.speedup,
        maximum_prune_iterations=args.steps + 3,
        maximum_pruning_percent=None,
        ranking="global" if criterion == "lamp" else "local",
        min_channels=2,
        seed=args.seed,
        output_dir=os.path.join(out, row),
    )
    pruned, epoch = pruner.run_pruning(model)
    final_steps = int(np.ceil(len(x_train) / args.batch_size)) * max(1, args.final_epochs)
    compile_with(pruned, keras.optimizers.schedules.CosineDecay(0.01, final_steps))
    if args.final_epochs:
        pruned.fit(Augmented(x_train, y_train, args.batch_size, args.seed), epochs=args.final_epochs, verbose=2)
    pruned.save(os.path.join(out, f"final_{row}.keras"))
    stats = model_stats(pruned)
    return {
        "row": row,
        "criterion": criterion,
        "params": int(stats.total_params),
        "macs": int(stats.total_macs),
        "accuracy": accuracy(pruned, x_test, y_test),
        "steps": len(pruner.history),
        "seconds": time.perf_counter() - started,
    }


def write_summary(out, args, base_stats, base_accuracy, rows):
    summary = {
        "arch": args.arch,
        "speedup_target": args.speedup,
        "quick": args.quick,
        "baseline": {"params": base_stats.total_params, "macs": base_stats.total_macs, "accuracy": base_accuracy},
        "rows": rows,
    }
    Path(out, "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# {args.arch} on {'digits at 32x32 (--quick)' if args.quick else 'CIFAR-10'}: {args.speedup:g}x fewer MACs",
        "",
        "| criterion | params | MACs (fewer) | test accuracy | change | time |",
        "|---|---:|---:|---:|---:|---:|",
        f"| unpruned | {base_stats.total_params:,} | {base_stats.total_macs:,} (1.00x) | "
        f"{100 * base_accuracy:.2f} % | | |",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['params']:,} | {r['macs']:,} ({base_stats.total_macs / r['macs']:.2f}x) | "
            f"{100 * r['accuracy']:.2f} % | {100 * (r['accuracy'] - base_accuracy):+.2f} | {r['seconds']:.0f} s |"
        )
    Path(out, "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    out = args.output
    os.makedirs(out, exist_ok=True)
    data = load_data(args)
    if args.baseline:
        baseline = keras.models.load_model(args.baseline)
    else:
        baseline = train_baseline(args, data)
        baseline.save(os.path.join(out, "baseline.keras"))
    compile_with(baseline, 0.01)
    base_accuracy = accuracy(baseline, data[2], data[3])
    base_stats = model_stats(baseline)
    print(f"{args.arch}: {base_stats.total_macs:,} MACs, test accuracy {100 * base_accuracy:.2f} %", flush=True)
    rows = [r for r in args.criteria.split(",") if r]
    if args.sparse:
        rows += list(SPARSE_ROWS)
    results = [prune_row(row, baseline, args, data, out) for row in rows]
    write_summary(out, args, base_stats, base_accuracy, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
