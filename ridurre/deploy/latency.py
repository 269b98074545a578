"""Latency where models run: Keras models and their exports timed side by side, a latency lookup
table per model and runtime, and the channel multiple a runtime rewards.

Every timing goes through :func:`ridurre.metrics.measure_runners` (interleaved rounds, median
and interquartile spread, threads stated), so Keras, LiteRT, ONNX Runtime and SavedModel numbers
are measured the same way, in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import keras
import numpy as np

from ridurre._io import write_text_atomic
from ridurre._validation import check_int, check_unit
from ridurre.deploy.exporter import export
from ridurre.deploy.runtimes import canonical_format, load_runtime
from ridurre.graph import trace_model
from ridurre.metrics import input_dtypes, keras_runner, measure_runners
from ridurre.surgery import Surgeon

__all__ = ["RUNTIMES", "measure_deployed", "LatencyTable", "choose_round_to", "runtime_runner"]

RUNTIMES = ("keras", "litert", "onnx", "saved_model")
"""Where a model can be timed: Keras itself (compiled forward pass) or an export's runtime."""

_EXTENSION = {"litert": ".tflite", "onnx": ".onnx", "saved_model": ""}


def _runtime(name):
    if isinstance(name, str) and name.strip().lower() == "keras":
        return "keras"
    try:
        return canonical_format(name)
    except (TypeError, ValueError):
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {name!r}.") from None


def runtime_runner(model, runtime, workdir, name="model", threads=None, verify=True):
    """A timed callable running ``model`` in ``runtime``; exports it under ``workdir`` first.

    Returns:
        ``(run, export_result)``; ``export_result`` is ``None`` for ``"keras"``.

    Example:
        >>> import keras, tempfile
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        >>> run, result = runtime_runner(model, "onnx", tempfile.mkdtemp(), threads=1)
        >>> run.runtime, run.threads, result.format
        ('onnx', 1, 'onnx')
    """
    runtime = _runtime(runtime)
    if runtime == "keras":
        return keras_runner(model), None
    path = os.path.join(workdir, f"{name}{_EXTENSION[runtime]}" if _EXTENSION[runtime] else f"{name}_saved_model")
    result = export(model, path, runtime, verify=verify, threads=threads if runtime != "saved_model" else None)
    return load_runtime(path, runtime, threads=threads if runtime != "saved_model" else None), result


