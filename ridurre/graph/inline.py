"""See inside composite layers: replace each call of a layer that has no rule but is made of
other layers by the layers and ``keras.ops`` calls of its ``call``.

keras-hub (and many user models) build networks from subclassed layers (``TransformerEncoder``,
``MBConvBlock``, ``ViTEncoder``...) whose Conv, Dense and normalization layers never appear in the
Functional graph, so the trace sees one opaque layer. :func:`inline_composites` calls each such
layer's ``call`` on symbolic inputs: its sublayer calls and ``keras.ops`` calls are recorded as a
small Functional model that shares the sublayer objects (and so the weights), named like the
layer, and the composite's call is replaced by a call of that model. The result is a Functional
model computing the same function, in which the trace, the surgeon and the loop see every inner
channel; composites inside composites become nested models inside nested models.

A call that computes with the unknown batch or sequence size (``ops.shape(x)[0]`` is ``None``
while a graph is built) is recorded at two concrete sizes instead, and kept if the only
differences are reshapes by the batch size and causal masks of the sequence
(:mod:`ridurre.graph._recording`). A call that cannot be recorded is left as it is, with the
reason (``Inlining.refused``, and the trace's reason for the layer): Python control flow on
tensor values, backend-specific operations, other computations with the unknown sizes, a
``call`` that branches in Python on ``training``, Keras masks travelling with the inputs,
variables read outside a layer call, weights the recorded graph does not use, or an inner layer
that cannot be rebuilt from its config. A layer with a rule is never inlined: register a rule
for a composite to keep it whole.

What is lost: the model is a plain Functional model (a keras-hub ``Backbone`` loses its class,
``from_preset`` and the methods that call its layers directly, such as cached generation).
"""

from __future__ import annotations

import inspect
from collections import Counter
from dataclasses import dataclass, field

import keras
import numpy as np

from ridurre import _compat
from ridurre import rules as _rules
from ridurre.graph._recording import (
    SIZES,
    Refused,
    Slot,
    all_sublayers,
    call_signature,
    operation_config,
    result_slots,
    size_free,
    sized_shape,
    structure_key,
    symbolic_leaves,
    unknown_dimension,
)
from ridurre.graph.composite import is_composite, record_refusal
from ridurre.graph.layers import CausalMask
from ridurre.graph.standins import STANDINS, layer_standin
from ridurre.graph.trace import check_model
from ridurre.rules.keras_hub import class_path

__all__ = ["Inlining", "Refusal", "inline", "inline_composites"]


@dataclass(frozen=True)
class Refusal:
    """A composite layer whose call was not inlined: where it is, its class and why."""

    path: str
    layer_class: str
    reason: str


@dataclass
class Inlining:
    """The result of :func:`inline`.

    Attributes:
        model: the model with its composite layers inlined (the given model itself when there
            was nothing to inline).
        inlined: how many calls of each composite class were inlined.
        refused: the composite layers left opaque, with the reason.
    """

    model: keras.Model
    inlined: dict = field(default_factory=dict)
    refused: tuple = ()


def _with_causal_masks(structure, positions, inputs):
    """``structure`` with the leaves at ``positions`` replaced by causal masks of the sequence of
    the first input that has unknown batch and sequence axes."""
    reference = next((t for t in inputs if len(t.shape) >= 2 and t.shape[0] is None and t.shape[1] is None), None)
    if reference is None:
        raise Refused("its call uses a causal mask, but no input has an unknown sequence length")
    leaves = keras.tree.flatten(structure)
    for position, dtype in positions.items():
        leaves[position] = CausalMask(mask_dtype=dtype)(reference)
    return keras.tree.pack_sequence_as(structure, leaves)


