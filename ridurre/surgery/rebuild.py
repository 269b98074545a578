"""Plan once, rebuild once: every layer's new config and weights, then one ``clone_model``.

:func:`plan_layers` serves deletion, zeroing (the exactness oracle) and costing alike; the
rebuild goes through Keras's own ``keras.models.clone_model(clone_function=, call_function=)``.
"""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Mapping

import keras
import numpy as np

from ridurre import _compat
from ridurre.graph import layer_weights, set_layer_weights, weight_names
from ridurre.graph.layers import ChannelOffset
from ridurre.rules import ConfigView, UnitMasks
from ridurre.rules.keras_hub import DERIVED_CONFIG_KEYS, class_path

__all__ = ["LayerPlans", "plan_layers", "rebuild"]


def _gone_masks(trace, use, deleted):
    """The :class:`~ridurre.rules.UnitMasks` of the positions of ``use`` that are deleted (every
    input, output and internal layout; ``deleted`` is a boolean array over units, True for the
    roots to delete), or ``None`` when none of them is."""

    def mask(layout):
        return None if layout is None else deleted[trace.units.roots(layout)]

    gone = UnitMasks(
        [mask(lay) for lay in use.in_layouts],
        [mask(lay) for lay in use.out_layouts],
        {name: mask(lay) for name, lay in use.internal.items()},
    )
    return gone if gone.touched(kept=False) else None


def _map(masks, fn):
    return UnitMasks(
        [fn(m) for m in masks.inputs], [fn(m) for m in masks.outputs], {k: fn(m) for k, m in masks.internal.items()}
    )


def _kept(gone):
    """The keep-masks of the gone-masks ``gone``."""
    return _map(gone, lambda m: None if m is None else ~m)


def _within(gone, cut):
    """The gone-masks ``gone`` over the positions left once the ``cut`` ones are sliced away."""
    if gone is None or cut is None:
        return gone

    def shrink(mask, removed):
        return mask if mask is None or removed is None else mask[~removed]

    shrunk = UnitMasks(
        [shrink(m, c) for m, c in zip(gone.inputs, cut.inputs)],
        [shrink(m, c) for m, c in zip(gone.outputs, cut.outputs)],
        {k: shrink(m, cut.internal.get(k)) for k, m in gone.internal.items()},
    )
    return shrunk if shrunk.touched(kept=False) else None


def plan_layers(
    trace, deleted, zero: bool = False, shapes_only: bool = False, uses=None, still_delete=None, lazy: bool = False
):
    """For every layer of a traced model, its config and weights once ``deleted`` units are gone.

    Args:
        trace: a :class:`ridurre.graph.Trace`.
        deleted: int array of the unit roots to delete (``group.roots[channels]``).
        zero: keep shapes and zero the channels instead of removing them.
        shapes_only: slice placeholder arrays instead of the real weights (cheap: used to
            estimate params and MACs of a planned deletion without rebuilding anything).
        uses: plan only these :class:`ridurre.graph.LayerUse` (default: every layer).
        still_delete: with ``zero``, the roots among ``deleted`` that are removed all the same
            (channels through a normalization over the channel axis: the reference that a
            pruned model must equal exactly deletes them too, since zeroing them would change
            the normalization's statistics).
        lazy: return a :class:`LayerPlans` that plans each layer when it is looked up, from
            read-only views of its variables, and keeps nothing: what :func:`rebuild` takes,
            so that one layer's sliced weights at most are held at a time.

    Returns:
        dict ``id(layer) -> (config, weights dict or None)`` (a :class:`LayerPlans` with
        ``lazy``); nested models map to ``("model", [new width of each input])``.

    Example:
        >>> import keras, numpy as np
        >>> from ridurre.graph import trace_model
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(3, name="h")(x)))
        >>> trace = trace_model(model)
        >>> group = trace.groups()[1]
        >>> config, weights = plan_layers(trace, group.roots[[0]])[id(model.get_layer("h"))]
        >>> config["units"], weights["kernel"].shape
        (2, (4, 2))
    """
    plans = LayerPlans(trace, deleted, zero, shapes_only, uses, still_delete, copy=not lazy)
    return plans if lazy else {key: plans[key] for key in plans}