def measure_deployed(
    models,
    runtimes=("keras", "litert", "onnx"),
    batch_sizes=(1, 32),
    rounds=5,
    budget=0.25,
    threads=None,
    workdir=None,
    on_round=None,
    failed=None,
):
    """Latency of each model in each runtime, all timed side by side (interleaved rounds).

    Each model is exported (and verified) once per runtime; then every (model, runtime) pair
    takes its turn in each round, so a busy machine slows them alike.

    Args:
        models: ``{name: keras.Model}`` with the same input shapes (e.g. original and pruned).
        runtimes: any of ``"keras"``, ``"litert"``, ``"onnx"``, ``"saved_model"``.
        batch_sizes: the batch sizes to time.
        rounds, budget: see :func:`ridurre.metrics.measure_runners`.
        threads: threads of the LiteRT and ONNX Runtime interpreters (default: all cores; Keras
            and SavedModels use TensorFlow's pool, stated in the results).
        workdir: where the exports are written (default: a temporary directory, removed after).
        on_round: optional ``fn()`` called after every timed turn (progress bars).
        failed: a dict: a runtime the models cannot be exported to or run in (a converter
            without an operation, such as tf2onnx and the exact GELU) is then left out, its
            error recorded as ``failed[runtime] = "message"``; ``None`` (default): the error is
            raised.

    Returns:
        ``(latency, exports)``: ``latency[name][runtime][batch]`` is a
        :class:`ridurre.metrics.LatencyResult`, ``exports[name][runtime]`` an
        :class:`~ridurre.deploy.ExportResult` (not for ``"keras"``).

    Example:
        >>> import keras
        >>> inputs = keras.Input((16,))
        >>> models = {"wide": keras.Model(inputs, keras.layers.Dense(64)(inputs))}
        >>> latency, exports = measure_deployed(models, ("keras", "onnx"), batch_sizes=(1,), rounds=1, budget=0.01)
        >>> sorted(latency["wide"]), latency["wide"]["onnx"][1].runtime, exports["wide"]["onnx"].format
        (['keras', 'onnx'], 'onnx', 'onnx')
    """
    if not isinstance(models, dict) or not models:
        raise TypeError("`models` must be a non-empty dict {name: keras.Model}.")
    runtimes = list(dict.fromkeys(_runtime(r) for r in runtimes))
    shapes = None
    for name, model in models.items():
        if not isinstance(model, keras.Model):
            raise TypeError(f"`models[{name!r}]` must be a keras.Model, got {type(model).__name__}.")
        model_shapes = [tuple(t.shape[1:]) for t in keras.tree.flatten(model.inputs)]
        if shapes is not None and model_shapes != shapes:
            raise ValueError(f"`models[{name!r}]` takes inputs {model_shapes}, the others {shapes}.")
        shapes = model_shapes
    with tempfile.TemporaryDirectory(prefix="ridurre_deploy_") as tmp:
        root = tmp if workdir is None else os.fspath(workdir)
        runners, exports = {}, {name: {} for name in models}
        for runtime in runtimes:
            try:
                for name, model in models.items():
                    run, result = runtime_runner(model, runtime, root, name=name, threads=threads)
                    runners[(name, runtime)] = run
                    if result is not None:
                        exports[name][runtime] = result
            except Exception as exc:
                if failed is None or runtime == "keras":
                    raise
                failed[runtime] = (
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}"
                )
                for name in models:
                    runners.pop((name, runtime), None)
                    exports[name].pop(runtime, None)
        timed = measure_runners(
            runners,
            shapes,
            batch_sizes=batch_sizes,
            rounds=rounds,
            budget=budget,
            on_round=on_round,
            input_dtypes=input_dtypes(model),
        )
    latency = {name: {} for name in models}
    for (name, runtime), results in timed.items():
        latency[name][runtime] = results
    return latency, exports


