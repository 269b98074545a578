"""The loop's run directory: the settings its fingerprint records (so that ``resume`` refuses a
directory of another run), resuming from its last checkpoint, and writing a checkpoint after
every iteration. The files themselves are :mod:`ridurre.pruning.checkpoints`'s."""

from __future__ import annotations

import logging
import os

from ridurre._io import save_model_atomic
from ridurre._loading import load_keras_model
from ridurre.pruning.checkpoints import (
    check_same_run,
    checkpoint_path,
    describe,
    load_state,
    prepare_run_directory,
    run_fingerprint,
    save_state,
    write_history,
)
from ridurre.pruning.records import IterationRecord
from ridurre.pruning.step import distribution_scope

logger = logging.getLogger("ridurre")


class _RunDirectory:
    """What :class:`~ridurre.pruning.BasePruning` keeps in ``output_dir`` (a base of that class)."""

    @property
    def run_identity(self) -> dict:
        """Anything else the run depends on (e.g. its data), recorded in the fingerprint of ``output_dir``."""
        return self._run_identity

    @run_identity.setter
    def run_identity(self, identity: dict):
        self._run_identity = identity

    def _settings(self) -> dict:
        """Everything that decides what this run does, for the fingerprint of its output directory:
        the method, its criterion and options, the factor, limits, selection and bounds, and the
        public attributes a subclass adds (``data``, ``ratios``...; what a run produces is read
        through properties, so it is none of them). Subclasses whose options live in private
        attributes extend it. The iteration limit is left out unless the steps are sized from
        it: resuming with a higher one extends a run."""
        settings = describe(
            {
                "method": type(self).__qualname__,
                "criterion": self._criterion,
                "pruning_factor": self._pruning_factor,
                "nb_finetune_epochs": self._nb_finetune_epochs,
                "start_epoch": self._current_nb_of_epochs,
                "maximum_prune_iterations": self._maximum_prune_iterations,
                "limits": self._limits.to_dict(),
                "size_steps_to_limits": self._size_steps,
                "layers": self._include,
                "exclude": self._exclude,
                "layer_factors": self._layer_factors,
                "prune_bins": self._prune_bins,
                "min_channels": self._min_channels,
                "max_fraction_per_layer": self._max_fraction,
                "round_to": self._round_to,
                "ranking": self._ranking,
                "seed": self._seed,
                "verify": self._verify,
                "head_pruning_factor": self._head_factor,
                "head_criterion": self._head_criterion,
                "latency_table": self._latency_table,
                "guard": None
                if self._guard is None
                else {k: getattr(self._guard, k) for k in ("max_drop", "on_drop", "max_rollbacks", "shrink", "mode")},
                "keep_best": self._keep_best,
                "inline_composites": self._inline,
                "options": {k: v for k, v in vars(self).items() if not k.startswith("_")},
                "run_identity": self.run_identity,
            }
        )
        if not self._size_steps:  # more iterations do not change the first ones: a run may be extended
            del settings["maximum_prune_iterations"]
        return settings

    def resume_state(self, model) -> dict | None:
        """The saved state ``run_pruning(model)`` would resume from (``None``: it would start
        afresh), checked against ``model`` and these settings without writing anything.

        Raises:
            ValueError: ``output_dir`` holds a run of another model or other settings (the message
                says what differs), or its state is unreadable or its checkpoint missing.
        """
        if not (self._resume and self._output_dir):
            return None
        state = load_state(self._output_dir)
        if state is not None:
            check_same_run(state.get("fingerprint"), run_fingerprint(model, self._settings()), self._output_dir)
        return state

    def _checkpoint(self, model, iteration, factor, finished):
        if not self._output_dir:
            return
        models_dir = os.path.join(self._output_dir, "models")
        path = os.path.join(models_dir, f"iteration_{iteration:03d}.keras")
        save_model_atomic(model, path)
        history = [r.to_dict() for r in self.history]
        write_history(os.path.join(self._output_dir, "logs"), history)
        self.plan().save(os.path.join(self._output_dir, "plan.json"))
        save_state(
            self._output_dir,
            {
                "iteration": iteration,
                "factor": factor,
                "epoch": self._current_nb_of_epochs,
                "checkpoint": os.path.relpath(path, self._output_dir),  # resumable from any working directory
                "history": history,
                "finished": finished,
                "guard": None if self._guard is None else self._guard.state(),
                "fingerprint": self._fingerprint,
            },
        )

    def _open_run_directory(self, model):
        """Get ``output_dir`` ready for a run of ``model`` (see ``prepare_run_directory``): the saved
        state to resume from, or ``None`` (no output directory, or a new run)."""
        self._fingerprint = run_fingerprint(model, self._settings())
        if not self._output_dir:
            return None
        return prepare_run_directory(self._output_dir, self._resume, self._fingerprint)

    def _resumed_model(self, state):
        """The compiled checkpoint of ``state``, with the history, epoch and guard of the run restored."""
        path = checkpoint_path(self._output_dir, state)
        model = load_keras_model(path, custom_objects=self._custom_objects, compile=False)
        with distribution_scope():
            self._model_compile_fn(model)
        self._current_nb_of_epochs = state["epoch"]
        self._run.history = [IterationRecord(**r) for r in state["history"]]
        if self._guard is not None:
            self._guard.restore(state.get("guard"))
        self._after_resume()
        logger.info("resuming after iteration %d from %s", state["iteration"], path)
        return model
