"""What a run tells its user: ``reports/report.md``, the before/after tables and ``ridurre stats``.

:func:`build_summary` gathers the numbers of a run into a plain, JSON-friendly dict (also saved as
``reports/summary.json``); :func:`render_report` turns such a dict into Markdown and
:func:`write_run_outputs` writes the report and the plots. The Markdown and table functions need
no Keras; :func:`build_summary` and :func:`stats_command` import it when called.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from ridurre._io import file_sha256, write_text_atomic
from ridurre.app import plots
from ridurre.app.config import ConfigError
from ridurre.app.inputs import load_model_file, loading_options
from ridurre.app.runlog import console
from ridurre.criteria import criterion_class

__all__ = [
    "criterion_description",
    "score_label",
    "layer_rows",
    "build_summary",
    "render_report",
    "runtime_summary",
    "runtime_lines",
    "write_report",
    "write_run_outputs",
    "comparison_table",
    "comparison_markdown",
    "plan_table",
    "stats_command",
    "fmt_int",
    "fmt_pct",
    "fmt_bytes",
]

logger = logging.getLogger("ridurre")


def criterion_description(name):
    """What the criterion called ``name`` removes, in one line (from :mod:`ridurre.criteria`)."""
    try:
        return criterion_class(name).description or name
    except ValueError:
        return name


def score_label(name):
    """What the scores of the criterion called ``name`` are, for plots."""
    try:
        return criterion_class(name).score_label
    except ValueError:
        return "score"


def layer_rows(before, after):
    """Per-layer rows ``{name, class, channels_before/after, params_before/after, macs_before/after}``
    of two :class:`ridurre.metrics.ModelStats`, for the layers holding weights or MACs."""
    after_by_name = {row.name: row for row in after.layers}
    rows = []
    for row in before.layers:
        if not row.params and not row.macs:
            continue
        new = after_by_name.get(row.name)
        rows.append(
            {
                "name": row.name,
                "class": row.class_name,
                "channels_before": row.channels,
                "channels_after": new.channels if new else 0,  # a layer removed with its residual block
                "params_before": row.params,
                "params_after": new.params if new else 0,
                "macs_before": row.macs,
                "macs_after": new.macs if new else 0,
            }
        )
    return rows


def _first_scores(pruner, model):
    """The criterion's scores of the original model's eligible groups and what iteration 1 removed."""
    removed = pruner.history[0].removed if pruner.history else {}
    groups = []
    for group, scores in pruner.score_groups(model):
        mask = np.zeros(group.size, dtype=bool)
        for path in group.producers:
            if path in removed:
                index = group.positions[path][np.asarray(removed[path], dtype=int)]
                mask[index[index >= 0]] = True
        label = group.producers[0] + (f" (+{len(group.producers) - 1} coupled)" if len(group.producers) > 1 else "")
        groups.append((label, scores, mask))
    return groups


_ITERATION_KEYS = ("iteration", "factor", "params", "macs", "filters", "metric", "seconds", "removed", "rolled_back")


def build_summary(
    run, data, config, latency, output_dir, model_path=None, sha_before=None, reload_check=None, wall=None
):
    """The numbers of a finished :class:`~ridurre.app.jobs.PruneRun` as a JSON-friendly dict (what
    the report and tables show)."""
    from ridurre.metrics import model_stats

    before, after = model_stats(run.original), model_stats(run.pruned)
    models_dir = os.path.join(output_dir, "models")
    size = {
        k: os.path.getsize(os.path.join(models_dir, f"{k}.keras"))
        if os.path.exists(os.path.join(models_dir, f"{k}.keras"))
        else None
        for k in ("original", "final")
    }
    pruner = run.pruner
    ratio, target, step = config.limits()
    history = [r.to_dict() for r in pruner.history]
    steps = [{"step": 0, "params": before.total_params, "macs": before.total_macs, "accuracy": run.val_before}]
    steps += [
        {"step": r["iteration"] + 1, "params": r["params"], "macs": r["macs"], "accuracy": r["metric"]}
        for r in history
        if not r.get("rolled_back")
    ]
    lat = {k: {str(b): float(r.median_ms) for b, r in v["keras"].items()} for k, v in latency.items()}
    method = config["strategy.method"]
    summary = {
        "method": method,
        "criterion": criterion_description(method),
        "model": {
            "name": run.original.name,
            "path": model_path,
            "sha256_before": sha_before,
            "unchanged": None if not model_path else file_sha256(model_path) == sha_before,
        },
        "data": {
            "name": data.name,
            "train": len(data.x_train),
            "validation": len(data.x_val),
            "test": len(data.x_test),
            "split": run.split,
        },
        "limits": {
            "ratio": ratio,
            "target_macs": target,
            "target_latency": config["strategy.target_latency"],
            "blocks": config["strategy.blocks"],
            "step": step,
            "sized_steps": config.sized_steps(),
            "iterations": config["strategy.iterations"],
            "finetune_epochs": config["strategy.finetune_epochs"],
            "met": pruner.limits_report(run.pruned),
        },
        "compile": run.compile,
        "before": {
            "params": int(before.total_params),
            "macs": int(before.total_macs),
            "size_bytes": size["original"],
            "accuracy": run.accuracy_before,
            "latency_ms": lat["original"],
        },
        "after": {
            "params": int(after.total_params),
            "macs": int(after.total_macs),
            "size_bytes": size["final"],
            "accuracy": run.accuracy_after,
            "latency_ms": lat["pruned"],
        },
        "speedup": {b: lat["original"][b] / lat["pruned"][b] for b in lat["original"] if lat["pruned"].get(b)},
        "runtimes": runtime_summary(
            latency["original"], latency["pruned"], before.total_macs / max(1, after.total_macs)
        ),
        "layers": layer_rows(before, after),
        "iterations": [{k: r.get(k, False) for k in _ITERATION_KEYS} for r in history],
        "criterion_options": config.criterion_options(),
        "sparse": getattr(run, "sparse", None),
        "blocks": getattr(run, "blocks", None),
        "accuracy_aware": {
            "max_drop": config["strategy.max_metric_drop"],
            "on_drop": config["strategy.on_metric_drop"],
            "baseline": getattr(pruner, "baseline_metric", None),
            "keep_best": config["strategy.keep_best"],
            "returned_iteration": getattr(pruner, "best_iteration", None) if config["strategy.keep_best"] else None,
        },
        "history": steps,
        "verification": {
            "mode": {True: "on", False: "off", "exact": "exact"}[config["validation.verify"]],
            "checks": len(history) if config["validation.verify"] else 0,
            "reload_check": reload_check,
        },
        "seconds": run.seconds,
        "wall_seconds": wall,
        "config": config.to_dict(),
    }
    return summary


def runtime_summary(before, after, macs_reduction):
    """Per runtime: latency before and after (median and interquartile spread), threads, realized
    speed-up, and its ratio to the MACs reduction, from ``{runtime: {batch: LatencyResult}}`` of
    the original and the pruned model (:func:`ridurre.deploy.measure_deployed`).

    Example:
        >>> from ridurre.metrics import LatencyResult
        >>> r = lambda ms: {1: LatencyResult(ms, ms, 1, 10, 1000 / ms, 0.1, 3, 2, "onnx", min_ms=ms)}
        >>> out = runtime_summary({"onnx": r(2.0)}, {"onnx": r(1.0)}, macs_reduction=2.5)
        >>> out["onnx"]["speedup"], out["onnx"]["speedup_over_macs"], out["onnx"]["threads"]
        ({'1': 2.0}, {'1': 0.8}, 2)
    """
    out = {}
    for runtime, by_batch in before.items():
        if runtime not in after:
            continue
        row = {
            "threads": None,
            "before_ms": {},
            "after_ms": {},
            "spread_ms": {},
            "speedup": {},
            "speedup_over_macs": {},
            "fastest_speedup": {},
        }
        for batch, b in by_batch.items():
            a = after[runtime].get(batch)
            if a is None:
                continue
            key = str(batch)
            speed = b.median_ms / a.median_ms if a.median_ms > 0 else None
            row["threads"] = b.threads
            row["rounds"] = b.rounds
            row["before_ms"][key], row["after_ms"][key] = float(b.median_ms), float(a.median_ms)
            row["spread_ms"][key] = [float(b.spread_ms), float(a.spread_ms)]
            row["speedup"][key] = speed
            row["speedup_over_macs"][key] = None if speed is None or not macs_reduction else speed / macs_reduction
            row["fastest_speedup"][key] = b.min_ms / a.min_ms if b.min_ms and a.min_ms else None
        out[runtime] = row
    return out


def runtime_lines(runtimes, macs_reduction):
    """Markdown lines of the per-runtime latency table of a summary (see :func:`runtime_summary`)."""
    if not runtimes:
        return []
    lines = [
        "## Latency where the model runs",
        "",
        f"MACs: **{macs_reduction:.2f}x fewer**. Each runtime ran the exported model (verified against the Keras "
        "model first); all of them were timed in the same interleaved rounds. Median, with the interquartile "
        "range after ±.",
        "",
        "| runtime | threads | batch | before | after | speed-up | speed-up / MACs reduction "
        "| fastest calls: speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for runtime, row in runtimes.items():
        for batch, before in row["before_ms"].items():
            spread = row["spread_ms"][batch]
            ratio = row["speedup_over_macs"][batch]
            fastest = row.get("fastest_speedup", {}).get(batch)
            lines.append(
                f"| {runtime} | {row['threads'] or 'n/a'} | {batch} | {before:.3f} ± {spread[0]:.3f} ms | "
                f"{row['after_ms'][batch]:.3f} ± {spread[1]:.3f} ms | {row['speedup'][batch]:.2f}x | "
                f"{'n/a' if ratio is None else f'{ratio:.2f}'} | {'n/a' if fastest is None else f'{fastest:.2f}x'} |"
            )
    lines += [
        "",
        "`keras` is the compiled forward pass (`predict_on_batch`); `litert` the LiteRT interpreter (XNNPACK); "
        "`onnx` ONNX Runtime's CPU provider; `saved_model` TensorFlow running the exported SavedModel. The last "
        "column compares each model's fastest call: on a shared machine other jobs only add time, so it is the "
        "least disturbed estimate.",
        "",
    ]
    return lines


def fmt_int(v):
    """``1,234`` (``n/a`` for None)."""
    return "n/a" if v is None else f"{int(v):,}"


def fmt_pct(v):
    """``12.34 %`` of a fraction (``n/a`` for None)."""
    return "n/a" if v is None else f"{100 * v:.2f} %"


def fmt_bytes(v):
    """``1.23 MB`` or ``4.5 kB`` (``n/a`` for None)."""
    if v is None:
        return "n/a"
    return f"{v / 1e6:.2f} MB" if v >= 1e6 else f"{v / 1e3:.1f} kB"


def _indices(values, limit=24):
    values = list(values)
    text = ", ".join(str(v) for v in values[:limit])
    return text + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


LIMIT_NAMES = {"filters": "prunable channels", "params": "parameters", "macs": "MACs", "latency": "predicted latency"}


def limits_met_text(met):
    """One line saying whether each limit of a run was met (``summary["limits"]["met"]``).

    Example:
        >>> limits_met_text({"macs": {"limit": 0.5, "reached": 0.42, "met": False, "why": "the iterations ran out"}})
        'MACs 42.0 % removed of 50.0 % asked: **not met** (the iterations ran out)'
    """
    if not met:
        return "n/a"
    parts = []
    for kind, row in met.items():
        verdict = "met" if row["met"] else f"**not met** ({row['why']})"
        parts.append(
            f"{LIMIT_NAMES[kind]} {100 * row['reached']:.1f} % removed of {100 * row['limit']:.1f} % asked: " + verdict
        )
    return "; ".join(parts)


def render_report(summary):
    """The Markdown report of a run summary (see :func:`build_summary`).

    Example:
        >>> s = {"method": "l1", "criterion": "smallest L1 norm", "model": {"name": "m", "path": None},
        ...      "data": {"name": "digits", "train": 10, "validation": 2, "test": 3, "split": "test"},
        ...      "limits": {"ratio": 0.3, "target_macs": None, "step": 0.1, "iterations": 3,
        ...                 "finetune_epochs": 1}, "compile": "default",
        ...      "before": {"params": 100, "macs": 1000, "size_bytes": 5000, "accuracy": 0.9,
        ...                 "latency_ms": {"1": 2.0}},
        ...      "after": {"params": 60, "macs": 500, "size_bytes": 3000, "accuracy": 0.88,
        ...                "latency_ms": {"1": 1.0}}, "speedup": {"1": 2.0}, "layers": [],
        ...      "iterations": [], "verification": {"mode": "on", "checks": 0}, "seconds": 1.0}
        >>> print(render_report(s).splitlines()[0])
        # Pruning report: m, method l1
    """
    b, a = summary["before"], summary["after"]
    lines = [f"# Pruning report: {summary['model']['name']}, method {summary['method']}", ""]
    lim = summary["limits"]
    target = []
    if lim.get("ratio") is not None:
        target.append(f"at most {100 * lim['ratio']:.0f} % of the prunable channels")
    if lim.get("target_macs") is not None:
        target.append(f"at most about {100 * lim['target_macs']:.1f} % of the original MACs")
    if lim.get("target_latency") is not None:
        target.append(f"at most about {100 * lim['target_latency']:.1f} % of the latency the latency table predicts")
    data = summary["data"]
    lines += [
        f"- **Model**: `{summary['model'].get('path') or summary['model']['name']}`",
        f"- **Data**: {data['name']} ({data['train']} train, {data['validation']} validation, {data['test']} test "
        f"examples); accuracy below is on the **{data['split']}** split",
        f"- **Method**: `{summary['method']}`: {summary['criterion']}"
        + _options_text(summary.get("criterion_options")),
        f"- **Target**: {', '.join(target) or 'n/a'}; up to {lim['iterations']} iterations of "
        + (
            "steps sized to reach it"
            if lim.get("sized_steps")
            else f"{100 * lim['step']:.1f} % of the remaining channels"
        )
        + f", {lim['finetune_epochs']} finetune epoch(s) each (compile: {summary['compile']})",
        f"- **Limits met**: {limits_met_text(lim.get('met'))}",
        f"- **Time**: {summary['seconds']:.1f} s pruning and finetuning"
        + (f", {summary['wall_seconds']:.1f} s in all" if summary.get("wall_seconds") else ""),
    ]
    lines += _run_notes(summary)
    lines += [
        "",
        "## Before and after",
        "",
        "| | before | after | change |",
        "|---|---:|---:|---:|",
    ]

    def ratio(x, y):
        return f"{x / y:.2f}x fewer" if x and y else "n/a"

    for key, label in (("params", "parameters"), ("macs", "MACs per example")):
        lines.append(f"| {label} | {fmt_int(b[key])} | {fmt_int(a[key])} | {ratio(b[key], a[key])} |")
    lines.append(
        f"| size on disk (.keras) | {fmt_bytes(b.get('size_bytes'))} | {fmt_bytes(a.get('size_bytes'))} | "
        f"{ratio(b.get('size_bytes'), a.get('size_bytes'))} |"
    )
    change = (
        "n/a"
        if b["accuracy"] is None or a["accuracy"] is None
        else f"{100 * (a['accuracy'] - b['accuracy']):+.2f} points"
    )
    lines.append(f"| {data['split']} accuracy | {fmt_pct(b['accuracy'])} | {fmt_pct(a['accuracy'])} | {change} |")
    for batch, ms in b.get("latency_ms", {}).items():
        after_ms = a["latency_ms"].get(batch)
        speed = summary["speedup"].get(batch)
        lines.append(f"| latency, batch {batch} (measured) | {ms:.2f} ms | {after_ms:.2f} ms | {speed:.2f}x faster |")
    lines += [
        "",
        "Latency is the median wall-clock time of one compiled forward pass (`model.predict_on_batch`) "
        "on random inputs on this machine, measured in interleaved rounds, not estimated from MACs. At "
        "batch 1 fixed per-call overhead dominates small models.",
        "",
    ]
    lines += runtime_lines(summary.get("runtimes"), b["macs"] / max(1, a["macs"]))
    if summary.get("history"):
        lines += ["![history](../plots/history.png)", ""]
    lines += _iteration_table(summary)
    lines += ["## Per layer", "", "| layer | class | channels | parameters | MACs |", "|---|---|---:|---:|---:|"]
    for row in summary["layers"]:

        def pair(key, fmt=fmt_int, row=row):
            x, y = row[f"{key}_before"], row[f"{key}_after"]
            return fmt(x) if x == y else f"{fmt(x)} → **{fmt(y)}**"

        lines.append(f"| `{row['name']}` | {row['class']} | {pair('channels')} | {pair('params')} | {pair('macs')} |")
    lines += ["", "![channels](../plots/channels.png)", "", "## What was removed and why", ""]
    lines.append(
        f"Criterion: **{summary['criterion']}**. Each iteration scored the channels of every prunable "
        "layer (coupled layers, e.g. the two sides of a residual addition, are scored and removed "
        "together), removed the lowest-ranked share within the limits, checked the new model and "
        "finetuned it. Channel indices are those of the model before that iteration."
    )
    lines.append("")
    for it in summary["iterations"]:
        metric = "" if it.get("metric") is None else f", validation accuracy after finetune {fmt_pct(it['metric'])}"
        total = sum(len(v) for v in it["removed"].values())
        undone = " **(rolled back: undone)**" if it.get("rolled_back") else ""
        lines.append(
            f"### Iteration {it['iteration'] + 1} (factor {it['factor']:.3f}): {total} channels removed, "
            f"{fmt_int(it['params'])} parameters, {fmt_int(it['macs'])} MACs left{metric}{undone}"
        )
        lines.append("")
        for layer, idx in it["removed"].items():
            lines.append(f"- `{layer}`: {len(idx)} channel(s): {_indices(idx)}")
        lines.append("")
    lines += ["![scores](../plots/scores.png)", "", "## Checks", ""]
    ver = summary["verification"]
    if ver["checks"]:
        what = (
            "compared with the original model whose removed channels are zeroed (exact)"
            if ver["mode"] == "exact"
            else "right output shape and finite values"
        )
        lines.append(f"- Forward-pass check after each of the {ver['checks']} surgeries: **passed** ({what}).")
    else:
        lines.append("- Forward-pass checks after surgery: **off** (`--verify off`).")
    if ver.get("reload_check") is not None:
        lines.append(
            f"- `models/final.keras` reloaded with `safe_mode=True` gives the same predictions: "
            f"**{'yes' if ver['reload_check'] else 'NO'}**."
        )
    unchanged = summary["model"].get("unchanged")
    if unchanged is not None:
        lines.append(f"- Input model file unchanged (SHA-256 before and after): **{'yes' if unchanged else 'NO'}**.")
    lines += [
        "",
        "Files: `models/` (original, one checkpoint per iteration, final), `logs/` (history.csv, "
        "history.json, ridurre.log), `config.json` (the effective configuration, usable with `--config`), "
        "`plan.json` (the channels each kept step removed: `ridurre.PruningPlan.load(...).apply(model)` "
        "replays them on another copy of the model).",
        "",
    ]
    return "\n".join(lines)


def _options_text(options):
    if not options:
        return ""
    return " (" + ", ".join(f"{k} `{v}`" for k, v in options.items()) + ")"


def _run_notes(summary):
    """Lines on sparse training, removed blocks and accuracy-aware pruning, when the run used them."""
    lines = []
    sparse = summary.get("sparse")
    if sparse:
        lines.append(
            f"- **Sparse training** before pruning: `{sparse['method']}` (strength {sparse['strength']:g}), "
            f"{sparse['epochs']} epoch(s), validation accuracy after it {fmt_pct(sparse['accuracy'])}"
        )
    blocks = summary.get("blocks")
    if blocks:
        lines.append(
            f"- **Residual blocks removed** before the channels: {len(blocks['removed'])} "
            f"({', '.join(f'`{name}`' for name in blocks['removed'])}), "
            f"{blocks['macs_before'] / blocks['macs_after']:.2f}x fewer MACs; the channel loop's limits (Limits "
            "met) count from the model without them"
        )
    guard = summary.get("accuracy_aware") or {}
    if guard.get("max_drop") is not None:
        then = "a smaller step is tried" if guard["on_drop"] == "rollback" else "pruning stops"
        lines.append(
            f"- **Accuracy-aware**: a step leaving the validation accuracy more than {100 * guard['max_drop']:.2f} "
            f"points below the unpruned model's ({fmt_pct(guard.get('baseline'))}) is undone, then {then}"
        )
    if guard.get("keep_best"):
        lines.append("- **Keep best**: the model returned is the one with the best validation accuracy seen")
    return lines


def _iteration_table(summary):
    """The validation metric after every iteration, and which steps were undone or returned."""
    iterations = summary.get("iterations") or []
    if not iterations:
        return []
    guard = summary.get("accuracy_aware") or {}
    returned = guard.get("returned_iteration")
    kept = [it["iteration"] for it in iterations if not it.get("rolled_back")]
    if returned is None and kept:
        returned = kept[-1]
    history = summary.get("history") or [{}]
    baseline = guard.get("baseline") if guard.get("baseline") is not None else history[0].get("accuracy")
    lines = [
        "## Metric per iteration",
        "",
        "| iteration | factor | MACs | validation accuracy | step |",
        "|---:|---:|---:|---:|---|",
        f"| 0 (unpruned) | | {fmt_int(summary['before']['macs'])} | {fmt_pct(baseline)} | |",
    ]
    for it in iterations:
        status = "rolled back" if it.get("rolled_back") else "kept"
        if it["iteration"] == returned:
            status += ", **returned**"
        lines.append(
            f"| {it['iteration'] + 1} | {it['factor']:.3f} | {fmt_int(it['macs'])} | "
            f"{fmt_pct(it.get('metric'))} | {status} |"
        )
    return lines + [""]


def write_report(path, summary):
    """Write :func:`render_report` of ``summary`` to ``path`` atomically (and ``summary.json`` beside it)."""
    write_text_atomic(path, render_report(summary))
    write_text_atomic(
        os.path.join(os.path.dirname(path), "summary.json"), json.dumps(summary, indent=2, default=str) + "\n"
    )
    return path


def write_run_outputs(output_dir, run, summary):
    """Write ``reports/report.md``, ``reports/summary.json`` and the three plots of a run."""
    plot_dir = os.path.join(output_dir, "plots")
    title = f"{summary['model']['name']} pruned with {summary['method']}"
    plots.plot_history(os.path.join(plot_dir, "history.png"), summary["history"], title=f"Pruning history: {title}")
    changed = [r for r in summary["layers"] if r["channels_before"] is not None and r["macs_before"]]
    plots.plot_channels(os.path.join(plot_dir, "channels.png"), changed, title=f"Output channels per layer: {title}")
    plots.plot_scores(
        os.path.join(plot_dir, "scores.png"),
        _first_scores(run.pruner, run.original),
        criterion=score_label(summary["method"]),
    )
    return write_report(os.path.join(output_dir, "reports", "report.md"), summary)


# ----------------------------------------------------------------------------- rich tables


def _comparison_rows(summaries, original_label="original"):
    """Header and rows (lists of strings) of the before/after comparison of several runs: params,
    MACs, accuracy, then the latency and speed-up in each runtime at each batch size (Keras first)."""
    first = summaries[0]
    columns = [("keras", b) for b in first["before"]["latency_ms"]]
    columns += [(rt, b) for rt, row in (first.get("runtimes") or {}).items() if rt != "keras" for b in row["before_ms"]]
    header = ["method", "params", "MACs (fewer)", f"{first['data']['split']} accuracy"]
    header += [f"{rt} b={b} (speed-up)" for rt, b in columns]

    def before_ms(s, rt, b):
        return s["before"]["latency_ms"][b] if rt == "keras" else s["runtimes"][rt]["before_ms"][b]

    def after(s, rt, b):
        if rt == "keras":
            return s["after"]["latency_ms"][b], s["speedup"][b]
        row = s.get("runtimes", {}).get(rt)
        return (None, None) if row is None or b not in row["after_ms"] else (row["after_ms"][b], row["speedup"][b])

    b = first["before"]
    rows = [
        [original_label, fmt_int(b["params"]), f"{fmt_int(b['macs'])} (1.00x)", fmt_pct(b["accuracy"])]
        + [f"{before_ms(first, rt, k):.2f} ms (1.00x)" for rt, k in columns]
    ]
    for s in summaries:
        a = s["after"]
        fewer = b["macs"] / max(1, a["macs"])
        cells = []
        for rt, k in columns:
            ms, speed = after(s, rt, k)
            cells.append("n/a" if ms is None else f"{ms:.2f} ms ({speed:.2f}x)")
        rows.append(
            [s["method"], fmt_int(a["params"]), f"{fmt_int(a['macs'])} ({fewer:.2f}x)", fmt_pct(a["accuracy"])] + cells
        )
    return header, rows


def comparison_table(summaries, title="Before and after", original_label="original"):
    """A rich table: one row for the original model, one per run (params, MACs, accuracy, measured
    latency and speed-up at each batch size)."""
    from rich.table import Table

    header, rows = _comparison_rows(summaries, original_label)
    table = Table(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def comparison_markdown(summaries, wall=None, original_label="original"):
    """The comparison of :func:`comparison_table` as a Markdown document."""
    header, rows = _comparison_rows(summaries, original_label)
    lines = ["# ridurre: before and after", ""]
    if wall is not None:
        lines += [
            f"Wall time: {wall:.1f} s. Latency is measured on this machine (median of timed forward "
            "passes in interleaved rounds), in Keras and in each runtime the models were "
            "exported to, not estimated.",
            "",
        ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [
        "",
        "Per-method reports: " + ", ".join(f"[{s['method']}]({s['method']}/reports/report.md)" for s in summaries),
        "",
    ]
    return "\n".join(lines)


def plan_table(rows, before, after, config, iterations):
    """The rich table of a dry run: channels, params and MACs per layer before and after."""
    from rich.table import Table

    table = Table(title=f"dry run: {config['strategy.method']}, {iterations} iteration(s), no finetuning")
    for col in ("layer", "class", "channels", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("layer", "class") else "right")

    def pair(x, y):
        return fmt_int(x) if x == y else f"{fmt_int(x)} -> {fmt_int(y)}"

    for r in rows:
        table.add_row(
            r["name"],
            r["class"],
            pair(r["channels_before"], r["channels_after"]),
            pair(r["params_before"], r["params_after"]),
            pair(r["macs_before"], r["macs_after"]),
        )
    table.add_row(
        "total",
        "",
        "",
        pair(before.total_params, after.total_params),
        pair(before.total_macs, after.total_macs),
        style="bold",
    )
    return table


def _stats_latency(args, model, stats):
    """The ``--latency`` part of ``ridurre stats``: ``{name: {runtime: {batch: LatencyResult}}}``
    and the MACs of the models timed."""
    from ridurre.app.deploy import parse_runtimes
    from ridurre.metrics import model_stats

    runtimes = parse_runtimes(args.runtimes)
    try:
        batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        batches = []
    if not batches or any(b < 1 for b in batches):
        raise ConfigError(
            "--batch-sizes", message=f"--batch-sizes: expected positive integers, got {args.batch_sizes!r}"
        )
    if args.rounds < 1 or (args.threads is not None and args.threads < 1):
        raise ConfigError("--rounds", message="--rounds and --threads: expected positive integers")
    models, macs = {}, {}
    if args.compare:
        other = load_model_file(args.compare, flag="--compare")
        if [tuple(t.shape[1:]) for t in other.inputs] != [tuple(t.shape[1:]) for t in model.inputs]:
            raise ConfigError("--compare", message=f"--compare: {args.compare} takes other inputs than {args.model}")
        models["compared"], macs["compared"] = other, model_stats(other).total_macs
    models["model"], macs["model"] = model, stats.total_macs
    from ridurre.app.deploy import usable_runtimes
    from ridurre.deploy import measure_deployed

    failed = {}
    latency, _ = measure_deployed(
        models,
        usable_runtimes(runtimes) or ["keras"],
        batch_sizes=batches,
        rounds=args.rounds,
        threads=args.threads,
        failed=failed,
    )
    for runtime, reason in failed.items():
        logger.warning("Latency in %s skipped: the model could not be exported to it or run (%s)", runtime, reason)
    return latency, macs


def _save_latency_table(args, model):
    from ridurre.app.deploy import parse_runtimes, usable_runtimes
    from ridurre.deploy import LatencyTable

    runtime = parse_runtimes(args.runtimes)[0]
    if not usable_runtimes([runtime]):
        raise ConfigError(
            "--runtimes", message=f"--runtimes: {runtime} is not installed (pip install 'ridurre[deploy]')"
        )
    try:
        batch = int(args.batch_sizes.split(",")[0])
    except ValueError:
        batch = 0
    if batch < 1:
        raise ConfigError(
            "--batch-sizes", message=f"--batch-sizes: expected positive integers, got {args.batch_sizes!r}"
        )
    parent = os.path.dirname(os.path.abspath(args.save_latency_table))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ConfigError("--save-latency-table", message=f"--save-latency-table: cannot write in {parent}")
    table = LatencyTable.build(model, runtime, batch_size=batch, threads=args.threads, rounds=args.rounds)
    table.save(args.save_latency_table)
    logger.info(
        "Latency table of %d groups in %s (batch %d, %s threads, base %.3f ms) saved to %s",
        len(table.sizes),
        runtime,
        batch,
        table.threads,
        table.base_ms,
        args.save_latency_table,
    )


def _latency_table(latency, macs, title):
    from rich.table import Table

    table = Table(title=title)
    compared = "compared" in latency
    cols = ["runtime", "threads", "batch", "latency (median ± IQR)"]
    if compared:
        cols += ["compared model", "speed-up", "speed-up / MACs reduction"]
    for col in cols:
        table.add_column(col, justify="left" if col == "runtime" else "right", no_wrap=True)
    reduction = macs["compared"] / max(1, macs["model"]) if compared else None
    for runtime, by_batch in latency["model"].items():
        for batch, r in by_batch.items():
            row = [runtime, str(r.threads or "n/a"), str(batch), f"{r.median_ms:.3f} ± {r.spread_ms:.3f} ms"]
            if compared:
                c = latency["compared"][runtime][batch]
                speed = c.median_ms / r.median_ms
                row += [f"{c.median_ms:.3f} ± {c.spread_ms:.3f} ms", f"{speed:.2f}x", f"{speed / reduction:.2f}"]
            table.add_row(*row)
    return table


def stats_command(args):
    """``ridurre stats MODEL [--json] [--latency [--compare OTHER]]``: layers, channels, params, MACs,
    size on disk and, with ``--latency``, the latency in Keras and each runtime."""
    from rich.table import Table

    from ridurre.metrics import model_stats

    model = load_model_file(args.model, flag="MODEL", custom_objects=loading_options(args))
    stats = model_stats(model)
    size = os.path.getsize(args.model)
    latency = macs = None
    if getattr(args, "save_latency_table", None):
        _save_latency_table(args, model)
    if getattr(args, "latency", False):
        latency, macs = _stats_latency(args, model, stats)
    elif getattr(args, "compare", None):
        raise ConfigError("--compare", message="--compare: only used with --latency")
    if args.json:
        out = stats.to_dict()
        out.update({"model": model.name, "path": args.model, "size_bytes": size})
        if latency is not None:
            out["latency"] = {
                name: {rt: {str(b): r.to_dict() for b, r in v.items()} for rt, v in by_rt.items()}
                for name, by_rt in latency.items()
            }
        print(json.dumps(out))
        return 0
    table = Table(title=f"{model.name} ({args.model}, {fmt_bytes(size)} on disk); shapes without the batch axis")
    for col in ("layer", "class", "output shape", "channels", "params", "MACs"):
        table.add_column(col, justify="left" if col in ("layer", "class", "output shape") else "right", no_wrap=True)
    for row in stats.layers:
        shape = "" if row.output_shape is None else "(" + ", ".join(str(d) for d in row.output_shape[1:]) + ")"
        table.add_row(
            row.name,
            row.class_name,
            shape,
            "" if row.channels is None else str(row.channels),
            fmt_int(row.params),
            fmt_int(row.macs),
        )
    table.add_row("total", "", "", "", fmt_int(stats.total_params), fmt_int(stats.total_macs), style="bold")
    out = console()
    out.print(table)
    if stats.uncounted:
        out.print(f"note: MACs of {', '.join(stats.uncounted)} are not counted: the total is a lower bound")
    if latency is not None:
        title = f"latency of {args.model}" + (f" vs {args.compare}" if args.compare else "")
        out.print(_latency_table(latency, macs, title + " (interleaved rounds, this machine)"))
    return 0
