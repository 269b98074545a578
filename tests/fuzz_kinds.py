"""What the surgeon fuzzer's layer kinds are made of: :class:`Kind`, the shape predicates and the
small draws the builders share (``tests/fuzz_graphs.py`` lists the kinds and draws graphs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import strategies as st

TABLES = ("layer", "op", "application", "keras_hub")
"""The rule tables a kind's name is looked up in: ``BUILTIN_LAYER_RULES``, ``BUILTIN_OP_RULES``,
``BUILTIN_APPLICATION_RULES`` (by class name) and ``KERAS_HUB_RULES`` (by class path)."""


@dataclass(frozen=True)
class Kind:
    """One kind of layer (or raw ``keras.ops`` operation) the generator can put in a graph.

    Attributes:
        name: the key of its rule in ``ridurre.rules``: the class name (layer, operation and
            ``keras.applications`` tables) or the class path (``KERAS_HUB_RULES``).
        accepts: ``accepts(shape)``: whether it can be called on a tensor of this shape (no batch axis).
        build: ``build(draw, x)`` (or ``build(draw, x, y)`` when ``arity == 2``) -> output tensor.
        arity: 1, or 2 for merges and cross-attention (``y`` has ``x``'s shape, or ``x``'s shape but
            another channel count when ``other_channels``).
        other_channels: a merge whose inputs may differ in the channel count (Concatenate).
        table: which table of :data:`TABLES` its rule is in.
        family: kinds of one family (the unary functions, the comparisons...) share one draw, so
            that a family of forty functions is not drawn forty times as often as attention.
            Default: the kind's own name.
    """

    name: str
    accepts: Callable
    build: Callable
    arity: int = 1
    other_channels: bool = False
    table: str = "layer"
    family: str = ""

    def __post_init__(self):
        if self.table not in TABLES:
            raise ValueError(f"Kind {self.name!r}: table must be one of {TABLES}, got {self.table!r}")
        if not self.family:
            object.__setattr__(self, "family", f"{self.table} {self.name}")


def rank(*ranks, spatial=1, at_most=None, channels=1):
    """Accepts tensors of these ranks (counting the batch axis: 2 for vectors, 4 for images) whose
    spatial sizes are >= ``spatial`` (and <= ``at_most``: layers that grow tensors stop growing them)
    and whose channel count is a multiple of ``channels``."""

    def accepts(shape):  # shape without the batch axis
        sizes = shape[:-1]
        return (
            len(shape) + 1 in ranks
            and all(d >= spatial for d in sizes)
            and (at_most is None or all(d <= at_most for d in sizes))
            and shape[-1] % channels == 0
        )

    return accepts


def any_rank(shape):
    return True


def dims(x):
    """The number of spatial dimensions of ``x`` (batch and channel axes left out)."""
    return len(x.shape) - 2


def channels(x):
    return int(x.shape[-1])


def small(draw, lo=2, hi=6):
    return draw(st.integers(lo, hi))


def activation(draw):
    return draw(st.sampled_from([None, "relu", "tanh", "sigmoid", "swish"]))


def padding(draw, x, kernel):
    fits = all(d >= kernel for d in x.shape[1:-1])
    return draw(st.sampled_from(["same", "valid"])) if fits else "same"
