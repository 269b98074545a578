"""ridurre and Torch-Pruning side by side: same networks, same data, same schedule (issue 12).

Usage::

    python bench/compare_torch_pruning.py --quick                     # a smoke run of about 2 minutes
    nice python bench/compare_torch_pruning.py --datasets mnist1d --seeds 0,1,2 --levels 5,3,2 \\
        --results bench/results/tp_mnist1d.jsonl --report tp_mnist1d.md  # the full comparison

What it does, for every dataset (``mnist1d``, ``digits``) and seed:

1. builds the same BN CNN in torch and in Keras (``bench/twin_networks.py``); torch initializes
   it from the seed and the weights are copied into Keras;
2. trains the base model: ``--start shared`` (default) trains it once in torch and copies it into
   Keras, so both tools prune the very same trained network; ``--start same-init`` trains it in
   each framework from the same initial weights on the same batches;
3. for every MACs level (``--levels 2,3,5``: 2x, 3x and 5x fewer MACs) and every method, prunes a
   copy in ``--steps`` iterative steps (3), each followed by ``--finetune-epochs`` (3) epochs with
   a fresh Adam on the same batch order, and measures the test accuracy (also right after each
   pruning step, before its finetune), the MACs, the parameters and the wall time.

Methods are ``tool:name``:

- ``ridurre:<criterion>``: ``ridurre.Pruner(<criterion>, ..., target_speedup=level,
  maximum_prune_iterations=steps)``, for ANY registered criterion (``l1``, ``l2``, ``bn``,
  ``random``, ``kmeans``, ``taylor``, ``hrank``... and the ones registered later) with its
  defaults: the weight criteria score the whole coupled group (the producing convolution's
  filters, the BN affine, the next layer's input weights; mean-reduced); a criterion needing data
  gets a training sample through the constructor arguments it declares (``data``, ``labels``);
- ``ridurre:l1_producers``, ``ridurre:bn_producers``: ridurre 0.0.2's producer-only scores
  (``scope="producers"``), what ``ridurre:l1`` and ``ridurre:bn`` meant before issue 12's group
  importance (the rows of ``bench/results/tp_mnist1d.jsonl`` and ``tp_digits.jsonl``);
- ``ridurre:l1+group_lasso``, ``ridurre:bn+slimming``: group L1 / BN scale after
  ``--sparse-epochs`` epochs of ``ridurre.pruning.sparse.GroupLassoSparsity(--ridurre-sparse-strength,
  alpha=4)`` / ``BNScaleSparsity(--ridurre-sparse-strength)`` on the same extra batches as
  Torch-Pruning's ``slim`` and ``group_sl``;
- ``ridurre:l1_bn_folded``: an experiment registered by this script (``BNFoldedL1Criterion``), the
  group L1 with the following BN folded into the producers' filters (measured, not better: see
  BENCHMARKS.md);
- ``tp:<name>``: Torch-Pruning 1.6.1's ``BasePruner`` (``iterative_steps=steps``, the final
  classifier ignored) with ``l1``/``l2`` (``MagnitudeImportance``: group score over the
  convolution's filters, the BatchNorm's gamma and the next layer's input weights, mean-reduced
  and mean-normalized), ``l1_first`` (the same with ``group_reduction="first"``: the producing
  convolution's filters only, as ridurre's ``l1`` scores today), ``bn`` (``BNScaleImportance``),
  ``random``, ``taylor`` (``TaylorImportance`` on the gradients of ``--taylor-batches`` training
  batches before each step), ``fpgm``, ``slim`` (``BNScalePruner``: L1 on the BN gammas during
  ``--sparse-epochs`` of training before the first step) and ``group_sl`` (``GroupNormPruner``,
  the "DepGraph (SL)" group-lasso sparse training, same schedule).

Both tools prune every block by the same share ("local" ranking) on the same schedule: Torch-Pruning's
linear one (``k/steps`` of the final ratio after step ``k``), which is ridurre's
``polynomial_decay(0, sparsity, steps, power=1)``. MACs are counted for both by ridurre's counter
(``ridurre.metrics.model_stats`` of a Keras model of the same widths). ridurre reaches the level
through its ``target_speedup`` limit, with the smallest final sparsity that gets there in
``--steps`` steps; Torch-Pruning through the ``pruning_ratio`` whose MACs are closest to the level
(and, when whole channels jump over it, a ratio of its own for the last convolution). Both are
calibrated once per dataset and level on an untrained copy (widths do not depend on the
criterion under local ranking), and a run whose MACs are not within ``--macs-tolerance`` (1.5 %)
of the level is an error.

Results go, one JSON line per run, to ``--results`` (a rerun skips the runs already there, so an
interrupted run resumes), and the markdown report (mean ± standard deviation over seeds, the
per-seed comparison with each tool's random, the wall time) to stdout and ``--report``.

Installing the bench-only dependencies (never needed by ridurre itself; see bench/README.md)::

    pip install torch==2.13.0                  # the CPU wheel; a plain `pip install torch` pulls CUDA
    pip install --no-deps torch-pruning==1.6.1
    pip install mnist1d
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import twin_networks as tn  # noqa: E402

from ridurre import Pruner  # noqa: E402
from ridurre.criteria import L1Criterion, canonical_name, criterion_class, register_criterion  # noqa: E402
from ridurre.criteria import scores as criterion_scores  # noqa: E402
from ridurre.metrics import model_stats  # noqa: E402
from ridurre.pruning.schedules import polynomial_decay  # noqa: E402
from ridurre.pruning.sparse import BNScaleSparsity, GroupLassoSparsity  # noqa: E402


@register_criterion
class BNFoldedL1Criterion(L1Criterion):
    """An experiment (not in the library): the group L1 with the BatchNorm after each producer
    folded into its filters first (each row times |gamma| / sqrt(moving variance + epsilon)), so
    that the producer member is no longer the scale-free filter norm. For these twin networks
    only: every BN of a group normalizes the group's channels in order."""

    name = "l1_bn_folded"
    description = "bench experiment: group L1 with the following BN folded into the producers' filters"

    def score(self, view):
        fold = np.ones(view.size)
        for member in view.members(("norm",)):
            layer = view.model.get_layer(member.path)
            variance = keras.ops.convert_to_numpy(layer.moving_variance)
            fold = fold * np.abs(member.matrix[:, 0]) / np.sqrt(variance + layer.epsilon)
        mats = [m.matrix * fold[:, None] if m.role == "producer" else m.matrix for m in view.members()]
        return criterion_scores.magnitude_scores(mats, p=1, reduction=self.reduction)


