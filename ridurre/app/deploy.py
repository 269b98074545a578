"""``ridurre export`` and the runtimes' latency of ``ridurre stats --latency``, the reports and the demo.

The work is the library's (:mod:`ridurre.deploy`); this module checks the command-line input
(a clear message and nothing written when it is wrong) and prints what happened.

Example::

    ridurre export --model pruned.keras --format litert
    ridurre export --model pruned.keras --format onnx --int8 --calibration-data digits
"""

from __future__ import annotations

import json
import logging
import os

from ridurre.app.config import ConfigError
from ridurre.app.inputs import check_data_fits, load_data, load_model_file

__all__ = ["usable_runtimes", "parse_runtimes", "measure_runtimes", "export_command", "default_output"]

logger = logging.getLogger("ridurre")

RUNTIME_NAMES = ("keras", "litert", "onnx", "saved_model")
_SUFFIX = {"litert": ".tflite", "onnx": ".onnx", "saved_model": "_saved_model"}


def parse_runtimes(text, flag="--runtimes"):
    """``"keras,litert"`` -> ``["keras", "litert"]`` (checked).

    Example:
        >>> parse_runtimes("keras, onnx")
        ['keras', 'onnx']
    """
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    names = ["litert" if n == "tflite" else n for n in names]
    bad = [n for n in names if n not in RUNTIME_NAMES]
    if not names or bad:
        raise ConfigError(
            flag, message=f"{flag}: expected comma-separated names among {', '.join(RUNTIME_NAMES)}, got {text!r}"
        )
    return list(dict.fromkeys(names))


def usable_runtimes(names):
    """The runtimes of ``names`` whose packages are installed; the others are logged and left out."""
    from ridurre.deploy import missing_packages

    kept = []
    for name in names:
        missing = [] if name == "keras" else missing_packages(name)
        if missing:
            logger.warning(
                "Latency in %s skipped: %s not installed (pip install 'ridurre[deploy]')", name, ", ".join(missing)
            )
        else:
            kept.append(name)
    return kept


def measure_runtimes(models, runtimes=("keras",), batch_sizes=(256, 1), rounds=3, budget=0.5, progress=None):
    """Latency of every model in every usable runtime, timed side by side (see
    :func:`ridurre.deploy.measure_deployed`); returns ``{name: {runtime: {batch: LatencyResult}}}``."""
    from ridurre.deploy import measure_deployed

    runtimes = usable_runtimes(runtimes) or ["keras"]
    total = rounds * len(models) * len(runtimes) * len(batch_sizes)
    task = progress.add("measuring latency (" + ", ".join(runtimes) + ")", total=total) if progress else None
    failed = {}
    latency, exports = measure_deployed(
        models,
        runtimes,
        batch_sizes=batch_sizes,
        rounds=rounds,
        budget=budget,
        on_round=(lambda: progress.advance(task)) if task is not None else None,
        failed=failed,
    )
    for runtime, reason in failed.items():
        logger.warning("Latency in %s skipped: the model could not be exported to it or run (%s)", runtime, reason)
    for name, by_runtime in exports.items():
        for runtime, result in by_runtime.items():
            logger.info(
                "Exported %s to %s (%s) and checked it: max |difference| %.2g on %d inputs",
                name,
                runtime,
                f"{result.size_bytes / 1e3:.1f} kB",
                result.verification["max_abs_error"],
                result.verification["examples"],
            )
    return latency


def default_output(model_path, fmt):
    """Where ``ridurre export`` writes by default: beside the model, its extension replaced.

    Example:
        >>> default_output("runs/final.keras", "litert"), default_output("m.keras", "saved_model")
        ('runs/final.tflite', 'm_saved_model')
    """
    return os.path.splitext(model_path)[0] + _SUFFIX[fmt]


def export_command(args):
    """``ridurre export``: check the inputs, export, verify, print what was written."""
    from ridurre.deploy import ExportError, canonical_format, export, missing_packages

    fmt = canonical_format(args.format)
    output = args.output or default_output(args.model, fmt)
    if os.path.realpath(output) == os.path.realpath(args.model):
        raise ConfigError("--output", message=f"--output: {output} is the input model (it is never overwritten)")
    if args.int8 and not args.calibration_data:
        raise ConfigError(
            "--int8", message="--int8: needs --calibration-data (digits, mnist, cifar10 or an .npz with x, y)"
        )
    if args.calibration_data and not args.int8:
        raise ConfigError("--calibration-data", message="--calibration-data: only used with --int8")
    if not 0 <= args.max_accuracy_drop < 1:
        raise ConfigError(
            "--max-accuracy-drop",
            message=f"--max-accuracy-drop: expected a number in [0, 1), got {args.max_accuracy_drop}",
        )
    missing = missing_packages(fmt)
    if missing:
        raise ConfigError(
            "--format", message=f"--format {fmt}: needs {', '.join(missing)} (pip install 'ridurre[deploy]')"
        )
    model = load_model_file(args.model)
    calibration = validation = None
    if args.int8:
        data = load_data(args.calibration_data, flag="--calibration-data")
        check_data_fits(model, data, flag="--calibration-data")
        calibration = data.x_train
        if len(data.x_test) or len(data.x_val):
            x, y = (data.x_test, data.y_test) if len(data.x_test) else (data.x_val, data.y_val)
            validation = (x, y)
        else:
            calibration = (data.x_train, data.y_train)
    try:
        result = export(
            model,
            output,
            fmt,
            int8=args.int8,
            calibration_data=calibration,
            validation_data=validation,
            verify=not args.no_verify,
            max_accuracy_drop=args.max_accuracy_drop,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError("--model", message=f"--model: cannot export {args.model}: {exc}") from None
    except ExportError as exc:
        raise ConfigError("--format", message=f"export not written: {exc}") from None
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    check = result.verification
    if check["kind"] == "outputs":
        how = (
            f"outputs match the Keras model on {check['examples']} inputs (max |difference| "
            f"{check['max_abs_error']:.2g}, tolerance {check['atol']:.2g} + {check['rtol']:g} x |output|)"
        )
    elif check["kind"] == "none":
        how = "not verified (--no-verify)"
    else:
        what = "accuracy" if check["kind"] == "accuracy" else "top-1 agreement with the Keras model"
        how = (
            f"int8 {what} {100 * check['exported_accuracy']:.2f} % vs {100 * check['keras_accuracy']:.2f} % "
            f"in Keras on {check['examples']} examples (agreement {100 * check['agreement']:.2f} %)"
        )
    kind = f"{fmt}, int8" if result.int8 else fmt
    print(f"Wrote {result.path} ({kind}, {result.size_bytes / 1e3:.1f} kB) in {result.seconds:.1f} s: {how}")
    return 0
