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

from ridurre.rules.applications import LayerScaleRule
from ridurre.rules.attention import GroupedQueryAttentionRule, MultiHeadAttentionRule
from ridurre.rules.base import (
    COST_KINDS,
    HEAD_KINDS,
    UNIT_KINDS,
    ConfigView,
    LayerRule,
    PassThroughRule,
    UnitMasks,
    Unsupported,
)
from ridurre.rules.conv import ConvRule, DenseRule, DepthwiseRule, EmbeddingRule, SeparableRule
from ridurre.rules.einsum import EinsumDenseRule, EinsumOpRule
from ridurre.rules.keras_hub import KERAS_HUB_RULES, PatchEmbeddingRule
from ridurre.rules.merge import ConcatenateRule, DivisionRule, ElementwiseOpRule, MergeRule
from ridurre.rules.norm import (
    BatchNormRule,
    GroupNormRule,
    LayerNormRule,
    NormalizationRule,
    RMSNormRule,
    UnitNormRule,
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
from ridurre.rules.registry import (
    BUILTIN_APPLICATION_RULES,
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
    "BUILTIN_APPLICATION_RULES",
    "BUILTIN_LAYER_RULES",
    "BUILTIN_OP_RULES",
    "COST_KINDS",
    "HEAD_KINDS",
    "UNIT_KINDS",
    "KERAS_HUB_RULES",
    "RULES",
    "BatchNormRule",
    "BidirectionalRule",
    "ConcatenateRule",
    "ConfigView",
    "ConvRule",
    "DenseRule",
    "DepthwiseRule",
    "DivisionRule",
    "EinsumDenseRule",
    "EinsumOpRule",
    "ElementwiseOpRule",
    "EmbeddingRule",
    "FlattenRule",
    "GetItemOpRule",
    "GroupNormRule",
    "GroupedQueryAttentionRule",
    "LayerNormRule",
    "LayerRule",
    "LayerScaleRule",
    "MergeRule",
    "PadOpRule",
    "ReshapeOpRule",
    "RepeatOpRule",
    "MultiHeadAttentionRule",
    "NormalizationRule",
    "PassThroughRule",
    "PatchEmbeddingRule",
    "PermuteRule",
    "PoolingRule",
    "RMSNormRule",
    "RecurrentRule",
    "ReduceOpRule",
    "ReshapeRule",
    "RuleSet",
    "SeparableRule",
    "SplitOpRule",
    "TimeDistributedRule",
    "SequenceMaskRule",
    "TransposeOpRule",
    "UnaryOpRule",
    "UnitNormRule",
    "UnitMasks",
    "Unsupported",
    "as_rule_set",
    "get_rule",
    "register_rule",
    "registered",
    "rule_for_class_name",
]
