"""The ``ridurre`` command: argparse subcommands that delegate to the library.

``ridurre --help`` lists the commands; ``ridurre <command> --help`` shows each one's options and
examples. Exit status: 0 success, 2 bad usage or input (a clear message, nothing written),
1 a failure while running, 3 a limit not met with ``ridurre prune --require-target``, 130 interrupted.

This module imports neither Keras nor TensorFlow: every command imports what it needs when it
runs, so ``ridurre prune-scores --mode mask`` works without TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ridurre.app.config import PRESETS, ConfigError, method_names
from ridurre.app.inputs import add_loading_options

__all__ = ["main", "build_parser"]

logger = logging.getLogger("ridurre")

_FORMAT = argparse.RawDescriptionHelpFormatter

DEMO_EPILOG = """examples:
  ridurre demo                          # writes ./demo_output (about 2-3 minutes on 2 CPU cores)
  ridurre demo --output /tmp/demo --methods l1,kmeans
  ridurre demo --quick                  # fewer epochs, for a smoke test
"""

PRUNE_EPILOG = """examples:
  ridurre prune --model model.keras --data digits --method l1 --ratio 0.3
  ridurre prune --model model.keras --data my_data.npz --method kmeans --target-macs 0.5 \\
                --iterations 4 --finetune-epochs 2 --exclude predictions --output runs/kmeans
  ridurre prune --model model.keras --preset conservative --dry-run
  ridurre prune --model model.keras --method taylor --target-macs 0.5 --max-accuracy-drop 0.01
  ridurre prune --model model.keras --method l1 --sparse-epochs 5 --sparse-method group --ratio 0.5
  RIDURRE_STRATEGY_RATIO=0.4 ridurre prune --config run.yaml --model model.keras
  ridurre prune --model model.keras --data digits --output runs/l1 --resume   # after an interruption

