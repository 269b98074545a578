"""Prune a CIFAR-10 ResNet-20 with KMeans filter clustering: the ridurre tutorial.

This is the original ridurre example brought to Keras 3: train a CIFAR ResNet, then let
``KMeansFilterPruning`` remove redundant filters in small steps, fine-tuning after each one,
until 40 % of the filters are gone. Read it from top to bottom: the comments explain every
decision, and the two callbacks that ridurre needs from you are in section 4.

How the pruning works
---------------------
Every iteration of ``run_pruning``:

1. traces the model into *channel groups*: channels that must be removed together. In a
   ResNet, the residual ``Add`` layers join the outputs of the second convolution of every
   block of a stage and of the convolution that starts the stage (the stem or the shortcut):
   they form one group, pruned as one;
2. clusters the filters of each group with KMeans into ``ceil(0.9 * n)`` clusters and keeps
   the filter nearest to each centroid: similar (redundant) filters go, ~10 % per iteration;
3. removes them in one rebuild of the model (the BatchNormalization layers and the next
   convolutions are sliced too, the weights of everything else are kept), checks the new
   model, and calls YOUR compile callback, then YOUR finetune callback;
4. records the iteration (filters, parameters, MACs, validation accuracy) and, with
   ``output_dir``, writes ``logs/history.json``, ``logs/history.csv`` and a ``.keras``
   checkpoint, so that an interrupted run can ``resume``.

It stops after ``maximum_prune_iterations`` iterations, or when ``maximum_pruning_percent``
of the original filters are gone (the last step is shrunk so that the limit is never crossed).

Running it
----------
The full example needs CIFAR-10 and, realistically, a GPU (on a CPU, ResNet-20 trains at a few
hundred images per second: the 164-epoch schedule takes the best part of a day)::

    python example/model_pruning_example.py --output runs/resnet20          # downloads CIFAR-10
    python example/model_pruning_example.py --cifar-path ~/data/cifar-10-batches-py --output runs/resnet20
    python example/model_pruning_example.py --output runs/resnet20 --resume  # continue after a crash

``--resume`` continues an interrupted training (keras ``BackupAndRestore``) or pruning
(ridurre's ``resume=True``: from the last iteration's checkpoint), and it continues a pruning
that stopped at ``--max-iterations`` when you raise it. The final training and the comparison
are always run again.

``--quick`` runs the same pipeline on scikit-learn's bundled 8x8 digits (no download) with a
ResNet-8 and short schedules: it takes a few minutes on a laptop CPU::

    python example/model_pruning_example.py --quick --output /tmp/ridurre_quick

What ends up in ``--output``::

    baseline.keras           the trained, unpruned model
    models/iteration_*.keras one checkpoint per pruning iteration (written by ridurre)
    logs/history.json|csv    the per-iteration pruning history (written by ridurre)
    logs/epochs.csv          every training and finetuning epoch (keras CSVLogger)
    tensorboard/             the same epochs for TensorBoard (if the tensorboard package is installed)
    state.json               where to resume from (written by ridurre)
    final.keras              the pruned, finetuned model
    summary.json             the before/after numbers printed at the end
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ridurre  # noqa: E402
from ridurre.metrics import measure_latency, model_stats  # noqa: E402
from ridurre.zoo.datasets import load_cifar10, load_digits  # noqa: E402
from ridurre.zoo.models import resnet_cifar  # noqa: E402

# Settings of the two modes. Every value can be overridden on the command line.
FULL = dict(
    depth=20,  # ResNet-20: 0.27 M parameters, 41 M MACs per 32x32 image
    width=1.0,
    epochs=164,  # He et al. 2016: 64k iterations of batch 128 ~ 164 epochs, lr / 10 at 50 % and 75 %
    batch_size=128,
    lr=0.1,
    weight_decay=1e-4,
    finetune_lr=0.01,
    finetune_epochs=6,  # as in the original README
    final_epochs=10,  # as in the original example: "train again for a reasonable number of epochs"
    augment=True,
    bn_momentum=0.99,  # the Keras default
    latency_batch=32,
)
QUICK = dict(
    depth=8,  # ResNet-8 on 8x8 digits: 78 k parameters, trains in seconds
    width=1.0,
    epochs=15,
    batch_size=64,
    lr=0.05,
    weight_decay=1e-4,
    finetune_lr=0.01,
    finetune_epochs=2,
    final_epochs=2,
    augment=False,
    bn_momentum=0.9,  # 20 steps per epoch: see build_model
    latency_batch=0,  # an 8x8 ResNet-8 is too small for a meaningful latency on a CPU
)

logger = logging.getLogger("model_pruning_example")


# -------------------------------------------------------------------------------------------
# 1. Data
# -------------------------------------------------------------------------------------------
def load_data(args):
    """CIFAR-10 (full mode) or the bundled digits (``--quick``), as a ``ridurre.zoo.datasets.Dataset``.

    Both come with a validation split carved from the training images (the finetune callback
    reports on it) and an untouched test split (the before/after accuracy is measured on it).
    """
    if args.quick:
        return load_digits(seed=args.seed)
    # path=None downloads with keras.datasets; a local copy is the cifar-10-batches-py folder,
    # the cifar-10-python.tar.gz archive or an .npz (x_train, y_train, x_test, y_test).
    try:
        return load_cifar10(args.cifar_path, subset=args.subset, seed=args.seed)
    except Exception as exc:  # keras.datasets raises a bare Exception when the download fails
        if args.cifar_path is not None:
            raise
        raise SystemExit(
            f"could not download CIFAR-10 ({exc}).\nWithout internet, pass --cifar-path with a "
            "local copy, or run the example on the bundled digits with --quick."
        ) from exc


class TrainingBatches(keras.utils.PyDataset):
    """Training batches, reshuffled every epoch, optionally with the standard CIFAR augmentation.

    Two details matter for pruning:

    * every batch has the same size (the last, incomplete one is left out; the reshuffling
      puts those images in the next epoch's batches). TensorFlow traces the training step once
      per batch shape, and every pruned model is traced anew: a ragged last batch would double
      the tracing time of every finetuning;
    * one object serves the whole run, so each finetuning sees new shuffles and augmentations.

    Augmentation (``augment=True``): pad by 1/8 of the image size (4 pixels for 32x32), take a
    random crop of the original size and, with ``flip=True``, flip horizontally half of the
    time (not for digits or text, where left and right matter). Pure NumPy: it works with every
    Keras backend.
    """

    def __init__(self, x, y, batch_size, augment=False, flip=True, seed=0):
        super().__init__()
        self.x, self.y, self.augment, self.flip = x, y, augment, flip
        self.batch_size = min(batch_size, len(x))
        self.pad = max(1, x.shape[1] // 8)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        idx = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        x, y = self.x[idx], self.y[idx]
        if self.augment:
            x = self._augment(x)
        return x, y

    def _augment(self, x):
        p, (h, w) = self.pad, x.shape[1:3]
        padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="constant")
        out = np.empty_like(x)
        for i, (dy, dx) in enumerate(self.rng.integers(0, 2 * p + 1, size=(len(x), 2))):
            out[i] = padded[i, dy : dy + h, dx : dx + w]
        if self.flip:
            flipped = self.rng.random(len(x)) < 0.5
            out[flipped] = out[flipped, :, ::-1]
        return out

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def validation_data(data):
    return (data.x_val, data.y_val) if len(data.x_val) else None


# -------------------------------------------------------------------------------------------
# 2. The model
# -------------------------------------------------------------------------------------------
def build_model(data, args):
    """``ridurre.zoo.models.resnet_cifar``: ResNet-20 (or ``--depth``) for the data's image shape.

    BatchNormalization keeps moving averages of the batch statistics for inference, with a
    momentum of 0.99 by default: they forget their past within a few hundred steps. Every
    pruning step changes what flows into the next layers, so the finetuning must run long
    enough for the averages to catch up, or the validation accuracy reads stale statistics.
    CIFAR-10 finetunings are thousands of steps; the digits have 20 steps per epoch, so the
    quick run uses a faster average (0.9).
    """
    model = resnet_cifar(
        args.depth, num_classes=data.num_classes, input_shape=data.x_train.shape[1:], width_multiplier=args.width
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = args.bn_momentum  # part of the layer config: pruned models keep it
    return model


# -------------------------------------------------------------------------------------------
# 3. Logging callbacks (keras callbacks, shared by the training and every finetuning)
# -------------------------------------------------------------------------------------------
class ModelSizeLogger(keras.callbacks.Callback):
    """Add the current number of parameters to the epoch logs, so that the CSV file and
    TensorBoard show the model shrinking next to the accuracy (the original ridurre's
    ``ModelParametersCallback``). Put it BEFORE the callbacks that write the logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["params"] = float(self.model.count_params())


def logging_callbacks(output):
    """One list of callbacks for the whole run. Pruning continues the epoch numbering
    (``initial_epoch``), so training and all finetunings form a single curve."""
    callbacks = [
        ModelSizeLogger(),
        keras.callbacks.CSVLogger(str(output / "logs" / "epochs.csv"), append=True),
    ]
    if importlib.util.find_spec("tensorboard") is not None:
        # write_graph=False: the graph changes at every pruning iteration
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(output / "tensorboard"), write_graph=False))
    else:
        logger.warning(
            "TensorBoard logs are skipped: the tensorboard package is not installed "
            "(pip install tensorboard); logs/epochs.csv has the same numbers"
        )
    return callbacks


