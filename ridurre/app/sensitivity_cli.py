"""``ridurre sensitivity`` and ``python -m ridurre.sensitivity``: a per-layer sensitivity scan of a
saved model on the validation split of a dataset (the library is :mod:`ridurre.sensitivity`)."""

from __future__ import annotations

import argparse
import json
import os
import sys

import keras

from ridurre._io import input_clash, unwritable_reason, write_text_atomic
from ridurre._validation import LayerPatterns
from ridurre.app.config import ConfigError
from ridurre.app.inputs import add_loading_options, load_data, load_model_file, loading_options
from ridurre.criteria import canonical_name, criterion_names
from ridurre.sensitivity import DEFAULT_RATIOS, choose_ratios, scan
from ridurre.sensitivity.scan import check_ratios

__all__ = ["build_parser", "run", "main", "OUTPUT_FILES"]

OUTPUT_FILES = ("sensitivity.csv", "sensitivity.json", "sensitivity.png", "chosen_ratios.json")
"""What ``ridurre sensitivity`` writes in ``--output``."""


def build_parser(parser=None):
    """Add the options of ``ridurre sensitivity`` to an argparse parser.

    Args:
        parser: an ``argparse.ArgumentParser`` (e.g. a sub-command's); ``None`` makes one.

    Returns:
        The parser.

    Example:
        >>> args = build_parser().parse_args(["--model", "m.keras", "--data", "digits"])
        >>> args.ratios, args.output, args.max_drop
        ('0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9', 'sensitivity_output', 0.02)
    """
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="ridurre sensitivity", description="Per-layer pruning sensitivity scan on validation data."
        )
    add = parser.add_argument
    add("--model", required=True, help="a saved .keras model")
    add("--data", required=True, help="digits, mnist, cifar10, or an .npz with x, y (and x_val, y_val)")
    add("--ratios", default=",".join(str(r) for r in DEFAULT_RATIOS), help="comma-separated shares in (0, 1)")
    add("--layers", default=None, help="regular expression selecting layers (full match)")
    add("--criterion", default="l1", help=f"one of {', '.join(criterion_names(aliases=True))}")
    add("--output", default="sensitivity_output", help="output directory")
    add("--max-drop", type=float, default=0.02, help="largest metric drop accepted when choosing ratios")
    add("--resume", action="store_true", help="skip the points already in OUTPUT/sensitivity.csv")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--batch-size", type=int, default=128, help="evaluation batch size")
    add_loading_options(parser)
    return parser


def _loss_name(model):
    loss = getattr(model, "loss", None)
    if isinstance(loss, str):
        return loss.lower()
    return str(getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__).lower()


def run(args):
    """Run ``ridurre sensitivity``: scan a saved model on the validation split of ``--data``.

    Writes ``sensitivity.csv``, ``sensitivity.json``, ``sensitivity.png`` and
    ``chosen_ratios.json`` in ``--output``. An uncompiled model is compiled with (sparse)
    categorical crossentropy and accuracy; integer labels are one-hot encoded for a model
    compiled with a non-sparse categorical loss.

    Args:
        args: the namespace parsed by a parser from :func:`build_parser`.

    Returns:
        The exit code: 0 on success, 2 on bad input (a missing or unloadable model, bad ratios,
        an unknown criterion, data that does not fit the model...), reported on stderr before
        anything is written; 130 when interrupted (rerun with ``--resume``).

    Example:
        >>> import os, tempfile
        >>> missing = os.path.join(tempfile.mkdtemp(), "missing.keras")
        >>> run(build_parser().parse_args(["--model", missing, "--data", "digits"]))
        2
    """

    def fail(message):
        print(f"ridurre sensitivity: error: {message}", file=sys.stderr)
        return 2

    try:
        ratios = check_ratios([float(r) for r in str(args.ratios).split(",") if r.strip()], "--ratios")
        criterion = canonical_name(args.criterion)
        LayerPatterns.parse(args.layers, "--layers")
    except ValueError as exc:
        return fail(
            str(exc)
            if "could not convert" not in str(exc)
            else f"--ratios: {args.ratios!r} is not a comma-separated list of numbers"
        )
    if args.batch_size < 1:
        return fail(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.max_drop >= 0:
        return fail(f"--max-drop must be >= 0, got {args.max_drop}")
    outputs = [os.path.join(args.output, name) for name in OUTPUT_FILES]
    clash = input_clash({"--model": args.model, "--data": args.data if os.path.isfile(args.data) else None}, outputs)
    if clash:
        return fail(f"{clash[0]} {clash[1]}: the scan would overwrite it ({clash[2]}); choose another --output")
    reason = unwritable_reason(args.output)
    if reason:
        return fail(f"--output: {reason}")
    try:
        model = load_model_file(args.model, custom_objects=loading_options(args))
        data = load_data(args.data, normalize="auto", validation_split=0.1, seed=0)
    except ConfigError as exc:
        return fail(str(exc))
    x, y = data.x_val, data.y_val
    if len(x) == 0:
        return fail(f"--data: {args.data!r} has an empty validation split")
    expected = tuple(model.inputs[0].shape[1:])
    if (
        len(model.inputs) != 1
        or len(expected) != x.ndim - 1
        or any(e is not None and e != s for e, s in zip(expected, x.shape[1:]))
    ):
        return fail(f"--data: examples of shape {x.shape[1:]} do not fit the model's input {expected}")
    units = int(model.outputs[0].shape[-1])
    if units > 1 and y.max() >= units:
        return fail(f"--data: labels go up to {int(y.max())} but the model has {units} outputs")
    sample = data.x_train[:512] if len(data.x_train) else x
    sample_labels = data.y_train[:512] if len(data.x_train) else y  # for the gradient criteria
    if not getattr(model, "compiled", False):
        loss = "binary_crossentropy" if units == 1 else "sparse_categorical_crossentropy"
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    elif "categorical" in _loss_name(model) and "sparse" not in _loss_name(model):
        y = keras.utils.to_categorical(y, units)
        sample_labels = keras.utils.to_categorical(sample_labels, units)
    try:
        result = scan(
            model,
            x,
            y,
            ratios=ratios,
            layers=args.layers,
            criterion=criterion,
            data=sample,
            labels=sample_labels,
            batch_size=args.batch_size,
            output_dir=args.output,
            resume=args.resume,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"interrupted: rerun with --resume to continue from {args.output}", file=sys.stderr)
        return 130
    paths = result.save(args.output)
    chosen = choose_ratios(result, max_drop=args.max_drop)
    write_text_atomic(os.path.join(args.output, "chosen_ratios.json"), json.dumps(chosen, indent=1) + "\n")
    print(f"baseline {result.metric_name} on the validation split: {result.baseline:.4f}")
    print(f"chosen ratios (max drop {args.max_drop:g}):")
    for layer, ratio in chosen.items():
        print(f"  {layer:<32} {ratio:.2f}")
    print("wrote " + ", ".join(list(paths.values()) + [os.path.join(args.output, "chosen_ratios.json")]))
    return 0


def main(argv=None):
    """``python -m ridurre.sensitivity --model M --data D ...``; returns the exit code of :func:`run`."""
    return run(build_parser().parse_args(argv))
