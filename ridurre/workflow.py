"""Pruning jobs for people who do not write Python: ``ridurre prune`` and ``ridurre workflow``.

A job checks everything before it writes anything (the model file, the data and their shapes, the
configuration, the output directory), then runs the prune-and-finetune loop of
:class:`ridurre.pruning.BasePruning` and leaves behind, in its output directory::

    config.json           the effective configuration (a valid --config file)
    models/               original.keras, iteration_000.keras, ..., final.keras
    logs/                 history.json, history.csv, ridurre.log
    reports/report.md     before/after per layer, accuracy, measured latency, what was removed
    plots/                history.png, channels.png, scores.png

The user's model file is never written to, and models are loaded with ``safe_mode=True``.

Example (what ``ridurre prune --model m.keras --data digits --method l1 --ratio 0.3`` runs)::

    from ridurre.config import resolve_config
    from ridurre.workflow import run_prune
    config = resolve_config(cli={"model": {"path": "m.keras"}, "strategy": {"ratio": 0.3}})
    summary = run_prune(config)
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import time
import warnings

import numpy as np

from ridurre.config import ConfigError

__all__ = ["Progress", "load_model_file", "load_data", "check_data_fits", "accuracy", "make_pruner",
           "prune_model", "latency_ms", "measure_models", "run_prune", "run_workflow", "file_sha256"]

logger = logging.getLogger("ridurre")


# ----------------------------------------------------------------------------- progress bars

class Progress:
    """Rich progress bars on stderr; a no-op when ``enabled`` is False.

    Example:
        >>> with Progress(enabled=False) as progress:
        ...     task = progress.add("counting", total=3)
        ...     progress.advance(task)
    """

    def __init__(self, enabled=True):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as _Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn)

        self.console = Console(stderr=True)
        self._bars = _Progress(SpinnerColumn(), TextColumn("{task.description:<28}"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), console=self.console,
                               disable=not enabled)

    def __enter__(self):
        self._bars.start()
        return self

    def __exit__(self, *exc):
        self._bars.stop()

    def add(self, description, total=None):
        """A new bar; returns its id."""
        return self._bars.add_task(description, total=total)

    def advance(self, task, n=1):
        self._bars.advance(task, n)

    def finish(self, task):
        """Fill a bar (a loop that stopped early at its limit is done)."""
        done = self._bars.tasks[[t.id for t in self._bars.tasks].index(task)].completed
        self._bars.update(task, total=max(done, 1), completed=max(done, 1))

    def epochs(self, description, epochs):
        """A keras callback advancing a new bar of ``epochs`` epochs."""
        import keras

        task = self.add(description, total=epochs)
        progress = self

        class _EpochBar(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                progress.advance(task)

        bar = _EpochBar()
        bar.task = task
        return bar


# ----------------------------------------------------------------------------- inputs

def file_sha256(path):
    """SHA-256 of a file (to show that the input model was left untouched)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model_file(path, flag="--model"):
    """Load a ``.keras`` (or legacy ``.h5``) model with ``safe_mode=True``: nothing is unpickled.

    Raises:
        ConfigError: the file is missing or Keras cannot load it (the message names ``flag``).
    """
    import keras

    if not path:
        raise ConfigError(flag, message=f"{flag}: a model file is required (a .keras archive)")
    if not os.path.isfile(path):
        raise ConfigError(flag, message=f"{flag}: no such model file: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optimizer-state notices are noise to a CLI user
        try:
            return keras.models.load_model(path, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - any failure is a bad input file here
            raise ConfigError(flag, message=f"{flag}: Keras cannot load {path}: {exc}") from None


def load_data(source, normalize="auto", validation_split=0.1, seed=0, flag="--data"):
    """Load ``digits``, ``mnist``, ``cifar10`` or an ``.npz`` file with :func:`ridurre.datasets.load_dataset`.

    Raises:
        ConfigError: unknown name, missing file or unreadable arrays (naming ``flag``).
    """
    from ridurre.datasets import load_dataset

    kwargs = {"validation_split": validation_split, "seed": seed}
    if normalize != "auto":
        kwargs["normalize"] = None if normalize == "none" else normalize
    if str(source).endswith(".npz") and not os.path.isfile(source):
        raise ConfigError(flag, message=f"{flag}: no such data file: {source}")
    try:
        return load_dataset(source, **kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown names, bad arrays, no internet...
        hint = " (no internet? pass a local .npz file with arrays x and y)" if "URL" in str(exc) else ""
        raise ConfigError(flag, message=f"{flag}: cannot load data {source!r}: {exc}{hint}") from None


def check_data_fits(model, data, flag="--data"):
    """Raise :class:`ConfigError` unless ``data`` has the input shape and classes ``model`` expects."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ConfigError("--model", message=f"--model: the command line handles single-input, single-output "
                                              f"models; {model.name!r} has {len(model.inputs)} inputs and "
                                              f"{len(model.outputs)} outputs")
    expected = tuple(model.inputs[0].shape[1:])
    got = tuple(data.x_train.shape[1:])
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        shown = "(" + ", ".join("any" if e is None else str(e) for e in expected) + ")"
        raise ConfigError(flag, message=f"{flag}: {data.name!r} has inputs of shape {got} but the model "
                                        f"{model.name!r} expects {shown} (batch axis left out)")
    outputs = model.outputs[0].shape[-1]
    if outputs is not None and outputs > 1 and data.num_classes > outputs:
        raise ConfigError(flag, message=f"{flag}: {data.name!r} has {data.num_classes} classes but the model "
                                        f"{model.name!r} has only {outputs} outputs")


def check_output_dir(output_dir, inputs, flag="--output"):
    """Refuse an output directory that holds (and so could overwrite) one of the input files."""
    out = os.path.realpath(output_dir)
    for path in inputs:
        if path and os.path.commonpath([out, os.path.realpath(path)]) == out:
            raise ConfigError(flag, message=f"{flag}: {output_dir} contains the input model {path}; "
                                            "choose another directory (the input model is never overwritten)")


# ----------------------------------------------------------------------------- training pieces

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
    import keras

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
    import keras

    bar = progress.epochs(f"{label}finetune epochs", total_epochs)

    def finetune(model, initial_epoch, end_epoch):
        keras.utils.set_random_seed(seed + initial_epoch)
        loss = (model.get_compile_config() or {}).get("loss")
        n_out = model.outputs[0].shape[-1]
        val = (data.x_val, _targets(loss, data.y_val, n_out)) if len(data.x_val) else None
        return model.fit(data.x_train, _targets(loss, data.y_train, n_out), batch_size=batch_size,
                         initial_epoch=initial_epoch, epochs=end_epoch, validation_data=val,
                         verbose=0, callbacks=[bar])
    finetune.bar = bar.task
    return finetune


def accuracy(model, x, y, batch_size=256):
    """Share of ``x`` classified as ``y`` (argmax, or a 0.5 threshold for one output); None if empty.

    Example:
        >>> import keras, numpy as np
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
        >>> 0.0 <= accuracy(model, np.zeros((4, 2)), np.array([0, 1, 0, 1])) <= 1.0
        True
    """
    if len(x) == 0:
        return None
    p = np.asarray(model.predict(x, batch_size=batch_size, verbose=0)).reshape(len(x), -1)
    pred = (p[:, 0] > 0.5).astype(int) if p.shape[1] == 1 else p.argmax(axis=1)
    return float(np.mean(pred == np.asarray(y)))


def eval_split(data):
    """``(x, y, name)`` of the split to report accuracy on: test, else validation."""
    if len(data.x_test):
        return data.x_test, data.y_test, "test"
    return data.x_val, data.y_val, "validation"


def make_pruner(config, compile_fn, finetune_fn, data, output_dir=None, evaluate_fn=None):
    """The :data:`ridurre.methods.METHODS` object a :class:`~ridurre.config.Config` describes.

    ``strategy.ratio`` becomes ``maximum_pruning_percent``, ``strategy.target_macs`` X becomes
    ``max_macs_reduction = 1 - X``, and ``strategy.step`` (derived when not given) the factor of
    every iteration (a keep factor ``1 - step`` for KMeans).
    """
    from ridurre.methods import METHODS

    ratio, target, step = config.limits()
    method = config["strategy.method"]
    options = dict(
        layers=config["layers.include"], exclude=config["layers.exclude"],
        min_channels=config["strategy.min_channels"], max_fraction_per_layer=config["strategy.max_fraction_per_layer"],
        round_to=config["strategy.round_to"], ranking=config["strategy.ranking"], seed=config["strategy.seed"],
        output_dir=output_dir, verify=config["validation.verify"], evaluate_fn=evaluate_fn,
        max_macs_reduction=None if target is None else 1.0 - target,
    )
    if method == "activation":
        options.update(data=data.x_train[: config["data.activation_samples"]], kind=config["strategy.activation_kind"])
    factor = 1.0 - step if method == "kmeans" else step
    try:
        return METHODS[method](factor, compile_fn, finetune_fn, config["strategy.finetune_epochs"],
                               maximum_prune_iterations=config["strategy.iterations"],
                               maximum_pruning_percent=ratio, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError("strategy", message=f"strategy: {exc}") from None


# ----------------------------------------------------------------------------- running

def _attach_log_file(output_dir):
    path = os.path.join(output_dir, "logs", "ridurre.log")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def _log_failure(handler, exc):
    """Put the traceback of a failed run in the log file only (the console gets one line)."""
    import sys

    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "run failed: %s", (exc,), sys.exc_info())
    handler.handle(record)


def _detach(handler):
    logger.removeHandler(handler)
    handler.close()


def prune_model(model, data, config, output_dir, progress, label=""):
    """Run the loop on ``model`` (never modified), writing checkpoints under ``output_dir``.

    Returns a dict with ``original``, ``pruned``, ``pruner``, ``seconds`` and the accuracies.
    """
    from ridurre.checkpoints import save_model_atomic
    from ridurre.metrics import model_stats

    compile_fn, how = make_compile_fn(model, config["finetune.learning_rate"])
    finetune = None
    if config["strategy.finetune_epochs"] > 0:
        finetune = make_finetune_fn(data, config["finetune.batch_size"], config["strategy.seed"], progress, label,
                                    config["strategy.iterations"] * config["strategy.finetune_epochs"])
    x_eval, y_eval, split = eval_split(data)
    x_val, y_val = (data.x_val, data.y_val) if len(data.x_val) else (x_eval, y_eval)
    iterations = progress.add(f"{label}pruning iterations", total=config["strategy.iterations"])

    def evaluate(new):
        progress.advance(iterations)
        return accuracy(new, x_val, y_val) or 0.0

    if output_dir is not None:
        save_model_atomic(model, os.path.join(output_dir, "models", "original.keras"))
    pruner = make_pruner(config, compile_fn, finetune, data, output_dir, evaluate)
    stats = model_stats(model)
    before = accuracy(model, x_eval, y_eval)
    val_before = accuracy(model, x_val, y_val)
    ratio, target, step = config.limits()
    logger.info("Original model %r: %s params, %s MACs, %s accuracy %s", model.name, f"{stats.total_params:,}",
                f"{stats.total_macs:,}", split, _pct(before))
    logger.info("Pruning with %s: up to %d iterations of %.1f %% of the remaining channels (limits: %s), "
                "%d finetune epoch(s) each, compile: %s", config["strategy.method"], config["strategy.iterations"],
                100 * step, _limits_text(ratio, target), config["strategy.finetune_epochs"], how)
    started = time.perf_counter()
    pruned, _ = pruner.run_pruning(model)
    seconds = time.perf_counter() - started
    progress.finish(iterations)
    if finetune is not None:
        progress.finish(finetune.bar)
    checks = len(pruner.history) if config["validation.verify"] else 0
    if checks:
        mode = "exact comparison with the zeroed model" if config["validation.verify"] == "exact" else \
            "output shape and finite values"
        logger.info("Verification: %d/%d forward-pass checks passed (%s)", checks, checks, mode)
    after = accuracy(pruned, x_eval, y_eval)
    return {"original": model, "pruned": pruned, "pruner": pruner, "seconds": seconds, "split": split,
            "accuracy_before": before, "accuracy_after": after, "val_before": val_before, "compile": how}


def _limits_text(ratio, target):
    parts = []
    if ratio is not None:
        parts.append(f"at most {100 * ratio:.0f} % of the channels")
    if target is not None:
        parts.append(f"keep about {100 * target:.0f} % of the MACs ({1 / target:.2f}x fewer)")
    return ", ".join(parts)


def _pct(value):
    return "n/a" if value is None else f"{100 * value:.2f} %"


def latency_ms(model, batch_size, input_shape, warmup=2, repeats=10):
    """Median milliseconds of one compiled forward pass (``model.predict_on_batch``) on random inputs
    (see :func:`ridurre.metrics.measure_latency`)."""
    from ridurre.metrics import measure_latency

    return measure_latency(model, batch_size=batch_size, input_shape=tuple(input_shape), warmup=warmup,
                           repeats=repeats, compiled=True).median_ms


def measure_models(models, input_shape, batch_sizes=(256, 1), rounds=3, budget=0.5, progress=None):
    """Measured latency (ms per compiled forward pass) of each model at each batch size.

    Models are timed in turns (``rounds`` rounds of :func:`latency_ms`, interleaved so that a busy
    machine slows them alike) and each keeps its fastest median. The number of repeats adapts so
    that one measurement takes about ``budget`` seconds.

    Returns:
        ``{name: {batch_size: milliseconds}}``.
    """
    task = progress.add("measuring latency", total=rounds * len(models) * len(batch_sizes)) if progress else None
    out = {name: {} for name in models}
    for batch in batch_sizes:
        repeats = {name: int(np.clip(budget * 1000.0 / max(latency_ms(model, batch, input_shape, 3, 3), 1e-3), 5, 50))
                   for name, model in models.items()}
        for _ in range(rounds):
            for name, model in models.items():
                ms = latency_ms(model, batch, input_shape, warmup=1, repeats=repeats[name])
                out[name][batch] = min(out[name].get(batch, float("inf")), ms)
                if task is not None:
                    progress.advance(task)
    return out


def finish_run(run, data, config, output_dir, latency, model_path=None, sha_before=None, wall=None):
    """Write final.keras, the report and the plots of a run; return the report summary dict."""
    import keras

    from ridurre import report as _report
    from ridurre.checkpoints import save_model_atomic

    final = os.path.join(output_dir, "models", "final.keras")
    save_model_atomic(run["pruned"], final)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reloaded = keras.models.load_model(final, safe_mode=True, compile=False)
    x = eval_split(data)[0][:64]
    same = np.allclose(run["pruned"].predict(x, verbose=0), reloaded.predict(x, verbose=0), atol=1e-5)
    summary = _report.build_summary(run, data, config, latency, output_dir, model_path=model_path,
                                    sha_before=sha_before, reload_check=same, wall=wall)
    _report.write_run_outputs(output_dir, run, summary)
    ratio = summary["before"]["macs"] / max(1, summary["after"]["macs"])
    logger.info("Final model: %s params (%.1f %% fewer), %s MACs (%.2fx fewer), %s accuracy %s -> %s",
                f"{summary['after']['params']:,}", 100 * (1 - summary["after"]["params"] / summary["before"]["params"]),
                f"{summary['after']['macs']:,}", ratio, run["split"], _pct(run["accuracy_before"]),
                _pct(run["accuracy_after"]))
    for batch, speed in summary["speedup"].items():
        logger.info("Latency at batch %s: %.2f ms -> %.2f ms (%.2fx faster, measured)", batch,
                    summary["before"]["latency_ms"][batch], summary["after"]["latency_ms"][batch], speed)
    logger.info("Wrote %s", os.path.join(output_dir, "reports", "report.md"))
    return summary


def _validated_inputs(config):
    """Load and check the model and data of a prune config (nothing is written)."""
    path = config["model.path"]
    model = load_model_file(path)
    data = load_data(config["data.source"], config["data.normalize"], config["data.validation_split"],
                     config["strategy.seed"])
    check_data_fits(model, data)
    from ridurre.graph import check_model

    try:
        check_model(model)
    except TypeError as exc:
        raise ConfigError("--model", message=f"--model: {exc}") from None
    return path, model, data


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # tables piped to a file or a log stay unwrapped
    return console


def run_prune(config, console=None, progress_enabled=True):
    """``ridurre prune``: check the inputs, prune, write the outputs, print the before/after table.

    Returns:
        The summary dict (see :func:`ridurre.report.build_summary`), or for a dry run the plan.

    Raises:
        ConfigError: a bad option, model file or data (nothing has been written then).
    """
    from ridurre import report as _report

    console = console or _console()
    path = config["model.path"]
    output_dir = config["output.dir"]
    if not config["validation.dry_run"]:
        check_output_dir(output_dir, [path])
    path, model, data = _validated_inputs(config)
    if config["validation.dry_run"]:
        return dry_run(model, data, config, console, progress_enabled)
    sha_before = file_sha256(path)
    started = time.perf_counter()
    earlier = os.path.exists(os.path.join(output_dir, "config.json"))
    os.makedirs(output_dir, exist_ok=True)
    handler = _attach_log_file(output_dir)
    try:
        if earlier:
            logger.warning("%s holds an earlier run: its files are replaced as this run writes them", output_dir)
        config.save(os.path.join(output_dir, "config.json"))
        logger.info("Effective configuration saved to %s", os.path.join(output_dir, "config.json"))
        with Progress(progress_enabled) as progress:
            run = prune_model(model, data, config, output_dir, progress)
            latency = measure_models({"original": model, "pruned": run["pruned"]}, data.x_train.shape[1:],
                                     progress=progress)
        summary = finish_run(run, data, config, output_dir, latency, model_path=path, sha_before=sha_before,
                             wall=time.perf_counter() - started)
    except Exception as exc:
        _log_failure(handler, exc)
        raise
    finally:
        _detach(handler)
    console.print(_report.comparison_table([summary], title=f"ridurre prune: {config['strategy.method']}"))
    console.print(f"Report: {os.path.join(output_dir, 'reports', 'report.md')}")
    return summary


def dry_run(model, data, config, console, progress_enabled=True):
    """Run the loop in memory without finetuning and print the plan; write nothing.

    The channels chosen after the first iteration can differ in a real run, where finetuning
    changes the weights between iterations.
    """
    from ridurre import report as _report
    from ridurre.metrics import model_stats

    plan_config = copy.deepcopy(config)
    plan_config.values["strategy"]["finetune_epochs"] = 0
    with Progress(progress_enabled) as progress:
        task = progress.add("planning (no finetune)", total=config["strategy.iterations"])
        pruner = make_pruner(plan_config, lambda m: progress.advance(task), None, data, None, None)
        try:
            pruned, _ = pruner.run_pruning(model)
        except (TypeError, ValueError) as exc:
            raise ConfigError("--model", message=f"--model: cannot prune {model.name!r}: {exc}") from None
        progress.finish(task)
    before, after = model_stats(model), model_stats(pruned)
    rows = _report.layer_rows(before, after)
    console.print(_report.plan_table(rows, before, after, config, len(pruner.history)))
    console.print("dry run: nothing was written. Channels chosen after the first iteration may differ in a "
                  "real run, where finetuning changes the weights.")
    return {"dry_run": True, "layers": rows, "iterations": len(pruner.history),
            "before": {"params": before.total_params, "macs": before.total_macs},
            "after": {"params": after.total_params, "macs": after.total_macs}}


# ----------------------------------------------------------------------------- ridurre workflow

def train_model(arch, data, epochs, seed, progress, batch_size=32, width=32):
    """A seeded ``small_cnn`` (``width`` and ``2 * width`` filters, 128 units) or ``small_resnet``
    (``width`` filters, 2 blocks) for ``data``'s input shape and classes, compiled with Adam and
    trained for ``epochs`` epochs."""
    import keras

    from ridurre import models

    keras.utils.set_random_seed(seed)
    shape = tuple(data.x_train.shape[1:])
    if arch == "small_resnet":
        model = models.small_resnet(input_shape=shape, num_classes=data.num_classes, filters=width, blocks=2)
    else:
        model = models.small_cnn(input_shape=shape, num_classes=data.num_classes, filters=(width, 2 * width),
                                 dense_units=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    val = (data.x_val, data.y_val) if len(data.x_val) else None
    model.fit(data.x_train, data.y_train, validation_data=val, epochs=epochs, batch_size=batch_size, verbose=0,
              callbacks=[progress.epochs("training", epochs)])
    return model


STAGES = ("unpruned", "pruned", "finetuned")


def _plan_workflow(args, models_dir):
    """Where each model comes from: a file to load, a stage to run, or None; checks everything."""
    for flag, value in (("--epochs", args.epochs), ("--finetune-epochs", args.finetune_epochs),
                        ("--iterations", args.iterations), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(flag, message=f"{flag}: expected an integer >= 1, got {value}")
    saved = {s: os.path.join(models_dir, f"{s}.keras") for s in STAGES}
    train = args.do_train and not (args.load_unpruned or args.load_pruned)
    prune = args.do_prune and not args.load_pruned
    source = {"unpruned": None, "pruned": None, "finetuned": "finetune" if args.do_finetune else None}
    if args.load_unpruned:
        source["unpruned"] = ("load", args.load_unpruned, "--load-unpruned")
    elif train:
        source["unpruned"] = "train"
    if args.load_pruned:
        source["pruned"] = ("load", args.load_pruned, "--load-pruned")
    elif prune:
        source["pruned"] = "prune"
    needs = {"unpruned": prune or args.eval_unpruned, "pruned": args.do_finetune or args.eval_pruned,
             "finetuned": args.eval_finetuned}
    why = {"unpruned": "the prune stage or --eval-unpruned needs a trained model: give --load-unpruned PATH or "
                       "run the train stage",
           "pruned": "the finetune stage or --eval-pruned needs a pruned model: give --load-pruned PATH or run "
                     "the prune stage",
           "finetuned": "--eval-finetuned needs a finetuned model: run the finetune stage"}
    for stage in STAGES:
        if source[stage] is None and needs[stage]:
            if not os.path.isfile(saved[stage]):
                raise ConfigError(f"--{stage}", message=f"{why[stage]} (and {saved[stage]} from an earlier run "
                                                        f"with this --output does not exist)")
            source[stage] = ("load", saved[stage], f"{saved[stage]} (resumed)")
    if not any(source.values()):
        raise ConfigError("--do-*", message="nothing to do: every stage is off and no model to evaluate")
    written = {os.path.realpath(saved[s]) for s, how in (("unpruned", train), ("pruned", prune),
                                                         ("finetuned", args.do_finetune)) if how}
    if prune:
        written |= {os.path.realpath(os.path.join(models_dir, f"iteration_{i:03d}.keras"))
                    for i in range(args.iterations)}
    for stage in STAGES:
        if isinstance(source[stage], tuple) and os.path.realpath(source[stage][1]) in written:
            raise ConfigError("--output", message=f"--output: this run would overwrite its input {source[stage][1]}; "
                                                  "choose another --output directory")
    return source, saved


def _evaluate(name, model, data):
    from ridurre.metrics import model_stats

    x, y, split = eval_split(data)
    stats = model_stats(model)
    row = {"model": name, "params": int(stats.total_params), "macs": int(stats.total_macs),
           "accuracy": accuracy(model, x, y), "split": split}
    logger.info("Evaluation of the %s model: %s params, %s MACs, %s accuracy %s", name, f"{row['params']:,}",
                f"{row['macs']:,}", split, _pct(row["accuracy"]))
    return row


def run_workflow(args):
    """``ridurre workflow``: train -> prune -> finetune, each stage switchable, each model saved
    atomically under ``DIR/models``; evaluates the models asked for. Returns 0.

    Stages switched off reuse ``--load-unpruned``/``--load-pruned`` or, to resume, the models an
    earlier run left in the same ``--output`` directory.
    """
    import json

    from rich.table import Table

    from ridurre.checkpoints import save_model_atomic, write_text_atomic
    from ridurre.config import resolve_config

    out = args.output
    models_dir = os.path.join(out, "models")
    config = resolve_config(environ={}, cli={
        "data": {"source": args.data},
        "strategy": {"method": args.method, "ratio": args.ratio, "iterations": args.iterations,
                     "finetune_epochs": 0, "seed": args.seed},
        "finetune": {"batch_size": args.batch_size}, "output": {"dir": out}},
        cli_flags={"data.source": "--data", "strategy.ratio": "--ratio", "strategy.iterations": "--iterations",
                   "strategy.seed": "--seed", "finetune.batch_size": "--batch-size", "output.dir": "--output"})
    source, saved = _plan_workflow(args, models_dir)
    data = load_data(args.data, seed=args.seed)
    models = {}
    for stage in STAGES:  # load (and check) every input before writing anything
        if isinstance(source[stage], tuple):
            _, path, flag = source[stage]
            models[stage] = load_model_file(path, flag=flag.split(" ")[0])
            check_data_fits(models[stage], data)
    os.makedirs(out, exist_ok=True)
    handler = _attach_log_file(out)
    evaluations = []
    asked = {"unpruned": args.eval_unpruned, "pruned": args.eval_pruned, "finetuned": args.eval_finetuned}

    def evaluate(stage):  # right when a model is available: finetuning changes the pruned model in place
        if stage in models and asked[stage] is not False:
            evaluations.append(_evaluate(stage, models[stage], data))

    try:
        with Progress(not getattr(args, "no_progress", False)) as progress:
            if source["unpruned"] == "train":
                models["unpruned"] = train_model(args.model_arch, data, args.epochs, args.seed, progress,
                                                 args.batch_size)
                save_model_atomic(models["unpruned"], saved["unpruned"])
                logger.info("Stage train: %s trained for %d epochs, saved %s", args.model_arch, args.epochs,
                            saved["unpruned"])
            evaluate("unpruned")
            if source["pruned"] == "prune":
                compile_fn, _ = make_compile_fn(models["unpruned"])
                pruner = make_pruner(config, compile_fn, None, data, output_dir=out)
                models["pruned"], _ = pruner.run_pruning(models["unpruned"])
                save_model_atomic(models["pruned"], saved["pruned"])
                logger.info("Stage prune: %s, %d iteration(s), saved %s", args.method, len(pruner.history),
                            saved["pruned"])
            evaluate("pruned")
            if source["finetuned"] == "finetune":
                model = models["pruned"]
                if not getattr(model, "compiled", False) or model.get_compile_config() is None:
                    make_compile_fn(model)[0](model)
                make_finetune_fn(data, args.batch_size, args.seed, progress, total_epochs=args.finetune_epochs)(
                    model, 0, args.finetune_epochs)
                models["finetuned"] = model
                save_model_atomic(model, saved["finetuned"])
                logger.info("Stage finetune: %d epoch(s), saved %s", args.finetune_epochs, saved["finetuned"])
            evaluate("finetuned")
        stages = {s: (v if isinstance(v, str) or v is None else f"loaded {v[1]}") for s, v in source.items()}
        record = {"stages": stages,
                  "evaluations": evaluations, "config": config.to_dict()}
        write_text_atomic(os.path.join(out, "workflow.json"), json.dumps(record, indent=2) + "\n")
    except Exception as exc:
        _log_failure(handler, exc)
        raise
    finally:
        _detach(handler)
    if evaluations:
        table = Table(title=f"ridurre workflow: {out}")
        for col in ("model", "params", "MACs", f"{evaluations[0]['split']} accuracy"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for row in evaluations:
            table.add_row(row["model"], f"{row['params']:,}", f"{row['macs']:,}", _pct(row["accuracy"]))
        _console().print(table)
    return 0
