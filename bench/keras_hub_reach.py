"""Reach on the keras-hub zoo: what inlining composite layers makes visible and prunable.

Usage::

    python bench/keras_hub_reach.py [--models vit,bert,...] [--blockers 4]

For each backbone of ``ridurre.zoo.keras_hub.HUB_ZOO`` (built from constructor arguments with
small widths, random weights, wrapped as inputs -> backbone -> pooling -> Dense head):

* composites inlined / kept: calls of composite layers replaced by their recorded graph, and
  the composite layers left whole (with the reason, listed under the table);
* layers seen: layers and ``keras.ops`` operations the trace sees, before -> after inlining
  (``weighted``: those with weights);
* reach: prunable share of the internal channels (channels of groups not bound to a model input
  or output), before -> after;
* inline s: time of ``ridurre.graph.inline``; max |diff|: the largest output difference between
  the original and the inlined model on random inputs (0 means bit-identical);
* blockers: the layer types that the unprunable internal channels stop at, with their channel
  count (a group reports its first blocker only).

Output is markdown.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ridurre import _compat  # noqa: E402
from ridurre.graph import inline, trace_model  # noqa: E402
from ridurre.zoo.keras_hub import HUB_ZOO, hub_classifier, hub_inputs  # noqa: E402

_BLOCKER = re.compile(r"\((\w+)\): (.*)$")


def _internal(groups):
    return [g for g in groups if g.prunable or not any(s in g.reason for s in ("model input", "model output"))]


def measure(name: str) -> dict:
    model = hub_classifier(name)
    started = time.perf_counter()
    result = inline(model)
    seconds = time.perf_counter() - started
    xs = hub_inputs(model, batch=2, sequence_length=8)
    diff = float(np.abs(np.asarray(model(xs)) - np.asarray(result.model(xs))).max())
    row = {"name": name, "inlined": sum(result.inlined.values()), "refused": result.refused, "seconds": seconds}
    row["diff"] = diff
    for label, m in (("before", model), ("after", result.model)):
        trace = trace_model(m)
        uses = [u for u in trace.uses.values() if not _compat.is_graph_model(u.layer)]
        internal = _internal(trace.groups())
        total = sum(g.size for g in internal)
        row[label] = {
            "seen": len(uses),
            "weighted": sum(1 for u in uses if getattr(u.layer, "weights", None)),
            "reach": sum(g.size for g in internal if g.prunable) / total if total else 1.0,
            "channels": total,
        }
        if label == "after":
            blockers = Counter()
            for group in internal:
                if not group.prunable:
                    match = _BLOCKER.search(group.reason.splitlines()[0])
                    blockers[match.group(1) if match else group.reason[:40]] += group.size
            row["blockers"] = blockers
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(HUB_ZOO), help="comma-separated names of HUB_ZOO")
    parser.add_argument("--blockers", type=int, default=4, help="blocker types shown per model")
    args = parser.parse_args(argv)
    rows = [measure(name) for name in args.models.split(",")]
    print(
        "| model | composites inlined / kept | layers seen (weighted) before -> after | internal channels | "
        "reach before -> after | inline s | max abs diff | blockers after (channels) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        b, a = r["before"], r["after"]
        blockers = ", ".join(f"{k} {v}" for k, v in r["blockers"].most_common(args.blockers)) or "-"
        print(
            f"| {r['name']} | {r['inlined']} / {len(r['refused'])} | {b['seen']} ({b['weighted']}) -> "
            f"{a['seen']} ({a['weighted']}) | {b['channels']} -> {a['channels']} | {100 * b['reach']:.0f} % -> "
            f"**{100 * a['reach']:.0f} %** | {r['seconds']:.2f} | {r['diff']:.0e} | {blockers} |"
        )
    kept = Counter((ref.layer_class, ref.reason) for r in rows for ref in r["refused"])
    if kept:
        print("\nComposite layers kept whole, and why:\n")
        for (cls, reason), count in sorted(kept.items()):
            print(f"- `{cls}` ({count}): {reason}")


if __name__ == "__main__":
    main()