# -------------------------------------------------------------------------------------------
# 4. The two callbacks ridurre needs
# -------------------------------------------------------------------------------------------
#
# Pruning builds a NEW model at every iteration (fewer filters means new weight shapes), and a
# new model has no optimizer: ridurre hands it to your **compile function**, ``fn(model)``,
# and then to your **finetune function**, ``fn(model, initial_epoch, end_epoch)``, which
# trains it for a few epochs to recover the accuracy lost by the removal.
#
# ``initial_epoch`` and ``end_epoch`` go straight to ``model.fit(initial_epoch=..., epochs=...)``
# (Keras' ``epochs`` is the index of the last epoch, not a count; the original README calls
# this argument ``finetune_epochs``). With nb_trained_for_epochs=164 and nb_finetune_epochs=6,
# the first finetune is fit(initial_epoch=164, epochs=170), the next one
# fit(initial_epoch=170, epochs=176), and so on: TensorBoard and the CSV log continue where
# the training stopped.
#
# Return the ``History`` from the finetune function: ridurre records it, and its last
# ``val_accuracy`` becomes the "metric" of the iteration in history.json.


def make_compile_fn(lr, weight_decay, jit_compile, steps_per_epoch=None, epochs=None):
    """A compile function: SGD with Nesterov momentum and (decoupled) weight decay.

    With ``epochs`` the learning rate is divided by 10 at 50 % and 75 % of the training, as
    in He et al. 2016; without, it is constant (what the finetuning after pruning wants: a
    small learning rate that repairs the network without undoing the training).
    """
    if epochs:
        boundaries = [int(steps_per_epoch * epochs * 0.5), int(steps_per_epoch * epochs * 0.75)]
        lr = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [lr, lr / 10, lr / 100])

    def compile_model(model):
        model.compile(
            # a new optimizer each time: its state (momentum) has the shapes of the old weights
            optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay),
            loss="sparse_categorical_crossentropy",  # integer labels, as the loaders return them
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )

    return compile_model


