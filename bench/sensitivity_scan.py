"""Time a sensitivity scan with masks against rebuilding the model for every point.

Usage::

    python bench/sensitivity_scan.py [--width 0.25] [--images 512] [--repeats 3]
                                     [--layers 'block1_conv1|block3_conv2|block5_conv3|fc1' | --layers all]
                                     [--ratios 0.1,...,0.9] [--batch-size 128] [--seed 0]

On ``vgg16_cifar10(width_multiplier=--width)`` (random weights, compiled with sparse categorical
crossentropy and accuracy) and ``--images`` random CIFAR-shaped validation images:

* mask: ``ridurre.sensitivity.scan(model, x, y, ...)``: one working copy, each point zeroes the
  channels' weights in place, evaluates, and restores the touched layers;
* rebuild: the same scan with ``finetune_fn=lambda m: None``, i.e. for every point
  ``delete_channels`` + ``compile`` + ``evaluate`` of a really pruned model (the fine-tuning
  itself does nothing, so only the rebuilding is timed).

Both are whole scans (cloning, compiling and the baseline included), measured in the same run,
interleaved (mask, rebuild, mask, rebuild, ...) so that a busy neighbour slows both alike; the
table gives the medians of ``--repeats`` runs and checks that both modes measured the same
metrics. Output is markdown.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ridurre.sensitivity import DEFAULT_RATIOS, scan  # noqa: E402
from ridurre.zoo.models import vgg16_cifar10  # noqa: E402

DEFAULT_LAYERS = "block1_conv1|block3_conv2|block5_conv3|fc1"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=float, default=0.25, help="width multiplier of VGG16-CIFAR10")
    parser.add_argument("--images", type=int, default=512, help="validation images")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--layers", default=DEFAULT_LAYERS, help="regular expression, or 'all'")
    parser.add_argument("--ratios", default=",".join(map(str, DEFAULT_RATIOS)))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    model = vgg16_cifar10(width_multiplier=args.width)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.images, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.images)
    ratios = [float(r) for r in args.ratios.split(",")]
    layers = None if args.layers == "all" else args.layers
    common = dict(ratios=ratios, layers=layers, batch_size=args.batch_size, progress=False)

    times = {"mask": [], "rebuild": []}
    results = {}
    for _ in range(args.repeats):
        for mode in ("mask", "rebuild"):
            extra = {"finetune_fn": lambda m: None} if mode == "rebuild" else {}
            started = time.perf_counter()
            results[mode] = scan(model, x, y, **common, **extra)
            times[mode].append(time.perf_counter() - started)
            print(f"  {mode}: {times[mode][-1]:.1f} s", file=sys.stderr, flush=True)

    points = len(results["mask"].points)
    diff = max(abs(a.metric - b.metric) for a, b in zip(results["mask"].points, results["rebuild"].points))
    mask, rebuild = statistics.median(times["mask"]), statistics.median(times["rebuild"])
    print(
        f"VGG16-CIFAR10 x{args.width:g} ({model.count_params():,} params), {args.images} random 32x32x3 "
        f"validation images, layers {results['mask'].layers}, ratios {ratios[0]:g}..{ratios[-1]:g}; "
        f"median of {args.repeats}; Keras {keras.__version__} ({keras.backend.backend()}), "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print("| scan | points | median s | s / point | speed-up |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| rebuild per point (delete_channels + compile + evaluate) | {points} | {rebuild:.1f} | "
        f"{rebuild / points:.2f} | 1.0x |"
    )
    print(
        f"| masks on one copy (zero, evaluate, restore) | {points} | {mask:.1f} | {mask / points:.2f} | "
        f"{rebuild / mask:.1f}x |"
    )
    print(f"\nlargest |metric difference| between the two modes over the {points} points: {diff:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
