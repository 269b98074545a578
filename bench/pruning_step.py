"""Time one pruning step of ResNet50 against one finetune epoch, and KMeans scoring of VGG16-CIFAR10.

Usage::

    python bench/pruning_step.py [--repeats 3] [--fit-repeats 1] [--images 1000] [--size 224]
                                 [--second-epoch] [--jit-compile] [--quick]
                                 [--profile/--no-profile] [--top 25] [--skip-resnet]

Part 1, ResNet50 (``keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3),
classes=10)``):

* one pruning step: ``KMeansFilterPruning(0.9, sgd_compile, None, 0, maximum_prune_iterations=1,
  maximum_pruning_percent=0.4).run_pruning(model)``, i.e. trace, cost accounting, KMeans scoring
  of every prunable group, the plan within the 40 % limit, ONE surgical rebuild, the check of the
  new model on random inputs, the recompile and the record of the iteration (no finetuning, no
  checkpoint);
* its parts, timed alone with the public API (each is also what the loop calls): ``trace_model``,
  ``model_stats``, the KMeans selection of every eligible group (``GroupView`` +
  ``KMeansFilterPruning.select_channels``; the gathering of the weight matrices is also timed
  alone), ``Surgeon.operate``, the check (both models on 2 random inputs), the compile, and the
  ``.keras`` checkpoint that ``output_dir=`` adds;
* one finetune epoch: the pruned model, freshly compiled (SGD, ``jit_compile=False`` unless
  ``--jit-compile``), ``model.fit`` for 1 epoch on ``--images`` random images with random labels,
  batch 32. After a pruning step the model is new, so the loop's finetune always pays the
  tracing of the training step: the "first epoch" includes it. The "steady epoch" leaves it
  out: the median time of that epoch's batches after the first, times the number of batches (``--second-epoch``:
  time a real second epoch instead, which doubles the longest part of the benchmark).

The share is step / epoch. With ``--profile`` (the default), the step is run once more under
cProfile: the calls and cumulative time of ridurre's main functions, then the top functions.

Part 2, VGG16-CIFAR10 (``ridurre.zoo.models.vgg16_cifar10()``, random weights): the time of
``KMeansFilterPruning(0.9).select_channels`` on every prunable group (13 convolutions and fc1),
median of ``--repeats``.

``--quick``: ResNet50 at 64x64, 128 images, VGG16 at width 0.25, one repeat: a smoke run of a
minute or two. Output is markdown, with the load average (the machine may be shared).
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
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ridurre.criteria import GroupView  # noqa: E402
from ridurre.graph import trace_model  # noqa: E402
from ridurre.metrics import model_stats  # noqa: E402
from ridurre.pruning import KMeansFilterPruning  # noqa: E402
from ridurre.surgery import Surgeon  # noqa: E402
from ridurre.zoo.models import vgg16_cifar10  # noqa: E402

FACTOR = 0.9  # KMeans keeps ceil(0.9 * n) channels of every group
LIMIT = 0.4  # maximum_pruning_percent, as in the tutorial

# ridurre functions whose calls and cumulative time the profile summary lists
KEY_FUNCTIONS = [
    ("loop.py", "run_pruning"),
    ("step.py", "_prune_step"),
    ("trace.py", "trace_model"),
    ("records.py", "_cost"),
    ("metrics.py", "model_stats"),
    ("ranking.py", "_plan"),
    ("loop.py", "select_channels"),
    ("view.py", "weight_matrices"),
    ("scores.py", "kmeans_keep"),
    ("limits.py", "fit_to_limits"),
    ("limits.py", "reductions"),
    ("trace.py", "channels_of"),
    ("surgeon.py", "operate"),
    ("rebuild.py", "plan_layers"),
    ("rebuild.py", "rebuild"),
    ("step.py", "_check_model"),
    ("records.py", "_record"),
]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.2f}] {message}", file=sys.stderr, flush=True)


def load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def median_time(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn()``, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        result = None
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def make_compile(jit_compile):
    def sgd_compile(model):
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )

    return sgd_compile


def one_step(model, compile_fn, seed=0):
    pruning = KMeansFilterPruning(
        FACTOR, compile_fn, None, 0, maximum_prune_iterations=1, maximum_pruning_percent=LIMIT, seed=seed
    )
    pruned, _ = pruning.run_pruning(model)
    return pruned, pruning


def eligible_views(model, trace, seed=0):
    # what BasePruning.eligible keeps without layer filters: prunable groups of 2+ channels
    return [GroupView(g, trace, model, seed) for g in trace.groups() if g.prunable and g.size >= 2]


def select_all(method, views):
    """KMeans selection of every view: {group id: channels to remove}, and seconds per group."""
    plan, seconds = {}, {}
    for view in views:
        n_remove = min(method.removal_count(view.size, FACTOR), view.size - 1)
        if n_remove <= 0:
            continue
        start = time.perf_counter()
        plan[view.group.id] = np.sort(method.select_channels(view, n_remove))
        seconds[view.group.id] = time.perf_counter() - start
    return plan, seconds


def surgery(model, trace, plan):
    """The loop's surgery: the trace it already has and the group channels it chose."""
    surgeon = Surgeon(model, trace=trace)
    groups = trace.groups()
    for gid, idx in plan.items():
        surgeon.delete_group_channels(groups[gid], idx)
    return surgeon.operate()