@dataclasses.dataclass
class LatencyTable:
    """Measured latency saved per removed channel, per channel group, in one runtime.

    Built once per model and runtime (:meth:`build`): for every prunable group, a copy of the
    model with ``fraction`` of that group's channels deleted is timed against the unpruned model
    in the same interleaved rounds; the time saved divided by the channels removed is the
    group's entry. Both are the fastest of the timed calls: the entries are differences of a
    few microseconds, and on a shared machine other jobs only ever add time to a call (measured
    under a load average of 12, the medians gave negative savings for a third of VGG16's groups).
    The loop uses it (``BasePruning(..., latency_table=table)``) to rank groups by time saved per
    channel and to predict a plan's latency (:meth:`predicted_ms`), so that ``target_speedup``
    means a measured speed-up rather than a MACs ratio.

    Attributes:
        runtime: where it was measured (``"keras"``, ``"litert"``, ``"onnx"``, ``"saved_model"``).
        batch_size: batch size of the timings.
        threads: threads the runtime used.
        base_ms: median latency of the unpruned model.
        sizes: ``{group key: channels of the unpruned model}`` (``ChannelGroup.key``: its
            producers joined by ``"+"``).
        saved_ms_per_channel: ``{group key: milliseconds saved per channel removed}`` (can be
            slightly negative within noise).
        removed: ``{group key: channels removed for the measurement}``.
    """

    runtime: str
    batch_size: int
    threads: int | None
    base_ms: float
    sizes: dict
    saved_ms_per_channel: dict
    removed: dict

    @classmethod
    def build(
        cls,
        model,
        runtime="litert",
        batch_size=1,
        fraction=0.5,
        groups=None,
        threads=None,
        rounds=3,
        budget=0.1,
        rules=None,
    ):
        """Measure the table of ``model`` in ``runtime`` (one export and timing per group).

        Args:
            model: the unpruned Functional or Sequential model.
            runtime: ``"keras"``, ``"litert"``, ``"onnx"`` or ``"saved_model"``.
            batch_size: batch size of the timings (1 for interactive latency).
            fraction: share of each group's channels deleted for its measurement, in (0, 1).
            groups: optional predicate ``fn(group) -> bool`` choosing the groups (default: every
                prunable group).
            threads: threads of the LiteRT / ONNX Runtime interpreters.
            rounds, budget: see :func:`ridurre.metrics.measure_runners`.
            rules: extra layer rules (see :mod:`ridurre.rules`).

        Example:
            >>> import keras
            >>> inputs = keras.Input((8, 8, 3))
            >>> x = keras.layers.Conv2D(16, 3, padding="same", name="a")(inputs)
            >>> x = keras.layers.Conv2D(16, 3, padding="same", name="b")(x)
            >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
            >>> table = LatencyTable.build(model, "keras", rounds=1, budget=0.01)
            >>> sorted(table.saved_ms_per_channel), table.removed["a"]
            (['a', 'b'], 8)
        """
        runtime = _runtime(runtime)
        batch_size = check_int(batch_size, "batch_size", 1)
        fraction = check_unit(fraction, "fraction", lower_open=True, upper_open=True)
        trace = trace_model(model, rules=rules)
        chosen = [g for g in trace.groups() if g.prunable and g.size > 1 and (groups is None or groups(g))]
        if not chosen:
            raise ValueError(f"model {model.name!r} has no prunable channel group to measure.")
        shapes = [tuple(t.shape[1:]) for t in keras.tree.flatten(model.inputs)]
        with tempfile.TemporaryDirectory(prefix="ridurre_lut_") as tmp:
            runners, removed = {}, {}
            runners["base"], _ = runtime_runner(model, runtime, tmp, "base", threads, verify=False)
            for i, group in enumerate(chosen):
                n = max(1, min(group.size - 1, int(round(fraction * group.size))))
                surgeon = Surgeon(model, trace=trace)
                surgeon.delete_group_channels(group, np.arange(n))
                variant = surgeon.operate()
                runners[group.key], _ = runtime_runner(variant, runtime, tmp, f"g{i}", threads, verify=False)
                removed[group.key] = n
            timed = measure_runners(
                runners,
                shapes,
                batch_sizes=(batch_size,),
                rounds=rounds,
                budget=budget,
                input_dtypes=input_dtypes(model),
            )
        base = timed["base"][batch_size]
        return cls(
            runtime=runtime,
            batch_size=batch_size,
            threads=base.threads,
            base_ms=base.min_ms,
            sizes={g.key: int(g.size) for g in chosen},
            saved_ms_per_channel={key: (base.min_ms - timed[key][batch_size].min_ms) / n for key, n in removed.items()},
            removed=removed,
        )

    def saved_per_channel(self, group) -> float | None:
        """Milliseconds saved per channel removed from ``group`` (a ChannelGroup or a key)."""
        key = group if isinstance(group, str) else group.key
        return self.saved_ms_per_channel.get(key)

    def predicted_ms(self, sizes) -> float:
        """Estimated latency once groups have the channel counts ``sizes`` (``{group key or
        ChannelGroup: channels}``; groups not given keep their size).

        Each group's cut scales the latency by ``1 - saved / base_ms`` (``saved``: its channels
        removed times its measured time saved per channel), and the cuts of several groups
        compose multiplicatively: a layer between two pruned groups costs the product of their
        widths, so summing the groups' savings would count the shrinking of that layer twice
        (measured on VGG16: the sum predicted a negative latency for a 2x MACs cut).
        """
        factor = 1.0
        for group, size in sizes.items():
            key = group if isinstance(group, str) else group.key
            if key in self.sizes and self.base_ms > 0:
                saved = max(0.0, self.saved_ms_per_channel[key]) * (self.sizes[key] - int(size))
                factor *= max(0.0, 1.0 - saved / self.base_ms)
        return self.base_ms * factor

    def predicted_reduction(self, sizes) -> float:
        """Share of the unpruned latency removed at channel counts ``sizes`` (see :meth:`predicted_ms`).

        Example:
            >>> table = LatencyTable("onnx", 1, 2, 10.0, {"a": 8}, {"a": 0.5}, {"a": 4})
            >>> table.predicted_ms({"a": 4}), round(table.predicted_reduction({"a": 4}), 6)
            (8.0, 0.2)
        """
        return 1.0 - self.predicted_ms(sizes) / self.base_ms if self.base_ms > 0 else 0.0

    def to_dict(self) -> dict:
        """The table as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def save(self, path):
        """Write the table as JSON (atomically)."""
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path):
        """Read a table written by :meth:`save`."""
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))


def choose_round_to(
    model,
    runtime="litert",
    candidates=(1, 2, 4, 8, 16),
    fraction=0.3,
    batch_size=1,
    threads=None,
    rounds=3,
    budget=0.15,
    tolerance=0.03,
    rules=None,
):
    """The channel multiple ``runtime`` rewards, chosen by measurement.

    For each candidate ``k``, every prunable group of ``model`` loses about ``fraction`` of its
    channels with its width rounded down to a multiple of ``k``; the variants are timed side by
    side and compared by latency (their fastest call, as in :class:`LatencyTable`) per MAC (the
    rounding changes the MACs a little). The smallest
    ``k`` whose latency per MAC is within ``tolerance`` of the best is returned, since a smaller
    multiple constrains the pruning less.

    Returns:
        ``(round_to, measurements)`` with ``measurements[k] = {"ms", "macs", "ms_per_gmac"}``.

    Example:
        >>> import keras
        >>> inputs = keras.Input((8, 8, 3))
        >>> x = keras.layers.Conv2D(24, 3, padding="same")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(x)))
        >>> k, table = choose_round_to(model, "keras", candidates=(1, 8), rounds=1, budget=0.01)
        >>> k in (1, 8), sorted(table)
        (True, [1, 8])
    """
    from ridurre.metrics import model_stats

    runtime = _runtime(runtime)
    fraction = check_unit(fraction, "fraction", lower_open=True, upper_open=True)
    candidates = sorted({check_int(k, "candidates", 1) for k in candidates})
    trace = trace_model(model, rules=rules)
    groups = [g for g in trace.groups() if g.prunable and g.size > 1]
    if not groups:
        raise ValueError(f"model {model.name!r} has no prunable channel group.")
    shapes = [tuple(t.shape[1:]) for t in keras.tree.flatten(model.inputs)]
    with tempfile.TemporaryDirectory(prefix="ridurre_round_") as tmp:
        runners, macs = {}, {}
        for k in candidates:
            surgeon = Surgeon(model, trace=trace)
            for g in groups:
                keep = max(k, int((g.size * (1 - fraction)) // k * k)) if g.size >= k else g.size
                if keep < g.size:
                    surgeon.delete_group_channels(g, np.arange(g.size - keep))
            variant = surgeon.operate()
            macs[k] = model_stats(variant, rules=rules).total_macs
            runners[k], _ = runtime_runner(variant, runtime, tmp, f"k{k}", threads, verify=False)
        timed = measure_runners(
            runners, shapes, batch_sizes=(batch_size,), rounds=rounds, budget=budget, input_dtypes=input_dtypes(model)
        )
    table = {
        k: {
            "ms": timed[k][batch_size].min_ms,
            "macs": int(macs[k]),
            "ms_per_gmac": timed[k][batch_size].min_ms / max(macs[k], 1) * 1e9,
        }
        for k in candidates
    }
    best = min(v["ms_per_gmac"] for v in table.values())
    chosen = next(k for k in candidates if table[k]["ms_per_gmac"] <= best * (1 + tolerance))
    return chosen, table