class _Inliner:
    def __init__(self, rules):
        self.rules = _rules.as_rule_set(rules)
        self.inlined = Counter()
        self.refused = {}  # id(layer) -> (layer, Refusal)
        self.nested = {}  # id(layer) -> (model, output structure, signature)
        self.branches = {}  # id(layer) -> whether its call branches on `training` in Python
        self._composite = {}
        self._saving = {}  # id(operation) -> why it cannot be saved, or None
        self.replaced = set()  # ids of weights whose layer is computed by a stand-in (copies)
        self._path = []

    def composite(self, layer) -> bool:
        key = id(layer)
        if key not in self._composite:
            self._composite[key] = is_composite(layer, self.rules)
        return self._composite[key]

    # -- replaying a Functional graph --------------------------------------------------------
    def functional(self, functional, prefix):
        """A copy of ``functional`` with its composite calls inlined, or ``None`` if none was."""
        mapping = {}

        def mapped(value):
            return mapping.get(id(value), value) if _compat.is_symbolic(value) else value

        changed = False
        calls = list(_compat.calls(functional))
        consumed = {id(t) for call in calls for t in call.inputs} | {id(t) for t in functional.outputs}
        for call in calls:
            op = call.operation
            args = keras.tree.map_structure(mapped, call.args)
            kwargs = keras.tree.map_structure(mapped, call.kwargs or {})
            moved = any(mapping.get(id(t)) is not None for t in call.inputs)
            outputs = None
            if _compat.is_graph_model(op):
                inner = self.functional(_compat.functional_of(op), f"{prefix}{op.name}/")
                if inner is not None:
                    outputs = inner(*args, **kwargs)
            elif self.composite(op):
                self._path.append(prefix + op.name)
                try:
                    outputs = self.expand(op, args, kwargs, expected=(call.outputs, consumed))
                finally:
                    self._path.pop()
            if outputs is None:
                if not moved:
                    continue
                outputs = op(*args, **kwargs)
            changed = True
            for old, new in zip(call.outputs, keras.tree.flatten(outputs)):
                mapping[id(old)] = new
        if not changed:
            return None
        outputs = keras.tree.map_structure(mapped, _compat.outputs_structure(functional))
        return keras.Model(_compat.inputs_structure(functional), outputs, name=functional.name)

    # -- one composite call ------------------------------------------------------------------
    def expand(self, layer, args, kwargs, expected=None):
        """The outputs of ``layer(*args, **kwargs)`` computed by the nested model recorded from
        its call (same structure as the call's result), or ``None`` when it cannot be inlined."""
        if id(layer) in self.refused:
            return None
        try:
            model, structure = self._nested_model(layer, args, kwargs, expected)
        except Refused as exc:
            self.refused[id(layer)] = (layer, Refusal(self._path[-1], type(layer).__name__, str(exc)))
            return None
        self.inlined[type(layer).__name__] += 1
        outputs = model(symbolic_leaves((args, kwargs)))
        return keras.tree.map_structure(lambda v: outputs[v.index] if isinstance(v, Slot) else v, structure)

    def _nested_model(self, layer, args, kwargs, expected):
        signature = call_signature(args, kwargs)
        cached = self.nested.get(id(layer))
        if cached is not None:
            model, structure, first = cached
            if first != signature:
                raise Refused("it is called more than once, with different arguments")
            return model, structure
        for tensor in symbolic_leaves((args, kwargs)) + list(expected[0] if expected else ()):
            if _compat.keras_mask(tensor) is not None:
                raise Refused("a Keras mask travels with its inputs or outputs; inlining would not pass it on")
        sublayers = all_sublayers(layer)
        if class_path(type(layer)) in STANDINS:
            model, structure = self._attempt(layer, args, kwargs, sublayers, expected, self._record_standin)
            self.nested[id(layer)] = (model, structure, signature)
            return model, structure
        kwargs = self._training(layer, args, kwargs)
        try:
            model, structure = self._attempt(layer, args, kwargs, sublayers, expected, self._record)
        except Refused as first:
            if not first.unknown_size or not any(None in t.shape for t in symbolic_leaves((args, kwargs))):
                raise
            try:  # record it at two batch and sequence sizes, and keep what does not depend on them
                model, structure = self._attempt(layer, args, kwargs, sublayers, expected, self._record_sized)
            except Refused as second:
                raise Refused(f"{first}; recorded at two sizes: {second}") from None
        self.nested[id(layer)] = (model, structure, signature)
        return model, structure

    def _attempt(self, layer, args, kwargs, sublayers, expected, record):
        """Record ``layer``'s call with ``record``; on failure, forget every graph node the
        attempt left in the sublayers and raise :class:`Refused` with the reason."""
        counts = _compat.node_counts(sublayers)
        known, refused, inlined = set(self.nested), dict(self.refused), Counter(self.inlined)
        try:
            inputs, outputs, structure = record(layer, args, kwargs, sublayers)
            if expected is not None:
                self._check_outputs(outputs, structure, *expected)
            return keras.Model(inputs, outputs, name=layer.name), structure
        except Exception as exc:
            _compat.forget_nodes(counts)
            for key in set(self.nested) - known:  # nested models recorded by the abandoned trace
                del self.nested[key]
            self.refused, self.inlined = refused, inlined  # what the abandoned trace met inside
            if isinstance(exc, Refused):
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            unknown = "None" in message
            hint = " - it computes with an unknown (batch or sequence) dimension" if unknown else ""
            raise Refused(
                f"its call cannot be traced on symbolic tensors ({type(exc).__name__}: {message}){hint}",
                unknown_size=unknown,
            ) from exc

    def _record(self, layer, args, kwargs, sublayers):
        """Call ``layer.call`` on fresh symbolic inputs, inlining the composites inside it too."""
        originals = symbolic_leaves((args, kwargs))
        fresh = {id(t): keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype) for t in originals}
        inputs = [fresh[id(t)] for t in originals]

        def replaced(value):
            if not _compat.is_symbolic(value):
                return value
            return _compat.convert_call_input(layer, fresh[id(value)])

        call_args = keras.tree.map_structure(replaced, args)
        call_kwargs = keras.tree.map_structure(replaced, kwargs)
        standins = {id(sub): self._standin(sub) for sub in sublayers if not self.composite(sub)}
        standins = {key: new for key, new in standins.items() if new is not None}
        intercepted = [sub for sub in sublayers if self.composite(sub) or id(sub) in standins]

        def intercept(sub, sub_args, sub_kwargs, original):
            if id(sub) in standins:
                return standins[id(sub)](*sub_args, **sub_kwargs)
            return self._intercept(sub, sub_args, sub_kwargs, original)

        with _compat.intercepted_calls(intercepted, intercept):
            result = layer.call(*call_args, **call_kwargs)
        outputs, structure = result_slots(result)
        try:
            calls = _compat.calls_between(inputs, outputs)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        self._check_calls(layer, calls)
        return inputs, outputs, structure

    def _record_standin(self, layer, args, kwargs, sublayers):
        """Build the layer's stand-in (:mod:`ridurre.graph.standins`) on fresh symbolic inputs,
        and check it against the layer's own call."""
        originals = symbolic_leaves((args, kwargs))
        fresh = {id(t): keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype) for t in originals}
        inputs = [fresh[id(t)] for t in originals]
        call_args, call_kwargs = keras.tree.map_structure(
            lambda v: fresh[id(v)] if _compat.is_symbolic(v) else v, (args, kwargs)
        )
        outputs, structure = result_slots(STANDINS[class_path(type(layer))](layer, *call_args, **call_kwargs))
        try:
            calls = _compat.calls_between(inputs, outputs)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        self._check_calls(layer, calls, own_weights=False)
        self._check_numerically(layer, args, kwargs, inputs, outputs, structure, what="as its stand-in")
        self.replaced.update(id(v) for v in layer.weights)
        return inputs, outputs, structure

    def _record_sized(self, layer, args, kwargs, sublayers):
        """Record ``layer.call`` twice on inputs whose unknown dimensions are given sizes
        (:data:`SIZES`); keep the graph if the two recordings differ only as
        :func:`~ridurre.graph._recording.size_free` allows (reshapes by the batch size, causal
        masks), then replay it on inputs of unknown sizes with those replaced, recording the
        inner composites again there. The result is checked against the layer's own call."""
        originals = symbolic_leaves((args, kwargs))
        standins = {id(sub): self._standin(sub) for sub in sublayers if not self.composite(sub)}
        standins = {key: new for key, new in standins.items() if new is not None}
        intercepted = [sub for sub in sublayers if self.composite(sub) or id(sub) in standins]
        counts = _compat.node_counts(sublayers)
        saved = self.nested, dict(self.refused), Counter(self.inlined), list(self._path)
        recordings = []
        try:
            for sizes in SIZES:
                self.nested = {}  # inner composites are recorded again in the replay below
                inner = {}  # id(first output of an inlined inner call) -> (composite, args, kwargs)

                def intercept(sub, sub_args, sub_kwargs, original, inner=inner):
                    if id(sub) in standins:
                        return standins[id(sub)](*sub_args, **sub_kwargs)
                    result = self._intercept(sub, sub_args, sub_kwargs, original)
                    first = symbolic_leaves(result)
                    if first and _compat.is_graph_model(_compat.producer(first[0])):
                        inner[id(first[0])] = (sub, sub_args, sub_kwargs)
                    return result

                sized = {id(t): keras.Input(batch_shape=sized_shape(t.shape, sizes), dtype=t.dtype) for t in originals}

                def replaced(value, sized=sized):
                    return _compat.convert_call_input(layer, sized[id(value)]) if _compat.is_symbolic(value) else value

                call_args, call_kwargs = keras.tree.map_structure(replaced, (args, kwargs))
                with _compat.intercepted_calls(intercepted, intercept):
                    result = layer.call(*call_args, **call_kwargs)
                outputs, structure = result_slots(result)
                inputs = [sized[id(t)] for t in originals]
                recordings.append((list(_compat.calls_between(inputs, outputs)), inputs, outputs, structure, inner))
        finally:
            _compat.forget_nodes(counts)  # the recordings are read; only the replay below stays in the layers
            self.nested, self.refused, self.inlined, self._path = saved
        (calls, inputs, outputs, structure, inner), (other, _, _, _, other_inner) = recordings

        def kind(call, inner):
            entry = inner.get(id(call.outputs[0])) if call.outputs else None
            return ("composite", id(entry[0])) if entry is not None else None

        replacements = size_free(calls, other, [kind(c, inner) for c in calls], [kind(c, other_inner) for c in other])
        fresh = [keras.Input(batch_shape=tuple(t.shape), dtype=t.dtype) for t in originals]
        mapping = {id(a): b for a, b in zip(inputs, fresh)}

        def mapped(value):
            return mapping.get(id(value), value) if _compat.is_symbolic(value) else value

        for index, call in enumerate(calls):
            op, replacement = call.operation, replacements.get(index)
            call_args = keras.tree.map_structure(mapped, call.args)
            call_kwargs = keras.tree.map_structure(mapped, call.kwargs or {})
            if isinstance(replacement, dict):  # constant causal masks, computed from the input instead
                call_args, call_kwargs = _with_causal_masks((call_args, call_kwargs), replacement, fresh)
            elif replacement is not None:
                op = replacement
            entry = inner.get(id(call.outputs[0])) if call.outputs else None
            if entry is not None:  # an inner composite inlined at a given size: record it again
                op, call_args, call_kwargs = entry[0], *keras.tree.map_structure(mapped, (entry[1], entry[2]))
            if isinstance(op, keras.layers.Layer) and self.composite(op):
                new = self._intercept(op, call_args, call_kwargs, lambda *a, op=op, **k: op(*a, **k))
            else:
                new = op(*call_args, **call_kwargs)
            for old, value in zip(call.outputs, keras.tree.flatten(new)):
                mapping[id(old)] = value
        outputs = [mapping[id(t)] for t in outputs]
        self._check_calls(layer, _compat.calls_between(fresh, outputs))
        self._check_numerically(layer, args, kwargs, fresh, outputs, structure)
        return fresh, outputs, structure

    def _check_numerically(self, layer, args, kwargs, inputs, outputs, structure, what="at two sizes"):
        """Compare with the layer's own call at the first :data:`SIZES`: random floating inputs,
        ones for integer and boolean ones (valid token ids and padding masks)."""
        originals = symbolic_leaves((args, kwargs))
        rng = np.random.default_rng(0)

        def value(t):
            shape, dtype = sized_shape(t.shape, SIZES[0]), str(t.dtype)
            return rng.normal(size=shape).astype(dtype) if "float" in dtype else np.ones(shape, dtype)

        values = {id(t): value(t) for t in originals}
        concrete = keras.tree.map_structure(lambda v: values[id(v)] if _compat.is_symbolic(v) else v, (args, kwargs))
        expected = [v for v in keras.tree.flatten(layer(*concrete[0], **concrete[1])) if hasattr(v, "shape")]
        got = keras.tree.flatten(keras.Model(inputs, outputs)([values[id(t)] for t in originals]))
        slots = [v for v in keras.tree.flatten(structure) if isinstance(v, Slot)]
        for value, slot in zip(expected, slots):
            a, b = np.asarray(got[slot.index]), np.asarray(value)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                raise Refused(f"the graph recorded {what} does not reproduce the layer's output")

    def _intercept(self, layer, args, kwargs, original):
        """A composite called inside another composite's call: inline it too when possible."""
        if not symbolic_leaves((args, kwargs)):
            return original(*args, **kwargs)
        self._path.append(f"{self._path[-1]}/{layer.name}")
        try:
            outputs = self.expand(layer, args, kwargs)
        finally:
            self._path.pop()
        return original(*args, **kwargs) if outputs is None else outputs

    # -- serialization -----------------------------------------------------------------------
    def _saving_problem(self, operation):
        """Why ``operation`` could not be saved and rebuilt from its config, or ``None``."""
        key = id(operation)
        if key not in self._saving:
            try:
                type(operation).from_config(operation.get_config())
                self._saving[key] = None
            except Exception as exc:  # noqa: BLE001 - any failure means: not savable
                message = str(exc).strip().splitlines()
                self._saving[key] = f"{type(exc).__name__}: {message[0] if message else ''}"
        return self._saving[key]

    def _standin(self, layer):
        """A savable copy of a weightless Keras layer that cannot be saved itself but whose
        constructor takes only the base Layer arguments (keras-hub builds
        ``Identity(dtype=<policy>)``), a copy from :data:`ridurre.graph.standins.LAYER_STANDINS`,
        or ``None``: it stands in the recorded graph for the layer."""
        leaf = layer_standin(layer, class_path(type(layer)))
        if leaf is not None:
            self.replaced.update(id(v) for v in layer.weights)
            return leaf
        if layer.weights or _compat.builtin_kind(type(layer)) != "layer" or self._saving_problem(layer) is None:
            return None
        parameters = inspect.signature(type(layer).__init__).parameters.values()
        if any(p.name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        policy = layer.dtype_policy
        return type(layer)(name=layer.name, dtype=getattr(policy, "name", policy), trainable=layer.trainable)

    # -- checks ------------------------------------------------------------------------------
    def _training(self, layer, args, kwargs):
        """``kwargs`` with ``training=None`` when the call takes ``training`` and was not given
        one, so that the recorded sublayer calls read the training phase at run time, as the
        composite's own call would have handed it on."""
        try:
            parameters = inspect.signature(layer.call).parameters
            bound = inspect.signature(layer.call).bind(*args, **kwargs).arguments
        except (TypeError, ValueError):
            return kwargs
        if "training" not in parameters or bound.get("training") is not None:
            return kwargs
        if self._branches_on_training(layer, args, kwargs):
            raise Refused("its call branches on `training` in Python, so no single graph stands for it")
        return {**kwargs, "training": None}

    def _branches_on_training(self, layer, args, kwargs):
        key = id(layer)
        if key not in self.branches:
            sublayers = all_sublayers(layer)
            counts = _compat.node_counts(sublayers)
            saved = dict(self.nested), dict(self.refused), Counter(self.inlined), list(self._path)
            keys = []
            try:
                for phase in (True, False):
                    self.nested = dict(saved[0])  # each phase records its own nested models
                    phase_kwargs = {**kwargs, "training": phase}
                    try:
                        inputs, outputs, _ = self._record(layer, args, phase_kwargs, sublayers)
                    except Exception:  # noqa: BLE001 - the recording at two sizes may still work
                        _compat.forget_nodes(counts)
                        inputs, outputs, _ = self._record_sized(layer, args, phase_kwargs, sublayers)
                    keys.append(structure_key(_compat.calls_between(inputs, outputs)))
            except Refused:
                keys = [0, 0]  # not traceable either way: the real recording will say why
            except Exception:  # noqa: BLE001 - same: the real recording reports the error
                keys = [0, 0]
            finally:
                _compat.forget_nodes(counts)
                self.nested, self.refused, self.inlined, self._path = saved
            self.branches[key] = keys[0] != keys[1]
        return self.branches[key]

    def _check_calls(self, layer, calls, own_weights=True):
        used = set()
        for call in calls:
            for value in keras.tree.flatten((call.args, call.kwargs or {})):
                if isinstance(value, keras.Variable):
                    raise Refused(f"its call reads the variable {value.path!r} outside a layer call")
            if unknown_dimension((call.args, call.kwargs, operation_config(call.operation))):
                raise Refused(
                    f"its call passes an unknown (batch or sequence) dimension to {type(call.operation).__name__}: "
                    "the graph would only hold while it is built, not when it runs",
                    unknown_size=True,
                )
            used.update(id(v) for v in getattr(call.operation, "weights", ()))
            if not _compat.is_graph_model(call.operation):
                problem = self._saving_problem(call.operation)
                if problem is not None:
                    raise Refused(
                        f"{call.operation.name!r} ({type(call.operation).__name__}) in its call cannot be saved "
                        f"and rebuilt from its config ({problem})"
                    )
        missing = [v.path for v in layer.weights if id(v) not in used and id(v) not in self.replaced]
        missing = missing if own_weights else []
        if missing:
            raise Refused(
                f"the recorded graph does not use its weights {missing[:3]}{' ...' if len(missing) > 3 else ''} "
                "(a sublayer called on a constant, or weights the call leaves unused)"
            )

    @staticmethod
    def _check_outputs(outputs, structure, expected, consumed):
        leaves = keras.tree.flatten(structure)
        if len(leaves) != len(expected):
            raise Refused(f"the recorded call returns {len(leaves)} values, the layer's call {len(expected)}")
        for leaf, old in zip(leaves, expected):
            if not isinstance(leaf, Slot):
                if id(old) in consumed or not hasattr(leaf, "shape"):
                    raise Refused(f"its call returns a {type(leaf).__name__} that does not depend on its inputs")
                continue
            new = outputs[leaf.index]
            if tuple(new.shape) != tuple(old.shape) or str(new.dtype) != str(old.dtype):
                raise Refused(
                    f"the recorded call returns a {tuple(new.shape)} {new.dtype} tensor where the layer returned "
                    f"{tuple(old.shape)} {old.dtype}"
                )


def inline(model: keras.Model, rules=None) -> Inlining:
    """Inline the composite layers of ``model`` and report what was inlined and what was not.

    Args:
        model: a built Functional or Sequential model (never modified; the new model shares its
            layers and weights, as any Functional model built from its layers would).
        rules: extra layer rules (a layer with a rule stays whole).

    Returns:
        An :class:`Inlining`: the new model, the inlined calls by class, the refusals.

    Example:
        >>> import keras
        >>> class Branch(keras.layers.Layer):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.expand = keras.layers.Dense(8, name="expand")
        ...         self.project = keras.layers.Dense(4, name="project")
        ...     def call(self, x):
        ...         return x + self.project(keras.ops.relu(self.expand(x)))
        >>> x = keras.Input((4,))
        >>> model = keras.Model(x, Branch(name="branch")(x))
        >>> result = inline(model)
        >>> result.inlined, [type(l).__name__ for l in result.model.layers]
        ({'Branch': 1}, ['InputLayer', 'Functional'])
        >>> [l.name for l in result.model.get_layer("branch").layers if l.weights]
        ['expand', 'project']
    """
    functional = check_model(model)
    inliner = _Inliner(rules)
    new = inliner.functional(functional, prefix="")
    if new is not None and new.name != model.name:
        new = keras.Model(_compat.inputs_structure(new), _compat.outputs_structure(new), name=model.name)
    for layer, refusal in inliner.refused.values():
        record_refusal(layer, refusal.reason)
    return Inlining(
        model=model if new is None else new,
        inlined=dict(inliner.inlined),
        refused=tuple(refusal for _, refusal in inliner.refused.values()),
    )


def inline_composites(model: keras.Model, rules=None) -> keras.Model:
    """``model`` with its composite layers inlined (see the module docstring and :func:`inline`).

    Example:
        >>> import keras, numpy as np, ridurre
        >>> class Block(keras.layers.Layer):
        ...     def __init__(self, **kwargs):
        ...         super().__init__(**kwargs)
        ...         self.conv = keras.layers.Conv2D(6, 3, padding="same", name="conv")
        ...         self.norm = keras.layers.BatchNormalization()
        ...     def call(self, x, training=None):
        ...         return keras.ops.relu(self.norm(self.conv(x), training=training))
        >>> x = keras.Input((8, 8, 3))
        >>> model = keras.Model(x, keras.layers.Conv2D(2, 1)(Block(name="block")(x)))
        >>> [g.prunable for g in ridurre.channel_groups(model)]
        [False, False, False]
        >>> inlined = inline_composites(model)
        >>> [(g.producers, g.prunable) for g in ridurre.channel_groups(inlined)][1]
        (('block/conv',), True)
        >>> xs = np.random.default_rng(0).normal(size=(2, 8, 8, 3))
        >>> bool(np.allclose(model.predict(xs, verbose=0), inlined.predict(xs, verbose=0)))
        True
    """
    return inline(model, rules).model
