"""Layer sensitivity of VGG16 on CIFAR-10, then pruning each layer to the ratio it tolerates.

The workflow of easy-filter-pruning, on ridurre:

1. train VGG16-CIFAR10 (or ``--load`` a trained ``.keras`` model);
2. scan: for every prunable layer and ratio 0.1 ... 0.9, remove that share of the layer's filters
   (L1 criterion) and measure the accuracy on the VALIDATION split (masks: fast, exact);
3. plot the curves and choose, per layer, the largest ratio whose accuracy stays within
   ``--max-drop`` of the unpruned model (on the validation split: choosing on the test split,
   as the original did, would make the test accuracy below optimistic);
4. prune every layer to its ratio with ``SensitivityPruning`` in ``--nb-steps`` steps, each
   fine-tuned;
5. report test accuracy (used here only, for this final report), parameters and MACs before
   and after.

Full mode (real CIFAR-10, full-width VGG16: 15 M parameters, 313 M MACs per image). Training
takes hours on a CPU (about 60 images/s): run it on a GPU, or train elsewhere and ``--load``::

    python example/layer_sensitivity_vgg16_cifar10.py --cifar-path ~/data/cifar-10-batches-py
    python example/layer_sensitivity_vgg16_cifar10.py --load vgg16.keras --cifar-path ~/data/cifar-10-python.tar.gz

Without ``--cifar-path`` the data is downloaded by ``keras.datasets`` (needs internet).

Quick mode (a few minutes on a 2-core CPU, no download): VGG16 at 1/8 width on the bundled 8x8
digits, upscaled to 32x32x3::

    python example/layer_sensitivity_vgg16_cifar10.py --quick --output /tmp/sensitivity_demo

Outputs in ``--output``: ``trained.keras`` (unless loaded), ``sensitivity.csv/.json/.png``,
``chosen_ratios.json``, ``pruned.keras``, ``report.json`` and ``report.md``.
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

from ridurre._io import save_model_atomic, write_text_atomic  # noqa: E402
from ridurre.metrics import model_stats  # noqa: E402
from ridurre.sensitivity import SensitivityPruning, choose_ratios, scan  # noqa: E402
from ridurre.zoo.datasets import load_cifar10, load_digits  # noqa: E402
from ridurre.zoo.models import vgg16_cifar10  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1/8-width VGG16 on upscaled digits (minutes, CPU)")
    parser.add_argument("--load", help="a trained .keras model (skip training)")
    parser.add_argument("--cifar-path", help="local CIFAR-10 (directory, .tar.gz or .npz); default: download")
    parser.add_argument("--output", default="vgg16_sensitivity_output", help="output directory")
    parser.add_argument("--epochs", type=int, help="training epochs (default: 6 quick, 100 full)")
    parser.add_argument("--batch-size", type=int, help="default: 32 quick, 128 full")
    parser.add_argument("--criterion", default="l1", help="which filters go (l1, l2, random, kmeans, bn, ...)")
    parser.add_argument("--max-drop", type=float, default=0.02, help="accuracy drop tolerated per layer")
    parser.add_argument("--nb-steps", type=int, default=2, help="pruning iterations")
    parser.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs per step (default: 1 quick, 5 full)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def load_data(args):
    if not args.quick:
        return load_cifar10(args.cifar_path, normalize="meanstd", validation_split=0.1, seed=args.seed)
    data = load_digits(normalize="unit", validation_split=0.15, test_split=0.2, seed=args.seed)
    for split in ("x_train", "x_val", "x_test"):  # 8x8x1 -> 32x32x3 (nearest neighbour, grey -> RGB)
        x = getattr(data, split)
        setattr(data, split, np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3))
    return data


def compile_model(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )


def accuracy(model, x, y, batch_size):
    return float(model.evaluate(x, y, batch_size=batch_size, verbose=0, return_dict=True)["accuracy"])


def main(argv=None):
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    out = Path(args.output)
    epochs = args.epochs if args.epochs is not None else (6 if args.quick else 100)
    batch_size = args.batch_size or (32 if args.quick else 128)
    finetune_epochs = args.finetune_epochs if args.finetune_epochs is not None else (1 if args.quick else 5)
    learning_rate = 2e-3 if args.quick else 1e-3
    started = time.perf_counter()
    data = load_data(args)
    print(f"data: {data}")
    fit = dict(batch_size=batch_size, verbose=2 if not args.quick else 0)

    if args.load:
        model = keras.models.load_model(args.load, safe_mode=True)
        if not getattr(model, "compiled", False):
            compile_model(model, learning_rate)
    else:
        model = vgg16_cifar10(
            input_shape=data.x_train.shape[1:],
            num_classes=data.num_classes,
            width_multiplier=0.125 if args.quick else 1.0,
            dropout=0.3 if args.quick else 0.5,
        )
        if args.quick:  # let the moving statistics settle within the few hundred steps of a quick run
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 0.9
        compile_model(model, learning_rate)
        print(f"training {model.name} ({model.count_params():,} params) for {epochs} epochs")
        model.fit(data.x_train, data.y_train, epochs=epochs, validation_data=(data.x_val, data.y_val), **fit)
        save_model_atomic(model, str(out / "trained.keras"))

    # 2-3. scan on the validation split, choose the ratios there
    result = scan(
        model,
        data.x_val,
        data.y_val,
        criterion=args.criterion,
        batch_size=batch_size,
        data=data.x_train[:512],
        output_dir=out,
        progress=not args.no_progress,
    )
    result.save(out)
    ratios = choose_ratios(result, max_drop=args.max_drop)
    write_text_atomic(str(out / "chosen_ratios.json"), json.dumps(ratios, indent=1) + "\n")
    print(f"validation accuracy {result.baseline:.4f}; chosen ratios (max drop {args.max_drop:g}):")
    for layer, ratio in ratios.items():
        print(f"  {layer:<14} {ratio:.1f}")

    # 4. prune each layer to its ratio, fine-tuning after every step
    def finetune(pruned, initial_epoch, end_epoch):
        return pruned.fit(
            data.x_train,
            data.y_train,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            validation_data=(data.x_val, data.y_val),
            **fit,
        )

    pruning = SensitivityPruning(
        ratios,
        lambda m: compile_model(m, learning_rate / 2),
        finetune,
        finetune_epochs,
        nb_steps=args.nb_steps,
        criterion=args.criterion,
        data=data.x_train[:512],
        nb_trained_for_epochs=epochs,
        seed=args.seed,
    )
    pruned, _ = pruning.run_pruning(model)
    save_model_atomic(pruned, str(out / "pruned.keras"))

    # 5. the final report: test accuracy is looked at only here
    channels = {p.layer: p.channels_total for p in result.points}
    remaining = pruning.history[-1].channels if pruning.history else {}
    before, after = model_stats(model), model_stats(pruned)
    report = {
        "mode": "quick" if args.quick else "full",
        "data": data.name,
        "criterion": result.criterion,
        "max_drop": args.max_drop,
        "ratios": ratios,
        "before": {
            "val_accuracy": result.baseline,
            "test_accuracy": accuracy(model, data.x_test, data.y_test, batch_size),
            "params": int(before.total_params),
            "macs": int(before.total_macs),
        },
        "after": {
            "val_accuracy": accuracy(pruned, data.x_val, data.y_val, batch_size),
            "test_accuracy": accuracy(pruned, data.x_test, data.y_test, batch_size),
            "params": int(after.total_params),
            "macs": int(after.total_macs),
        },
        "channels": {layer: [total, int(remaining.get(layer, total))] for layer, total in channels.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    b, a = report["before"], report["after"]
    lines = [
        f"# VGG16 layer sensitivity pruning ({report['mode']} mode, {data.name})",
        "",
        "| | test accuracy | validation accuracy | params | MACs |",
        "|---|---:|---:|---:|---:|",
        f"| before | {b['test_accuracy']:.4f} | {b['val_accuracy']:.4f} | {b['params']:,} | {b['macs']:,} |",
        f"| after | {a['test_accuracy']:.4f} | {a['val_accuracy']:.4f} | {a['params']:,} | {a['macs']:,} |",
        f"| change | {a['test_accuracy'] - b['test_accuracy']:+.4f} | {a['val_accuracy'] - b['val_accuracy']:+.4f} "
        f"| {a['params'] / b['params'] - 1:+.1%} | {a['macs'] / b['macs'] - 1:+.1%} |",
        "",
        "| layer | ratio | channels before | after |",
        "|---|---:|---:|---:|",
        *(f"| {layer} | {ratios[layer]:.1f} | {c[0]} | {c[1]} |" for layer, c in report["channels"].items()),
        "",
        f"Ratios chosen on the validation split (max drop {args.max_drop:g}); the test split is used only "
        f"for this table. {report['seconds']:.0f} s in all.",
    ]
    write_text_atomic(str(out / "report.json"), json.dumps(report, indent=1) + "\n")
    write_text_atomic(str(out / "report.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
