"""Which rule applies to which layer: the built-in table, the global registry and per-call sets.

The built-in rules are keyed by the *names* of Keras's classes (``"Conv2D"`` in
``keras.layers``, ``"Add"`` for the raw ``keras.ops`` call), so the table is usable without
importing Keras: mask mode looks rules up by the class names a saved file records.

A layer object is matched, in order, against the rules given for one call
(``channel_groups(model, rules={MyLayer: rule})``), the rules registered globally with
:func:`register_rule`, and the built-in tables (Keras's layers, and keras-hub's in
:mod:`ridurre.rules.keras_hub`). Classes are matched exactly; subclasses of a
registered class (or of a built-in Keras layer) only when asked for (``subclasses=True``), since
a subclass may change what the layer computes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from ridurre import _compat
from ridurre.rules.applications import application_rules
from ridurre.rules.attention import GroupedQueryAttentionRule, MultiHeadAttentionRule
from ridurre.rules.base import ConfigView, LayerRule, PassThroughRule, RescalingRule
from ridurre.rules.conv import ConvRule, DenseRule, DepthwiseRule, EmbeddingRule, SeparableRule
from ridurre.rules.einsum import EinsumDenseRule, EinsumOpRule
from ridurre.rules.keras_hub import KERAS_HUB_RULES, ReversibleEmbeddingRule, RotaryRule, class_path
from ridurre.rules.merge import ConcatenateRule, DivisionRule, ElementwiseOpRule, MergeRule
from ridurre.rules.norm import (
    BatchNormRule,
    GroupNormRule,
    LayerNormRule,
    NormalizationRule,
    RMSNormRule,
    UnitNormRule,
    check_activation,
    check_softmax_axis,
)
from ridurre.rules.ops import (
    GetItemOpRule,
    PadOpRule,
    ReduceOpRule,
    RepeatOpRule,
    ReshapeOpRule,
    SplitOpRule,
    UnaryOpRule,
)
from ridurre.rules.recurrent import BidirectionalRule, RecurrentRule, TimeDistributedRule
from ridurre.rules.shape import (
    FlattenRule,
    PermuteRule,
    PoolingRule,
    ReshapeRule,
    SequenceMaskRule,
    TransposeOpRule,
)

__all__ = [
    "BUILTIN_APPLICATION_RULES",
    "BUILTIN_LAYER_RULES",
    "BUILTIN_OP_RULES",
    "RuleSet",
    "RULES",
    "register_rule",
    "registered",
    "get_rule",
    "rule_for_class_name",
]


def _builtin_layer_rules() -> dict[str, LayerRule]:
    table: dict[str, LayerRule] = {}
    free = PassThroughRule(cost="free")
    for name in ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D"):
        table[name] = PassThroughRule(cost="free", in_activation=True)
    for name in (
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "RepeatVector",
        "Masking",
    ):
        table[name] = free
    other = PassThroughRule()
    for name in ("UpSampling2D", "UpSampling3D"):
        table[name] = other
    table["Rescaling"] = RescalingRule()
    activation = PassThroughRule(cost="activation", in_activation=True)
    for name in ("ReLU", "ELU", "LeakyReLU"):
        table[name] = activation
    table["Activation"] = PassThroughRule(check=check_activation, cost="activation", in_activation=True)
    table["Softmax"] = PassThroughRule(check=check_softmax_axis, cost="activation")
    table["PReLU"] = PassThroughRule(
        per_channel_weights=("alpha",), cost="activation", in_activation=True, saved_weights=(("alpha", None),)
    )
    for dims in ("1D", "2D", "3D"):
        table[f"MaxPooling{dims}"] = table[f"AveragePooling{dims}"] = PoolingRule()
        table[f"GlobalAveragePooling{dims}"] = table[f"GlobalMaxPooling{dims}"] = PoolingRule(global_pooling=True)
    table["Normalization"] = NormalizationRule()
    table["BatchNormalization"] = BatchNormRule()
    table["LayerNormalization"] = LayerNormRule()
    table["GroupNormalization"] = GroupNormRule()
    merge = MergeRule()
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        table[name] = merge
    table["Concatenate"] = ConcatenateRule()
    table["Flatten"] = FlattenRule()
    table["Reshape"] = ReshapeRule()
    table["Permute"] = PermuteRule()
    for dims in ("1D", "2D", "3D"):
        table[f"Conv{dims}"] = ConvRule("filters")
        table[f"Conv{dims}Transpose"] = ConvRule("filters", transpose=True)
    table["Dense"] = DenseRule()
    for dims in ("1D", "2D"):
        table[f"DepthwiseConv{dims}"] = DepthwiseRule()
        table[f"SeparableConv{dims}"] = SeparableRule()
    _add_sequence_and_scale_layers(table)
    table.update(_attention_layer_rules())
    return table


def _add_sequence_and_scale_layers(table: dict[str, LayerRule]) -> None:
    """Embedding, the recurrent layers and their wrappers, RMS and unit norms, Resizing."""
    table["Embedding"] = EmbeddingRule()
    table["ReversibleEmbedding"] = ReversibleEmbeddingRule()
    table["SimpleRNN"] = RecurrentRule(gates=1)
    table["GRU"] = RecurrentRule(gates=3)
    table["LSTM"] = RecurrentRule(gates=4)
    for dims in ("1D", "2D", "3D"):
        table[f"ConvLSTM{dims}"] = RecurrentRule(gates=4, size_key="filters", convolutional=True)
    table["Bidirectional"] = BidirectionalRule(inner_rule=_wrapped_rule)
    table["TimeDistributed"] = TimeDistributedRule(inner_rule=_wrapped_rule)
    table["RMSNormalization"] = RMSNormRule()
    table["UnitNormalization"] = UnitNormRule()
    table["Resizing"] = PassThroughRule()


def _attention_layer_rules() -> dict[str, LayerRule]:
    """Attention and einsum layers (heads and head dimensions are internal units)."""
    return {
        "MultiHeadAttention": MultiHeadAttentionRule(),
        "GroupedQueryAttention": GroupedQueryAttentionRule(),
        "EinsumDense": EinsumDenseRule(),
    }


def _builtin_op_rules() -> dict[str, LayerRule]:
    table: dict[str, LayerRule] = {}
    elementwise = ElementwiseOpRule()
    for name in ("Add", "Subtract", "Multiply", "Maximum", "Minimum"):
        table[name] = elementwise
    for name in ("Equal", "NotEqual", "Greater", "GreaterEqual", "Less", "LessEqual"):  # masks: x != 0
        table[name] = elementwise
    for name in ("LogicalAnd", "LogicalOr", "LogicalXor", "LogicalNot"):
        table[name] = elementwise
    table["Divide"] = table["TrueDivide"] = DivisionRule()
    activation = PassThroughRule(cost="activation")
    for name in (
        "Relu",
        "Relu6",
        "Sigmoid",
        "Tanh",
        "Silu",
        "Gelu",
        "Softplus",
        "HardSigmoid",
        "HardSilu",
        "Elu",
        "LeakyRelu",
    ):
        table[name] = activation
    free = PassThroughRule(cost="free")
    for name in ("Cast", "Squeeze", "ExpandDims"):
        table[name] = free
    table["Transpose"] = TransposeOpRule()
    _add_shape_and_unary_ops(table)
    table["Einsum"] = EinsumOpRule()
    return table


def _wrapped_rule(layer) -> LayerRule | None:
    """The rule of a layer inside Bidirectional or TimeDistributed (a layer or a config view)."""
    if isinstance(layer, ConfigView):
        return rule_for_class_name(layer.class_name)
    return RULES.get(layer)


# Unary functions that are finite at 0 (log, reciprocal and rsqrt are not: a zeroed channel
# would turn into inf), by the kind of work counted for them.
_UNARY_ACTIVATIONS = ("Selu", "Celu", "Softsign", "LogSigmoid", "HardTanh", "SoftShrink", "HardShrink", "TanhShrink")
_UNARY_ACTIVATIONS += ("Squareplus", "SparsePlus", "SparseSigmoid", "Threshold")
_UNARY_MATH = ("Abs", "Absolute", "Fabs", "Negative", "Square", "Sqrt", "Cbrt", "Exp", "Exp2", "Expm1", "Log1p")
_UNARY_MATH += ("Erf", "Erfc", "Sign", "Floor", "Ceil", "Round", "Trunc", "Sin", "Cos", "Sinh", "Cosh", "Arctan")
_UNARY_MATH += ("Arcsinh", "Sinc", "Clip", "NanToNum")


def _add_shape_and_unary_ops(table: dict[str, LayerRule]) -> None:
    """split, pad, indexing, resize, reductions over other axes, unary element-wise functions."""
    table["Split"] = SplitOpRule()
    table["Concatenate"] = ConcatenateRule()
    table["Pad"] = PadOpRule()
    table["Reshape"] = ReshapeOpRule()
    table["Repeat"] = RepeatOpRule()
    table["GetItem"] = GetItemOpRule()
    table["Resize"] = PassThroughRule()
    for name in ("StopGradient", "Copy"):
        table[name] = PassThroughRule(cost="free")
    reduce = ReduceOpRule()
    for name in ("Mean", "Sum", "Max", "Min", "Prod", "Amax", "Amin"):
        table[name] = reduce
    activation = UnaryOpRule(cost="activation")
    for name in _UNARY_ACTIVATIONS:
        table[name] = activation
    other = UnaryOpRule(cost="other")
    for name in _UNARY_MATH:
        table[name] = other


BUILTIN_LAYER_RULES: dict[str, LayerRule] = _builtin_layer_rules()
"""Rules of the built-in ``keras.layers`` classes, by class name."""

BUILTIN_OP_RULES: dict[str, LayerRule] = _builtin_op_rules()
"""Rules of raw ``keras.ops`` calls recorded in a Functional graph, by operation class name."""

BUILTIN_APPLICATION_RULES: dict[str, LayerRule] = application_rules()
"""Rules of the layers ``keras.applications`` models define themselves (ConvNeXt's LayerScale)."""


def _check(layer_class, rule):
    if not isinstance(layer_class, type):
        raise TypeError(f"layer_class must be a class, got {layer_class!r}")
    if not isinstance(rule, LayerRule):
        raise TypeError(f"rule must be a ridurre.rules.LayerRule, got {type(rule).__name__}")


class RuleSet:
    """Rules by layer class, falling back to a parent set (and finally to the built-in table).

    Args:
        rules: ``{layer class: LayerRule}``.
        parent: consulted for layers this set has no rule for (default: the global registry
            :data:`RULES`; ``None`` for the global registry itself).
        subclasses: also match subclasses of the classes here and of the built-in Keras layers.
        exact_only: refuse to prune through layers whose rule is not exact
            (:attr:`LayerRule.exact`: LayerNormalization, RMS norms), instead of pruning through
            them with the group flagged. A parent's ``exact_only`` applies too.

    Example:
        >>> import keras
        >>> class Scale(keras.layers.Layer):
        ...     def call(self, x):
        ...         return 2.0 * x
        >>> rules = RuleSet({Scale: PassThroughRule()})
        >>> rules.get(Scale()) is not None, RULES.get(Scale()) is None
        (True, True)
    """

    def __init__(
        self,
        rules: Mapping[type, LayerRule] | None = None,
        *,
        parent: RuleSet | None | str = "global",
        subclasses: bool = False,
        exact_only: bool = False,
    ):
        self._rules: dict[type, tuple[LayerRule, bool]] = {}
        self._parent = RULES if parent == "global" else parent
        self.subclasses = bool(subclasses)
        self._exact_only = bool(exact_only)
        for layer_class, rule in (rules or {}).items():
            self.register(layer_class, rule)

    @property
    def exact_only(self) -> bool:
        """Whether groups through an inexact layer (a normalization over the channels) are refused.

        Example:
            >>> RuleSet(exact_only=True).exact_only, RuleSet().exact_only
            (True, False)
        """
        return self._exact_only or (self._parent is not None and self._parent.exact_only)

    def register(self, layer_class: type, rule: LayerRule, subclasses: bool = False) -> None:
        """Use ``rule`` for ``layer_class`` (and its subclasses when ``subclasses``)."""
        _check(layer_class, rule)
        self._rules[layer_class] = (rule, bool(subclasses))

    def unregister(self, layer_class: type) -> None:
        """Forget the rule registered here for ``layer_class`` (built-in rules stay)."""
        self._rules.pop(layer_class, None)

    def _own(self, cls: type, subclasses: bool) -> LayerRule | None:
        entry = self._rules.get(cls)
        if entry is not None:
            return entry[0]
        for base in cls.__mro__[1:]:
            entry = self._rules.get(base)
            if entry is not None and (entry[1] or subclasses or self.subclasses):
                return entry[0]
        return None

    def get(self, layer) -> LayerRule | None:
        """The rule for ``layer``, or ``None`` when ridurre does not know its type."""
        return self._find(type(layer), self.subclasses)

    def _find(self, cls: type, subclasses: bool) -> LayerRule | None:
        rule = self._own(cls, subclasses)
        if rule is not None:
            return rule
        if self._parent is not None:
            return self._parent._find(cls, subclasses or self.subclasses)
        return _builtin(cls, subclasses)

    def for_class_name(self, class_name: str) -> LayerRule | None:
        """The rule of a saved layer, by the class name its file records (``"Conv2D"``, or the
        registered name ``"package>MyLayer"`` of a custom layer)."""
        short = class_name.split(">")[-1]
        for cls, (rule, _) in self._rules.items():
            if class_name in (cls.__name__, _registered_name(cls)) or short == cls.__name__:
                return rule
        if self._parent is not None:
            return self._parent.for_class_name(class_name)
        return BUILTIN_LAYER_RULES.get(class_name)


def _registered_name(cls) -> str | None:
    try:
        import keras

        return keras.saving.get_registered_name(cls)
    except Exception:  # noqa: BLE001 - no Keras in mask mode: names are enough there
        return None


_CLASS_PATH_RULES: dict[str, LayerRule] = {
    **KERAS_HUB_RULES,
    "ridurre.graph.layers.CausalMask": SequenceMaskRule(),
    "ridurre.graph.layers.ChannelOffset": PassThroughRule(
        per_channel_weights=("offset",), zero_to={"offset": 0.0}, saved_weights=(("offset", None),)
    ),
    "ridurre.graph.layers.RotaryEmbedding": RotaryRule(),
}


def _builtin(cls: type, subclasses: bool) -> LayerRule | None:
    rule = _CLASS_PATH_RULES.get(class_path(cls))  # keras-hub's layers and ridurre's own, exactly
    if rule is not None:
        return rule
    for i, base in enumerate(cls.__mro__):
        if i and not subclasses:
            break
        kind = _compat.builtin_kind(base)
        if kind == "layer":
            rule = BUILTIN_LAYER_RULES.get(base.__name__)
        elif kind == "op":
            rule = BUILTIN_OP_RULES.get(base.__name__)
        elif kind == "application":
            rule = BUILTIN_APPLICATION_RULES.get(base.__name__)
        else:
            continue
        if rule is not None:
            return rule
    return None


RULES = RuleSet(parent=None)
"""The global registry: what :func:`register_rule` adds to, and what every trace consults."""


def register_rule(layer_class: type, rule: LayerRule, subclasses: bool = False) -> None:
    """Register (or replace) the rule for ``layer_class`` in the global registry.

    Args:
        layer_class: a Keras layer class.
        rule: a :class:`~ridurre.rules.LayerRule` instance.
        subclasses: also use it for subclasses of ``layer_class`` (default: exact class only).

    Example:
        >>> import keras
        >>> from ridurre.rules import register_rule, get_rule, PassThroughRule, RULES
        >>> class Swish(keras.layers.Layer):
        ...     def call(self, x):
        ...         return x * keras.ops.sigmoid(x)
        >>> register_rule(Swish, PassThroughRule())
        >>> isinstance(get_rule(Swish()), PassThroughRule)
        True
        >>> RULES.unregister(Swish)
    """
    RULES.register(layer_class, rule, subclasses)


@contextlib.contextmanager
def registered(layer_class: type, rule: LayerRule, subclasses: bool = False) -> Iterator[None]:
    """Register a rule globally for the duration of a ``with`` block (the previous one comes back).

    Example:
        >>> import keras
        >>> class Scale(keras.layers.Layer):
        ...     def call(self, x):
        ...         return 2.0 * x
        >>> with registered(Scale, PassThroughRule()):
        ...     get_rule(Scale()) is not None
        True
        >>> get_rule(Scale()) is None
        True
    """
    previous = RULES._rules.get(layer_class)
    RULES.register(layer_class, rule, subclasses)
    try:
        yield
    finally:
        if previous is None:
            RULES.unregister(layer_class)
        else:
            RULES._rules[layer_class] = previous


def get_rule(layer, rules: RuleSet | Mapping | None = None) -> LayerRule | None:
    """The rule for ``layer`` (from ``rules``, then the global registry and the built-in table),
    or ``None`` when ridurre does not know its type.

    Example:
        >>> import keras
        >>> type(get_rule(keras.layers.Conv2D(4, 3))).__name__
        'ConvRule'
    """
    return as_rule_set(rules).get(layer)


def rule_for_class_name(class_name: str, rules: RuleSet | Mapping | None = None) -> LayerRule | None:
    """The rule of a saved layer by its class name (no Keras needed for built-in layers).

    Example:
        >>> type(rule_for_class_name("SeparableConv2D")).__name__
        'SeparableRule'
    """
    return as_rule_set(rules).for_class_name(class_name)


def as_rule_set(rules: RuleSet | Mapping | None) -> RuleSet:
    """``rules`` as a :class:`RuleSet` over the global registry (``None``: the global registry).

    Raises:
        TypeError: anything but a RuleSet, a ``{layer class: rule}`` mapping or ``None``.
    """
    if rules is None:
        return RULES
    if isinstance(rules, RuleSet):
        return rules
    if isinstance(rules, Mapping):
        return RuleSet(rules)
    raise TypeError(
        f"rules must be a ridurre.rules.RuleSet or a dict {{layer class: LayerRule}}, got {type(rules).__name__}"
    )