precedence: built-in defaults < --preset < --config file < RIDURRE_<SECTION>_<KEY> environment
variables < command-line options. The effective configuration is saved as DIR/config.json.
--data takes digits, mnist, cifar10 or an .npz file with arrays x, y (optional x_val, y_val,
x_test, y_test). The input model is never modified; outputs go to --output, which must be new or
empty unless --resume (continue the run it holds: same settings, model and data) or --overwrite
(remove that run's files first). Without --step, every step is sized to reach --ratio/--target-macs
in --iterations steps; a limit not met is a warning (exit status 3 with --require-target).
exit status: 0 done, 1 failed while running, 2 bad input (nothing written), 3 a limit not met
with --require-target, 130 interrupted (--resume continues).
"""

STATS_EPILOG = """examples:
  ridurre stats model.keras
  ridurre stats model.keras --json | python -c "import json,sys; print(json.load(sys.stdin)['total_macs'])"
  ridurre stats pruned.keras --latency --compare original.keras      # Keras, LiteRT and ONNX Runtime
  ridurre stats model.keras --latency --runtimes keras,onnx --batch-sizes 1,32 --threads 1
  ridurre stats model.keras --save-latency-table lut.json --runtimes litert --batch-sizes 1
  ridurre prune --model model.keras --latency-table lut.json --ranking global --target-latency 0.5
"""

EXPORT_EPILOG = """examples:
  ridurre export --model pruned.keras --format litert                 # writes pruned.tflite
  ridurre export --model pruned.keras --format onnx --output model.onnx
  ridurre export --model pruned.keras --format saved_model            # writes pruned_saved_model/
  ridurre export --model pruned.keras --format litert --int8 --calibration-data digits

every export is loaded in its runtime and compared with the Keras model before it takes its name
(float: outputs within 1e-4 x max(1, |output|) + 1e-3 x |output|; int8: top-1 accuracy on the test
split of the calibration data, at most --max-accuracy-drop lower). Nothing is written otherwise.
Needs the deploy extra: pip install 'ridurre[deploy]'.
"""

WORKFLOW_EPILOG = """examples:
  ridurre workflow --data digits --model-arch small_cnn --epochs 10 --ratio 0.5 --output runs/wf
  # only prune a trained model, no finetune:
  ridurre workflow --no-train --load-unpruned runs/wf/models/unpruned.keras --no-finetune --output runs/p
  # only finetune a pruned model:
  ridurre workflow --load-pruned runs/p/models/pruned.keras --output runs/ft
  # only evaluate:
  ridurre workflow --no-train --no-prune --no-finetune --eval-unpruned --load-unpruned runs/wf/models/unpruned.keras
  # resume: stages switched off reuse DIR/models/*.keras of an earlier run in the same --output
  ridurre workflow --no-train --output runs/wf

each stage saves its model atomically: DIR/models/unpruned.keras, pruned.keras, finetuned.keras.
"""

# (flags, config key, argparse keyword arguments) of `ridurre prune`
PRUNE_OPTIONS = [
    (("--model",), "model.path", dict(metavar="MODEL", help="the trained model (.keras); never modified")),
    (("--data",), "data.source", dict(help="digits, mnist, cifar10 or an .npz file (default: digits)")),
    (
        ("--method", "--criterion"),
        "strategy.method",
        dict(metavar="NAME", help="the criterion ranking channels (default: l1): {methods}"),
    ),
    (
        ("--ratio",),
        "strategy.ratio",
        dict(type=float, metavar="R", help="remove at most this share of the prunable channels, in (0, 1)"),
    ),
    (
        ("--head-ratio",),
        "strategy.head_ratio",
        dict(
            type=float,
            metavar="R",
            help="remove about this share of every attention layer's heads, in (0, 1) (default: keep the heads)",
        ),
    ),
    (
        ("--target-macs",),
        "strategy.target_macs",
        dict(type=float, metavar="X", help="keep about X of the original MACs, in (0, 1): 0.5 = 2x fewer"),
    ),
    (
        ("--blocks",),
        "strategy.blocks",
        dict(
            type=float,
            metavar="X",
            help="first remove whole residual blocks (those that change their merge's output least on the data) "
            "until about X of the MACs remain, in (0, 1), then prune channels to --target-macs",
        ),
    ),
    (
        ("--target-latency",),
        "strategy.target_latency",
        dict(
            type=float,
            metavar="X",
            help="keep about X of the latency the --latency-table predicts, in (0, 1): 0.5 = 2x faster",
        ),
    ),
    (("--iterations",), "strategy.iterations", dict(type=int, metavar="N", help="prune iterations (default: 3)")),
    (
        ("--step",),
        "strategy.step",
        dict(
            type=float,
            metavar="F",
            help="share of the remaining channels removed per iteration "
            "(default: derived from --ratio/--target-macs and --iterations)",
        ),
    ),
    (
        ("--finetune-epochs",),
        "strategy.finetune_epochs",
        dict(type=int, metavar="E", help="finetune epochs after each iteration (default: 1)"),
    ),
    (
        ("--layers",),
        "layers.include",
        dict(
            action="append",
            metavar="PATTERN",
            help="prune only layers whose name matches this regular expression (repeatable)",
        ),
    ),
    (
        ("--exclude",),
        "layers.exclude",
        dict(
            action="append", metavar="PATTERN", help="never prune layers matching this regular expression (repeatable)"
        ),
    ),
    (
        ("--ranking",),
        "strategy.ranking",
        dict(
            choices=("local", "global", "isomorphic"),
            help="local: every layer loses its share; global: one ranking; isomorphic: one ranking per set "
            "of structurally identical groups",
        ),
    ),
    (
        ("--scope",),
        "strategy.scope",
        dict(
            choices=("group", "producers"),
            help="what a weight criterion scores: the whole coupled group (default) or only the "
            "producing layers (ridurre 0.0.2)",
        ),
    ),
    (
        ("--reduction",),
        "strategy.reduction",
        dict(choices=("mean", "sum", "max", "prod", "first"), help="how a group's layers combine (default: mean)"),
    ),
    (
        ("--normalizer",),
        "strategy.normalizer",
        dict(
            choices=("mean", "max", "sum", "gaussian", "lamp", "none"),
            help="how each group's scores are scaled for global ranking (default: mean)",
        ),
    ),
    (
        ("--max-accuracy-drop",),
        "strategy.max_metric_drop",
        dict(
            type=float,
            metavar="D",
            help="undo a step whose validation accuracy after finetuning is more than D below the "
            "unpruned model's (0.01 = one point)",
        ),
    ),
    (
        ("--on-accuracy-drop",),
        "strategy.on_metric_drop",
        dict(choices=("rollback", "stop"), help="after an undone step: retry a smaller one (default) or stop"),
    ),
    (
        ("--keep-best",),
        "strategy.keep_best",
        dict(action="store_true", default=None, help="return the model with the best validation accuracy seen"),
    ),
    (
        ("--sparse-epochs",),
        "sparse.epochs",
        dict(type=int, metavar="N", help="sparse training epochs before pruning (default: 0)"),
    ),
    (
        ("--sparse-method",),
        "sparse.method",
        dict(
            choices=("bn", "group", "growing"),
            help="bn: L1 on BatchNorm scales; group: group lasso over coupled groups (default); "
            "growing: growing regularization",
        ),
    ),
    (
        ("--sparse-strength",),
        "sparse.strength",
        dict(type=float, metavar="L", help="the sparse-training penalty weight (default: 0.01)"),
    ),
    (("--round-to",), "strategy.round_to", dict(type=int, metavar="K", help="keep channel counts multiples of K")),
    (
        ("--latency-table",),
        "strategy.latency_table",
        dict(
            metavar="FILE",
            help="a latency table (ridurre stats MODEL --save-latency-table FILE): --ranking global then "
            "favours the groups that save the most time per channel, and --target-latency limits the latency "
            "it predicts",
        ),
    ),
    (("--min-channels",), "strategy.min_channels", dict(type=int, metavar="K", help="never fewer channels per layer")),
    (
        ("--max-fraction-per-layer",),
        "strategy.max_fraction_per_layer",
        dict(type=float, metavar="F", help="never remove more than this share of a layer"),
    ),
    (("--seed",), "strategy.seed", dict(type=int, help="seed of every random choice (default: 0)")),
    (("--batch-size",), "finetune.batch_size", dict(type=int, help="finetune batch size (default: 32)")),
    (
        ("--learning-rate",),
        "finetune.learning_rate",
        dict(type=float, help="learning rate when the model has no compiled optimizer (default: 0.001)"),
    ),
    (
        ("--verify",),
        "validation.verify",
        dict(
            choices=("on", "off", "exact"),
            help="forward-pass check after every surgery (default: on); exact "
            "also compares with the model whose channels are zeroed",
        ),
    ),
    (
        ("--dry-run",),
        "validation.dry_run",
        dict(
            action="store_true",
            default=None,
            help="print the plan (channels, params, MACs per layer) and write nothing",
        ),
    ),
    (
        ("--require-target",),
        "validation.require_target",
        dict(
            action="store_true",
            default=None,
            help="exit with status 3 when the run ends short of --ratio or --target-macs (default: a warning)",
        ),
    ),
    (
        ("--custom-objects",),
        "model.custom_objects",
        dict(metavar="FILE.py|MODULE", help="Python file or module defining the model's custom layers; its code runs"),
    ),
    (
        ("--unsafe",),
        "model.unsafe",
        dict(
            action="store_true",
            default=None,
            help="load models with Lambda layers (their code is stored in the file and runs): trusted files only",
        ),
    ),
    (("--output",), "output.dir", dict(metavar="DIR", help="output directory (default: ridurre_output)")),
    (
        ("--runtimes",),
        "report.runtimes",
        dict(
            metavar="LIST",
            help="where the report measures latency: keras, litert, onnx, saved_model (default: keras,litert,onnx; "
            "those not installed are skipped)",
        ),
    ),
    (("--log-level",), "logging.level", dict(choices=("debug", "info", "warning", "error"))),
]


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="train, prune and compare on the bundled digits data",
        description="Train a small CNN on scikit-learn's digits upsampled to 32x32, prune it to 2x fewer MACs "
        "with several methods, export every model to LiteRT and ONNX, and print a before/after table with the "
        "latency measured in Keras, LiteRT and ONNX Runtime.",
        epilog=DEMO_EPILOG,
        formatter_class=_FORMAT,
    )
    p.add_argument("--output", default="demo_output", metavar="DIR", help="output directory (default: demo_output)")
    p.add_argument("--methods", default="l1,kmeans,random", help="comma-separated methods (default: l1,kmeans,random)")
    p.add_argument("--arch", choices=("small_cnn", "small_resnet"), default="small_cnn", help="model to train")
    p.add_argument("--quick", action="store_true", help="fewer epochs and shorter timings (a smoke test)")
    p.add_argument("--seed", type=int, default=0, help="seed of the training and pruning (default: 0)")
    p.set_defaults(func=_run("ridurre.app.demo", "run_demo"))


def _add_prune(sub):
    p = sub.add_parser(
        "prune",
        help="prune a saved model (config files, presets, dry runs)",
        description="Prune a saved Keras model iteratively: score channels, remove the weakest, "
        "check, finetune, repeat; then write models, logs, a report and plots.",
        epilog=PRUNE_EPILOG,
        formatter_class=_FORMAT,
    )
    for flags, key, kwargs in PRUNE_OPTIONS:
        if "{methods}" in kwargs.get("help", ""):  # criteria registered after import are listed too
            kwargs = {**kwargs, "help": kwargs["help"].format(methods=", ".join(method_names()))}
        if kwargs.get("action") != "store_true" and "choices" not in kwargs:
            kwargs = {"metavar": flags[0].lstrip("-").upper().replace("-", "_"), **kwargs}
        p.add_argument(*flags, dest=key.replace(".", "__"), **kwargs)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file with any of the options above")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted run in --output (refused if it was made with other settings, model or data)",
    )
    p.add_argument("--overwrite", action="store_true", help="remove the files of an earlier run in --output first")
    p.add_argument(
        "--preset", choices=PRESETS, help="conservative (about 10 %% of channels) or aggressive (about 70 %%)"
    )
    p.set_defaults(func=_prune)


def _add_stats(sub):
    p = sub.add_parser(
        "stats",
        help="layers, channels, params, MACs and size of a saved model",
        description="Print the layers, channels, parameters, MACs (per layer and total) and size "
        "on disk of a saved model.",
        epilog=STATS_EPILOG,
        formatter_class=_FORMAT,
    )
    p.add_argument("model", metavar="MODEL", help="a .keras model file")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument(
        "--latency", action="store_true", help="also measure latency in Keras and in each runtime (exports the model)"
    )
    p.add_argument(
        "--compare", metavar="MODEL", help="with --latency: time this model too (e.g. the original) and show speed-ups"
    )
    p.add_argument(
        "--runtimes",
        default="keras,litert,onnx",
        help="with --latency: keras, litert, onnx, saved_model (default: %(default)s)",
    )
    p.add_argument("--batch-sizes", default="1,32", help="with --latency: batch sizes (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=5, help="with --latency: interleaved rounds (default: %(default)s)")
    p.add_argument(
        "--save-latency-table",
        metavar="FILE",
        help="measure the time each channel group saves per channel in the first of --runtimes at the first of "
        "--batch-sizes (one export per group) and save it for ridurre prune --latency-table",
    )
    p.add_argument("--threads", type=int, help="with --latency: LiteRT / ONNX Runtime threads (default: all cores)")
    add_loading_options(p)
    p.set_defaults(func=_run("ridurre.app.report", "stats_command"))


def _add_export(sub):
    p = sub.add_parser(
        "export",
        help="export a model to LiteRT, ONNX or a SavedModel (int8 too), verified",
        description="Export a saved Keras model for a deployment runtime, optionally quantized to int8, "
        "and check the export in that runtime against the Keras model.",
        epilog=EXPORT_EPILOG,
        formatter_class=_FORMAT,
    )
    p.add_argument("--model", required=True, metavar="MODEL", help="a .keras model file (never modified)")
    p.add_argument(
        "--format", default="litert", choices=("litert", "onnx", "saved_model"), help="the format (default: litert)"
    )
    p.add_argument("--output", metavar="PATH", help="the file or directory to write (default: beside the model)")
    p.add_argument("--int8", action="store_true", help="quantize to int8 (needs --calibration-data)")
    p.add_argument(
        "--calibration-data", metavar="DATA", help="digits, mnist, cifar10 or an .npz with x (and y, x_test, y_test)"
    )
    p.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.02,
        metavar="F",
        help="int8: largest accepted drop of top-1 accuracy, a fraction (default: 0.02)",
    )
    p.add_argument("--no-verify", action="store_true", help="do not load and compare the export")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=_run("ridurre.app.deploy", "export_command"))


def _add_workflow(sub):
    p = sub.add_parser(
        "workflow",
        help="train -> prune -> finetune, stages switchable and resumable",
        description="Train a model, prune it, finetune it; switch stages on or off, load the "
        "model of an earlier stage, and evaluate any of the three models.",
        epilog=WORKFLOW_EPILOG,
        formatter_class=_FORMAT,
    )
    bool_action = argparse.BooleanOptionalAction
    for stage in ("train", "prune", "finetune"):
        p.add_argument(
            f"--do-{stage}",
            dest=f"do_{stage}",
            nargs="?",
            const=True,
            default=True,
            type=_yes_no,
            metavar="BOOL",
            help=f"run the {stage} stage (default: yes); also --do-{stage} false",
        )
        p.add_argument(f"--no-{stage}", dest=f"do_{stage}", action="store_false", help=f"skip the {stage} stage")
    p.add_argument("--load-unpruned", metavar="PATH", help="a trained model: skips training")
    p.add_argument("--load-pruned", metavar="PATH", help="a pruned model: skips training and pruning")
    for stage in ("unpruned", "pruned", "finetuned"):
        p.add_argument(
            f"--eval-{stage}",
            action=bool_action,
            default=None,
            help=f"evaluate the {stage} model (default: every model this run produces or loads)",
        )
    p.add_argument("--data", default="digits", help="digits, mnist, cifar10 or an .npz file (default: digits)")
    p.add_argument("--model-arch", choices=("small_cnn", "small_resnet"), default="small_cnn")
    p.add_argument("--epochs", type=int, default=10, help="training epochs (default: 10)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="finetune epochs (default: 3)")
    p.add_argument(
        "--method",
        "--criterion",
        dest="method",
        choices=method_names(),
        metavar="NAME",
        default="l1",
        help="the criterion ranking channels (default: l1)",
    )
    p.add_argument("--ratio", type=float, default=0.5, help="share of the prunable channels removed (default: 0.5)")
    p.add_argument("--iterations", type=int, default=1, help="prune iterations, without finetuning (default: 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="workflow_output", metavar="DIR")
    add_loading_options(p)
    p.set_defaults(func=_run("ridurre.app.workflow", "run_workflow"))


def _yes_no(text):
    value = {
        "true": True,
        "yes": True,
        "1": True,
        "on": True,
        "false": False,
        "no": False,
        "0": False,
        "off": False,
    }.get(str(text).lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value


# commands living in their own module, with build_parser(parser) and run(args): imported only when chosen
LAZY_COMMANDS = {
    "prune-scores": (
        "ridurre.app.scorefile_cli",
        "prune the filters a score file ranks worst (mask mode needs no TensorFlow)",
    ),
    "sensitivity": ("ridurre.app.sensitivity_cli", "per-layer sensitivity scan: accuracy vs. pruning ratio per layer"),
}


def _add_lazy(sub, name, chosen):
    module_name, help_text = LAZY_COMMANDS[name]
    p = sub.add_parser(name, help=help_text, description=help_text, add_help=name == chosen)
    if name != chosen:
        return
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        reason = str(exc)  # the name `exc` is gone once the except block ends
        p.set_defaults(func=lambda args: _unavailable(name, module_name, reason))
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return
    module.build_parser(p)
    p.set_defaults(func=module.run)


def _unavailable(name, module_name, exc):
    raise ConfigError(name, message=f"{name}: this command is not available ({module_name}: {exc})")


def _run(module_name, function):
    def call(args):
        return getattr(importlib.import_module(module_name), function)(args)

    return call


def build_parser(chosen=None):
    """The ``ridurre`` argument parser. ``chosen`` is the command about to run: only its lazily
    imported module (``prune-scores``, ``sensitivity``) is imported."""
    parser = argparse.ArgumentParser(
        prog="ridurre",
        formatter_class=_FORMAT,
        description="ridurre: channel pruning for Keras 3. Score the channels of a trained model, remove the "
        "weakest, finetune, repeat; see what happened in a report.",
        epilog="run `ridurre <command> --help` for the options and examples of a command.\n"
        "start with `ridurre demo` (bundled data, about 3 minutes on 2 CPU cores).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--no-progress", action="store_true", dest="global_no_progress", help="no progress bars (for every command)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_demo(sub)
    _add_prune(sub)
    _add_stats(sub)
    _add_export(sub)
    _add_workflow(sub)
    for name in LAZY_COMMANDS:
        _add_lazy(sub, name, chosen)
    return parser


def _version():
    from ridurre import __version__

    return __version__


def _prune(args):
    from ridurre.app.config import resolve_config
    from ridurre.app.jobs import run_prune

    cli, flags = {}, {}
    for option, key, _ in PRUNE_OPTIONS:
        section, name = key.split(".")
        value = getattr(args, key.replace(".", "__"))
        if key == "validation.verify" and value is not None:
            value = {"on": True, "off": False, "exact": "exact"}[value]
        cli.setdefault(section, {})[name] = value
        flags[key] = option[0]
    config = resolve_config(args.config, args.preset, os.environ, cli, flags)
    logger.setLevel(config["logging.level"].upper())
    summary = run_prune(config, progress_enabled=not args.no_progress, resume=args.resume, overwrite=args.overwrite)
    if config["validation.require_target"] and not summary.get("dry_run") and missed_limits_of(summary):
        print("ridurre prune: a limit was not met (--require-target)", file=sys.stderr)
        return 3
    return 0


def missed_limits_of(summary):
    """The limits of a run summary that were not met."""
    return {k: v for k, v in (summary.get("limits", {}).get("met") or {}).items() if not v["met"]}


class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (so that rich's live progress display stays tidy)."""

    def emit(self, record):
        self.stream = sys.stderr
        super().emit(record)


def _import_keras_quietly():
    """Import Keras with file descriptor 2 silenced: TensorFlow prints C++ notices at import time
    (oneDNN, CUDA) that ignore TF_CPP_MIN_LOG_LEVEL. A failing import is retried, loudly, by the
    command itself."""
    if "keras" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                import keras  # noqa: F401
            except Exception:  # noqa: BLE001
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _chosen(argv):
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv=None):
    """Run ``ridurre`` with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
        ridurre 1.0.0.dev0
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ notices are noise here
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # e.g. its tf.function retracing warnings
    chosen = _chosen(argv)
    if chosen == "sensitivity":  # its module imports Keras: keep TensorFlow's import notices quiet
        _import_keras_quietly()
    parser = build_parser(chosen)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help/--version (0) or a usage error (2, already printed)
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help()
        return 2
    # `ridurre --no-progress CMD` and `ridurre CMD --no-progress` alike (a subcommand's own default
    # would otherwise hide the global flag)
    args.no_progress = bool(getattr(args, "no_progress", False) or args.global_no_progress)
    if args.command in ("demo", "prune", "stats", "export", "workflow", "sensitivity"):
        _import_keras_quietly()
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s", "%H:%M:%S"))
    previous, propagates = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a library may give the root logger a handler (loading .h5 does): no double lines
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"ridurre {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `ridurre stats m.keras --json | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python's documented recipe
        return 1
    except OSError as exc:  # e.g. a disk that filled up: the file it was writing, in one line
        logger.debug("traceback", exc_info=True)
        print(
            f"ridurre {args.command}: failed: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(f"ridurre {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a CLI user gets a message, the log gets the traceback
        logger.debug("traceback", exc_info=True)
        print(f"ridurre {args.command}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
        logger.propagate = propagates


if __name__ == "__main__":
    sys.exit(main())
