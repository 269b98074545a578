"""Surgery time and memory on keras-hub models (issue 11).

Usage::

    python bench/keras_hub_surgery.py time [--models NAME,NAME] [--repeats 3] [--fraction 0.3]
    python bench/keras_hub_surgery.py memory [--hidden 1024 --layers 24 --heads 16 --intermediate 4096]

``time``: for the two largest models of ``ridurre.zoo.keras_hub.HUB_ZOO`` by parameter count (or
``--models``), inlined first (``ridurre.graph.inline``, timed once), then, interleaved so that
a noisy neighbour slows both alike: ``keras.models.clone_model`` + ``set_weights`` of the
inlined model (the cheapest rebuild Keras offers) and the surgery (``Surgeon`` with
``--fraction`` of every prunable group, ONE ``operate()``). Medians of ``--repeats``; the issue's
target is a ratio of at most 1.5.

``memory``: a GPT-2 decoder backbone built from constructor arguments (default: GPT-2 medium's
sizes, about 355 M parameters, random weights, float32) with a pooling and a 2-class head,
inlined, traced and pruned (30 % of every prunable group) in this process. Reports the resident
set size after importing, after building, and its peak so far (``ru_maxrss``) after each step,
against the budget "original + pruned copy": the RSS after building plus the pruned model's
weights (4 bytes a parameter). Times of each step.
Output is markdown.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from surgery import timed  # noqa: E402  (bench/surgery.py: the same timer as the other surgery benchmark)

from ridurre.graph import inline, trace_model  # noqa: E402
from ridurre.surgery import Surgeon  # noqa: E402
from ridurre.zoo.keras_hub import HUB_ZOO, hub_classifier, with_head  # noqa: E402

MB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def plan(trace, fraction, seed=0):
    """``[(group, channels)]``: ``fraction`` of every prunable group, random, seeded."""
    rng = np.random.default_rng(seed)
    picks = []
    for group in trace.groups():
        if group.prunable and group.size >= 2:
            k = min(group.size - 1, max(1, int(round(fraction * group.size))))
            picks.append((group, rng.choice(group.size, size=k, replace=False)))
    return picks


def prune(model, trace, picks):
    surgeon = Surgeon(model, trace=trace)
    for group, channels in picks:
        surgeon.delete_group_channels(group, channels)
    return surgeon.operate()


def clone_and_copy(model):
    new = keras.models.clone_model(model)
    new.set_weights(model.get_weights())
    return new


def largest(count=2):
    sizes = {name: hub_classifier(name).count_params() for name in HUB_ZOO}
    keras.backend.clear_session()
    return sorted(sizes, key=sizes.get, reverse=True)[:count]


def run_time(args):
    names = args.models.split(",") if args.models else largest()
    print(f"| model | params | inline s | trace s | clone+copy s | surgery s | ratio (target {args.target}) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        model = hub_classifier(name)
        start = time.perf_counter()
        inlined = inline(model).model
        inline_s = time.perf_counter() - start
        start = time.perf_counter()
        trace = trace_model(inlined)
        trace.groups()
        trace_s = time.perf_counter() - start
        picks = plan(trace, args.fraction)
        clones, surgeries = [], []
        for _ in range(args.repeats):
            clones.append(timed(clone_and_copy, inlined))
            surgeries.append(timed(prune, inlined, trace, picks))
        print(f"  {name}: clone+copy {clones}, surgery {surgeries}", file=sys.stderr, flush=True)
        clone_s, surgery_s = statistics.median(clones), statistics.median(surgeries)
        print(
            f"| {name} | {model.count_params():,} | {inline_s:.2f} | {trace_s:.2f} | {clone_s:.2f} | "
            f"{surgery_s:.2f} | {surgery_s / clone_s:.2f} |"
        )
        keras.backend.clear_session()
        gc.collect()


def run_memory(args):
    import keras_hub

    rows = [("imported", _rss(), _peak(), None)]
    start = time.perf_counter()
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=args.vocabulary,
        num_layers=args.layers,
        num_heads=args.heads,
        hidden_dim=args.hidden,
        intermediate_dim=args.intermediate,
        max_sequence_length=args.sequence,
    )
    backbone = with_head(backbone, 2)  # a classifier: the hidden channels are internal
    build_s = time.perf_counter() - start
    params = backbone.count_params()
    original = _rss()
    rows.append(("built", original, _peak(), build_s))
    start = time.perf_counter()
    inlined = inline(backbone).model
    rows.append(("inlined", _rss(), _peak(), time.perf_counter() - start))
    start = time.perf_counter()
    trace = trace_model(inlined)
    picks = plan(trace, args.fraction)
    rows.append(("traced", _rss(), _peak(), time.perf_counter() - start))
    start = time.perf_counter()
    pruned = prune(inlined, trace, picks)
    surgery_s = time.perf_counter() - start
    rows.append(("pruned", _rss(), _peak(), surgery_s))
    kept = pruned.count_params()
    budget = original + 4 * kept
    peak = _peak()
    before_surgery = rows[-2][2]
    print(
        f"GPT-2 backbone: {params:,} parameters -> {kept:,} after pruning {args.fraction:.0%} of {len(picks)} groups\n"
    )
    print("| step | RSS after MB | peak RSS so far MB | step s |")
    print("|---|---:|---:|---:|")
    for step, rss, peak_so_far, seconds in rows:
        print(f"| {step} | {rss / MB:,.0f} | {peak_so_far / MB:,.0f} | {'' if seconds is None else f'{seconds:.1f}'} |")
    verdict = "within" if peak <= budget else "ABOVE"
    print(
        f"\npeak RSS {peak / MB:,.0f} MB (before the surgery: {before_surgery / MB:,.0f} MB); budget original + "
        f"pruned copy = {original / MB:,.0f} + {4 * kept / MB:,.0f} = {budget / MB:,.0f} MB: {verdict} the budget"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    timing = sub.add_parser("time", help="surgery against clone_model + set_weights")
    timing.add_argument("--models", default=None, help="comma-separated HUB_ZOO names (default: the two largest)")
    timing.add_argument("--repeats", type=int, default=3)
    timing.add_argument("--fraction", type=float, default=0.3)
    timing.add_argument("--target", type=float, default=1.5)
    memory = sub.add_parser("memory", help="peak memory of the surgery of a large GPT-2 decoder")
    memory.add_argument("--vocabulary", type=int, default=50257)
    memory.add_argument("--layers", type=int, default=24)
    memory.add_argument("--heads", type=int, default=16)
    memory.add_argument("--hidden", type=int, default=1024)
    memory.add_argument("--intermediate", type=int, default=4096)
    memory.add_argument("--sequence", type=int, default=1024)
    memory.add_argument("--fraction", type=float, default=0.3)
    args = parser.parse_args(argv)
    run_time(args) if args.mode == "time" else run_memory(args)


if __name__ == "__main__":
    main()
