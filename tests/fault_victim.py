"""A pruning run that SIGKILLs itself at a chosen point (run by ``tests/pruning/test_faults.py``).

    python tests/fault_victim.py api|cli MODEL OUTPUT [--kill POINT:ITERATION]

POINT is where the process dies in that iteration: ``scoring`` (while a criterion scores a
group), ``surgery`` (while the new model is rebuilt), ``checkpoint`` (half-way through writing
``models/iteration_NNN.keras``: a temporary file is left behind) or ``finetune`` (after a few
batches of the finetune). Without ``--kill`` the run goes to the end (resuming what ``OUTPUT``
holds). The API run saves its result as ``OUTPUT/result.keras``; the CLI run writes
``OUTPUT/models/final.keras``.
"""

import argparse
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import ridurre  # noqa: E402
from ridurre._io import atomic_path  # noqa: E402
from ridurre.app import jobs  # noqa: E402
from ridurre.criteria import builtin  # noqa: E402
from ridurre.pruning import loop, rundir  # noqa: E402
from ridurre.pruning import step as surgery_step  # noqa: E402

SETTINGS = dict(factor=0.15, iterations=4, seed=1)


def die():
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point, at):
    """Make the process die at ``point`` of iteration ``at``."""
    state = {"iteration": None}
    step = loop.BasePruning._prune_step

    def tracked_step(self, model, factor, iteration):
        state["iteration"] = iteration
        return step(self, model, factor, iteration)

    loop.BasePruning._prune_step = tracked_step
    if point == "scoring":
        score = builtin.L1Criterion.score

        def dying_score(self, view):
            if state["iteration"] == at:
                die()
            return score(self, view)

        builtin.L1Criterion.score = dying_score
    elif point == "surgery":
        operate = surgery_step.Surgeon.operate

        def dying_operate(self, zero=False):
            if state["iteration"] == at and not zero:
                die()
            return operate(self, zero=zero)

        surgery_step.Surgeon.operate = dying_operate
    elif point == "checkpoint":
        save = rundir.save_model_atomic

        def dying_save(model, path):
            if path.endswith(f"iteration_{at:03d}.keras"):
                with atomic_path(path, suffix=".keras") as tmp:
                    os.remove(tmp)
                    model.save(tmp)
                    with open(tmp, "rb") as f:
                        half = f.read()[: os.path.getsize(tmp) // 2]
                    with open(tmp, "wb") as f:
                        f.write(half)
                    die()
            return save(model, path)

        rundir.save_model_atomic = dying_save
    elif point == "finetune":
        fit = keras.Model.fit

        class Die(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == 3:
                    die()

        def dying_fit(self, *args, initial_epoch=0, callbacks=None, **kwargs):
            if initial_epoch == at:  # one finetune epoch per iteration: the epoch is the iteration
                callbacks = list(callbacks or []) + [Die()]
            return fit(self, *args, initial_epoch=initial_epoch, callbacks=callbacks, **kwargs)

        keras.Model.fit = dying_fit
    else:
        raise SystemExit(f"unknown point {point!r}")


def run_api(model_path, output):
    from ridurre.zoo.datasets import load_digits

    data = load_digits()
    model = keras.models.load_model(model_path)

    def compile_fn(m):
        m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")

    def finetune(m, initial_epoch, end_epoch):
        keras.utils.set_random_seed(SETTINGS["seed"] + initial_epoch)
        return m.fit(
            data.x_train[:400],
            data.y_train[:400],
            batch_size=32,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            verbose=0,
        )

    pruner = ridurre.Pruner(
        "l1",
        compile_fn,
        finetune,
        1,
        pruning_factor=SETTINGS["factor"],
        maximum_prune_iterations=SETTINGS["iterations"],
        maximum_pruning_percent=None,
        seed=SETTINGS["seed"],
        output_dir=output,
        resume=True,
    )
    pruned, _ = pruner.run_pruning(model)
    pruned.save(os.path.join(output, "result.keras"))
    return 0


def run_cli(model_path, output):
    from ridurre.app.cli import main
    from ridurre.metrics import LatencyResult

    timed = {b: LatencyResult(1.0, 1.0, b, 1, float(b), runtime="keras") for b in (256, 1)}
    jobs.measure_models = lambda models, *a, **k: {name: {"keras": timed} for name in models}
    argv = ["--no-progress", "prune", "--model", model_path, "--data", "digits", "--output", output]
    argv += ["--method", "l1", "--step", str(SETTINGS["factor"]), "--ratio", "0.9"]
    argv += ["--iterations", str(SETTINGS["iterations"]), "--finetune-epochs", "1", "--seed", str(SETTINGS["seed"])]
    if os.path.isdir(output) and os.listdir(output):
        argv.append("--resume")
    return main(argv)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("api", "cli"))
    parser.add_argument("model")
    parser.add_argument("output")
    parser.add_argument("--kill", default=None, metavar="POINT:ITERATION")
    args = parser.parse_args()
    if args.kill:
        point, at = args.kill.split(":")
        arm(point, int(at))
    sys.exit((run_api if args.mode == "api" else run_cli)(args.model, args.output))
