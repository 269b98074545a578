"""Latency in each runtime, the latency lookup table, round_to by measurement, and the loop pruning
by measured latency (ranking and target_speedup)."""

import keras
import numpy as np
import pytest
from helpers import randomize_weights

from ridurre.deploy import LatencyTable, choose_round_to, measure_deployed, missing_packages
from ridurre.graph import channel_groups
from ridurre.metrics import model_stats
from ridurre.pruning import Pruner

pytestmark = pytest.mark.skipif(bool(missing_packages("onnx")), reason="needs ridurre[deploy] (onnx, onnxruntime)")


def _two_conv(widths=(16, 32)):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(widths[0], 3, padding="same", activation="relu", name="small")(inputs)
    x = keras.layers.Conv2D(widths[1], 3, padding="same", activation="relu", name="big")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return randomize_weights(keras.Model(inputs, keras.layers.Dense(4, name="head")(x)))


def test_measure_deployed_times_every_model_in_every_runtime():
    models = {"original": _two_conv(), "pruned": _two_conv((8, 16))}
    latency, exports = measure_deployed(models, ("keras", "onnx"), batch_sizes=(1, 4), rounds=2, budget=0.02, threads=1)
    for name in models:
        assert exports[name]["onnx"].verification["kind"] == "outputs"
        for runtime in ("keras", "onnx"):
            for batch in (1, 4):
                result = latency[name][runtime][batch]
                assert result.runtime == runtime and result.rounds == 2 and result.batch_size == batch
                assert result.median_ms > 0 and result.spread_ms >= 0 and result.repeats >= 6
        assert latency[name]["onnx"][1].threads == 1
    with pytest.raises(ValueError, match="runtime must be one of keras, litert, onnx, saved_model"):
        measure_deployed(models, ("tensorrt",))
    with pytest.raises(ValueError, match="takes inputs"):
        inputs = keras.Input((8,))
        measure_deployed({"a": models["original"], "b": keras.Model(inputs, keras.layers.Dense(2)(inputs))}, ("keras",))


def test_latency_table_measures_every_prunable_group_and_round_trips(tmp_path):
    model = _two_conv()
    table = LatencyTable.build(model, "onnx", batch_size=1, fraction=0.5, threads=1, rounds=1, budget=0.02)
    assert table.runtime == "onnx" and table.threads == 1 and table.base_ms > 0
    assert table.sizes == {"small": 16, "big": 32} and table.removed == {"small": 8, "big": 16}
    assert all(np.isfinite(v) for v in table.saved_ms_per_channel.values())
    table.save(tmp_path / "lut.json")
    assert LatencyTable.load(tmp_path / "lut.json") == table


def _table(saved):
    return LatencyTable("onnx", 1, 1, 10.0, {"small": 16, "big": 32}, saved, {"small": 8, "big": 16})


def _prune(model, **kwargs):
    pruner = Pruner("l1", lambda m: None, None, 0, pruning_factor=0.25, ranking="global", **kwargs)
    pruned, _ = pruner.run_pruning(model)
    return {g.producers[0]: g.size for g in channel_groups(pruned) if g.prunable}


def test_the_loop_ranks_groups_by_measured_time_saved_per_channel():
    model = _two_conv()
    # the same model and scores; only which group the table says is slow changes
    small_slow = _prune(model, latency_table=_table({"small": 1.0, "big": 0.001}), maximum_prune_iterations=1)
    big_slow = _prune(model, latency_table=_table({"small": 0.001, "big": 1.0}), maximum_prune_iterations=1)
    assert small_slow["small"] < big_slow["small"] and small_slow["big"] > big_slow["big"]


def test_target_speedup_with_a_table_limits_the_predicted_latency():
    model = _two_conv()
    table = _table({"small": 0.2, "big": 0.1})  # 10 ms; removing everything would save 6.4 ms
    sizes = _prune(model, latency_table=table, target_speedup=1.25, maximum_pruning_percent=None)
    predicted = table.predicted_ms(sizes)
    assert 10.0 / predicted <= 1.25 + 1e-9 and 10.0 / predicted > 1.2  # reached, never crossed
    noise = _table({"small": -0.01, "big": 0.0})  # what a table measured on a busy machine can say
    with pytest.raises(ValueError, match="the latency table predicts at most 1.00x speed-up"):
        _prune(model, latency_table=noise, target_speedup=1.25, maximum_pruning_percent=None)
    with pytest.raises(TypeError, match="latency_table must be a ridurre.deploy.LatencyTable"):
        Pruner("l1", lambda m: None, None, 0, latency_table={"small": 1.0})


