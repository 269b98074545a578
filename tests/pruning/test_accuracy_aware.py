"""Accuracy-aware pruning (stop or roll back on a metric drop, keep the best model), isomorphic
ranking scopes and the replayable pruning plan."""

import json
import os

import keras
import numpy as np
import pytest
from helpers import compile_classifier, randomize_weights

import ridurre
from ridurre.criteria.view import GroupView
from ridurre.graph import trace_model
from ridurre.pruning import PruningPlan


def _stack(blocks=3, width=8, seed=0):
    """A stem, ``blocks`` identical conv-BN-ReLU blocks and a head: the blocks are isomorphic."""
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(width, 3, padding="same", name="stem")(x)
    for i in range(blocks):
        h = keras.layers.Conv2D(width, 3, padding="same", name=f"b{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.ReLU()(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    return randomize_weights(keras.Model(x, out), seed=seed)


def _widths(model):
    return {l.name: l.filters for l in model.layers if isinstance(l, keras.layers.Conv2D)}


class Scripted:
    """evaluate_fn returning the given metrics in turn (the first for the unpruned model)."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def __call__(self, model):
        self.calls += 1
        return self.values.pop(0)


def _pruner(evaluate, **options):
    return ridurre.Pruner(
        "l1", compile_classifier, None, 0, pruning_factor=0.25, evaluate_fn=evaluate, exclude=["stem"], **options
    )


def test_a_step_that_costs_too_much_is_rolled_back_and_retried_smaller():
    model = _stack(width=32)
    evaluate = Scripted([0.90, 0.89, 0.80, 0.895, 0.70, 0.60, 0.50, 0.40])
    pruner = _pruner(evaluate, max_metric_drop=0.02, maximum_prune_iterations=4, max_rollbacks=5)
    pruned, _ = pruner.run_pruning(model)
    assert pruner.baseline_metric == 0.90
    assert [r.rolled_back for r in pruner.history] == [False, True, False, True]
    assert [r.factor for r in pruner.history] == [0.25, 0.25, 0.125, 0.125]  # a smaller step stays smaller
    accepted = [r for r in pruner.history if not r.rolled_back]
    assert _widths(pruned) == {"stem": 32, **{k: v for k, v in accepted[-1].channels.items() if k != "head"}}
    plan = pruner.plan()
    assert len(plan) == 2 and plan.steps[0]["removed"] == pruner.history[0].removed
    assert _widths(plan.apply(model)) == _widths(pruned)


def test_stop_on_drop_keeps_the_last_good_model():
    model = _stack()
    pruner = _pruner(Scripted([0.9, 0.9, 0.5]), max_metric_drop=0.05, on_metric_drop="stop", maximum_prune_iterations=5)
    pruned, _ = pruner.run_pruning(model)
    assert [r.rolled_back for r in pruner.history] == [False, True]
    assert _widths(pruned) == {"stem": 8, "b0": 6, "b1": 6, "b2": 6}


def test_rollbacks_in_a_row_are_bounded():
    pruner = _pruner(Scripted([0.9] + [0.1] * 10), max_metric_drop=0.01, max_rollbacks=2, maximum_prune_iterations=9)
    pruned, _ = pruner.run_pruning(_stack(width=32))
    assert [r.rolled_back for r in pruner.history] == [True, True, True]
    assert _widths(pruned) == {"stem": 32, "b0": 32, "b1": 32, "b2": 32}


def test_keep_best_returns_the_best_model_seen():
    pruner = _pruner(Scripted([0.97, 0.71, 0.95]), keep_best=True, maximum_prune_iterations=3)
    pruned, _ = pruner.run_pruning(_stack())
    assert pruner.best_iteration == 0
    assert _widths(pruned) == {"stem": 8, "b0": 6, "b1": 6, "b2": 6}


def test_accuracy_aware_options_are_checked():
    with pytest.raises(ValueError, match="on_metric_drop"):
        _pruner(len, max_metric_drop=0.01, on_metric_drop="retry")
    with pytest.raises(ValueError, match="max_metric_drop"):
        _pruner(len, max_metric_drop=-1)
    with pytest.raises(ValueError, match="ranking must be one of"):
        _pruner(len, ranking="isomorphous")


def test_a_resumed_run_continues_the_guard(tmp_path):
    model = _stack(width=32)
    values = [0.9, 0.9, 0.5, 0.89, 0.88]
    first = _pruner(Scripted(values), max_metric_drop=0.05, maximum_prune_iterations=2, output_dir=tmp_path)
    first.run_pruning(model)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["guard"]["scale"] == 0.5 and state["history"][1]["rolled_back"]
    assert json.loads((tmp_path / "plan.json").read_text())["format"] == "ridurre-pruning-plan"
    again = _pruner(Scripted([0.9, 0.89]), max_metric_drop=0.05, maximum_prune_iterations=3, output_dir=tmp_path)
    again._resume = True
    pruned, _ = again.run_pruning(model)
    assert [r.factor for r in again.history] == [0.25, 0.25, 0.125]
    assert _widths(pruned) == _widths(PruningPlan.load(tmp_path / "plan.json").apply(model))


def test_isomorphic_groups_compete_together():
    model = _stack(blocks=3, width=8, seed=3)
    trace = trace_model(model)
    views = {g.producers[0]: GroupView(g, trace, model) for g in trace.groups() if g.prunable}
    assert views["b0"].structure() == views["b1"].structure() != views["b2"].structure()  # b2 feeds the head
    # make block 1 much weaker than block 0: an isomorphic ranking takes more channels from it
    layer = model.get_layer("b1")
    layer.set_weights([w * 0.01 for w in layer.get_weights()])
    pruner = ridurre.Pruner(
        "l1",
        compile_classifier,
        pruning_factor=0.25,
        ranking="isomorphic",
        maximum_prune_iterations=1,
        # raw L1 norms of the producers: a weak block is weak in absolute terms
        criterion_options={"scope": "producers", "normalizer": None},
    )
    pruned, _ = pruner.run_pruning(model)
    widths = _widths(pruned)
    assert widths["b0"] + widths["b1"] == 12 and widths["b1"] < widths["b0"]  # 4 of the class's 16 go, mostly b1's
    assert widths["stem"] == 6 and widths["b2"] == 6  # alone in their class: their own 25 %


def test_a_plan_replays_the_same_channels_on_another_copy(tmp_path):
    model = _stack(seed=1)
    pruner = ridurre.Pruner("l1", compile_classifier, pruning_factor=0.3, maximum_prune_iterations=2)
    pruned, _ = pruner.run_pruning(model)
    path = pruner.plan().save(tmp_path / "plan.json")
    replayed = PruningPlan.load(path).apply(model)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(replayed.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-5)
    production = _stack(seed=7)  # same architecture, other weights
    assert _widths(PruningPlan.load(path).apply(production)) == _widths(pruned)
    with pytest.raises(ValueError, match=r"has \d+ channels, the plan expects"):
        PruningPlan.load(path).apply(pruned)
    with pytest.raises(ValueError, match="no producing layer 'b9'"):
        PruningPlan([{"removed": {"b9": [0]}, "channels": {"b9": 8}}]).apply(model)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a ridurre pruning plan"):
        PruningPlan.load(tmp_path / "bad.json")
    assert os.path.exists(path)


def test_a_metric_is_needed_to_run_not_to_ask(tmp_path):
    """Without evaluate_fn or baseline_metric, an accuracy-aware pruner can still check layers and
    resume state; running it fails with a clear error before any work."""
    compiled = []

    def compile_fn(model):
        compiled.append(model)
        compile_classifier(model)

    model = _stack()
    output = tmp_path / "run"
    pruner = ridurre.Pruner("l1", compile_fn, max_metric_drop=0.01, layers=["b.*"], output_dir=output, resume=True)
    pruner.check_layers(model)
    assert pruner.resume_state(model) is None
    with pytest.raises(ValueError, match=r"max_metric_drop .*evaluate_fn=fn\(model\) -> float .*baseline_metric="):
        pruner.run_pruning(model)
    assert compiled == [] and pruner.history == [] and not output.exists()
    reported = ridurre.Pruner(  # the finetune callback reports the metric, compared with baseline_metric
        "l1",
        compile_fn,
        lambda m, start, end: 0.89,
        0,
        pruning_factor=0.25,
        max_metric_drop=0.05,
        baseline_metric=0.9,
        maximum_prune_iterations=1,
    )
    reported.run_pruning(model)
    assert reported.baseline_metric == 0.9 and len(compiled) == 1
    assert reported.history[0].metric == 0.89 and not reported.history[0].rolled_back
