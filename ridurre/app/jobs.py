"""Pruning jobs for people who do not write Python: ``ridurre prune`` (and the demo's runs).

A job checks everything before it writes anything (the model file, the data and their shapes, the
configuration, the output directory), then runs the prune-and-finetune loop of
:class:`ridurre.pruning.Pruner` and leaves behind, in its output directory::

    config.json           the effective configuration (a valid --config file)
    models/               original.keras, iteration_000.keras, ..., final.keras
    logs/                 history.json, history.csv, ridurre.log
    reports/report.md     before/after per layer, accuracy, measured latency, what was removed
    plots/                history.png, channels.png, scores.png

The user's model file is never written to, and models are loaded in Keras's safe mode (``--unsafe``
lifts it). An output directory that is not empty must be this run's (``--resume``, checked against
its ``config.json`` and the fingerprint in ``state.json``) or is emptied of an earlier run's files
first (``--overwrite``).

Example (what ``ridurre prune --model m.keras --data digits --method l1 --ratio 0.3`` runs)::

    from ridurre.app.config import resolve_config
    from ridurre.app.jobs import run_prune
    config = resolve_config(cli={"model": {"path": "m.keras"}, "strategy": {"ratio": 0.3}})
    summary = run_prune(config)
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass

import keras
import numpy as np

from ridurre import graph as _graph
from ridurre._io import file_sha256, remove_leftover_temporaries, save_model_atomic, unwritable_reason
from ridurre._loading import load_keras_model
from ridurre._progress import Progress
from ridurre.app import report as _report
from ridurre.app.config import ConfigError
from ridurre.app.deploy import measure_runtimes
from ridurre.app.inputs import (
    accuracy,
    check_data_fits,
    check_output_dir,
    custom_objects_option,
    eval_split,
    load_data,
    load_model_file,
)
from ridurre.app.report import fmt_pct
from ridurre.app.runlog import attach_log_file, detach, log_failure
from ridurre.app.runlog import console as make_console
from ridurre.criteria import criterion_class
from ridurre.metrics import measure_latency, model_stats
from ridurre.pruning import Pruner
from ridurre.pruning.checkpoints import describe

__all__ = [
    "PruneRun",
    "make_compile_fn",
    "make_finetune_fn",
    "make_pruner",
    "configured_latency_table",
    "check_blocks",
    "load_latency_table",
    "prune_model",
    "latency_ms",
    "measure_models",
    "finish_run",
    "run_prune",
    "dry_run",
    "RUN_FILES",
    "missed_limits",
]

RUN_FILES = (
    "config.json",
    "state.json",
    "models/original.keras",
    "models/final.keras",
    "models/iteration_[0-9][0-9][0-9].keras",
    "logs/history.json",
    "logs/history.csv",
    "logs/ridurre.log",
    "reports/report.md",
    "reports/summary.json",
    "plots/history.png",
    "plots/channels.png",
    "plots/scores.png",
)
"""What ``ridurre prune`` writes in its output directory (glob patterns): what ``--overwrite`` removes."""

logger = logging.getLogger("ridurre")


@dataclass
class PruneRun:
    """What one pruning run produced (what the report and the tables are made of).

    Attributes:
        original: the model given (never modified).
        sparse: what sparse training before pruning did (``None`` without it): method, epochs,
            strength and the validation accuracy after it.
        blocks: the residual blocks removed before the channels (``None`` without
            ``strategy.blocks``): their merges' names and the MACs before and after.
        pruned: the pruned and finetuned model.
        pruner: the :class:`~ridurre.pruning.BasePruning` that ran (its ``history``).
        seconds: wall time of the loop.
        split: the split accuracy is reported on (``"test"`` or ``"validation"``).
        accuracy_before, accuracy_after: accuracy on that split.
        val_before: validation accuracy before pruning (the first point of the history plot).
        compile: how rebuilt models were compiled.
    """

    original: object
    pruned: object
    pruner: object
    seconds: float
    split: str
    accuracy_before: float | None
    accuracy_after: float | None
    val_before: float | None
    compile: str
    sparse: dict | None = None
    blocks: dict | None = None


def _targets(loss, y, num_outputs):
    text = str(loss).lower()
    if "categorical" in text and "sparse" not in text:
        return np.eye(num_outputs, dtype="float32")[y]
    if "binary" in text:
        return y.astype("float32").reshape(-1, 1)
    return y


def make_compile_fn(model, learning_rate=1e-3):
    """``compile_fn(new_model)`` re-using ``model``'s compiled loss and optimizer when it has them,
    else Adam(``learning_rate``) with a classification loss and accuracy. Returns
    ``(compile_fn, description)``."""
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if config and config.get("optimizer") is not None and config.get("loss") is not None:

        def compile_fn(new):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                new.compile_from_config(copy.deepcopy(config))

        return compile_fn, f"the model's own (loss {config['loss']!r})"
    outputs = model.outputs[0].shape[-1]
    loss = "binary_crossentropy" if outputs == 1 else "sparse_categorical_crossentropy"

    def compile_fn(new):
        new.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])

    return compile_fn, f"default (Adam {learning_rate:g}, {loss})"


def make_finetune_fn(data, batch_size, seed, progress, label="", total_epochs=None):
    """``finetune(model, initial_epoch, end_epoch)`` fitting on the training split (seeded); one
    progress bar counts the epochs of all the calls."""
    bar = progress.epochs(f"{label}finetune epochs", total_epochs)

    def finetune(model, initial_epoch, end_epoch):
        keras.utils.set_random_seed(seed + initial_epoch)
        loss = (model.get_compile_config() or {}).get("loss")
        n_out = model.outputs[0].shape[-1]
        val = (data.x_val, _targets(loss, data.y_val, n_out)) if len(data.x_val) else None
        return model.fit(
            data.x_train,
            _targets(loss, data.y_train, n_out),
            batch_size=batch_size,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            validation_data=val,
            verbose=0,
            callbacks=[bar],
        )

    finetune.bar = bar.task
    return finetune


def make_pruner(
    config,
    compile_fn,
    finetune_fn,
    data,
    output_dir=None,
    evaluate_fn=None,
    baseline_metric=None,
    model=None,
    resume=False,
    macs_scale=1.0,
):
    """The :class:`~ridurre.pruning.Pruner` a :class:`~ridurre.app.config.Config` describes.

    ``strategy.method`` names the criterion (any name of :mod:`ridurre.criteria`),
    ``strategy.ratio`` becomes ``maximum_pruning_percent``, ``strategy.target_macs`` X becomes
    ``max_macs_reduction = 1 - X * macs_scale`` (``macs_scale``: the original model's MACs over those
    of the model the loop starts from, when residual blocks were removed first),
    ``strategy.target_latency`` X (with ``strategy.latency_table``)
    ``target_speedup = 1 / X`` measured by the table, and ``strategy.step`` the share of each group removed per
    iteration (without it the steps are sized to reach the limits in ``strategy.iterations``
    iterations); ``strategy.head_ratio`` becomes the per-iteration
    ``head_pruning_factor`` of the attention heads. A criterion that needs data gets
    ``data.activation_samples`` training examples (and their targets, for gradients);
    ``strategy.max_metric_drop`` compares ``evaluate_fn`` (validation accuracy) with
    ``baseline_metric``. The data are part of the run's fingerprint (``resume`` refuses a run on
    other data).
    """
    ratio, target, step = config.limits()
    criterion = config.criterion()
    table = configured_latency_table(config)
    latency_target = config["strategy.target_latency"]
    options = config.criterion_options()
    needs = criterion_class(criterion).needs
    if "data" in needs:
        options["data"] = data.x_train[: config["data.activation_samples"]]
    if "gradients" in needs:
        if model is None:
            raise ValueError(f"make_pruner: criterion {criterion!r} takes gradients: pass the model")
        options["labels"], options["loss"] = _gradient_targets(model, data.y_train[: config["data.activation_samples"]])
    try:
        pruner = Pruner(
            criterion,
            compile_fn,
            finetune_fn,
            config["strategy.finetune_epochs"],
            pruning_factor=step,
            criterion_options=options,
            maximum_prune_iterations=config["strategy.iterations"],
            maximum_pruning_percent=ratio,
            max_macs_reduction=None if target is None else 1.0 - target * macs_scale,
            target_speedup=None if latency_target is None else 1.0 / latency_target,
            latency_table=table,
            layers=config["layers.include"],
            exclude=config["layers.exclude"],
            min_channels=config["strategy.min_channels"],
            max_fraction_per_layer=config["strategy.max_fraction_per_layer"],
            round_to=config["strategy.round_to"],
            ranking=config["strategy.ranking"],
            head_pruning_factor=config.head_step(),
            seed=config["strategy.seed"],
            output_dir=output_dir,
            resume=resume,
            verify=config["validation.verify"],
            evaluate_fn=evaluate_fn,
            max_metric_drop=config["strategy.max_metric_drop"],
            on_metric_drop=config["strategy.on_metric_drop"],
            keep_best=config["strategy.keep_best"],
            baseline_metric=baseline_metric if config["strategy.max_metric_drop"] is not None else None,
            size_steps_to_limits=config.sized_steps(),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError("strategy", message=f"strategy: {exc}") from None
    pruner.run_identity = {
        "data": describe({"name": data.name, "x_train": data.x_train, "y_train": data.y_train}),
        "finetune": {k: config[f"finetune.{k}"] for k in ("batch_size", "learning_rate")},
    }
    return pruner


def configured_latency_table(config):
    """The latency table of ``strategy.latency_table`` (``None`` without one); ``ConfigError`` for
    a table that cannot be read or a ``strategy.target_latency`` without a table."""
    table = load_latency_table(config["strategy.latency_table"])
    if config["strategy.target_latency"] is not None and table is None:
        raise ConfigError(
            "strategy.target_latency",
            message="strategy.target_latency (--target-latency) needs a latency table (--latency-table FILE)",
        )
    return table


def load_latency_table(path, flag="--latency-table"):
    """The :class:`ridurre.deploy.LatencyTable` saved at ``path`` (``None`` for no path).

    With a table, global ranking favours the groups that save the most time per channel, and
    ``strategy.target_latency`` X stops the run when the table predicts ``X`` times the original
    latency (``strategy.target_macs`` still limits the MACs).
    """
    if not path:
        return None
    from ridurre.deploy import LatencyTable

    try:
        return LatencyTable.load(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(flag, message=f"{flag}: cannot read a latency table from {path}: {exc}") from None


def _gradient_targets(model, y):
    """Targets (and a loss, when the model has none compiled) for the gradients of ``model``'s loss:
    its compiled loss with targets shaped for it, else the loss :func:`make_compile_fn` compiles."""
    n_out = model.outputs[0].shape[-1]
    config = model.get_compile_config() if getattr(model, "compiled", False) else None
    if config and config.get("loss") is not None:
        return _targets(config["loss"], y, n_out), None
    loss = "binary_crossentropy" if n_out == 1 else "sparse_categorical_crossentropy"
    return _targets(loss, y, n_out), loss


def sparse_train(model, data, config, compile_fn, progress, label=""):
    """Train a copy of ``model`` for ``sparse.epochs`` epochs with a sparsity callback
    (:mod:`ridurre.pruning.sparse`); returns ``(sparse model, info dict)``. ``model`` is not changed."""
    from ridurre.pruning.sparse import SPARSITY_METHODS, GroupLassoSparsity

    epochs, method = config["sparse.epochs"], config["sparse.method"]
    trained = keras.models.clone_model(model)
    trained.set_weights(model.get_weights())
    compile_fn(trained)
    options = {"alpha": config["sparse.alpha"]} if SPARSITY_METHODS[method] is GroupLassoSparsity else {}
    callback = SPARSITY_METHODS[method](config["sparse.strength"], **options)
    bar = progress.epochs(f"{label}sparse training epochs", epochs)
    keras.utils.set_random_seed(config["strategy.seed"])
    loss = (trained.get_compile_config() or {}).get("loss")
    n_out = trained.outputs[0].shape[-1]
    started = time.perf_counter()
    trained.fit(
        data.x_train,
        _targets(loss, data.y_train, n_out),
        batch_size=config["finetune.batch_size"],
        epochs=epochs,
        verbose=0,
        callbacks=[callback, bar],
    )
    progress.finish(bar.task)
    x_val, y_val = (data.x_val, data.y_val) if len(data.x_val) else eval_split(data)[:2]
    info = {
        "method": method,
        "epochs": epochs,
        "strength": config["sparse.strength"],
        "accuracy": accuracy(trained, x_val, y_val),
        "seconds": time.perf_counter() - started,
    }
    logger.info(
        "Sparse training (%s, strength %g): %d epoch(s), validation accuracy %s",
        method,
        info["strength"],
        epochs,
        fmt_pct(info["accuracy"]),
    )
    return trained, info


def check_blocks(config, model=None):
    """``ConfigError`` for a ``strategy.blocks`` with a latency table, without
    ``strategy.target_macs`` or at or below it, or (given ``model``) on a model without residual
    blocks; nothing without ``strategy.blocks``."""
    blocks, target = config["strategy.blocks"], config["strategy.target_macs"]
    if blocks is None:
        return
    if config["strategy.latency_table"]:
        raise ConfigError(
            "strategy.blocks",
            message="strategy.blocks (--blocks) cannot be combined with a latency table: the table was measured "
            "on the model with all its blocks",
        )
    if target is None:
        raise ConfigError(
            "strategy.blocks",
            message="strategy.blocks (--blocks) needs strategy.target_macs (--target-macs): the blocks go first, "
            "the channels take the rest of the way to it",
        )
    if blocks <= target:
        raise ConfigError(
            "strategy.blocks",
            message=f"strategy.blocks (--blocks {blocks:g}) must keep more MACs than strategy.target_macs "
            f"({target:g}): the blocks go first, the channels take the rest",
        )
    if model is not None:
        from ridurre.surgery import residual_branches

        if not residual_branches(model):
            raise ConfigError(
                "strategy.blocks", message=f"strategy.blocks (--blocks): model {model.name!r} has no residual block"
            )


def remove_blocks(model, data, config):
    """Depth pruning before the channels: remove residual blocks of ``model`` until about
    ``strategy.blocks`` of its MACs remain (:func:`ridurre.surgery.prune_branches`, blocks scored
    on ``data.activation_samples`` training examples). Nothing is finetuned here: the loop's first
    step finetunes.

    Returns:
        ``(model the loop starts from, info dict or None, macs_scale for make_pruner)``: ``model``
        itself, ``None`` and 1.0 without ``strategy.blocks``.
    """
    if config["strategy.blocks"] is None:
        return model, None, 1.0
    check_blocks(config)
    from ridurre.surgery import prune_branches

    started = time.perf_counter()
    macs = model_stats(model).total_macs
    try:
        smaller, removed = prune_branches(
            model, config["strategy.blocks"], data=data.x_train[: config["data.activation_samples"]]
        )
    except ValueError as exc:
        raise ConfigError("strategy.blocks", message=f"strategy.blocks (--blocks): {exc}") from None
    left = model_stats(smaller).total_macs
    info = {
        "removed": [b.merge for b in removed],
        "macs_before": int(macs),
        "macs_after": int(left),
        "seconds": time.perf_counter() - started,
    }
    logger.info(
        "Removed %d residual block(s) (%s): %s -> %s MACs (%.2fx fewer)",
        len(removed),
        ", ".join(info["removed"]),
        f"{macs:,}",
        f"{left:,}",
        macs / left,
    )
    return smaller, info, macs / left


def prune_model(model, data, config, output_dir, progress, label="", resume=False):
    """Run the loop on ``model`` (never modified), writing checkpoints under ``output_dir``
    (``resume``: continue the run recorded there).

    Returns:
        A :class:`PruneRun`.
    """
    compile_fn, how = make_compile_fn(model, config["finetune.learning_rate"])
    finetune = None
    if config["strategy.finetune_epochs"] > 0:
        finetune = make_finetune_fn(
            data,
            config["finetune.batch_size"],
            config["strategy.seed"],
            progress,
            label,
            config["strategy.iterations"] * config["strategy.finetune_epochs"],
        )
    x_eval, y_eval, split = eval_split(data)
    x_val, y_val = (data.x_val, data.y_val) if len(data.x_val) else (x_eval, y_eval)
    iterations = progress.add(f"{label}pruning iterations", total=config["strategy.iterations"])

    def evaluate(new):
        progress.advance(iterations)
        return accuracy(new, x_val, y_val) or 0.0

    if output_dir is not None:
        save_model_atomic(model, os.path.join(output_dir, "models", "original.keras"))
    stats = model_stats(model)
    before = accuracy(model, x_eval, y_eval)
    val_before = accuracy(model, x_val, y_val)
    sparse, blocks, start = None, None, model
    if config["sparse.epochs"] > 0:
        start, sparse = sparse_train(model, data, config, compile_fn, progress, label)
    start, blocks, macs_scale = remove_blocks(start, data, config)
    pruner = make_pruner(
        config,
        compile_fn,
        finetune,
        data,
        output_dir,
        evaluate,
        baseline_metric=val_before,
        model=start,
        resume=resume,
        macs_scale=macs_scale,
    )
    ratio, target, step = config.limits()
    logger.info(
        "Original model %r: %s params, %s MACs, %s accuracy %s",
        model.name,
        f"{stats.total_params:,}",
        f"{stats.total_macs:,}",
        split,
        fmt_pct(before),
    )
    logger.info(
        "Pruning with %s: up to %d iterations of %s (limits: %s), %d finetune epoch(s) each, compile: %s",
        config["strategy.method"],
        config["strategy.iterations"],
        "steps sized to reach the limits" if config.sized_steps() else f"{100 * step:.1f} % of the remaining channels",
        _limits_text(ratio, target, config["strategy.target_latency"]),
        config["strategy.finetune_epochs"],
        how,
    )
    started = time.perf_counter()
    pruned, _ = pruner.run_pruning(start)
    seconds = time.perf_counter() - started
    progress.finish(iterations)
    if finetune is not None:
        progress.finish(finetune.bar)
    checks = len(pruner.history) if config["validation.verify"] else 0
    if checks:
        mode = (
            "exact comparison with the zeroed model"
            if config["validation.verify"] == "exact"
            else "output shape and finite values"
        )
        logger.info("Verification: %d/%d forward-pass checks passed (%s)", checks, checks, mode)
    after = accuracy(pruned, x_eval, y_eval)
    return PruneRun(
        original=model,
        pruned=pruned,
        pruner=pruner,
        seconds=seconds,
        split=split,
        accuracy_before=before,
        accuracy_after=after,
        val_before=val_before,
        compile=how,
        sparse=sparse,
        blocks=blocks,
    )


def _limits_text(ratio, target, latency=None):
    parts = []
    if ratio is not None:
        parts.append(f"at most {100 * ratio:.0f} % of the channels")
    if target is not None:
        parts.append(f"keep about {100 * target:.0f} % of the MACs ({1 / target:.2f}x fewer)")
    if latency is not None:
        parts.append(f"keep about {100 * latency:.0f} % of the predicted latency ({1 / latency:.2f}x faster)")
    return ", ".join(parts)


def latency_ms(model, batch_size, input_shape, warmup=2, repeats=10):
    """Median milliseconds of one compiled forward pass (``model.predict_on_batch``) on random inputs
    (see :func:`ridurre.metrics.measure_latency`)."""
    return measure_latency(
        model, batch_size=batch_size, input_shape=tuple(input_shape), warmup=warmup, repeats=repeats, compiled=True
    ).median_ms


def measure_models(models, batch_sizes=(256, 1), rounds=3, budget=0.5, progress=None, runtimes=("keras",)):
    """Measured latency of each model in Keras and in each runtime of ``runtimes`` whose packages are
    installed, timed side by side in interleaved rounds (:func:`ridurre.app.deploy.measure_runtimes`).

    Returns:
        ``{name: {runtime: {batch_size: LatencyResult}}}``.
    """
    runtimes = ["keras", *[r for r in runtimes if r != "keras"]]
    return measure_runtimes(models, runtimes, batch_sizes=batch_sizes, rounds=rounds, budget=budget, progress=progress)


def finish_run(run, data, config, output_dir, latency, model_path=None, sha_before=None, wall=None):
    """Write final.keras, the report and the plots of a run; return the report summary dict."""
    final = os.path.join(output_dir, "models", "final.keras")
    save_model_atomic(run.pruned, final)
    reloaded = load_keras_model(final, compile=False)
    x = eval_split(data)[0][:64]
    same = np.allclose(run.pruned.predict(x, verbose=0), reloaded.predict(x, verbose=0), atol=1e-5)
    summary = _report.build_summary(
        run,
        data,
        config,
        latency,
        output_dir,
        model_path=model_path,
        sha_before=sha_before,
        reload_check=same,
        wall=wall,
    )
    _report.write_run_outputs(output_dir, run, summary)
    ratio = summary["before"]["macs"] / max(1, summary["after"]["macs"])
    logger.info(
        "Final model: %s params (%.1f %% fewer), %s MACs (%.2fx fewer), %s accuracy %s -> %s",
        f"{summary['after']['params']:,}",
        100 * (1 - summary["after"]["params"] / summary["before"]["params"]),
        f"{summary['after']['macs']:,}",
        ratio,
        run.split,
        fmt_pct(run.accuracy_before),
        fmt_pct(run.accuracy_after),
    )
    for runtime, row in summary["runtimes"].items():
        for batch, speed in row["speedup"].items():
            logger.info(
                "Latency in %s at batch %s: %.3f ms -> %.3f ms (%.2fx faster, measured; %.2f of the MACs reduction)",
                runtime,
                batch,
                row["before_ms"][batch],
                row["after_ms"][batch],
                speed,
                row["speedup_over_macs"][batch],
            )
    logger.info("Wrote %s", os.path.join(output_dir, "reports", "report.md"))
    return summary


def _validated_inputs(config, custom_objects=None):
    """Load and check the model and data of a prune config (nothing is written)."""
    path = config["model.path"]
    model = load_model_file(path, custom_objects=custom_objects)
    data = load_data(
        config["data.source"], config["data.normalize"], config["data.validation_split"], config["strategy.seed"]
    )
    check_data_fits(model, data)
    configured_latency_table(config)  # a bad table is bad input: before any write
    try:
        _graph.check_model(model)
    except TypeError as exc:
        raise ConfigError("--model", message=f"--model: {exc}") from None
    check_blocks(config, model)
    return path, model, data


def _input_files(config):
    """The files a prune run reads (model, data, custom objects)."""
    source, spec = str(config["data.source"]), config["model.custom_objects"]
    return [config["model.path"], source if os.path.isfile(source) else None, spec if spec else None]


def _run_files(output_dir):
    return [p for pattern in RUN_FILES for p in sorted(glob.glob(os.path.join(glob.escape(output_dir), pattern)))]


def _check_run_directory(config, resume, overwrite):
    """Refuse an output directory this run cannot use (before anything is loaded or written):
    one holding an input, one that cannot be written, or a non-empty one that is not this run's
    (``--resume`` checks its ``config.json``; ``--overwrite`` accepts any)."""
    output_dir = config["output.dir"]
    if resume and overwrite:
        raise ConfigError("--resume", message="--resume and --overwrite exclude each other")
    check_output_dir(output_dir, _input_files(config))
    reason = unwritable_reason(output_dir)
    if reason:
        raise ConfigError("--output", message=f"--output: {reason}")
    present = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if not present or overwrite:
        return
    if not resume:
        shown = ", ".join(present[:6]) + (", ..." if len(present) > 6 else "")
        raise ConfigError(
            "--output",
            message=f"--output: {output_dir} is not empty ({shown}): --resume continues the run it holds, "
            "--overwrite replaces it, or choose another directory",
        )
    saved_config = os.path.join(output_dir, "config.json")
    if not os.path.isfile(saved_config):
        raise ConfigError("--resume", message=f"--resume: {output_dir} holds no ridurre prune run (no config.json)")
    try:
        with open(saved_config, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError("--resume", message=f"--resume: {saved_config} is unreadable ({exc})") from None
    differences = config.differences(saved if isinstance(saved, dict) else {})
    if differences:
        raise ConfigError(
            "--resume",
            message=f"--resume: {output_dir} holds a run with other settings ({'; '.join(differences)}); "
            f"resume it with its own (--config {saved_config}), or --overwrite it",
        )


def _check_resume_fingerprint(config, model, data):
    """For ``--resume``: the state to continue, after checking it belongs to this model and data."""
    probe = make_pruner(config, lambda m: None, None, data, config["output.dir"], resume=True, model=model)
    try:
        return probe.resume_state(model)
    except ValueError as exc:
        raise ConfigError("--resume", message=f"--resume: {exc}") from None


def missed_limits(summary):
    """The limits a run did not meet (``{kind: row}`` of ``summary["limits"]["met"]``), each logged
    as a warning."""
    missed = {k: v for k, v in (summary["limits"].get("met") or {}).items() if not v["met"]}
    for kind, row in missed.items():
        logger.warning(
            "Limit not met: %.1f %% of the %s removed, %.1f %% asked (%s)",
            100 * row["reached"],
            _report.LIMIT_NAMES[kind],
            100 * row["limit"],
            row["why"],
        )
    return missed


def run_prune(config, console=None, progress_enabled=True, resume=False, overwrite=False):
    """``ridurre prune``: check the inputs, prune, write the outputs, print the before/after table.

    Args:
        config: the effective :class:`~ridurre.app.config.Config`.
        console: a rich console for the tables (default: stdout).
        progress_enabled: draw progress bars.
        resume: continue the run in ``output.dir`` (it must be this run's: same configuration,
            model and data); a missing or empty directory starts a new run.
        overwrite: remove an earlier run's files (:data:`RUN_FILES`) from ``output.dir`` first.

    Returns:
        The summary dict (see :func:`ridurre.app.report.build_summary`;
        ``summary["limits"]["met"]`` says whether each limit was met), or for a dry run the plan.

    Raises:
        ConfigError: a bad option, model file, data or output directory (nothing has been written then).
    """
    console = console or make_console()
    output_dir = config["output.dir"]
    dry = config["validation.dry_run"]
    if not dry:
        _check_run_directory(config, resume, overwrite)
    custom_objects = custom_objects_option(config["model.custom_objects"], config["model.unsafe"])
    path, model, data = _validated_inputs(config, custom_objects)
    try:
        make_pruner(config, lambda m: None, None, data, model=model).check_layers(model)
    except ValueError as exc:
        raise ConfigError("--layers", message=f"--layers: {exc}") from None
    if dry:
        return dry_run(model, data, config, console, progress_enabled)
    state = _check_resume_fingerprint(config, model, data) if resume else None
    sha_before = file_sha256(path)
    started = time.perf_counter()
    removed = []
    if overwrite and os.path.isdir(output_dir):
        removed = _run_files(output_dir)
        for stale in removed:
            os.remove(stale)
        removed += remove_leftover_temporaries(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    handler = attach_log_file(output_dir)
    try:
        if removed:
            logger.warning("--overwrite: removed %d file(s) of an earlier run from %s", len(removed), output_dir)
        if state is not None:
            logger.info("--resume: continuing the run in %s after iteration %d", output_dir, state["iteration"])
        config.save(os.path.join(output_dir, "config.json"))
        logger.info("Effective configuration saved to %s", os.path.join(output_dir, "config.json"))
        with Progress(progress_enabled) as progress:
            run = prune_model(model, data, config, output_dir, progress, resume=resume)
            latency = measure_models(
                {"original": model, "pruned": run.pruned}, progress=progress, runtimes=config["report.runtimes"]
            )
        summary = finish_run(
            run,
            data,
            config,
            output_dir,
            latency,
            model_path=path,
            sha_before=sha_before,
            wall=time.perf_counter() - started,
        )
        missed_limits(summary)
    except Exception as exc:
        log_failure(handler, exc)
        raise
    finally:
        detach(handler)
    console.print(_report.comparison_table([summary], title=f"ridurre prune: {config['strategy.method']}"))
    console.print(f"Report: {os.path.join(output_dir, 'reports', 'report.md')}")
    return summary


def dry_run(model, data, config, console, progress_enabled=True):
    """Run the loop in memory without finetuning and print the plan; write nothing.

    The channels chosen after the first iteration can differ in a real run, where finetuning
    changes the weights between iterations.
    """
    plan_config = copy.deepcopy(config)
    plan_config.values["strategy"]["finetune_epochs"] = 0
    plan_config.values["strategy"]["max_metric_drop"] = None  # nothing is finetuned or evaluated
    plan_config.values["strategy"]["keep_best"] = False
    with Progress(progress_enabled) as progress:
        task = progress.add("planning (no finetune)", total=config["strategy.iterations"])
        start, _, scale = remove_blocks(model, data, config)
        pruner = make_pruner(
            plan_config, lambda m: progress.advance(task), None, data, None, None, model=start, macs_scale=scale
        )
        try:
            pruned, _ = pruner.run_pruning(start)
        except (TypeError, ValueError) as exc:
            raise ConfigError("--model", message=f"--model: cannot prune {model.name!r}: {exc}") from None
        progress.finish(task)
    before, after = model_stats(model), model_stats(pruned)
    rows = _report.layer_rows(before, after)
    console.print(_report.plan_table(rows, before, after, config, len(pruner.history)))
    console.print(
        "dry run: nothing was written. Channels chosen after the first iteration may differ in a "
        "real run, where finetuning changes the weights."
    )
    return {
        "dry_run": True,
        "layers": rows,
        "iterations": len(pruner.history),
        "before": {"params": before.total_params, "macs": before.total_macs},
        "after": {"params": after.total_params, "macs": after.total_macs},
    }