TP_METHODS = ("l1", "l2", "l1_first", "bn", "random", "taylor", "fpgm", "slim", "group_sl")
DEFAULT_METHODS = (
    "ridurre:l1,ridurre:bn,ridurre:taylor,ridurre:random,ridurre:l1+group_lasso,ridurre:bn+slimming,"
    "tp:l1,tp:bn,tp:taylor,tp:random,tp:slim,tp:group_sl"
)
# ridurre methods that are a registered criterion with options, or sparse training before it:
# name -> (criterion, criterion options, sparse-training callback class and its options or None)
RIDURRE_VARIANTS = {
    "l1_producers": ("l1", {"scope": "producers"}, None),
    "bn_producers": ("bn_scale", {"scope": "producers"}, None),
    "l1+group_lasso": ("l1", {}, (GroupLassoSparsity, {"alpha": 4.0})),
    "bn+slimming": ("bn_scale", {}, (BNScaleSparsity, {})),
}
# ridurre's method and Torch-Pruning's nearest one, compared seed by seed in the report
COUNTERPARTS = {
    "ridurre:l1": "tp:l1",
    "ridurre:bn_scale": "tp:bn",
    "ridurre:taylor": "tp:taylor",
    "ridurre:random": "tp:random",
    "ridurre:l1+group_lasso": "tp:group_sl",
    "ridurre:bn+slimming": "tp:slim",
    "ridurre:l1_producers": "tp:l1_first",
}
SCORES = "group"  # what ridurre's weight criteria score in this tree; recorded in every ridurre row


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {message}", file=sys.stderr, flush=True)


def parse_methods(text: str) -> list[str]:
    """``"ridurre:l1,tp:bn"`` -> canonical method names; unknown names are an error."""
    methods = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        tool, _, name = item.partition(":")
        if tool == "ridurre" and name in RIDURRE_VARIANTS:
            methods.append(item)
        elif tool == "ridurre":
            methods.append(f"ridurre:{canonical_name(name)}")  # ValueError lists the registered criteria
        elif tool == "tp" and name in TP_METHODS:
            methods.append(item)
        else:
            raise ValueError(f"unknown method {item!r}: expected ridurre:<criterion> or tp:<one of {TP_METHODS}>")
    return methods


