"""The criteria registry: one place where a criterion is defined, used by the loop, the methods,
the sensitivity scan, the configuration, the command line and the report."""

import keras
import numpy as np
import pytest
from helpers import compile_classifier, randomize_weights

import ridurre
from ridurre.criteria import (
    CRITERIA,
    Criterion,
    canonical_name,
    criterion_class,
    criterion_names,
    make_criterion,
    register_criterion,
    unregister_criterion,
)
from ridurre.criteria.view import GroupView
from ridurre.graph import trace_model

BUILTIN = {
    "random",
    "l1",
    "l2",
    "lamp",
    "kmeans",
    "bn_scale",
    "fpgm",
    "activation_mean",
    "apoz",
    "hrank",
    "taylor",
    "hessian",
}


def _cnn():
    x = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", name="conv")(x)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(5, activation="relu", name="fc")(h)
    return randomize_weights(keras.Model(x, keras.layers.Dense(3, name="out")(h)), seed=3)


def test_registry_names_and_aliases():
    assert set(CRITERIA) == BUILTIN
    assert canonical_name("bn") == "bn_scale"
    assert canonical_name("activation") == canonical_name("mean") == "activation_mean"
    for name in BUILTIN:
        cls = criterion_class(name)
        assert cls.name == name and cls.description and cls.score_label
        assert set(cls.needs) <= {"weights", "data", "gradients"}


@pytest.mark.parametrize("name", ["L1", "magnitude", "", None])
def test_unknown_criterion_lists_valid_names(name):
    names = "activation_mean, apoz, bn_scale, fpgm, hessian, hrank, kmeans, l1, l2, lamp, random, taylor"
    with pytest.raises(ValueError, match=f"valid names: {names}"):
        canonical_name(name)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_criterion_scores_a_real_group(name):
    model = _cnn()
    compile_classifier(model)
    trace = trace_model(model)
    group = next(g for g in trace.groups() if g.producers == ("conv",))
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 1)).astype("float32")
    options = {"data": data} if "data" in criterion_class(name).needs else {}
    if "gradients" in criterion_class(name).needs:
        options["labels"] = np.arange(16) % 3
    criterion = make_criterion(name, **options)
    view = GroupView(group, trace, model, seed=1, n_remove=2)
    scores = np.asarray(criterion.score(view))
    assert scores.shape == (6,) and np.isfinite(scores).all()
    chosen = criterion.select(view, 2)
    assert len(chosen) == 2 and len(set(chosen.tolist())) == 2 and chosen.max() < 6


def test_make_criterion_errors():
    with pytest.raises(ValueError, match="data="):
        make_criterion("apoz")
    with pytest.raises(TypeError, match="criterion 'l1'"):
        make_criterion("l1", data=np.ones((2, 3)))
    with pytest.raises(TypeError, match="Criterion subclass"):
        make_criterion(42)
    with pytest.raises(TypeError, match="cannot be given"):
        make_criterion(make_criterion("l1"), seed=1)


def test_register_validates_and_refuses_alias_clashes():
    with pytest.raises(TypeError, match="subclass of ridurre.criteria.Criterion"):
        register_criterion(object)

    class Bad(Criterion):
        name = "not an identifier"

    with pytest.raises(ValueError, match="identifier"):
        register_criterion(Bad)

    class Clash(Criterion):
        name = "clash"
        aliases = ("bn",)

    with pytest.raises(ValueError, match="alias 'bn'"):
        register_criterion(Clash)
    assert "clash" not in CRITERIA


@pytest.fixture
def largest_weight():
    """A new criterion, registered for one test only."""

    @register_criterion
    class LargestWeight(Criterion):
        name = "largest_weight"
        aliases = ("maxw",)
        description = "smallest largest |weight| of the filter"
        score_label = "max |w|"

        def score(self, view):
            return np.max([np.abs(m).max(axis=1) for m in view.weight_matrices()], axis=0)

    yield LargestWeight
    unregister_criterion("largest_weight")
    assert "largest_weight" not in criterion_names(aliases=True) and "maxw" not in criterion_names(aliases=True)


def test_a_registered_criterion_appears_everywhere(largest_weight, digits, tmp_path):
    from ridurre.app import report
    from ridurre.app.cli import build_parser
    from ridurre.app.config import method_names, resolve_config
    from ridurre.sensitivity import channels_to_remove, scan

    model = _cnn()
    kernel = model.get_layer("conv").get_weights()[0].reshape(-1, 6)
    expected = np.argsort(np.abs(kernel).max(axis=0), kind="stable")[:3].tolist()
    # the loop, by name and through its alias, without a subclass
    for spec in ("largest_weight", "maxw", largest_weight, largest_weight()):
        pruner = ridurre.Pruner(
            spec, compile_classifier, None, 0, pruning_factor=0.5, maximum_prune_iterations=1, layers=["conv"]
        )
        pruner.run_pruning(model)
        assert pruner.history[0].removed == {"conv": sorted(expected)}
    # BasePruning with criterion=
    base = ridurre.BasePruning(
        0.5, compile_classifier, None, 0, criterion="largest_weight", layers=["conv"], maximum_prune_iterations=1
    )
    base.run_pruning(model)
    assert base.history[0].removed == {"conv": sorted(expected)}
    # the sensitivity scan
    compile_classifier(model)
    x = np.random.default_rng(0).normal(size=(20, 8, 8, 1)).astype("float32")
    result = scan(model, x, np.arange(20) % 3, ratios=[0.5], layers="conv", criterion="maxw", progress=False)
    assert result.criterion == "largest_weight"
    assert channels_to_remove(model, "conv", 0.5, criterion="largest_weight") == sorted(expected)
    # the configuration, the command line and the report
    assert "largest_weight" in method_names() and "maxw" in method_names()
    config = resolve_config(cli={"strategy": {"method": "maxw"}}, environ={})
    assert config.criterion() == "largest_weight"
    args = build_parser("prune").parse_args(["prune", "--model", "m.keras", "--criterion", "largest_weight"])
    assert args.strategy__method == "largest_weight"
    assert report.criterion_description("maxw") == "smallest largest |weight| of the filter"
    assert report.score_label("largest_weight") == "max |w|"


def test_the_classic_classes_use_the_registry():
    for cls, name in (
        (ridurre.L1FilterPruning, "l1"),
        (ridurre.KMeansFilterPruning, "kmeans"),
        (ridurre.BNScaleFilterPruning, "bn_scale"),
        (ridurre.RandomFilterPruning, "random"),
    ):
        assert cls(0.5, compile_classifier, None, 0).criterion_object.name == name
    pruner = ridurre.ActivationFilterPruning(0.5, compile_classifier, None, 0, data=np.ones((2, 8, 8, 1)), kind="apoz")
    assert pruner.criterion_object.name == "apoz"


def test_the_loop_without_criterion_or_hook_is_refused():
    with pytest.raises(TypeError, match="needs a criterion"):
        ridurre.BasePruning(0.5, compile_classifier, None, 0)
    with pytest.raises(ValueError, match="Unknown criterion 'l3'"):
        ridurre.Pruner("l3", compile_classifier)