def make_finetune_fn(batches, data, args, callbacks):
    """The finetune function: a few epochs on the training batches, reporting on the validation
    split, with the same logging callbacks as the training."""

    def finetune_model(model, initial_epoch, end_epoch):
        return model.fit(
            batches,
            validation_data=validation_data(data),
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            callbacks=callbacks,
            verbose=args.verbose,
        )

    return finetune_model


# -------------------------------------------------------------------------------------------
# 5. Measuring a model
# -------------------------------------------------------------------------------------------
def conv_filters(model):
    return sum(layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D))


def measure(model, data, latency_batch):
    """Test accuracy, parameters, MACs (one image), Conv2D filters and, with a
    ``latency_batch``, the median inference time of a batch."""
    predictions = model.predict(data.x_test, batch_size=256, verbose=0)
    stats = model_stats(model)
    result = {
        "accuracy": float(np.mean(np.argmax(predictions, axis=1) == data.y_test)),
        "params": int(stats.total_params),
        "macs": int(stats.total_macs),
        "filters": conv_filters(model),
    }
    if latency_batch:
        # compiled=True times the compiled forward pass (what deployed inference runs), not
        # the eager call, whose Python overhead would hide the gain of a smaller model
        result["latency_ms"] = float(
            measure_latency(model, batch_size=latency_batch, repeats=20, compiled=True).median_ms
        )
    return result


