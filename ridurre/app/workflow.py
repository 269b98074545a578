"""``ridurre workflow``: train -> prune -> finetune, each stage switchable, each model saved
atomically under ``DIR/models``; stages switched off reuse ``--load-unpruned``/``--load-pruned`` or
the models an earlier run left in the same ``--output`` directory."""

from __future__ import annotations

import json
import logging
import os

import keras

from ridurre._io import save_model_atomic, write_text_atomic
from ridurre._progress import Progress
from ridurre.app.config import ConfigError, resolve_config
from ridurre.app.inputs import accuracy, check_data_fits, eval_split, load_data, load_model_file, loading_options
from ridurre.app.jobs import make_compile_fn, make_finetune_fn, make_pruner
from ridurre.app.report import fmt_pct
from ridurre.app.runlog import attach_log_file, console, detach, log_failure
from ridurre.metrics import model_stats
from ridurre.zoo import models

__all__ = ["STAGES", "train_model", "run_workflow"]

logger = logging.getLogger("ridurre")


def train_model(arch, data, epochs, seed, progress, batch_size=32, width=32, blocks=2):
    """A seeded ``small_cnn`` (``blocks`` convolutions of ``width``, ``2 * width``, ... filters, 128
    units) or ``small_resnet`` (``width`` filters, ``blocks`` blocks) for ``data``'s input shape and
    classes, compiled with Adam and trained for ``epochs`` epochs."""
    keras.utils.set_random_seed(seed)
    shape = tuple(data.x_train.shape[1:])
    if arch == "small_resnet":
        model = models.small_resnet(input_shape=shape, num_classes=data.num_classes, filters=width, blocks=blocks)
    else:
        filters = tuple(width * 2**i for i in range(blocks))
        model = models.small_cnn(input_shape=shape, num_classes=data.num_classes, filters=filters, dense_units=128)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    val = (data.x_val, data.y_val) if len(data.x_val) else None
    model.fit(
        data.x_train,
        data.y_train,
        validation_data=val,
        epochs=epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=[progress.epochs("training", epochs)],
    )
    return model


STAGES = ("unpruned", "pruned", "finetuned")


def _plan_workflow(args, models_dir):
    """Where each model comes from: a file to load, a stage to run, or None; checks everything."""
    for flag, value in (
        ("--epochs", args.epochs),
        ("--finetune-epochs", args.finetune_epochs),
        ("--iterations", args.iterations),
        ("--batch-size", args.batch_size),
    ):
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
    needs = {
        "unpruned": prune or args.eval_unpruned,
        "pruned": args.do_finetune or args.eval_pruned,
        "finetuned": args.eval_finetuned,
    }
    why = {
        "unpruned": "the prune stage or --eval-unpruned needs a trained model: give --load-unpruned PATH or "
        "run the train stage",
        "pruned": "the finetune stage or --eval-pruned needs a pruned model: give --load-pruned PATH or run "
        "the prune stage",
        "finetuned": "--eval-finetuned needs a finetuned model: run the finetune stage",
    }
    for stage in STAGES:
        if source[stage] is None and needs[stage]:
            if not os.path.isfile(saved[stage]):
                raise ConfigError(
                    f"--{stage}",
                    message=f"{why[stage]} (and {saved[stage]} from an earlier run with this --output does not exist)",
                )
            source[stage] = ("load", saved[stage], f"{saved[stage]} (resumed)")
    if not any(source.values()):
        raise ConfigError("--do-*", message="nothing to do: every stage is off and no model to evaluate")
    written = {
        os.path.realpath(saved[s])
        for s, how in (("unpruned", train), ("pruned", prune), ("finetuned", args.do_finetune))
        if how
    }
    if prune:
        written |= {
            os.path.realpath(os.path.join(models_dir, f"iteration_{i:03d}.keras")) for i in range(args.iterations)
        }
    for stage in STAGES:
        if isinstance(source[stage], tuple) and os.path.realpath(source[stage][1]) in written:
            raise ConfigError(
                "--output",
                message=f"--output: this run would overwrite its input {source[stage][1]}; "
                "choose another --output directory",
            )
    return source, saved


def _evaluate(name, model, data):
    x, y, split = eval_split(data)
    stats = model_stats(model)
    row = {
        "model": name,
        "params": int(stats.total_params),
        "macs": int(stats.total_macs),
        "accuracy": accuracy(model, x, y),
        "split": split,
    }
    logger.info(
        "Evaluation of the %s model: %s params, %s MACs, %s accuracy %s",
        name,
        f"{row['params']:,}",
        f"{row['macs']:,}",
        split,
        fmt_pct(row["accuracy"]),
    )
    return row