# --------------------------------------------------------------------------- calibration


def keras_copy(model: keras.Model) -> keras.Model:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def ridurre_pruner(criterion, sparsity, level, steps, seed, finetune=None, epochs=0, trained=0, options=None):
    return Pruner(
        criterion,
        tn.keras_compile,
        finetune,
        epochs,
        pruning_factor=sparsity / steps,
        target_speedup=level,
        maximum_prune_iterations=steps,
        maximum_pruning_percent=None,
        nb_trained_for_epochs=trained,
        seed=seed,
        criterion_options=options,
    )


def ridurre_schedule(sparsity, steps):
    """Torch-Pruning's linear schedule in ridurre's terms: ``sparsity * k / steps`` of the
    original channels removed after step ``k`` (``polynomial_decay`` with ``power=1``)."""
    return polynomial_decay(0.0, sparsity, steps, power=1)


def calibrate_ridurre(arch, level, steps, tolerance):
    """The smallest final sparsity with which ridurre's loop, on the linear schedule, reaches
    ``level`` (its ``target_speedup`` limit trims the last step to the level)."""
    model = tn.keras_model(arch)
    base = tn.macs_of(arch, arch.widths)

    def run(sparsity):
        pruner = ridurre_pruner("random", sparsity, level, steps, 0)
        pruned, _ = pruner.run_pruning(model, ridurre_schedule(sparsity, steps))
        return base / model_stats(pruned).total_macs >= level * (1 - tolerance), len(pruner.history)

    lo, hi = 0.01, 0.95
    if not run(hi)[0]:
        raise RuntimeError(f"ridurre cannot reach {level}x fewer MACs in {steps} steps")
    for _ in range(10):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if run(mid)[0] else (mid, hi)
    if run(hi)[1] != steps:
        raise RuntimeError(f"ridurre reaches {level}x in fewer than {steps} steps even with the sparsity {hi:.4f}")
    return hi


def tp_ratios(model, ratio, last):
    """Torch-Pruning's ratio arguments: ``ratio`` everywhere, ``last`` for the widest (last) convolution."""
    from torch import nn

    if last is None:
        return {"pruning_ratio": ratio}
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    return {"pruning_ratio": ratio, "pruning_ratio_dict": {convs[-1]: last}}


def tp_prune_widths(arch, ratio, last, steps):
    import torch_pruning as tp

    model = tn.torch_model(arch, 0)
    pruner = tp.pruner.BasePruner(
        model,
        example_input(arch),
        importance=tp.importance.RandomImportance(),
        iterative_steps=steps,
        ignored_layers=[model[-1]],
        **tp_ratios(model, ratio, last),
    )
    for _ in range(steps):
        pruner.step()
    return tn.torch_widths(model)


def calibrate_tp(arch, level, steps, tolerance):
    """``(pruning_ratio, ratio of the last convolution or None)`` whose final MACs are closest to
    ``level``: a bisection on the ratio, then, when its steps of whole channels (several layers
    cross an integer width at once) jump over the level, on the last convolution's own ratio."""
    base = tn.macs_of(arch, arch.widths)

    def speedup(ratio, last=None):
        return base / tn.macs_of(arch, tp_prune_widths(arch, ratio, last, steps))

    def bisect(fn, lo, hi):
        for _ in range(12):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if fn(mid) < level else (lo, mid)
        return min((lo, hi), key=lambda r: abs(fn(r) / level - 1))

    ratio, last = bisect(speedup, 0.0, 0.95), None
    if abs(speedup(ratio) / level - 1) > tolerance:
        below = ratio if speedup(ratio) < level else ratio - 1e-3
        ratio, last = below, bisect(lambda r: speedup(below, r), below, 0.95)
    if abs(speedup(ratio, last) / level - 1) > tolerance:
        raise RuntimeError(
            f"Torch-Pruning gets {speedup(ratio, last):.3f}x at best, not {level}x within {tolerance:.1%}"
        )
    return ratio, last


def example_input(arch):
    import torch

    return torch.zeros((1, arch.input_shape[-1]) + tuple(arch.input_shape[:-1]))


# --------------------------------------------------------------------------- one run


