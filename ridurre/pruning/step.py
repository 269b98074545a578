"""The surgery of one step: delete the planned channels in one rebuild (inside the active
distribution strategy's scope) and verify the new model before it is finetuned."""

from __future__ import annotations

import logging
import sys
from contextlib import nullcontext

import keras
import numpy as np

from ridurre import _compat
from ridurre.surgery import Surgeon

logger = logging.getLogger("ridurre")


def distribution_scope():
    """The active tf.distribute strategy's scope, if TensorFlow is in use and one is active."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and keras.backend.backend() == "tensorflow" and tf.distribute.has_strategy():
        return tf.distribute.get_strategy().scope()
    return nullcontext()  # a Keras distribution (JAX) is global: models built now use it


def check_finite_weights(model, what):
    """Raise ``RuntimeError`` naming the first layer of ``model`` with a NaN or infinite weight."""
    for weight in model.weights:
        value = keras.ops.convert_to_numpy(weight)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise RuntimeError(
                f"{what} has non-finite weights (NaN or infinity) in {weight.path!r}: "
                "check that the training data are finite and the learning rate is not too high"
            )


class _SurgeryStep:
    """Pruning one step's plan out of a model and checking the result (a base of
    :class:`~ridurre.pruning.BasePruning`)."""

    def _prune_step(self, model, factor, iteration):
        trace, plan, _ = self._plan_step(model, factor, iteration)
        if not plan:
            return None, {}
        surgeon = Surgeon(model, trace=trace)
        removed = {}
        groups = trace.groups()
        self._inexact_pruned = sorted(groups[gid].producers[0] for gid in plan if not groups[gid].exact)
        for gid, idx in plan.items():
            group = groups[gid]
            for path in group.producers:  # record every producer's removed positions
                per_channel = group.channels_of(path)
                removed[path] = sorted(int(p) for j in idx for p in per_channel[j])
            surgeon.delete_group_channels(group, idx)
        try:
            with distribution_scope():
                new_model = surgeon.operate()
        except Exception as exc:
            raise RuntimeError(
                f"surgery failed in pruning iteration {iteration} "
                f"(removing {sum(map(len, removed.values()))} channels from "
                f"{len(removed)} groups): {exc}"
            ) from exc
        self._check_model(model, new_model, surgeon, iteration)
        return new_model, removed

    def _check_model(self, old, new, surgeon, iteration):
        if not self._verify:
            return
        rng = np.random.default_rng(self._seed)
        xs = [
            rng.integers(0, 2, size=(2,) + tuple(t.shape[1:])).astype(t.dtype)  # token ids
            if "int" in str(t.dtype)
            else rng.normal(size=(2,) + tuple(t.shape[1:])).astype("float32")
            for t in old.inputs
        ]
        structure = _compat.inputs_structure(old)
        if isinstance(structure, dict):  # a keras-hub text model: token ids, segment ids, padding mask
            xs = keras.tree.pack_sequence_as(structure, xs)
        else:
            xs = xs[0] if len(xs) == 1 else xs
        out_new = keras.tree.flatten(new(xs, training=False))
        out_old = keras.tree.flatten(old(xs, training=False))
        for a, b in zip(out_new, out_old):
            a = keras.ops.convert_to_numpy(a)
            if a.shape != tuple(keras.ops.shape(b)):
                raise RuntimeError(
                    f"iteration {iteration}: the pruned model's output shape {a.shape} differs "
                    f"from the original's {tuple(keras.ops.shape(b))}"
                )
            if not np.isfinite(a).all():
                raise RuntimeError(f"iteration {iteration}: the pruned model produces non-finite values")
        if self._verify == "exact":
            # Channels through a LayerNormalization are deleted in the reference too (zeroing
            # them would change its statistics): the check stays exact for every other channel.
            reference = keras.tree.flatten(surgeon.operate(zero=True, delete_inexact=True)(xs, training=False))
            if self._inexact_pruned:
                logger.warning(
                    "iteration %d: %d pruned groups (%s) pass through a normalization over the channels: "
                    "the pruned model is not the zeroed one there, so verify='exact' checks them structurally "
                    "(deleted in the reference too) and every other group exactly",
                    iteration,
                    len(self._inexact_pruned),
                    ", ".join(self._inexact_pruned[:5]) + (", ..." if len(self._inexact_pruned) > 5 else ""),
                )
            for a, b in zip(out_new, reference):
                a, b = keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
                scale = max(1.0, float(np.abs(b).max()))
                if not np.allclose(a, b, rtol=1e-4, atol=1e-4 * scale):
                    raise RuntimeError(
                        f"iteration {iteration}: the pruned model differs from the zeroed original "
                        f"(max abs difference {float(np.abs(a - b).max()):.3g})"
                    )