def print_summary(before, after, pruning_percent, history, latency_batch):
    def pct(a, b):
        return f"{(b - a) / a:+.1%}" if a else ""

    print()
    print("## Before / after pruning (test split)")
    print()
    print("| | unpruned | pruned | change |")
    print("|---|---:|---:|---:|")
    print(
        f"| test accuracy | {before['accuracy']:.2%} | {after['accuracy']:.2%} "
        f"| {100 * (after['accuracy'] - before['accuracy']):+.2f} points |"
    )
    for key, label in (("params", "parameters"), ("macs", "MACs per image"), ("filters", "Conv2D filters")):
        print(f"| {label} | {before[key]:,} | {after[key]:,} | {pct(before[key], after[key])} |")
    print(f"| pruning percent (filters removed) | 0.0% | {pruning_percent:.1%} | |")
    if latency_batch:
        print(
            f"| latency, compiled forward pass, batch of {latency_batch} (ms) | {before['latency_ms']:.1f} "
            f"| {after['latency_ms']:.1f} | {pct(before['latency_ms'], after['latency_ms'])} |"
        )
    print()
    print("## Pruning history (one row per iteration; val accuracy after its finetuning)")
    print()
    print("| iteration | epoch | filters | params | MACs | pruning % | val accuracy | seconds |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in history:
        metric = "n/a" if r.metric is None else f"{r.metric:.2%}"
        print(
            f"| {r.iteration} | {r.epoch} | {r.filters:,} | {r.params:,} | {r.macs:,} "
            f"| {r.pruning_percent:.1%} | {metric} | {r.seconds:.1f} |"
        )
    print()


# -------------------------------------------------------------------------------------------
# 6. The whole pipeline: train -> prune (with finetuning) -> train a bit more -> compare
# -------------------------------------------------------------------------------------------
def run(args):
    output = Path(args.output)
    if not args.resume and any(
        (output / name).exists() for name in ("baseline.keras", "state.json", "training_backup")
    ):
        raise SystemExit(f"{output} already holds a run: pass --resume to continue it, or choose another --output")
    keras.utils.set_random_seed(args.seed)
    data = load_data(args)
    logger.info("data: %r", data)
    (output / "logs").mkdir(parents=True, exist_ok=True)
    batches = TrainingBatches(
        data.x_train, data.y_train, args.batch_size, augment=args.augment, flip=not args.quick, seed=args.seed
    )
    callbacks = logging_callbacks(output)

    # -- train the baseline (or load it when resuming) ---------------------------------------
    baseline_path = output / "baseline.keras"
    compile_for_training = make_compile_fn(args.lr, args.weight_decay, args.jit_compile, len(batches), args.epochs)
    if baseline_path.exists():
        logger.info("resuming: loading the trained model from %s", baseline_path)
        model = keras.models.load_model(baseline_path, compile=False)
    else:
        model = build_model(data, args)
        compile_for_training(model)
        logger.info("training %s (%s parameters) for %d epochs", model.name, f"{model.count_params():,}", args.epochs)
        # BackupAndRestore lets an interrupted training continue from its last epoch on --resume
        backup = keras.callbacks.BackupAndRestore(str(output / "training_backup"))
        model.fit(
            batches,
            validation_data=validation_data(data),
            epochs=args.epochs,
            callbacks=[backup] + callbacks,
            verbose=args.verbose,
        )
        model.save(baseline_path)
    before = measure(model, data, args.latency_batch)
    logger.info("unpruned: test accuracy %.2f%%", 100 * before["accuracy"])

    # -- prune -------------------------------------------------------------------------------
    # The finetuning uses its own compile function (a small constant learning rate); any
    # compile function works, the training one included.
    compile_for_finetuning = make_compile_fn(args.finetune_lr, args.weight_decay, args.jit_compile)
    pruning = ridurre.KMeansFilterPruning(
        args.clustering_factor,  # keep ceil(0.9 * n) filters of every group per iteration
        compile_for_finetuning,  # callback 1: fn(model)
        make_finetune_fn(batches, data, args, callbacks),  # callback 2: fn(model, initial_epoch, end_epoch)
        args.finetune_epochs,  # nb_finetune_epochs: epochs of finetuning after every pruning step
        maximum_pruning_percent=args.max_pruning_percent,  # stop once 40 % of the filters are gone
        maximum_prune_iterations=args.max_iterations,  # ... or after 12 iterations
        nb_trained_for_epochs=args.epochs,  # the finetuning epochs continue the numbering
        output_dir=str(output),  # history, checkpoints and state.json after every iteration
        resume=args.resume,  # continue from state.json if there is one
        seed=args.seed,  # KMeans is seeded: same seed, same filters removed
    )
    model, last_epoch = pruning.run_pruning(model)  # the trained model is left untouched

    # -- a little more training of the pruned model (optional, but recommended) --------------
    if args.final_epochs:
        logger.info("final training of the pruned model for %d epochs", args.final_epochs)
        model.fit(
            batches,
            validation_data=validation_data(data),
            initial_epoch=last_epoch,
            epochs=last_epoch + args.final_epochs,
            callbacks=callbacks,
            verbose=args.verbose,
        )
    model.save(output / "final.keras")

    # -- compare -----------------------------------------------------------------------------
    after = measure(model, data, args.latency_batch)
    pruning_percent = pruning.history[-1].pruning_percent if pruning.history else 0.0
    print_summary(before, after, pruning_percent, pruning.history, args.latency_batch)
    summary = {
        "mode": "quick" if args.quick else "full",
        "data": data.name,
        "model": model.name,
        "before": before,
        "after": after,
        "pruning_percent": pruning_percent,
        "iterations": len(pruning.history),
        "last_epoch": last_epoch + args.final_epochs,
        "history": [r.to_dict() for r in pruning.history],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a CIFAR ResNet, prune 40% of its filters with KMeansFilterPruning (finetuning "
        "after every step) and compare before/after. --quick runs the same on the bundled "
        "8x8 digits in a few minutes on a CPU.",
        epilog="Defaults in brackets are [full mode / --quick].",
    )

    def mode_default(name):
        def show(value):
            return ("on" if value else "off") if isinstance(value, bool) else value

        return f"[{show(FULL[name])} / {show(QUICK[name])}]"

    run_group = parser.add_argument_group("run")
    run_group.add_argument(
        "--quick",
        action="store_true",
        help="bundled digits data, ResNet-8, short schedules: minutes on a CPU, no download",
    )
    run_group.add_argument(
        "--output",
        default="pruning_output",
        metavar="DIR",
        help="where models, logs and the history go (default: %(default)s)",
    )
    run_group.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output (training and pruning)"
    )
    run_group.add_argument(
        "--seed", type=int, default=0, help="seed of the data splits, training and KMeans (default: %(default)s)"
    )
    run_group.add_argument("--verbose", type=int, choices=(0, 1, 2), default=None, help="keras fit verbosity [2 / 0]")

    data_group = parser.add_argument_group("data")
    data_group.add_argument(
        "--cifar-path",
        default=None,
        metavar="PATH",
        help="local CIFAR-10: the cifar-10-batches-py folder, cifar-10-python.tar.gz or an "
        ".npz (default: download with keras.datasets)",
    )
    data_group.add_argument(
        "--subset",
        type=int,
        default=None,
        metavar="N",
        help="train on a stratified subset of N CIFAR-10 images (quick experiments)",
    )
    data_group.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"random crops (and flips, CIFAR only) {mode_default('augment')}",
    )

    train_group = parser.add_argument_group("training")
    train_group.add_argument("--depth", type=int, default=None, help=f"ResNet depth, 6n+2 {mode_default('depth')}")
    train_group.add_argument("--width", type=float, default=None, help=f"width multiplier {mode_default('width')}")
    train_group.add_argument("--epochs", type=int, default=None, help=f"training epochs {mode_default('epochs')}")
    train_group.add_argument("--batch-size", type=int, default=None, help=f"{mode_default('batch_size')}")
    train_group.add_argument(
        "--lr", type=float, default=None, help=f"initial SGD learning rate, / 10 at 50%% and 75%% {mode_default('lr')}"
    )
    train_group.add_argument("--weight-decay", type=float, default=None, help=f"{mode_default('weight_decay')}")
    train_group.add_argument(
        "--bn-momentum",
        type=float,
        default=None,
        help=f"BatchNormalization momentum (see build_model) {mode_default('bn_momentum')}",
    )
    train_group.add_argument(
        "--jit-compile",
        choices=("auto", "on", "off"),
        default=None,
        help="XLA compilation; every pruned model is compiled anew, and on a CPU XLA "
        "compilation costs more than it saves for small models [auto / off]",
    )

    prune_group = parser.add_argument_group("pruning")
    prune_group.add_argument(
        "--clustering-factor",
        type=float,
        default=0.9,
        help="KMeans keeps ceil(factor * n) filters of every group per iteration (default: %(default)s)",
    )
    prune_group.add_argument(
        "--max-pruning-percent",
        type=float,
        default=0.4,
        help="stop when this share of the filters is removed (default: %(default)s)",
    )
    prune_group.add_argument(
        "--max-iterations", type=int, default=12, help="at most this many pruning iterations (default: %(default)s)"
    )
    prune_group.add_argument(
        "--finetune-epochs",
        type=int,
        default=None,
        help=f"epochs of finetuning after every pruning step {mode_default('finetune_epochs')}",
    )
    prune_group.add_argument(
        "--finetune-lr",
        type=float,
        default=None,
        help=f"constant learning rate of the finetuning {mode_default('finetune_lr')}",
    )
    prune_group.add_argument(
        "--final-epochs",
        type=int,
        default=None,
        help=f"extra epochs for the pruned model at the end {mode_default('final_epochs')}",
    )
    prune_group.add_argument(
        "--latency-batch",
        type=int,
        default=None,
        help=f"batch size of the latency measurement, 0 to skip it {mode_default('latency_batch')}",
    )

    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for name, value in preset.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.verbose is None:
        args.verbose = 0 if args.quick else 2
    if args.jit_compile is None:
        args.jit_compile = "off" if args.quick else "auto"
    args.jit_compile = {"auto": "auto", "on": True, "off": False}[args.jit_compile]
    if args.quick and (args.cifar_path or args.subset):
        parser.error("--cifar-path and --subset are for the CIFAR-10 run, not --quick")
    return args


def main(argv=None):
    args = parse_args(argv)
    # ridurre reports every iteration on the "ridurre" logger
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    started = time.perf_counter()
    run(args)
    print(f"done in {time.perf_counter() - started:.0f} s; everything is in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