def criterion_options(name, data, sample=512):
    """Constructor arguments for a ridurre criterion that needs data: what its signature takes."""
    cls = criterion_class(name)
    if not ({"data", "gradients"} & set(cls.needs)):
        return None
    params = inspect.signature(cls.__init__).parameters
    options = {}
    if "data" in params:
        options["data"] = data.x_train[:sample]
    for key in ("labels", "targets", "y"):
        if key in params:
            options[key] = data.y_train[:sample]
    if "loss" in params:  # the base copied from torch is not compiled; gradients of the logits' loss
        options["loss"] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if "batch_size" in params:  # Torch-Pruning's Taylor: 8 batches of 64
        options["batch_size"] = 64
    return options


def run_ridurre(method, base, data, arch, level, sparsity, args, seed, trained):
    """Prune ``base`` (Keras) with ridurre's loop; returns accuracy, widths, accuracy after each
    pruning step (before its finetune) and the seconds spent outside the finetunes."""
    criterion, options, sparse = RIDURRE_VARIANTS.get(method, (method, {}, None))
    options = {**(criterion_options(criterion, data) or {}), **options} or None
    after_prune, finetuning = [], []
    if sparse is not None:  # sparse training first, on the extra batches Torch-Pruning's slim/group_sl use
        callback, callback_options = sparse
        base = keras_copy(base)
        tn.keras_compile(base)
        keras.utils.set_random_seed(seed)
        tn.keras_train(
            base, data, 0, args.sparse_epochs, seed + 10_000,
            callbacks=[callback(args.ridurre_sparse_strength, **callback_options)],
        )  # fmt: skip

    def finetune(model, initial_epoch, end_epoch):
        start = time.perf_counter()
        after_prune.append(tn.keras_accuracy(model, data))
        tn.keras_train(model, data, initial_epoch, end_epoch, seed)
        finetuning.append(time.perf_counter() - start)

    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    pruner = ridurre_pruner(
        criterion,
        sparsity,
        level,
        args.steps,
        seed,
        finetune,
        args.finetune_epochs,
        trained,
        options,
    )
    pruned, _ = pruner.run_pruning(base, ridurre_schedule(sparsity, args.steps))
    pruning = time.perf_counter() - start - sum(finetuning)
    if len(pruner.history) != args.steps:
        raise RuntimeError(f"ridurre:{method} stopped after {len(pruner.history)} of {args.steps} steps")
    return tn.keras_accuracy(pruned, data), tn.keras_widths(pruned), after_prune, pruning


def tp_importance(name):
    import torch_pruning as tp

    imp = tp.importance
    return {
        "l1": lambda: imp.MagnitudeImportance(p=1),
        "l2": lambda: imp.MagnitudeImportance(p=2),
        "l1_first": lambda: imp.MagnitudeImportance(p=1, group_reduction="first", normalizer=None),
        "bn": imp.BNScaleImportance,
        "random": imp.RandomImportance,
        "taylor": imp.TaylorImportance,
        "fpgm": imp.FPGMImportance,
        "slim": imp.BNScaleImportance,
        "group_sl": lambda: imp.GroupMagnitudeImportance(p=2),
    }[name]()


def run_tp(name, base, data, arch, ratio, args, seed, trained):
    import torch
    import torch_pruning as tp

    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    kwargs = dict(
        importance=tp_importance(name),
        iterative_steps=args.steps,
        ignored_layers=[model[-1]],
        **tp_ratios(model, *ratio),
    )
    if name == "slim":
        pruner = tp.pruner.BNScalePruner(model, example_input(arch), reg=args.sparse_reg, **kwargs)
    elif name == "group_sl":
        pruner = tp.pruner.GroupNormPruner(model, example_input(arch), reg=args.sparse_reg, **kwargs)
    else:
        pruner = tp.pruner.BasePruner(model, example_input(arch), **kwargs)
    epoch = trained
    if name in ("slim", "group_sl"):  # sparse training before pruning, on its own batches
        tn.torch_train(model, data, 0, args.sparse_epochs, seed + 10_000, after_backward=pruner.regularize)
    after_prune, pruning = [], 0.0
    for _ in range(args.steps):
        start = time.perf_counter()
        if name == "taylor":
            tn.torch_gradients(model, data, batches=args.taylor_batches, seed=seed)
        pruner.step()
        model.zero_grad()
        pruning += time.perf_counter() - start
        after_prune.append(tn.torch_accuracy(model, data))
        tn.torch_train(model, data, epoch, epoch + args.finetune_epochs, seed)
        epoch += args.finetune_epochs
    return tn.torch_accuracy(model, data), tn.torch_widths(model), after_prune, pruning