class LayerPlans(Mapping):
    """``id(layer) -> (config, weights)`` as :func:`plan_layers` gives it, each layer planned when
    it is looked up and not kept (looking a layer up twice plans it twice).

    Args:
        trace, deleted, zero, shapes_only, uses, still_delete: as for :func:`plan_layers`.
        copy: False reads the weights as read-only views of the variables
            (:func:`ridurre.graph.layer_weights`): the planned arrays are then valid only until
            the model's variables change.

    Example:
        >>> import keras
        >>> from ridurre.graph import trace_model
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, keras.layers.Dense(2)(keras.layers.Dense(3, name="h")(x)))
        >>> trace = trace_model(model)
        >>> plans = LayerPlans(trace, trace.groups()[1].roots[[0]], copy=False)
        >>> plans[id(model.get_layer("h"))][1]["kernel"].shape
        (4, 2)
    """

    def __init__(self, trace, deleted, zero=False, shapes_only=False, uses=None, still_delete=None, copy=True):
        self._trace = trace
        self._zero = zero
        self._shapes_only = shapes_only
        self._copy = copy
        self._uses = {id(use.layer): use for use in (trace.uses.values() if uses is None else uses)}
        self._deleted_roots = np.asarray(deleted, dtype=np.int64)
        self._deleted = np.zeros(len(trace.units.parent), dtype=bool)
        self._deleted[self._deleted_roots] = True
        self._removed = None  # with zero: the roots sliced away all the same
        if zero and still_delete is not None and len(still_delete):
            self._removed = np.zeros(len(trace.units.parent), dtype=bool)
            self._removed[np.asarray(still_delete, dtype=np.int64)] = True
            self._removed &= self._deleted
            self._deleted &= ~self._removed

    def __iter__(self):
        return iter(self._uses)

    def __len__(self):
        return len(self._uses)

    def __getitem__(self, key):
        return self._plan(self._uses[key])

    def _plan(self, use):
        trace, deleted, removed = self._trace, self._deleted, self._removed
        layer = use.layer
        if _compat.is_graph_model(layer):
            gone = removed if self._zero else deleted
            return (
                "model",
                [
                    None
                    if gone is None or self._deleted_roots.size == 0
                    else int(np.count_nonzero(~gone[trace.units.roots(lay)]))
                    for lay in use.model_in_layouts
                ],
            )
        variables = getattr(layer, "weights", [])  # raw keras.ops operations have none
        built = bool(variables) or getattr(layer, "built", True)
        if self._shapes_only and variables:
            weights = {
                name: np.broadcast_to(np.zeros(1, np.int8), tuple(v.shape))
                for name, v in zip(weight_names(layer), variables)
            }
        elif self._shapes_only:
            weights = {}
        else:
            weights = layer_weights(layer, copy=self._copy) if variables else {}
        config = layer.get_config()
        gone = _gone_masks(trace, use, deleted) if use.rule is not None and self._deleted_roots.size else None
        if removed is not None and use.rule is not None:
            cut = _gone_masks(trace, use, removed)
            if cut is not None:
                config, weights = use.rule.slice_units(layer, config, weights, _kept(cut))
                gone = _within(gone, cut)
                layer = ConfigView(type(layer).__name__, config)  # the zeroing sees the sliced layer
        if gone is not None:
            if self._zero:
                weights = use.rule.zero_units(layer, weights, gone)
            else:
                config, weights = use.rule.slice_units(layer, config, weights, _kept(gone))
        return config, weights if built else None