def run_workflow(args):
    """``ridurre workflow``: train -> prune -> finetune, each stage switchable, each model saved
    atomically under ``DIR/models``; evaluates the models asked for. Returns 0.

    Stages switched off reuse ``--load-unpruned``/``--load-pruned`` or, to resume, the models an
    earlier run left in the same ``--output`` directory.
    """
    from rich.table import Table

    out = args.output
    models_dir = os.path.join(out, "models")
    config = resolve_config(
        environ={},
        cli={
            "data": {"source": args.data},
            "strategy": {
                "method": args.method,
                "ratio": args.ratio,
                "iterations": args.iterations,
                "finetune_epochs": 0,
                "seed": args.seed,
            },
            "finetune": {"batch_size": args.batch_size},
            "output": {"dir": out},
        },
        cli_flags={
            "data.source": "--data",
            "strategy.ratio": "--ratio",
            "strategy.iterations": "--iterations",
            "strategy.seed": "--seed",
            "finetune.batch_size": "--batch-size",
            "output.dir": "--output",
        },
    )
    source, saved = _plan_workflow(args, models_dir)
    data = load_data(args.data, seed=args.seed)
    models = {}
    custom_objects = loading_options(args)
    for stage in STAGES:  # load (and check) every input before writing anything
        if isinstance(source[stage], tuple):
            _, path, flag = source[stage]
            models[stage] = load_model_file(path, flag=flag.split(" ")[0], custom_objects=custom_objects)
            check_data_fits(models[stage], data)
    os.makedirs(out, exist_ok=True)
    handler = attach_log_file(out)
    evaluations = []
    asked = {"unpruned": args.eval_unpruned, "pruned": args.eval_pruned, "finetuned": args.eval_finetuned}

    def evaluate(stage):  # right when a model is available: finetuning changes the pruned model in place
        if stage in models and asked[stage] is not False:
            evaluations.append(_evaluate(stage, models[stage], data))

    try:
        with Progress(not getattr(args, "no_progress", False)) as progress:
            if source["unpruned"] == "train":
                models["unpruned"] = train_model(
                    args.model_arch, data, args.epochs, args.seed, progress, args.batch_size
                )
                save_model_atomic(models["unpruned"], saved["unpruned"])
                logger.info(
                    "Stage train: %s trained for %d epochs, saved %s", args.model_arch, args.epochs, saved["unpruned"]
                )
            evaluate("unpruned")
            if source["pruned"] == "prune":
                compile_fn, _ = make_compile_fn(models["unpruned"])
                pruner = make_pruner(config, compile_fn, None, data, output_dir=out, model=models["unpruned"])
                models["pruned"], _ = pruner.run_pruning(models["unpruned"])
                save_model_atomic(models["pruned"], saved["pruned"])
                logger.info(
                    "Stage prune: %s, %d iteration(s), saved %s", args.method, len(pruner.history), saved["pruned"]
                )
            evaluate("pruned")
            if source["finetuned"] == "finetune":
                model = models["pruned"]
                if not getattr(model, "compiled", False) or model.get_compile_config() is None:
                    make_compile_fn(model)[0](model)
                make_finetune_fn(data, args.batch_size, args.seed, progress, total_epochs=args.finetune_epochs)(
                    model, 0, args.finetune_epochs
                )
                models["finetuned"] = model
                save_model_atomic(model, saved["finetuned"])
                logger.info("Stage finetune: %d epoch(s), saved %s", args.finetune_epochs, saved["finetuned"])
            evaluate("finetuned")
        stages = {s: (v if isinstance(v, str) or v is None else f"loaded {v[1]}") for s, v in source.items()}
        record = {"stages": stages, "evaluations": evaluations, "config": config.to_dict()}
        write_text_atomic(os.path.join(out, "workflow.json"), json.dumps(record, indent=2) + "\n")
    except Exception as exc:
        log_failure(handler, exc)
        raise
    finally:
        detach(handler)
    if evaluations:
        table = Table(title=f"ridurre workflow: {out}")
        for col in ("model", "params", "MACs", f"{evaluations[0]['split']} accuracy"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for row in evaluations:
            table.add_row(row["model"], f"{row['params']:,}", f"{row['macs']:,}", fmt_pct(row["accuracy"]))
        console().print(table)
    return 0