# --------------------------------------------------------------------------- the comparison


def train_bases(arch, data, seed, args):
    """``(torch base, keras base, {framework: accuracy, seconds})`` for this seed."""
    tbase = tn.torch_model(arch, seed)
    kbase = tn.keras_model(arch)
    tn.torch_to_keras(tbase, kbase)  # the same initial weights, hence the same function:
    x = data.x_test[:64]
    gap = np.abs(tn.torch_logits(tbase, data, x) - keras.ops.convert_to_numpy(kbase(x, training=False))).max()
    if gap > 1e-4:
        raise RuntimeError(f"the torch and Keras twins differ by {gap:.3g} on the same weights")
    info = {}
    start = time.perf_counter()
    tn.torch_train(tbase, data, 0, args.base_epochs, seed)
    info["torch"] = (tn.torch_accuracy(tbase, data), time.perf_counter() - start)
    if args.start == "shared":
        tn.torch_to_keras(tbase, kbase)
    else:
        keras.utils.set_random_seed(seed)
        tn.keras_compile(kbase)
        start = time.perf_counter()
        tn.keras_train(kbase, data, 0, args.base_epochs, seed)
        info["keras"] = (tn.keras_accuracy(kbase, data), time.perf_counter() - start)
    info.setdefault("keras", (tn.keras_accuracy(kbase, data), 0.0))
    return tbase, kbase, info


LEGACY_NAMES = {"ridurre:l1": "ridurre:l1_producers", "ridurre:bn_scale": "ridurre:bn_producers"}


def done_runs(path):
    """The runs already in ``path``. ridurre rows without ``scores`` were measured before the
    group-level criteria (ridurre 0.0.2's producer-only ``l1`` and ``bn``): they are read under
    their producer-only names, never as the group-level methods."""
    if not path or not Path(path).exists():
        return set(), []
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for r in rows:
        if "scores" not in r and r["method"] in LEGACY_NAMES:
            r["method"] = LEGACY_NAMES[r["method"]]
    return {(r["dataset"], r["seed"], r["level"], r["method"]) for r in rows}, rows


def append(path, row):
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def compare(args):
    methods = parse_methods(args.methods)
    done, rows = done_runs(args.results)
    for dataset in args.datasets:
        arch = tn.ARCHITECTURES[dataset]
        data = tn.load_dataset(dataset, args.mnist1d_samples)
        if args.train_limit:
            data.x_train, data.y_train = data.x_train[: args.train_limit], data.y_train[: args.train_limit]
        log(data.describe())
        base_macs = tn.macs_of(arch, arch.widths)
        knobs = {}
        cache = Path(args.results).with_suffix(".calibration.json") if args.results else None
        known = json.loads(cache.read_text()) if cache and cache.exists() else {}
        for level in args.levels:
            key = f"{dataset} {level} {args.steps} {args.macs_tolerance}"
            if key not in known:  # deterministic: computed once per results file
                ridurre_knob = calibrate_ridurre(arch, level, args.steps, args.macs_tolerance)
                known[key] = [ridurre_knob, calibrate_tp(arch, level, args.steps, args.macs_tolerance)]
                if cache:
                    cache.write_text(json.dumps(known, indent=1))
            knobs[level] = (known[key][0], tuple(known[key][1]))
            log(f"{dataset} {level}x: ridurre final sparsity {knobs[level][0]:.4f}, TP pruning_ratio {knobs[level][1]}")
        for seed in args.seeds:
            todo = [(lv, m) for lv in args.levels for m in methods if (dataset, seed, lv, m) not in done]
            if not todo:
                continue
            tbase, kbase, info = train_bases(arch, data, seed, args)
            log(f"{dataset} seed {seed}: base accuracy torch {info['torch'][0]:.4f}, keras {info['keras'][0]:.4f}")
            for level, method in todo:
                tool, name = method.split(":")
                start = time.perf_counter()
                if tool == "ridurre":
                    acc, widths, after, pruning = run_ridurre(
                        name, kbase, data, arch, level, knobs[level][0], args, seed, args.base_epochs
                    )
                else:
                    acc, widths, after, pruning = run_tp(
                        name, tbase, data, arch, knobs[level][1], args, seed, args.base_epochs
                    )
                seconds = time.perf_counter() - start
                macs = tn.macs_of(arch, widths)
                row = dict(
                    dataset=dataset,
                    seed=seed,
                    level=level,
                    method=method,
                    accuracy=acc,
                    after_prune=after,
                    speedup=base_macs / macs,
                    macs=macs,
                    widths=widths,
                    seconds=seconds,
                    pruning_seconds=pruning,
                    base_accuracy=info["keras" if tool == "ridurre" else "torch"][0],
                    start=args.start,
                    load=os.getloadavg()[0],
                )
                if tool == "ridurre":
                    row["scores"] = SCORES
                if abs(row["speedup"] / level - 1) > args.macs_tolerance:
                    raise RuntimeError(f"{method} at {level}x reached {row['speedup']:.3f}x: MACs not matched")
                append(args.results, row)
                rows.append(row)
                log(f"{dataset} seed {seed} {level}x {method}: {acc:.4f} ({row['speedup']:.2f}x, {seconds:.0f} s)")
    return rows


