"""A fuzzer for the surgeon: random Functional graphs built from every rule of ``ridurre.rules``
(``tests/fuzz_graphs.py``), random channels deleted, the output compared with the model whose
same channels are zeroed. Hypothesis shrinks a failure to a minimal graph (its layers are printed).

``make test`` runs a fixed set of graphs (``RIDURRE_FUZZ_EXAMPLES``, default 200, derandomized);
``bench/fuzz_surgeon.py`` runs thousands with a random seed.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest
from fuzz_graphs import KINDS, STRUCTURES, covered_rule_names, draw_graph
from helpers import randomize_weights
from hypothesis import HealthCheck, event, given, note, seed, settings
from hypothesis import strategies as st

import ridurre
from ridurre import _compat
from ridurre.rules import BUILTIN_LAYER_RULES, KERAS_HUB_RULES
from ridurre.rules.keras_hub import class_path
from ridurre.rules.registry import BUILTIN_APPLICATION_RULES, BUILTIN_OP_RULES
from ridurre.surgery import Surgeon

EXAMPLES = int(os.environ.get("RIDURRE_FUZZ_EXAMPLES", "200"))
SEED = os.environ.get("RIDURRE_FUZZ_SEED")

NOT_FUZZED = {}
"""Rules the generator does not draw, with the reason (empty: it covers every rule)."""


def _jobs(draw, model):
    """Random channels of random prunable groups, addressed through one of their producers
    (``"mha:heads"`` for the internal units of an attention layer: its heads, head dimensions)."""
    groups = [g for g in ridurre.channel_groups(model) if g.prunable and g.size >= 2]
    internal = [g for g in groups if ":" in g.producers[0]]  # heads, head dims of attention layers
    if internal and draw(st.booleans()):
        groups = internal
    if not groups:
        return []
    if draw(st.booleans()):  # every group at once
        picked = range(len(groups))
    else:
        picked = draw(st.permutations(range(len(groups))))[: draw(st.integers(1, len(groups)))]
    jobs = []
    for i in picked:
        group = groups[i]
        chosen = draw(st.permutations(range(group.size)))[: draw(st.integers(1, group.size - 1))]
        producer = draw(st.sampled_from(group.producers))
        positions = [p for c in chosen for p in group.channels_of(producer)[c][:1]]  # it may own only some
        if positions:
            jobs.append((producer, positions))
    return jobs


def _apply(model, jobs, zero=False):
    """The pruned model, or (``zero``) the reference: the same channels zeroed, those through a
    normalization over the channels (LayerNormalization, RMS norms) deleted there too."""
    surgeon = Surgeon(model)
    for layer, channels in jobs:
        surgeon.add_job("delete_channels", layer, channels=channels)
    return surgeon.operate(zero=zero, delete_inexact=zero)


def _assert_same(got, want):
    """Equal where the reference is finite, and non-finite at the same places (a chain of
    multiplications may overflow): the tolerance scales with the largest finite value."""
    assert got.shape == want.shape
    finite = np.isfinite(want)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    if finite.any():
        scale = max(1.0, float(np.abs(want[finite]).max()))
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4 * scale)


def _run(model, xs):
    return [keras.ops.convert_to_numpy(t) for t in keras.tree.flatten(model(xs, training=False))]


@pytest.mark.slow
@(seed(int(SEED)) if SEED else (lambda f: f))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=SEED is None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
@given(st.data())
def test_deleted_equals_zeroed_on_random_graphs(data):
    graph = draw_graph(data.draw)
    for step in graph.steps:
        note(step)
    model = randomize_weights(graph.model, seed=data.draw(st.integers(0, 1000)))
    jobs = _jobs(data.draw, model)
    note(f"jobs: {jobs}")
    for layer, _ in jobs:
        event("internal units deleted (heads, head dims)" if ":" in layer else "channels deleted")
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(2,) + tuple(t.shape[1:])).astype("float32") for t in model.inputs]
    event(f"{len(jobs)} group(s) pruned" if jobs else "nothing prunable")
    if not jobs:  # nothing prunable: the trace (and a plain rebuild) must still work
        _assert_same(_run(_apply(model, []), xs)[0], _run(model, xs)[0])
        return
    try:
        pruned = _apply(model, jobs)
    except ValueError as exc:  # a refusal is fine when it says why: a layer (or a section of a
        # split) would lose every channel
        assert "keep at least one" in str(exc), exc
        event("refused: a layer or split section would lose every channel")
        return
    reference = _apply(model, jobs, zero=True)
    assert pruned.count_params() < model.count_params()
    for got, want in zip(_run(pruned, xs), _run(reference, xs)):
        _assert_same(got, want)


def _rule_tables():
    tables = {"layer": BUILTIN_LAYER_RULES, "op": BUILTIN_OP_RULES, "application": BUILTIN_APPLICATION_RULES}
    if importlib.util.find_spec("keras_hub") is not None:
        tables["keras_hub"] = KERAS_HUB_RULES
    return tables


def test_every_rule_is_fuzzed():
    """A rule added to ridurre.rules (layers, operations, keras.applications' and keras-hub's
    layers) needs a Kind in tests/fuzz_graphs.py (or a reason here)."""
    covered = covered_rule_names()
    missing = {table: sorted(set(rules) - covered[table] - set(NOT_FUZZED)) for table, rules in _rule_tables().items()}
    missing = {table: names for table, names in missing.items() if names}
    assert not missing, f"add a Kind for {missing} to tests/fuzz_graphs.py"


def _kind_id(kind):
    name = kind.name.rsplit(".", 1)[-1]
    return name if kind.table == "layer" else f"{kind.table}:{name}"


@pytest.mark.parametrize("kind", KINDS, ids=_kind_id)
def test_every_kind_builds_what_it_claims(kind):
    """Each Kind puts a layer (or operation) of its rule's class into the graph."""
    shape = next(s for s in [(6,), (8, 4), (6, 6, 4), (4, 4, 4, 2), (3, 3, 3, 2)] if kind.accepts(s))

    @given(st.data())
    @settings(max_examples=1, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def build(data):
        x = keras.Input(shape)
        out = kind.build(data.draw, x, x) if kind.arity == 2 else kind.build(data.draw, x)
        classes = [type(c.operation) for c in _compat.calls(keras.Model(x, out))]
        names = {class_path(c) if kind.table == "keras_hub" else c.__name__ for c in classes}
        assert kind.name in names, names

    build()


@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_structures_build(name):
    build = STRUCTURES[name][1]

    @given(st.data())
    @settings(max_examples=1, deadline=None, database=None, derandomize=True)
    def run(data):
        x = keras.Input((6, 6, 3))
        assert keras.Model(x, build(data.draw, x)).count_params() > 0

    run()
