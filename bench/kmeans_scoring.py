"""Time ``kmeans_keep`` on every conv layer of VGG16-CIFAR10 (random kernels, real shapes).

Usage::

    python bench/kmeans_scoring.py [--factor 0.9] [--repeats 3] [--seed 0] [--scores]

Each layer's kernel (3, 3, cin, cout) becomes the (cout, 9 * cin) matrix the pruning loop
hands to the criterion; the clustering factor is a keep factor (0.9 keeps
``ceil(0.9 * cout)`` filters, as in the original ridurre). Reported: median wall time of
``--repeats`` runs per layer, and the total of the medians. ``--scores`` also times
``kmeans_scores`` (the same clustering plus the ranking used by the loop).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ridurre.criteria.scores import kmeans_keep, kmeans_scores  # noqa: E402

# Li et al. 2017's VGG16 for CIFAR-10: 13 conv 3x3 layers (M = max pooling).
VGG16_CIFAR10 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def conv_shapes(cfg=VGG16_CIFAR10, in_channels=3):
    """Kernel shapes (3, 3, cin, cout) of the conv layers of a VGG config."""
    shapes, cin = [], in_channels
    for v in cfg:
        if v == "M":
            continue
        shapes.append((3, 3, cin, v))
        cin = v
    return shapes


def time_call(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=0.9, help="clustering (keep) factor")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scores", action="store_true", help="also time kmeans_scores")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    # warm-up: imports scikit-learn and starts its thread pools outside the timings
    kmeans_keep([rng.normal(size=(16, 8))], 8)

    print(f"kmeans_keep on VGG16-CIFAR10 conv layers, factor {args.factor}, median of {args.repeats}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    header = f"{'layer':<8}{'kernel':<20}{'matrix':<14}{'keep':>6}{'keep (s)':>11}"
    if args.scores:
        header += f"{'scores (s)':>12}"
    print(header)
    print("-" * len(header))
    total_keep = total_scores = 0.0
    for i, shape in enumerate(conv_shapes()):
        kernel = (rng.normal(size=shape) * math.sqrt(2.0 / (shape[0] * shape[1] * shape[2]))).astype(np.float32)
        cout = shape[-1]
        mat = np.ascontiguousarray(kernel.reshape(-1, cout).T)  # row i = kernel[..., i].ravel()
        n_keep = math.ceil(round(cout * args.factor, 9))
        t_keep = time_call(lambda mat=mat, n_keep=n_keep: kmeans_keep([mat], n_keep, seed=args.seed), args.repeats)
        total_keep += t_keep
        line = f"conv{i + 1:<4}{str(shape):<20}{str(mat.shape):<14}{n_keep:>6}{t_keep:>11.3f}"
        if args.scores:
            t_scores = time_call(
                lambda mat=mat, n_keep=n_keep: kmeans_scores([mat], n_keep, seed=args.seed), args.repeats
            )
            total_scores += t_scores
            line += f"{t_scores:>12.3f}"
        print(line)
    print("-" * len(header))
    total = f"{'total':<48}{total_keep:>11.3f}"
    if args.scores:
        total += f"{total_scores:>12.3f}"
    print(total)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
