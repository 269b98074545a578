"""``ridurre demo``: train, prune and compare on bundled data, with real (measured) numbers.

It trains a small VGG-like CNN (three convolution blocks) on scikit-learn's digits upsampled to
32x32 (seeded; at that size the convolutions, not per-call overhead, set the time), prunes a copy
with each method to at least 2x fewer MACs in short prune-and-finetune iterations, exports every
model to LiteRT and ONNX (verified against Keras), measures the latency of every model in Keras,
LiteRT and ONNX Runtime side by side on this machine, prints a before/after table and writes,
under ``--output``::

    models/original.keras     the trained model
    <method>/                 one full run per method: models/, logs/, reports/report.md, plots/
    summary.md, summary.json  the before/after table of all methods
    comparison.png            accuracy, MACs and measured speed-up per method
    logs/ridurre.log          the log of the whole demo

Example::

    ridurre demo --output demo_output          # what `make demo` runs
"""

from __future__ import annotations

import json
import logging
import os
import time

from ridurre._io import save_model_atomic, write_text_atomic
from ridurre._progress import Progress
from ridurre.app import plots
from ridurre.app import report as _report
from ridurre.app.config import ConfigError, method_names, resolve_config
from ridurre.app.inputs import accuracy, load_data
from ridurre.app.jobs import finish_run, measure_models, prune_model
from ridurre.app.runlog import attach_log_file, detach
from ridurre.app.runlog import console as make_console
from ridurre.app.workflow import train_model

__all__ = ["run_demo", "TARGET_SPEEDUP"]

logger = logging.getLogger("ridurre")

TARGET_SPEEDUP = 2.05
"""MACs target of the demo: the loop never crosses a limit (it stops at most one channel short of
it), so asking for 2.05x fewer MACs lands at 2.0x or more."""

FULL = {"epochs": 12, "finetune_epochs": 2, "step": 0.15, "iterations": 6, "rounds": 5, "width": 16, "budget": 0.3}
QUICK = {"epochs": 2, "finetune_epochs": 1, "step": 0.35, "iterations": 3, "rounds": 1, "width": 8, "budget": 0.05}

DATA = "digits32"
"""The bundled digits upsampled to 32x32 (:func:`ridurre.datasets.load_digits` ``size=32``)."""

BLOCKS = 3
"""Convolution blocks of the demo's CNN (``width``, ``2 width``, ``4 width`` filters)."""

BATCH_SIZES = (32, 1)
"""Latency is measured on batches of 32 images and on a single image."""

RUNTIMES = ("keras", "litert", "onnx")
"""Where latency is measured (the runtimes whose packages are missing are skipped)."""


def _methods(text):
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in method_names()]
    if not methods or bad:
        raise ConfigError(
            "--methods",
            message=f"--methods: expected comma-separated names among {', '.join(method_names())}, got {text!r}",
        )
    return list(dict.fromkeys(methods))


def run_demo(args):
    """Run the demo (``args``: ``output``, ``methods``, ``arch``, ``quick``, ``seed``); returns 0."""
    methods = _methods(args.methods)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ConfigError("--output", message=f"--output: {args.output} exists and is not a directory")
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    data = load_data(DATA, seed=args.seed)
    os.makedirs(args.output, exist_ok=True)
    handler = attach_log_file(args.output)
    console = make_console()
    runs, configs = {}, {}
    try:
        logger.info(
            "Demo: %s on digits upsampled to 32x32 (%d train, %d validation, %d test images), methods %s, "
            "target %.2fx fewer MACs",
            args.arch,
            len(data.x_train),
            len(data.x_val),
            len(data.x_test),
            ", ".join(methods),
            TARGET_SPEEDUP,
        )
        with Progress(not getattr(args, "no_progress", False)) as progress:
            model = train_model(
                args.arch, data, settings["epochs"], args.seed, progress, width=settings["width"], blocks=BLOCKS
            )
            save_model_atomic(model, os.path.join(args.output, "models", "original.keras"))
            logger.info(
                "Trained %s for %d epochs: test accuracy %.2f %%",
                model.name,
                settings["epochs"],
                100 * accuracy(model, data.x_test, data.y_test),
            )
            for method in methods:
                out = os.path.join(args.output, method)
                configs[method] = resolve_config(
                    environ={},
                    cli={
                        "strategy": {
                            "method": method,
                            "target_macs": 1.0 / TARGET_SPEEDUP,
                            "step": settings["step"],
                            "iterations": settings["iterations"],
                            "finetune_epochs": settings["finetune_epochs"],
                            "seed": args.seed,
                        },
                        "output": {"dir": out},
                    },
                )
                method_log = attach_log_file(out)
                try:
                    configs[method].save(os.path.join(out, "config.json"))
                    runs[method] = prune_model(model, data, configs[method], out, progress, label=f"{method}: ")
                finally:
                    detach(method_log)
            models = {"original": model, **{m: r.pruned for m, r in runs.items()}}
            latency = measure_models(
                models,
                batch_sizes=BATCH_SIZES,
                rounds=settings["rounds"],
                budget=settings["budget"],
                progress=progress,
                runtimes=RUNTIMES,
            )
        summaries = []
        for method, run in runs.items():
            out = os.path.join(args.output, method)
            method_log = attach_log_file(out)
            try:
                summaries.append(
                    finish_run(
                        run, data, configs[method], out, {"original": latency["original"], "pruned": latency[method]}
                    )
                )
            finally:
                detach(method_log)
        wall = time.perf_counter() - started
        table = _report.comparison_table(
            summaries,
            title=f"ridurre demo: {args.arch} on 32x32 digits, pruned to >= 2x fewer MACs ({wall:.0f} s in all)",
        )
        write_text_atomic(os.path.join(args.output, "summary.md"), _report.comparison_markdown(summaries, wall))
        write_text_atomic(
            os.path.join(args.output, "summary.json"),
            json.dumps({"wall_seconds": wall, "runs": summaries}, indent=2, default=str) + "\n",
        )
        rows = [
            {
                "label": "original",
                "accuracy": summaries[0]["before"]["accuracy"],
                "macs": summaries[0]["before"]["macs"],
                "speedup": 1.0,
            }
        ]
        rows += [
            {
                "label": s["method"],
                "accuracy": s["after"]["accuracy"],
                "macs": s["after"]["macs"],
                "speedup": s["speedup"][str(BATCH_SIZES[0])],
            }
            for s in summaries
        ]
        plots.plot_comparison(
            os.path.join(args.output, "comparison.png"),
            rows,
            title=f"{args.arch} on 32x32 digits: pruning methods compared (Keras latency at batch {BATCH_SIZES[0]})",
        )
        logger.info("Demo finished in %.1f s", wall)
    finally:
        detach(handler)
    console.print(table)
    console.print(f"Reports: {', '.join(os.path.join(args.output, m, 'reports', 'report.md') for m in runs)}")
    console.print(
        f"Summary: {os.path.join(args.output, 'summary.md')}; plots: {args.output}/*/plots/, "
        f"{os.path.join(args.output, 'comparison.png')}"
    )
    return 0
