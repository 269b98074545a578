"""Per-layer channel rules: one :class:`LayerRule` per layer type answers every question ridurre
asks about a layer (how channels flow through it, how its weights are sliced or zeroed, what it
costs, which weights produce its channels, how it looks in a saved file).

Teaching ridurre a new layer type is one call::

    from ridurre.rules import register_rule, PassThroughRule
    register_rule(MyScaleLayer, PassThroughRule(per_channel_weights=("scale",)))

or, for one call only, ``ridurre.channel_groups(model, rules={MyScaleLayer: rule})`` (also
``Surgeon(model, rules=...)``, ``model_stats(model, rules=...)`` and the pruning loop's
``rules=``). Importing this package does not import Keras.
"""

from ridurre.rules.base import COST_KINDS, ConfigView, LayerRule, PassThroughRule, Unsupported
from ridurre.rules.conv import ConvRule, DenseRule, DepthwiseRule, SeparableRule
from ridurre.rules.keras_hub import KERAS_HUB_RULES, LayerScaleRule, PatchEmbeddingRule, RMSNormRule
from ridurre.rules.merge import ConcatenateRule, DivisionRule, ElementwiseOpRule, MergeRule
from ridurre.rules.norm import BatchNormRule, GroupNormRule, LayerNormRule
from ridurre.rules.registry import (
    BUILTIN_LAYER_RULES,
    BUILTIN_OP_RULES,
    RULES,
    RuleSet,
    as_rule_set,
    get_rule,
    register_rule,
    registered,
    rule_for_class_name,
)
from ridurre.rules.shape import (
    FlattenRule,
    PermuteRule,
    PoolingRule,
    ReshapeRule,
    SequenceMaskRule,
    TransposeOpRule,
)

__all__ = [
    "BUILTIN_LAYER_RULES",
    "BUILTIN_OP_RULES",
    "COST_KINDS",
    "KERAS_HUB_RULES",
    "RULES",
    "BatchNormRule",
    "ConcatenateRule",
    "ConfigView",
    "ConvRule",
    "DenseRule",
    "DepthwiseRule",
    "DivisionRule",
    "ElementwiseOpRule",
    "FlattenRule",
    "GroupNormRule",
    "LayerNormRule",
    "LayerRule",
    "LayerScaleRule",
    "MergeRule",
    "PassThroughRule",
    "PatchEmbeddingRule",
    "PermuteRule",
    "PoolingRule",
    "ReshapeRule",
    "RMSNormRule",
    "RuleSet",
    "SeparableRule",
    "SequenceMaskRule",
    "TransposeOpRule",
    "Unsupported",
    "as_rule_set",
    "get_rule",
    "register_rule",
    "registered",
    "rule_for_class_name",
]