def test_ranked_by_a_table_stopped_at_a_macs_reduction():
    """``max_macs_reduction`` with a table: the table ranks, the MACs limit stops (the mode that
    lifted ResNet-56's realized speed-up in LiteRT from 0.81 to 0.93 of the MACs reduction)."""
    model = _two_conv()
    macs = model_stats(model).total_macs
    kept = {}
    for slow in ("small", "big"):
        table = _table({"small": 1.0 if slow == "small" else 0.001, "big": 1.0 if slow == "big" else 0.001})
        pruner = Pruner(
            "l1",
            lambda m: None,
            None,
            0,
            pruning_factor=0.2,
            ranking="global",
            latency_table=table,
            max_macs_reduction=0.3,
            maximum_pruning_percent=None,
        )
        pruned, _ = pruner.run_pruning(model)
        reduction = 1 - model_stats(pruned).total_macs / macs
        assert 0.2 < reduction <= 0.3 + 1e-9, reduction  # reached, never crossed
        assert set(pruner.limits_report(pruned)) == {"macs"}
        kept[slow] = {g.producers[0]: g.size for g in channel_groups(pruned) if g.prunable}
    assert kept["small"]["small"] < kept["big"]["small"] and kept["small"]["big"] > kept["big"]["big"]


def test_a_table_with_local_ranking_warns_that_it_only_predicts():
    with pytest.warns(UserWarning, match="latency_table ranks channels only with ranking='global'"):
        Pruner("l1", lambda m: None, None, 0, latency_table=_table({"small": 1.0, "big": 1.0}))


def test_choose_round_to_measures_each_candidate():
    k, table = choose_round_to(_two_conv(), "onnx", candidates=(1, 8), threads=1, rounds=1, budget=0.02)
    assert k in (1, 8) and set(table) == {1, 8}
    assert table[8]["macs"] < model_stats(_two_conv()).total_macs and all(v["ms"] > 0 for v in table.values())
    assert all(v["ms_per_gmac"] == pytest.approx(v["ms"] / v["macs"] * 1e9) for v in table.values())


def test_a_token_model_is_exported_and_timed_with_token_ids():
    """An Embedding's integer input gets token ids, not floats (the CLI's latency step failed on
    LiteRT: "gather index out of bounds")."""
    tokens = keras.Input((6,), dtype="int32")
    hidden = keras.layers.Embedding(3, 8)(tokens)
    model = randomize_weights(keras.Model(tokens, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(hidden))))
    runtimes = ("keras", "onnx") + (() if missing_packages("litert") else ("litert",))
    latency, exports = measure_deployed({"m": model}, runtimes, batch_sizes=(16,), rounds=1, budget=0.01, threads=1)
    for runtime in runtimes:
        assert latency["m"][runtime][16].median_ms > 0
    for runtime in runtimes[1:]:
        assert exports["m"][runtime].verification["kind"] == "outputs"


def test_a_runtime_that_cannot_take_the_model_is_left_out_when_asked(monkeypatch):
    import ridurre.deploy.latency as latency_module

    real = latency_module.runtime_runner

    def onnx_fails(model, runtime, *args, **kwargs):
        if runtime == "onnx":
            raise RuntimeError("No Op registered for Erfc with domain_version of 15\nmore")
        return real(model, runtime, *args, **kwargs)

    monkeypatch.setattr(latency_module, "runtime_runner", onnx_fails)
    models = {"original": _two_conv(), "pruned": _two_conv((8, 16))}
    with pytest.raises(RuntimeError, match="Erfc"):
        measure_deployed(models, ("keras", "onnx"), batch_sizes=(1,), rounds=1, budget=0.01)
    failed = {}
    latency, exports = measure_deployed(
        models, ("keras", "onnx"), batch_sizes=(1,), rounds=1, budget=0.01, failed=failed
    )
    assert failed == {"onnx": "RuntimeError: No Op registered for Erfc with domain_version of 15"}
    assert all(sorted(latency[name]) == ["keras"] and exports[name] == {} for name in models)