def check(old, new):
    x = np.random.default_rng(0).normal(size=(2,) + tuple(old.inputs[0].shape[1:])).astype("float32")
    a = keras.ops.convert_to_numpy(new(x, training=False))
    b = keras.ops.convert_to_numpy(old(x, training=False))
    assert a.shape == b.shape and np.isfinite(a).all()


def save_checkpoint(model):
    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "iteration_000.keras"))


class BatchTimer(keras.callbacks.Callback):
    """Wall time of every training batch (the first one includes the tracing of the step)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def fit_epochs(model, compile_fn, x, y, batch_size, second_epoch):
    """Compile anew and time one epoch, as the loop's finetune after a step runs it.

    Returns (first epoch s, steady epoch s, how the steady epoch was obtained). The steady
    epoch is a second epoch on the same model with ``second_epoch``, else the median batch
    time of the first epoch times the number of batches (an epoch without the tracing).
    """
    compile_fn(model)
    timer = BatchTimer()
    gc.collect()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer])
    first = time.perf_counter() - start
    if second_epoch:
        gc.collect()
        start = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=2, initial_epoch=1, verbose=0)
        return first, time.perf_counter() - start, "a second epoch"
    # the first batch traces the step (and a ragged last batch traces it again): the median
    # of the other batches is the cost of a batch of a model already traced
    batches = timer.times[1:] or timer.times
    steady = statistics.median(batches) * len(x) / batch_size
    return first, steady, f"median time of batches 2..{len(timer.times)} x {len(x) / batch_size:g} batches"


def profile_step(model, compile_fn, top):
    profiler = cProfile.Profile()
    profiler.enable()
    pruned, _ = one_step(model, compile_fn)
    profiler.disable()
    del pruned
    stats = pstats.Stats(profiler)
    total = max(st[3] for st in stats.stats.values())
    rows = []
    for file_end, name in KEY_FUNCTIONS:
        found = [
            (st[1], st[3])
            for (file, _, func), st in stats.stats.items()
            if func == name and file.replace(os.sep, "/").endswith("ridurre/" + file_end)
        ]
        if found:
            rows.append((f"{file_end[:-3]}.{name}", sum(c for c, _ in found), max(t for _, t in found)))
    out = io.StringIO()
    listing = pstats.Stats(profiler, stream=out).strip_dirs()
    listing.sort_stats("cumulative").print_stats(top)
    listing.sort_stats("tottime").print_stats(top)
    return total, rows, out.getvalue()


def bench_resnet50(args, compile_fn):
    size = args.size
    log(f"building ResNet50 at {size}x{size}")
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(size, size, 3), classes=10)
    if not any(g.prunable and g.size >= 2 for g in trace_model(model).groups()):
        # (ridurre before ca3fb8b judged BatchNormalization(axis=3) off the channel axis)
        raise SystemExit("ResNet50 has no prunable channel group with this ridurre version: nothing to time")
    method = KMeansFilterPruning(FACTOR, compile_fn, None, 0)
    rows = []  # (what, median s, runs)

    log("whole step: run_pruning (one iteration, no finetune)")
    step_s, step_runs, (pruned, pruning) = median_time(lambda: one_step(model, compile_fn), args.repeats)
    record = pruning.history[-1]
    rows.append(("**one pruning step** (`run_pruning`, 1 iteration, no finetune)", step_s, step_runs))

    log("parts")
    s, runs, trace = median_time(lambda: trace_model(model), args.repeats)
    rows.append(("`trace_model(model)`", s, runs))
    s, runs, _ = median_time(lambda: model_stats(model), args.repeats)
    rows.append(("`model_stats(model)` (cost accounting)", s, runs))
    views = eligible_views(model, trace)
    s, runs, _ = median_time(lambda: [v.weight_matrices() for v in views], args.repeats)
    rows.append((f"`GroupView.weight_matrices()` x {len(views)} groups", s, runs))
    s, runs, (plan, group_seconds) = median_time(lambda: select_all(method, eligible_views(model, trace)), args.repeats)
    rows.append((f"KMeans selection of {len(plan)} groups (`GroupView` + `select_channels`)", s, runs))
    s, runs, pruned = median_time(lambda: surgery(model, trace, plan), args.repeats)
    rows.append(("`Surgeon(model, trace=trace)` + group jobs + `operate()` (one rebuild)", s, runs))
    s, runs, _ = median_time(lambda: check(model, pruned), args.repeats)
    rows.append(("check: both models on 2 random inputs", s, runs))
    s, runs, _ = median_time(lambda: compile_fn(pruned), args.repeats)
    rows.append(("`sgd_compile(new)`", s, runs))
    s, runs, _ = median_time(lambda: save_checkpoint(pruned), args.repeats)
    rows.append(("`.keras` checkpoint (only with `output_dir=`)", s, runs))
    pruned = None

    log(f"finetune epoch: {args.images} random images, batch {args.batch_size}, {args.fit_repeats} repeat(s)")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.images, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.images)
    first, steady = [], []
    for i in range(args.fit_repeats):
        a, b, how = fit_epochs(pruned, compile_fn, x, y, args.batch_size, args.second_epoch)
        first.append(a)
        steady.append(b)
        log(f"  fit repeat {i}: first epoch {a:.1f} s, steady epoch {b:.1f} s ({how})")
    del x, y

    profile = None
    if args.profile:
        log("cProfile of one more step")
        profile = profile_step(model, compile_fn, args.top)

    info = {
        "layers": len(model.layers),
        "groups": len(trace.groups()),
        "eligible": len(views),
        "params": (model.count_params(), pruned.count_params()),
        "percent": record.pruning_percent,
        "steady_how": how,
        "group_seconds": sorted(((t, trace.groups()[g]) for g, t in group_seconds.items()), key=lambda item: -item[0]),
    }
    return rows, (statistics.median(first), first), (statistics.median(steady), steady), info, profile


def bench_vgg(args, compile_fn):
    log(f"VGG16-CIFAR10 at width {args.vgg_width}: KMeans selection of every prunable group")
    keras.utils.set_random_seed(0)
    model = vgg16_cifar10(width_multiplier=args.vgg_width)
    method = KMeansFilterPruning(FACTOR, compile_fn, None, 0)
    trace = trace_model(model)
    views = eligible_views(model, trace)
    select_all(method, views[:1])  # warm-up: imports scikit-learn, starts its thread pools
    per_group = {v.group.id: [] for v in views}
    totals = []
    for _ in range(args.repeats):
        gc.collect()
        start = time.perf_counter()
        _, seconds = select_all(method, views)
        totals.append(time.perf_counter() - start)
        for gid, t in seconds.items():
            per_group[gid].append(t)
    rows = []
    for v in views:
        mats = v.weight_matrices()
        n_keep = v.size - min(method.removal_count(v.size, FACTOR), v.size - 1)
        rows.append((v.name, v.size, sum(m.shape[1] for m in mats), n_keep, statistics.median(per_group[v.group.id])))
    return rows, statistics.median(totals), totals


def fmt_runs(runs):
    return ", ".join(f"{t:.2f}" for t in runs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of every timing except the finetune epochs (median) [3; --quick: 1]",
    )
    parser.add_argument(
        "--fit-repeats",
        type=int,
        default=1,
        help="repeats of the finetune epoch (compile + fit): each is many minutes at 224x224 "
        "on a CPU (default: %(default)s)",
    )
    parser.add_argument("--images", type=int, default=None, help="images of the finetune epoch [1000; --quick: 128]")
    parser.add_argument("--size", type=int, default=None, help="ResNet50 input size [224; --quick: 64]")
    parser.add_argument("--batch-size", type=int, default=32, help="finetune batch size (default: %(default)s)")
    parser.add_argument(
        "--second-epoch",
        action="store_true",
        help="time a real second epoch for the steady epoch (default: median batch time x batches)",
    )
    parser.add_argument("--vgg-width", type=float, default=None, help="VGG16-CIFAR10 width [1.0; --quick: 0.25]")
    parser.add_argument("--jit-compile", action="store_true", help="compile with XLA (default: jit_compile=False)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat: a smoke run")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="profile one more pruning step with cProfile (default: on)",
    )
    parser.add_argument("--top", type=int, default=25, help="functions per profile listing (default: %(default)s)")
    parser.add_argument("--skip-resnet", action="store_true", help="only the VGG16-CIFAR10 scoring")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in (("repeats", 3, 1), ("images", 1000, 128), ("size", 224, 64), ("vgg_width", 1.0, 0.25)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    if args.repeats < 1 or args.fit_repeats < 1 or args.images < 1 or args.size < 32:
        parser.error("--repeats, --fit-repeats and --images must be >= 1, --size >= 32")

    compile_fn = make_compile(bool(args.jit_compile))
    started = time.perf_counter()
    print(
        f"# ridurre pruning-step benchmark ({platform.machine()}, {os.cpu_count()} CPUs, keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, jit_compile={bool(args.jit_compile)})"
    )
    print()
    print(f"Load average at start: {load()}")
    print()

    if not args.skip_resnet:
        rows, (first_s, first_runs), (steady_s, steady_runs), info, profile = bench_resnet50(args, compile_fn)
        step_s = rows[0][1]
        print(f"## ResNet50 {args.size}x{args.size}, 10 classes: one KMeans pruning step vs one finetune epoch")
        print()
        print(
            f"{info['layers']} layers, {info['groups']} channel groups ({info['eligible']} prunable), "
            f"params {info['params'][0]:,} -> {info['params'][1]:,} after the step "
            f"({info['percent']:.1%} of the filters removed; factor {FACTOR}, limit {LIMIT}). "
            f"Medians of {args.repeats} runs; the finetune epochs of {args.fit_repeats}."
        )
        print()
        print("| what | median s | runs (s) | share of a first epoch | share of a steady epoch |")
        print("|---|---:|---|---:|---:|")
        for what, s, runs in rows:
            print(f"| {what} | {s:.2f} | {fmt_runs(runs)} | {s / first_s:.1%} | {s / steady_s:.1%} |")
        print(
            f"| finetune, first epoch after a step (compile + tracing + {args.images} images) | {first_s:.1f} "
            f"| {fmt_runs(first_runs)} | 100% | |"
        )
        print(
            f"| finetune, steady epoch without the tracing ({info['steady_how']}) | {steady_s:.1f} "
            f"| {fmt_runs(steady_runs)} | | 100% |"
        )
        print()
        print(
            f"**Ratio: one pruning step = {step_s / first_s:.1%} of the first finetune epoch after it "
            f"({step_s / steady_s:.1%} of a steady epoch).** "
            f"{args.images} images is a small finetune: on 50,000 images an epoch is "
            f"~{50000 / args.images:.0f}x longer."
        )
        print()
        slow = info["group_seconds"][:5]
        print("Slowest groups to select (KMeans, one run):")
        print()
        print("| group (first producer) | producers | channels | seconds |")
        print("|---|---:|---:|---:|")
        for t, g in slow:
            print(f"| {g.producers[0]} | {len(g.producers)} | {g.size} | {t:.2f} |")
        print()
        if profile is not None:
            total, key_rows, listing = profile
            print(f"### cProfile of one pruning step ({total:.1f} s under the profiler)")
            print()
            print("| function | calls | cumulative s | share |")
            print("|---|---:|---:|---:|")
            for name, calls, cum in key_rows:
                print(f"| `{name}` | {calls} | {cum:.2f} | {cum / total:.0%} |")
            print()
            print("<details><summary>top functions</summary>")
            print()
            print("```")
            print(listing.strip())
            print("```")
            print()
            print("</details>")
            print()
        print(f"Load average after ResNet50: {load()}")
        print()
        keras.backend.clear_session()
        gc.collect()

    rows, total_s, totals = bench_vgg(args, compile_fn)
    print(
        f"## VGG16-CIFAR10 (width {args.vgg_width}): KMeans selection of every prunable group, "
        f"factor {FACTOR}, median of {args.repeats}"
    )
    print()
    print("| group | channels | features | keep | median s |")
    print("|---|---:|---:|---:|---:|")
    for name, size, features, keep, s in rows:
        print(f"| {name} | {size} | {features} | {keep} | {s:.3f} |")
    print(f"| **all {len(rows)} groups** | | | | **{total_s:.2f}** (runs: {fmt_runs(totals)}) |")
    print()
    print(f"Load average at end: {load()}; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
