"""Time channel surgery on keras.applications models against a plain clone.

Usage::

    python bench/surgery.py [--models ResNet50,MobileNetV2,DenseNet121] [--repeats 3]
                            [--fraction 0.3] [--size 224] [--seed 0]
                            [--profile {auto,always,never}] [--target 1.5]

For each model (built with ``weights=None`` at ``--size`` x ``--size``):

* ``channel_groups`` s: ``ridurre.channel_groups(model)`` alone;
* clone+copy s: ``keras.models.clone_model(model)`` then ``new.set_weights(model.get_weights())``,
  the cheapest way Keras offers to rebuild the same model with its weights;
* prune s: ``Surgeon(model)``, one ``delete_channels`` job per channel-owning prunable group
  (``--fraction`` of its channels, random, seeded, chosen beforehand) and ONE ``operate()``;
* ratio: prune / clone+copy. The target is ``--target`` (1.5).

Both timings are the median of ``--repeats`` runs, interleaved (clone, prune, clone, prune...)
so that a noisy neighbour slows both alike. With ``--profile auto`` the pruning is run once more
under cProfile for each model whose ratio is above the target, and the top functions are printed
(``always`` profiles every model, ``never`` none). Output is a markdown table.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ridurre.graph import channel_groups  # noqa: E402
from ridurre.surgery import Surgeon  # noqa: E402

DEFAULT_MODELS = ("ResNet50", "MobileNetV2", "DenseNet121")


def build(name, size):
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3))


def plan_jobs(model, fraction, seed):
    """``[(producer, positions)]``: ``fraction`` of the channels of every prunable group that a
    producer owns, as output positions of its first producer (all positions of a channel)."""
    rng = np.random.default_rng(seed)
    jobs = []
    channels = 0
    groups = channel_groups(model)
    for group in groups:
        if not group.prunable or group.size < 2:
            continue
        producer = group.producers[0]
        if producer.startswith("input:"):
            continue
        k = min(group.size - 1, max(1, int(round(fraction * group.size))))
        chosen = rng.choice(group.size, size=k, replace=False)
        index = group.positions[producer]
        positions = np.flatnonzero(np.isin(index, chosen))
        jobs.append((producer, positions.tolist()))
        channels += k
    return jobs, channels, groups


def clone_and_copy(model):
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    return new


def prune(model, jobs):
    surgeon = Surgeon(model)
    for layer, positions in jobs:
        surgeon.add_job("delete_channels", layer, channels=positions)
    return surgeon.operate()


def timed(fn, *args):
    gc.collect()
    start = time.perf_counter()
    result = fn(*args)
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def profile(model, jobs, top):
    profiler = cProfile.Profile()
    profiler.enable()
    pruned = prune(model, jobs)
    profiler.disable()
    del pruned
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated keras.applications names (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each timing (median)")
    parser.add_argument("--fraction", type=float, default=0.3, help="fraction of each group deleted")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto")
    parser.add_argument("--target", type=float, default=1.5, help="ratio above which --profile auto profiles")
    parser.add_argument("--top", type=int, default=25, help="functions shown per profile listing")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if not hasattr(keras.applications, m)]
    if unknown:
        parser.error(f"not in keras.applications: {', '.join(unknown)}")

    print(
        f"# ridurre surgery benchmark ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"keras {keras.__version__}, backend {keras.backend.backend()}, "
        f"{args.size}x{args.size}, {args.fraction:.0%} of every prunable group, median of {args.repeats})"
    )
    print()
    rows = []
    profiles = []
    for name in models:
        model = build(name, args.size)
        group_times = []
        for _ in range(args.repeats):
            gc.collect()
            start = time.perf_counter()
            channel_groups(model)
            group_times.append(time.perf_counter() - start)
        jobs, channels, groups = plan_jobs(model, args.fraction, args.seed)
        clone_times, prune_times = [], []
        for _ in range(args.repeats):
            clone_times.append(timed(clone_and_copy, model))
            prune_times.append(timed(prune, model, jobs))
        pruned = prune(model, jobs)
        params = (model.count_params(), pruned.count_params())
        del pruned
        clone_s, prune_s = statistics.median(clone_times), statistics.median(prune_times)
        ratio = prune_s / clone_s
        prunable = sum(g.prunable for g in groups)
        rows.append(
            (
                name,
                len(model.layers),
                len(groups),
                prunable,
                len(jobs),
                channels,
                params,
                statistics.median(group_times),
                clone_s,
                prune_s,
                ratio,
            )
        )
        print(
            f"  {name}: clone+copy {['%.2f' % t for t in clone_times]} s, prune {['%.2f' % t for t in prune_times]} s",
            file=sys.stderr,
            flush=True,
        )
        if args.profile == "always" or (args.profile == "auto" and ratio > args.target):
            profiles.append((name, ratio, profile(model, jobs, args.top)))
        del model
        keras.backend.clear_session()
        gc.collect()

    print(
        "| model | layers | groups (prunable) | pruned groups / channels | params before -> after "
        "| channel_groups s | clone+copy s | prune s | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n_layers, n_groups, prunable, n_jobs, channels, params, group_s, clone_s, prune_s, ratio in rows:
        flag = "" if ratio <= args.target else " (above target)"
        print(
            f"| {name} | {n_layers} | {n_groups} ({prunable}) | {n_jobs} / {channels} "
            f"| {params[0]:,} -> {params[1]:,} | {group_s:.3f} | {clone_s:.2f} | {prune_s:.2f} "
            f"| {ratio:.2f}{flag} |"
        )
    for name, ratio, text in profiles:
        print()
        print(f"## cProfile of pruning {name} (ratio {ratio:.2f})")
        print()
        print("```")
        print(text.strip())
        print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