# --------------------------------------------------------------------------- the report


def mean_sd(values):
    values = [100 * v for v in values]
    if len(values) < 2:
        return f"{values[0]:.2f}" if values else "-"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def report(rows, args) -> str:
    methods = parse_methods(args.methods)
    levels = sorted(args.levels)
    rows = [
        r
        for r in rows
        if r["method"] in methods and r["dataset"] in args.datasets and r["level"] in levels and r["seed"] in args.seeds
    ]
    out = []
    for dataset in args.datasets:
        rs = [r for r in rows if r["dataset"] == dataset]
        if not rs:
            continue
        seeds = sorted({r["seed"] for r in rs})
        out.append(f"### {dataset}: test accuracy % (mean ± sd over seeds {', '.join(map(str, seeds))})\n")
        bases = {}
        for r in rs:
            bases.setdefault(r["method"].split(":")[0], {})[r["seed"]] = r["base_accuracy"]
        out.append(
            "Unpruned: "
            + ", ".join(f"{tool} {mean_sd(list(b.values()))}" for tool, b in sorted(bases.items()))
            + f" (start: {rs[0]['start']}).\n"
        )
        out.append("| method | " + " | ".join(f"{lv}x" for lv in levels) + " | after 1st step, before finetune |")
        out.append("|---|" + "---:|" * (len(levels) + 1))
        for method in methods:
            cells = []
            for lv in levels:
                cell = [r for r in rs if r["method"] == method and r["level"] == lv]
                speed = statistics.mean(r["speedup"] for r in cell) if cell else 0
                cells.append(f"{mean_sd([r['accuracy'] for r in cell])} ({speed:.2f}x)" if cell else "-")
            first = [r["after_prune"][0] for r in rs if r["method"] == method and r["level"] == levels[-1]]
            out.append(f"| {method} | " + " | ".join(cells) + f" | {mean_sd(first)} at {levels[-1]}x |")
        out.append("")
        out.append(f"Per seed against the tool's own random (wins / seeds, mean difference in points), {dataset}:\n")
        out.append("| method | " + " | ".join(f"{lv}x" for lv in levels) + " |")
        out.append("|---|" + "---:|" * len(levels))
        for method in methods:
            tool, name = method.split(":")
            if name == "random" or f"{tool}:random" not in methods:
                continue
            cells = []
            for lv in levels:
                acc = {r["seed"]: r["accuracy"] for r in rs if r["method"] == method and r["level"] == lv}
                rnd = {r["seed"]: r["accuracy"] for r in rs if r["method"] == f"{tool}:random" and r["level"] == lv}
                diffs = [acc[s] - rnd[s] for s in acc if s in rnd]
                wins = sum(d > 0 for d in diffs)
                cells.append(f"{wins}/{len(diffs)}, {100 * statistics.mean(diffs):+.2f}" if diffs else "-")
            out.append(f"| {method} | " + " | ".join(cells) + " |")
        out.append("")
        pairs = [(m, COUNTERPARTS[m]) for m in methods if COUNTERPARTS.get(m) in methods]
        if pairs:
            out.append(
                f"ridurre against Torch-Pruning's counterpart on the same trained network, seed by seed "
                f"(ridurre wins / seeds, mean difference in points), {dataset}:\n"
            )
            out.append("| ridurre | Torch-Pruning | " + " | ".join(f"{lv}x" for lv in levels) + " |")
            out.append("|---|---|" + "---:|" * len(levels))
            for mine, theirs in pairs:
                cells = []
                for lv in levels:
                    acc = {r["seed"]: r["accuracy"] for r in rs if r["method"] == mine and r["level"] == lv}
                    other = {r["seed"]: r["accuracy"] for r in rs if r["method"] == theirs and r["level"] == lv}
                    diffs = [acc[s] - other[s] for s in acc if s in other]
                    wins = sum(d > 0 for d in diffs)
                    cells.append(f"{wins}/{len(diffs)}, {100 * statistics.mean(diffs):+.2f}" if diffs else "-")
                out.append(f"| {mine} | {theirs} | " + " | ".join(cells) + " |")
            out.append("")
        out.append("Best of each tool (highest mean) per level:\n")
        for lv in levels:
            best = {}
            for method in methods:
                accs = [r["accuracy"] for r in rs if r["method"] == method and r["level"] == lv]
                tool = method.split(":")[0]
                if accs and (tool not in best or statistics.mean(accs) > best[tool][1]):
                    best[tool] = (method, statistics.mean(accs))
            out.append(
                f"- {lv}x: " + "; ".join(f"{m} {100 * a:.2f}" for m, a in sorted(best.values(), key=lambda t: t[0]))
            )
        out.append("\nWall time per pruning run, median s: all steps with their finetunes / the pruning alone "
                   "(scoring, surgery, gradients; not the finetunes):\n")  # fmt: skip
        out.append("| method | run s | pruning s |\n|---|---:|---:|")
        for method in methods:
            cell = [r for r in rs if r["method"] == method]
            if cell:
                run = statistics.median(r["seconds"] for r in cell)
                prune = statistics.median(r.get("pruning_seconds", float("nan")) for r in cell)
                out.append(f"| {method} | {run:.1f} | {prune:.2f} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=["mnist1d", "digits"], type=lambda s: s.split(","))
    parser.add_argument("--seeds", default=[0, 1, 2, 3, 4], type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--levels", default=[2.0, 3.0, 5.0], type=lambda s: [float(v) for v in s.split(",")])
    parser.add_argument("--methods", default=None, help=f"comma-separated tool:name (default {DEFAULT_METHODS})")
    parser.add_argument("--start", choices=("shared", "same-init"), default="shared")
    parser.add_argument("--base-epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--sparse-epochs", type=int, default=3)
    parser.add_argument("--sparse-reg", type=float, default=5e-4)
    parser.add_argument("--ridurre-sparse-strength", type=float, default=1e-2, help="of ridurre's sparse callbacks")
    parser.add_argument("--taylor-batches", type=int, default=8)
    parser.add_argument("--mnist1d-samples", type=int, default=5000, help="generated examples (80 %% train)")
    parser.add_argument("--train-limit", type=int, default=0, help="use only this many training examples")
    parser.add_argument("--macs-tolerance", type=float, default=0.015)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of torch and TensorFlow each")
    parser.add_argument("--results", default=None, help="JSON lines file (appended; runs in it are skipped)")
    parser.add_argument("--report", default=None, help="also write the markdown report here")
    parser.add_argument("--quick", action="store_true", help="mnist1d, seed 0, 2x and 5x, 6 methods, 2 short steps")
    parser.add_argument("--report-only", action="store_true", help="only write the report of the runs in --results")
    if "--quick" in (sys.argv[1:] if argv is None else argv):  # explicit options still win
        parser.set_defaults(
            datasets=["mnist1d"], seeds=[0], levels=[2.0, 5.0], base_epochs=4, steps=2, finetune_epochs=1,
            train_limit=2000, methods="ridurre:l1,ridurre:bn,ridurre:random,tp:l1,tp:bn,tp:random",
        )  # fmt: skip
    args = parser.parse_args(argv)
    args.methods = args.methods or DEFAULT_METHODS
    args.levels = [int(lv) if float(lv).is_integer() else lv for lv in args.levels]

    import tensorflow as tf
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    from importlib.metadata import version

    started = time.perf_counter()
    rows = done_runs(args.results)[1] if args.report_only else compare(args)
    text = report(rows, args)
    header = (
        f"ridurre vs Torch-Pruning {version('torch-pruning')} (torch {torch.__version__}, keras {keras.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} thread(s) each, "
        f"load {os.getloadavg()[0]:.1f} at the end, {time.perf_counter() - started:.0f} s this invocation)\n"
    )
    print(header + "\n" + text)
    if args.report:
        Path(args.report).write_text(header + "\n" + text + "\n")


if __name__ == "__main__":
    main()
