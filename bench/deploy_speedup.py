"""Realized speed-up of pruned models where they run: TensorFlow (Keras), LiteRT, ONNX Runtime.

Usage::

    python bench/deploy_speedup.py speedup [--models vgg16,resnet56] [--speedups 2,3] [--rounds 3]
                                           [--round-to 8,16] [--runtimes keras,litert,onnx,saved_model]
    python bench/deploy_speedup.py lut     [--runtime litert] [--width 0.5] [--model vgg16|resnet56]
                                           [--batch 1] [--stop latency|macs] [--round-to-lut K]
                                           [--table lut.json] [--sizes]
    python bench/deploy_speedup.py kernels [--runtimes keras,litert,onnx]
    python bench/deploy_speedup.py xla     [--table lut.json]
    python bench/deploy_speedup.py depth   [--runtimes keras,litert,onnx]
    python bench/deploy_speedup.py depth_digits [--epochs 12]
    python bench/deploy_speedup.py int8    [--epochs 12]

``speedup``: VGG16-CIFAR10 and ResNet-56 (random weights, randomized BatchNorm statistics; speed
does not depend on training) pruned with L1, no finetuning, until they have 2x and 3x fewer MACs
(``Pruner("l1", pruning_factor=0.5, target_speedup=s, round_to=k)``, local ranking: every group
loses the same share, each step shrunk to stay within the target; ``--round-to 8,16`` prunes one
model per multiple ``k``, default 8).
Every model is exported to LiteRT and ONNX (each export verified against Keras) and all of them,
in every runtime, are timed side by side in interleaved rounds at batch 1 and 32
(:func:`ridurre.deploy.measure_deployed`). Printed: latency, realized speed-up and its ratio to
the MACs reduction. Target: at least 0.8 in every runtime at 2x.

``lut``: the speed-aware options on ``--model`` at ``--width`` (VGG16-CIFAR10 at half width by
default, or ResNet-56 at full width):
``choose_round_to`` in the runtime (skipped with ``--round-to-lut``), a ``LatencyTable`` at
``--batch`` (one export and timing per group; printed with each group's share of the latency
saved per share of the MACs saved), then pruning to ``--target`` (2) once by MACs (local) and
once ranked by the table, stopping at the table's predicted speed-up (``--stop latency``) or at
the same MACs reduction (``--stop macs``); the results are timed side by side in the table's
runtime and ``--runtimes``, at batch 1, 32 and ``--batch``.

``kernels``: one 3x3 convolution + BatchNorm + ReLU at ResNet-56's shapes (32x32 with 8-16
channels, 8x8 with 32-64), full width and narrower, timed in each runtime at batch 1 and 32:
latency per MAC against the full-width layer's (1.0 = the latency falls with the MACs).

``xla``: ResNet-56 at 2x fewer MACs (by MACs, and ranked by the ``--table`` of ``lut``) in
TensorFlow with and without XLA (``jit_compile=True``), side by side at batch 1 and 32.

``depth``: ResNet-56 pruned to ``--target`` (2) fewer MACs by removing residual blocks
(``ridurre.surgery.prune_branches``, which stops short of the target rather than cross it, then
L1 channels for the rest) and by channels alone (L1, local), beside ResNet-32 and ResNet-26
(the same stages with 5 and 4 blocks instead of 9), in every runtime at batch 1 and 32.

``depth_digits``: what depth pruning costs in accuracy: a ResNet-20 trained on the bundled digits
(upsampled to 16x16), pruned to ``--target`` fewer MACs by L1 channels alone and by blocks (data
score) then channels, each finetuned (2 epochs per step), then both trained ``--epochs`` more.

``int8``: prune then quantize on the digits: a small CNN trained on the bundled digits (8x8),
pruned to 2x fewer MACs with finetuning, then exported float and int8 to LiteRT and ONNX; test
accuracy, size and LiteRT/ONNX latency of each. Target: the int8 pruned model loses less than
one point of accuracy against the float pruned model.

Output is markdown; load averages at the start and the end are printed since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from helpers import randomize_weights  # noqa: E402

from ridurre import Surgeon, channel_groups  # noqa: E402
from ridurre.deploy import LatencyTable, choose_round_to, export, load_runtime, measure_deployed  # noqa: E402
from ridurre.graph import trace_model  # noqa: E402
from ridurre.metrics import keras_runner, measure_runners, model_stats  # noqa: E402
from ridurre.pruning import Pruner  # noqa: E402
from ridurre.surgery import prune_branches  # noqa: E402
from ridurre.zoo.models import resnet_cifar, small_cnn, vgg16_cifar10  # noqa: E402


def _load():
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())


def _header(args):
    print(f"# deploy_speedup.py {args.part}\n")
    print(
        f"{platform.node()}, {os.cpu_count()} cores, Keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, {_load()} at the start\n"
    )


def _model(name, width=1.0):
    if name == "vgg16":
        model = vgg16_cifar10(width_multiplier=width)
    elif name == "resnet56":
        model = resnet_cifar(56, width_multiplier=width)
    else:
        raise SystemExit(f"unknown model {name!r}: vgg16 or resnet56")
    return randomize_weights(model, seed=0)


def _prune(model, speedup, round_to=8, table=None, exclude=("predictions", "fc.*", "dense.*"), stop="latency"):
    """L1, no finetuning, to ``speedup``: fewer MACs, or with ``table`` the speed-up the table
    predicts (``stop="latency"``) or, ranked by the table, fewer MACs (``stop="macs"``)."""
    by_macs = table is None or stop == "macs"
    pruner = Pruner(
        "l1",
        lambda m: None,
        None,
        0,
        pruning_factor=0.5,  # with round_to=8 a smaller step removes nothing from 16-channel groups
        target_speedup=None if table is not None and by_macs else speedup,
        max_macs_reduction=1.0 - 1.0 / speedup if table is not None and by_macs else None,
        maximum_pruning_percent=None,
        maximum_prune_iterations=40,
        round_to=round_to,
        exclude=list(exclude),
        ranking="global" if table is not None else "local",
        latency_table=table,
        verify=False,
    )
    pruned, _ = pruner.run_pruning(model)
    return pruned


def _speedup(args):
    rows = []
    runtimes = tuple(args.runtimes.split(","))
    roundings = [int(v) for v in args.round_to.split(",")]
    for name in args.models.split(","):
        model = _model(name)
        models = {"original": model}
        for s in [float(v) for v in args.speedups.split(",")]:
            for k in roundings:
                started = time.perf_counter()
                label = f"{s:g}x" if len(roundings) == 1 else f"{s:g}x r{k}"
                models[label] = _prune(model, s, round_to=k)
                print(f"pruned {name} to {label} fewer MACs in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        macs = {k: model_stats(m).total_macs for k, m in models.items()}
        started = time.perf_counter()
        latency, exports = measure_deployed(
            models, runtimes, batch_sizes=(1, 32), rounds=args.rounds, budget=args.budget
        )
        print(f"exported and timed {name} in {time.perf_counter() - started:.1f} s ({_load()})", file=sys.stderr)
        for k in models:
            if k == "original":
                continue
            for runtime in runtimes:
                for batch in (1, 32):
                    b, a = latency["original"][runtime][batch], latency[k][runtime][batch]
                    speed = b.median_ms / a.median_ms
                    reduction = macs["original"] / macs[k]
                    rows.append(
                        (name, k, f"{reduction:.2f}x", runtime, a.threads, batch, b, a, speed, speed / reduction)
                    )
    print(
        "| model | target | MACs fewer | runtime | threads | batch | original ms | pruned ms | speed-up | "
        "speed-up / MACs reduction | fastest calls: speed-up / MACs reduction |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, k, red, runtime, threads, batch, b, a, speed, ratio in rows:
        fastest = b.min_ms / a.min_ms * ratio / speed
        print(
            f"| {name} | {k} | {red} | {runtime} | {threads} | {batch} | {b.median_ms:.2f} ± {b.spread_ms:.2f} | "
            f"{a.median_ms:.2f} ± {a.spread_ms:.2f} | {speed:.2f}x | **{ratio:.2f}** | {fastest:.2f} |"
        )


def _lut(args):
    width = args.width if args.width is not None else (0.5 if args.model == "vgg16" else 1.0)
    model = _model(args.model, width)
    exclude = lambda g: not any(p.startswith(("predictions", "fc")) for p in g.producers)  # noqa: E731
    batch = args.batch
    k = args.round_to_lut
    if k is None:
        started = time.perf_counter()
        k, rounding = choose_round_to(model, args.runtime, batch_size=batch, rounds=args.rounds)
        print(f"choose_round_to in {time.perf_counter() - started:.1f} s ({_load()})\n", file=sys.stderr)
        print(f"## round_to in {args.runtime}, batch {batch} (every group 30 % smaller, rounded down to a multiple)\n")
        print("| round_to | MACs | median ms | ms per GMAC |\n|---:|---:|---:|---:|")
        for cand, row in rounding.items():
            print(f"| {cand} | {row['macs']:,} | {row['ms']:.3f} | {row['ms_per_gmac']:.2f} |")
        print(f"\nchosen: round_to={k}\n")
    if args.table and os.path.exists(args.table):
        table = LatencyTable.load(args.table)
        print(f"table read from {args.table}", file=sys.stderr)
    else:
        started = time.perf_counter()
        table = LatencyTable.build(model, args.runtime, batch_size=batch, groups=exclude, rounds=args.rounds)
        print(f"LatencyTable.build in {time.perf_counter() - started:.1f} s ({_load()})", file=sys.stderr)
        if args.table:
            table.save(args.table)
    _print_table(model, table)
    by_macs = _prune(model, args.target, round_to=k)
    by_latency = _prune(model, args.target, round_to=k, table=table, stop=args.stop)
    models = {"original": model, "by MACs (local)": by_macs, f"ranked by the table, stop at {args.stop}": by_latency}
    if args.sizes:
        _print_sizes(models)
    runtimes = tuple(dict.fromkeys((args.runtime, *args.runtimes.split(","))))
    batches = tuple(sorted({1, batch, 32}))
    latency, _ = measure_deployed(models, runtimes, batch_sizes=batches, rounds=args.rounds, budget=args.budget)
    print(f"\n## {args.model} (width {width:g}) pruned to {args.target:g}x (round_to={k}), side by side\n")
    print(
        "| pruned | MACs fewer | predicted speed-up (table) | runtime | batch | median ms | speed-up | "
        "speed-up / MACs reduction |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    predicted = {
        name: table.base_ms / table.predicted_ms({g.key: g.size for g in channel_groups(m)})
        for name, m in models.items()
    }
    for name, reduction, runtime, b, timed, speed in _ratio_rows(models, latency, "original", runtimes, batches):
        print(
            f"| {name} | {reduction:.2f}x | {predicted[name]:.2f}x | {runtime} | "
            f"{b} | {timed.median_ms:.3f} ± {timed.spread_ms:.3f} | {speed:.2f}x | {speed / reduction:.2f} |"
        )


def _ratio_rows(models, latency, base, runtimes, batches):
    """``(name, MACs reduction, runtime, batch, timing, speed-up)`` of every model against ``base``."""
    macs0 = model_stats(models[base]).total_macs
    for name, m in models.items():
        reduction = macs0 / model_stats(m).total_macs
        for runtime in runtimes:
            for batch in batches:
                timed = latency[name][runtime][batch]
                yield name, reduction, runtime, batch, timed, latency[base][runtime][batch].median_ms / timed.median_ms


def _print_sizes(models):
    widths = {name: {g.key: g.size for g in channel_groups(m)} for name, m in models.items()}
    names = list(models)
    print("| group | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
    for key in widths[names[0]]:
        label = key if len(key) < 40 else key.split("+")[0] + "+..."
        print(f"| {label} | " + " | ".join(str(widths[n].get(key, "")) for n in names) + " |")
    print()


def _print_table(model, table):
    """The table, with each group's share of the latency saved per share of the MACs saved: the
    ratio a cut of that group alone realizes (a 2x MACs cut needs 0.75 on average for 0.8)."""
    macs0 = model_stats(model).total_macs
    trace = trace_model(model)
    print(
        f"## Latency table ({table.runtime}, batch {table.batch_size}, {table.threads} threads): "
        f"base {table.base_ms:.3f} ms\n"
    )
    print("| group | channels | removed | ms saved per channel | MACs saved | latency share / MACs share |")
    print("|---|---:|---:|---:|---:|---:|")
    groups = {g.key: g for g in trace.groups()}
    for key, saved in table.saved_ms_per_channel.items():
        n = table.removed[key]
        surgeon = Surgeon(model, trace=trace)
        surgeon.delete_group_channels(groups[key], np.arange(n))
        macs_saved = macs0 - model_stats(surgeon.operate()).total_macs
        share = (saved * n / table.base_ms) / (macs_saved / macs0)
        name = key if len(key) < 40 else key.split("+")[0] + "+..."
        print(f"| {name} | {table.sizes[key]} | {n} | {saved * 1000:.1f} µs | {macs_saved:,} | {share:.2f} |")


def _kernels(args):
    """One convolution + BatchNorm + ReLU at ResNet-56's shapes, full width and pruned, in each
    runtime: how a runtime's latency follows the MACs at these widths."""
    runtimes = tuple(args.runtimes.split(","))
    cases = {  # (spatial size, input channels): output channels, the first one the reference
        (32, 16): (16, 8),
        (32, 8): (16, 8),
        (8, 64): (64, 48, 40, 32),
        (8, 40): (64, 40),
        (8, 32): (64, 32),
    }
    rows, reference = [], {}
    for (hw, cin), outs in cases.items():
        models = {}
        for cout in outs:
            inputs = keras.Input((hw, hw, cin))
            x = keras.layers.Conv2D(cout, 3, padding="same", use_bias=False)(inputs)
            x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
            models[(hw, cin, cout)] = randomize_weights(keras.Model(inputs, x), seed=0)
        latency, _ = measure_deployed(models, runtimes, batch_sizes=(1, 32), rounds=args.rounds, budget=args.budget)
        for key, model in models.items():
            macs = model_stats(model).total_macs
            for runtime in runtimes:
                for batch in (1, 32):
                    ms = latency[key][runtime][batch].median_ms
                    if key[1:] in ((16, 16), (64, 64)):
                        reference[(key[0], runtime, batch)] = (ms, macs)
                    rows.append((key, runtime, batch, ms, macs))
    print(f"## One Conv2D 3x3 + BatchNorm + ReLU, {args.rounds} rounds ({_load()} at the end)\n")
    print("| size | channels in → out | runtime | batch | median ms | GMAC/s | latency / MACs (vs full width) |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for (hw, cin, cout), runtime, batch, ms, macs in rows:
        ref_ms, ref_macs = reference[(hw, runtime, batch)]
        print(
            f"| {hw}x{hw} | {cin} → {cout} | {runtime} | {batch} | {ms:.3f} | {macs * batch / ms / 1e6:.1f} | "
            f"{(ms / ref_ms) / (macs / ref_macs):.2f} |"
        )


def _xla(args):
    """ResNet-56 at 2x fewer MACs (by MACs, and ranked by the ``--table`` latency table) in
    TensorFlow with and without XLA (``jit_compile=True``), side by side."""
    model = _model("resnet56")
    models = {"original": model, "by MACs (local)": _prune(model, args.target)}
    if args.table:
        table = LatencyTable.load(args.table)
        models["ranked by the table"] = _prune(model, args.target, table=table, stop="macs")
    runners = {}
    for name, m in models.items():
        runners[(name, "tensorflow")] = keras_runner(m)
        jit = keras.models.clone_model(m)
        jit.set_weights(m.get_weights())
        jit.compile(jit_compile=True)
        runners[(name, "tensorflow + XLA")] = keras_runner(jit)
    timed = measure_runners(runners, (32, 32, 3), batch_sizes=(1, 32), rounds=args.rounds, budget=args.budget)
    macs0 = model_stats(model).total_macs
    print("| model | MACs fewer | runtime | batch | median ms | speed-up | speed-up / MACs reduction |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for (name, runtime), by_batch in timed.items():
        reduction = macs0 / model_stats(models[name]).total_macs
        for batch, result in by_batch.items():
            speed = timed[("original", runtime)][batch].median_ms / result.median_ms
            print(
                f"| {name} | {reduction:.2f}x | {runtime} | {batch} | {result.median_ms:.2f} ± "
                f"{result.spread_ms:.2f} | {speed:.2f}x | {speed / reduction:.2f} |"
            )


def _depth(args):
    """ResNet-56 at about 2x fewer MACs by blocks (``prune_branches``) and by channels (L1), and
    the same family with fewer blocks per stage (ResNet-32: 5, ResNet-26: 4, instead of 9)."""
    runtimes = tuple(args.runtimes.split(","))
    model = _model("resnet56")
    by_blocks, removed = prune_branches(model, target_macs=1.0 / args.target)
    print(f"prune_branches removed {len(removed)} blocks: {', '.join(b.merge for b in removed)}\n")
    so_far = model_stats(model).total_macs / model_stats(by_blocks).total_macs
    models = {
        "resnet56": model,
        "channels (L1, local)": _prune(model, args.target),
        "blocks (prune_branches)": by_blocks,
        "blocks, then channels (L1) to the target": _prune(by_blocks, args.target / so_far),
        **{f"resnet{d}": randomize_weights(resnet_cifar(d), seed=0) for d in (32, 26)},
    }
    latency, _ = measure_deployed(models, runtimes, batch_sizes=(1, 32), rounds=args.rounds, budget=args.budget)
    print("| model | MACs fewer | runtime | batch | median ms | speed-up | speed-up / MACs reduction |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, reduction, runtime, batch, timed, speed in _ratio_rows(models, latency, "resnet56", runtimes, (1, 32)):
        print(
            f"| {name} | {reduction:.2f}x | {runtime} | {batch} | {timed.median_ms:.2f} ± "
            f"{timed.spread_ms:.2f} | {speed:.2f}x | {speed / reduction:.2f} |"
        )


def _depth_digits(args):
    """Accuracy of depth pruning: a ResNet-20 trained on the bundled digits (upsampled to 16x16),
    pruned to ``--target`` fewer MACs by channels alone and by blocks then channels, both
    finetuned the same number of epochs."""
    from helpers import compile_classifier

    from ridurre.zoo.datasets import load_digits

    data = load_digits(seed=0, size=16)
    keras.utils.set_random_seed(0)
    model = resnet_cifar(20, input_shape=data.x_train.shape[1:])
    compile_classifier(model)
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=32, verbose=0)

    def finetune(m, initial_epoch, end_epoch):
        return m.fit(data.x_train, data.y_train, initial_epoch=initial_epoch, epochs=end_epoch, verbose=0)

    def channels(m, speedup, epochs=2):
        pruner = Pruner(
            "l1",
            compile_classifier,
            finetune,
            epochs,
            pruning_factor=0.2,
            target_speedup=speedup,
            maximum_pruning_percent=None,
            maximum_prune_iterations=8,
            exclude=["predictions"],
        )
        return pruner.run_pruning(m)[0]

    def accuracy(m):
        return float(np.mean(m.predict(data.x_test, verbose=0).argmax(1) == data.y_test))

    macs0 = model_stats(model).total_macs
    by_channels = channels(model, args.target)
    blocks, removed = prune_branches(model, target_macs=1.0 / args.target, data=data.x_train[:256])
    compile_classifier(blocks)
    blocks.fit(data.x_train, data.y_train, epochs=2, batch_size=32, verbose=0)
    so_far = macs0 / model_stats(blocks).total_macs
    both = channels(blocks, args.target / so_far) if so_far < args.target * 0.99 else blocks
    print(f"ResNet-20 on the digits (16x16), {args.epochs} epochs; {len(removed)} of 9 blocks removed\n")
    print(f"| model | MACs fewer | test accuracy | after {args.epochs} more epochs |\n|---|---:|---:|---:|")
    for name, m in (("original", model), ("channels (L1)", by_channels), ("blocks, then channels", both)):
        before = accuracy(m)
        if m is not model:
            compile_classifier(m)
            m.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=32, verbose=0)
        after = "" if m is model else f"{100 * accuracy(m):.2f} %"
        print(f"| {name} | {macs0 / model_stats(m).total_macs:.2f}x | {100 * before:.2f} % | {after} |")


def _int8(args):
    from helpers import compile_classifier

    from ridurre.zoo.datasets import load_digits

    data = load_digits(seed=0)
    keras.utils.set_random_seed(0)
    model = small_cnn(filters=(32, 64), dense_units=128)
    compile_classifier(model)
    model.fit(data.x_train, data.y_train, epochs=args.epochs, batch_size=32, verbose=0)

    def finetune(m, initial_epoch, end_epoch):
        return m.fit(data.x_train, data.y_train, initial_epoch=initial_epoch, epochs=end_epoch, verbose=0)

    pruner = Pruner(
        "l1",
        compile_classifier,
        finetune,
        2,
        pruning_factor=0.2,
        target_speedup=2.05,
        maximum_pruning_percent=None,
        maximum_prune_iterations=8,
        exclude=["predictions"],
    )
    pruned, _ = pruner.run_pruning(model)
    test = (data.x_test, data.y_test)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for label, m in (("original", model), ("pruned", pruned)):
            acc = float(np.mean(m.predict(data.x_test, verbose=0).argmax(1) == data.y_test))
            runners[(label, "keras")] = keras_runner(m)
            rows.append([label, "keras", "float32", acc, None])
            for fmt, ext in (("litert", ".tflite"), ("onnx", ".onnx")):
                for int8 in (False, True):
                    path = os.path.join(tmp, f"{label}{'_int8' if int8 else ''}{ext}")
                    result = export(
                        m,
                        path,
                        fmt,
                        int8=int8,
                        calibration_data=data.x_train,
                        validation_data=test,
                        verify=int8,
                        max_accuracy_drop=0.05,
                    )
                    run = load_runtime(path)
                    out = np.concatenate([run([data.x_test[i : i + 64]])[0] for i in range(0, len(data.x_test), 64)])
                    runners[(label, f"{fmt} {'int8' if int8 else 'float32'}")] = run
                    rows.append(
                        [
                            label,
                            fmt,
                            "int8" if int8 else "float32",
                            float(np.mean(out.argmax(1) == data.y_test)),
                            result.size_bytes,
                        ]
                    )
        timed = measure_runners(runners, (8, 8, 1), batch_sizes=(1, 32), rounds=args.rounds, budget=args.budget)
    macs = model_stats(model).total_macs, model_stats(pruned).total_macs
    print(f"small CNN on digits: {macs[0]:,} -> {macs[1]:,} MACs ({macs[0] / macs[1]:.2f}x fewer)\n")
    print("| model | runtime | weights | test accuracy | size | latency b=1 | latency b=32 |")
    print("|---|---|---|---:|---:|---:|---:|")
    for label, runtime, kind, acc, size in rows:
        key = (label, runtime if runtime == "keras" else f"{runtime} {kind}")
        lat = timed[key]
        print(
            f"| {label} | {runtime} | {kind} | {100 * acc:.2f} % | {'' if size is None else f'{size / 1e3:.1f} kB'} | "
            f"{lat[1].median_ms:.3f} ms | {lat[32].median_ms:.3f} ms |"
        )


PARTS = {
    "speedup": _speedup,
    "lut": _lut,
    "kernels": _kernels,
    "xla": _xla,
    "depth": _depth,
    "depth_digits": _depth_digits,
    "int8": _int8,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--models", default="vgg16,resnet56")
    parser.add_argument("--speedups", default="2,3")
    parser.add_argument("--runtime", default="litert")
    parser.add_argument("--runtimes", default="keras,litert,onnx", help="speedup: the runtimes to time")
    parser.add_argument("--round-to", default="8", help="speedup: channel multiples, one pruned model each")
    parser.add_argument("--width", type=float, default=None, help="lut: width multiplier (VGG16 0.5, ResNet-56 1)")
    parser.add_argument("--model", default="vgg16", help="lut: vgg16 or resnet56")
    parser.add_argument("--batch", type=int, default=1, help="lut: batch size of the table and the timings")
    parser.add_argument("--target", type=float, default=2.0, help="lut: the speed-up to prune to")
    parser.add_argument(
        "--stop", choices=("latency", "macs"), default="latency", help="lut: the table's pruning stops at"
    )
    parser.add_argument("--round-to-lut", type=int, default=None, help="lut: skip choose_round_to, use this")
    parser.add_argument("--table", default=None, help="lut: JSON file of the table: read if it exists, else written")
    parser.add_argument("--sizes", action="store_true", help="lut: print the pruned models' group widths")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.3)
    args = parser.parse_args()
    _header(args)
    started = time.perf_counter()
    PARTS[args.part](args)
    print(f"\n{time.perf_counter() - started:.0f} s in all, {_load()} at the end")


if __name__ == "__main__":
    main()