def rebuild(model: keras.Model, plans: dict, edits: dict) -> keras.Model:
    """Clone ``model`` once, building every layer from its planned config and weights.

    Each layer's planned weights are set as soon as its first call has built it, and dropped
    then, so that the sliced arrays and the new model's variables are never both held in full.
    With lazy plans (``plan_layers(..., lazy=True)``, what :meth:`Surgeon.operate` passes) each
    layer is planned only when it is rebuilt, from views of its variables: one layer's sliced
    weights at most exist at a time, and the surgery peaks at about the original plus the
    pruned copy plus the largest pruned layer.

    Args:
        model: the original model (not modified).
        plans: the output of :func:`plan_layers` (a dict's weights are consumed).
        edits: ``{id(layer): ("delete" | "insert" | "replace", new layer)}``, or
            ``("bypass", (branch index, per-channel offset or None))`` for a merge replaced by its
            other input (see :meth:`Surgeon.bypass_merge`).

    Returns:
        The new model.
    """
    new_layers = {}  # id(old layer) -> new layer
    pending = {}  # id(new layer) -> (new layer, weights), until its first call builds it
    freed = [0]  # bytes of planned weights set (and so freed) since the heap was last trimmed

    def build(layer):
        if isinstance(layer, keras.layers.Lambda):
            return layer  # weightless user code: reuse rather than deserialize it unsafely
        if _compat.is_graph_model(layer):
            return clone(layer, plans[id(layer)][1])
        config, weights = plans.get(id(layer), (layer.get_config(), None))
        new = _from_config(layer.__class__, config)
        if weights:
            pending[id(new)] = (new, weights)
            if isinstance(plans, dict):
                plans[id(layer)] = (config, None)
        return new

    def set_pending(new_layer):
        new, weights = pending.pop(id(new_layer), (None, None))
        if new is None:
            return
        try:
            set_layer_weights(new, weights, take=True)
        except (ValueError, KeyError) as exc:
            raise RuntimeError(f"could not set the weights of rebuilt layer {new.name!r}: {exc}") from exc
        freed[0] += sum(getattr(w, "nbytes", 0) for w in weights.values())
        if freed[0] >= _TRIM_BYTES:
            freed[0] = 0
            _release_freed_memory()

    def clone_function(layer):
        edit = edits.get(id(layer))
        new = build(edit[1] if edit and edit[0] == "replace" else layer)
        new_layers[id(layer)] = new
        if edit and edit[0] == "insert":
            new_layers[("insert", id(layer))] = build(edit[1])
        if edit and edit[0] == "bypass" and edit[1][1] is not None:
            offset = ChannelOffset(name=f"{layer.name}_offset")
            pending[id(offset)] = (offset, {"offset": np.array(edit[1][1], dtype="float32")})
            new_layers[("bypass", id(layer))] = offset
        return new

    old_of = {}

    def recording_clone(layer):
        new = clone_function(layer)
        old_of[id(new)] = layer
        return new

    def call_function(new_layer, *args, **kwargs):
        old = old_of.get(id(new_layer))
        edit = edits.get(id(old)) if old is not None else None
        if edit and edit[0] == "delete":
            return args[0]
        if edit and edit[0] == "bypass":  # the branch's layers are then unused and left out
            kept = args[0][1 - edit[1][0]]
            offset = new_layers.get(("bypass", id(old)))
            if offset is None:
                return kept
            outputs = offset(kept)
            set_pending(offset)
            return outputs
        if edit and edit[0] == "insert":
            args = (new_layers[("insert", id(old))](args[0]),) + args[1:]
        if edit and edit[0] == "replace":
            kwargs = _accepted_kwargs(new_layer, kwargs)
        planned = pending.get(id(new_layer), (None, {}))[1]
        if sum(getattr(w, "nbytes", 0) for w in planned.values()) >= _TRIM_BYTES:
            _release_freed_memory()  # building a large layer draws its initializer's values: make room first
        outputs = new_layer(*args, **kwargs)
        set_pending(new_layer)
        return outputs

    def clone(model, channels=None):
        """Clone a (possibly nested) model; ``channels`` gives the new width of each input."""
        inputs = None
        if channels is not None and any(c is not None for c in channels):
            flat = list(model.inputs)
            # an input without a known channel axis (token ids: (batch, sequence)) keeps its shape
            shapes = [
                t.shape if c is None or t.shape[-1] is None else tuple(t.shape[:-1]) + (c,)
                for t, c in zip(flat, channels)
            ]
            new_inputs = [keras.Input(batch_shape=s, dtype=t.dtype, name=t.name) for s, t in zip(shapes, flat)]
            inputs = (
                new_inputs[0]
                if isinstance(model, keras.Sequential)
                else keras.tree.pack_sequence_as(_compat.inputs_structure(model), new_inputs)
            )
        if isinstance(model, keras.Sequential):
            if edits:
                return _rebuild_sequential(model, recording_clone, edits, new_layers, inputs)
            return keras.models.clone_model(model, input_tensors=inputs, clone_function=recording_clone)
        return keras.models.clone_model(
            model,
            input_tensors=inputs,
            clone_function=recording_clone,
            call_function=call_function,
        )

    new_model = clone(model)
    for new, _ in list(pending.values()):  # Sequential models, and layers not called by the cloning
        set_pending(new)
    return new_model


_TRIM_BYTES = 64 * 2**20
_malloc_trim = None


def _release_freed_memory():
    """Give the heap memory freed so far back to the system (glibc's ``malloc_trim``; nothing
    elsewhere). glibc keeps freed blocks below its mmap threshold (up to 32 MB) in the heap, so
    that each layer's transient arrays (its initializer's values, the sliced weights, their
    conversion) would otherwise stay resident: the rebuild of a 355 M parameter decoder kept
    about 300 MB of them, measured in BENCHMARKS.md. Called every :data:`_TRIM_BYTES` of weights set."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (AttributeError, OSError, TypeError):  # not glibc
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


def _from_config(cls, config):
    """``cls.from_config(config)``, leaving out the derived values some keras-hub layers list in
    their config but refuse in their constructor (:data:`ridurre.rules.keras_hub.DERIVED_CONFIG_KEYS`).

    Raises:
        RuntimeError: the layer cannot be rebuilt from its own config (naming it and why).
    """
    derived = DERIVED_CONFIG_KEYS.get(class_path(cls), ())
    try:
        return cls.from_config({k: v for k, v in config.items() if k not in derived})
    except (TypeError, ValueError) as exc:
        raise RuntimeError(
            f"layer {config.get('name')!r} ({cls.__name__}) cannot be rebuilt from its own config, so no pruned "
            f"copy of the model can be built: {str(exc).strip().splitlines()[-1]}"
        ) from exc


def _accepted_kwargs(layer, kwargs):
    """The call kwargs of the replaced layer (``mask``, ``training``) that ``layer`` accepts."""
    params = inspect.signature(layer.call).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _rebuild_sequential(model, clone_function, edits, new_layers, inputs=None):
    layers = []
    for layer in model.layers:
        edit = edits.get(id(layer))
        if edit and edit[0] == "delete":
            continue
        new = clone_function(layer)
        if edit and edit[0] == "insert":
            layers.append(new_layers[("insert", id(layer))])
        layers.append(new)
    if inputs is None:
        inputs = keras.Input(batch_shape=model.inputs[0].shape, dtype=model.inputs[0].dtype)
    return keras.Sequential([inputs] + layers, name=model.name)
