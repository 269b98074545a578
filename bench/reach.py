"""Reach: the share of a model's internal channels that ``channel_groups`` finds prunable, and
whether every allowed surgery is exact.

Usage::

    python bench/reach.py [--models unet,audio,...] [--sampled 3] [--seed 0] [--no-verify]

For each model of issue 10's table (hand-written Keras models with random weights, and
``keras.applications`` ConvNeXtTiny and InceptionResNetV2 with ``weights=None``):

* **internal channels**: the channels of every group except those carried by a model input or
  reaching a model output (the classifier, a segmentation head); the head dimensions of
  attention layers (``kind == "head_dims"``) count as channels;
* **heads**: the attention heads (groups of ``kind == "heads"``: a MultiHeadAttention's heads, a
  GroupQueryAttention's key/value heads; ``"query_heads"``: the query heads of each key/value
  head), counted apart from the channels;
* **prunable**: the share of them in groups that can be pruned, and of those, the share in
  groups that are also **exact** (no LayerNormalization or RMS norm on the way:
  ``ChannelGroup.exact``);
* **refused**: groups that cannot be pruned, with the most frequent reason;
* **uncounted**: layers holding weights that ``model_stats`` cannot count (no rule);
* **verified**: ``--sampled`` random prunable groups lose random channels, each in its own
  surgery, then ~30 % of every prunable group goes in ONE surgery; each pruned model is
  compared with the reference built from the same plan (``Surgeon.operate(zero=True,
  delete_inexact=True)``: zeroed channels, except those through a normalization over the
  channels, which are deleted in the reference too, so their groups are checked for their
  structure and every other channel exactly). The table gives the largest difference relative
  to the output's scale (float32).

With ``--no-verify`` only the reach is measured (it also runs on releases without
``delete_inexact`` or head groups, for a "before" column). Output is markdown.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ridurre  # noqa: E402
from ridurre.metrics import model_stats  # noqa: E402

L = keras.layers
BOUNDARY = ("carried by a model input", "reaches a model output")
HEAD_KINDS = ("heads", "query_heads")


# -- the models of issue 10's table --------------------------------------------------------------
def unet():
    x = keras.Input((32, 32, 3))
    skips, h = [], x
    for width in (16, 32):
        h = L.Conv2D(width, 3, padding="same", activation="relu")(h)
        h = L.BatchNormalization()(L.Conv2D(width, 3, padding="same")(h))
        skips.append(L.ReLU()(h))
        h = L.MaxPooling2D()(skips[-1])
    h = L.Conv2D(64, 3, padding="same", activation="relu")(h)
    for width, skip in zip((32, 16), reversed(skips)):
        h = L.Concatenate()([L.UpSampling2D()(h), skip])
        h = L.Conv2D(width, 3, padding="same", activation="relu")(h)
    return keras.Model(x, L.Conv2D(2, 1, name="segmentation")(h), name="conv_unet")


def audio():
    x = keras.Input((256, 1))
    h = L.Conv1D(32, 3, padding="causal")(x)
    for rate in (1, 2, 4, 8):
        gate = L.Conv1D(32, 3, padding="causal", dilation_rate=rate, activation="sigmoid")(h)
        filt = L.Conv1D(32, 3, padding="causal", dilation_rate=rate, activation="tanh")(h)
        h = L.Add()([h, L.Conv1D(32, 1)(L.Multiply()([gate, filt]))])
    return keras.Model(x, L.Dense(5)(L.GlobalAveragePooling1D()(h)), name="dilated_conv1d_audio")


def text_transformer():
    x = keras.Input((16,), dtype="int32")
    h = L.Embedding(100, 32)(x)
    for i in range(2):
        h = L.LayerNormalization()(L.Add()([h, L.MultiHeadAttention(4, 8, name=f"mha{i}")(h, h)]))
        ffn = L.Dense(32)(L.Dense(64, activation="relu")(h))
        h = L.LayerNormalization()(L.Add()([h, ffn]))
    return keras.Model(x, L.Dense(2)(L.GlobalAveragePooling1D()(h)), name="embedding_2x_mha_ffn")


def mha_block():
    x = keras.Input((16, 12))
    h = L.Dense(32)(x)
    h = L.LayerNormalization()(L.Add()([h, L.MultiHeadAttention(4, 8)(h, h)]))
    return keras.Model(x, L.Dense(2)(L.GlobalAveragePooling1D()(L.Dense(48, activation="relu")(h))), name="dense_mha")


def gqa_block():
    x = keras.Input((16, 12))
    h = L.Dense(32)(x)
    attention = L.GroupQueryAttention(head_dim=8, num_query_heads=4, num_key_value_heads=2)
    h = L.LayerNormalization()(L.Add()([h, attention(h, h)]))
    return keras.Model(x, L.Dense(2)(L.GlobalAveragePooling1D()(L.Dense(48, activation="relu")(h))), name="dense_gqa")


def embedding_bilstm():
    x = keras.Input((20,), dtype="int32")
    h = L.Embedding(1000, 64)(x)
    h = L.Conv1D(64, 5, padding="same", activation="relu")(h)
    h = L.Bidirectional(L.LSTM(32, return_sequences=True))(h)
    h = L.GRU(32)(h)
    return keras.Model(x, L.Dense(2)(h), name="embedding_conv1d_bilstm_gru")


def conv_lstm_gru():
    x = keras.Input((50, 8))
    h = L.Conv1D(32, 5, padding="same", activation="relu")(x)
    h = L.LSTM(64, return_sequences=True)(h)
    h = L.GRU(32)(h)
    return keras.Model(x, L.Dense(3)(h), name="conv1d_lstm_gru")


def convnext_tiny():
    return keras.applications.ConvNeXtTiny(weights=None, input_shape=(32, 32, 3), classes=10)


def inception_resnet_v2():
    return keras.applications.InceptionResNetV2(weights=None, input_shape=(75, 75, 3), classes=10)


MODELS = {
    "unet": unet,
    "audio": audio,
    "transformer": text_transformer,
    "mha": mha_block,
    "gqa": gqa_block,
    "bilstm": embedding_bilstm,
    "lstm": conv_lstm_gru,
    "convnext": convnext_tiny,
    "inception_resnet": inception_resnet_v2,
}


# -- measuring ------------------------------------------------------------------------------------
def reach(model):
    """Shares of internal channels and heads in prunable (and exact) groups, refusals, uncounted layers."""
    groups = ridurre.channel_groups(model)
    internal = [g for g in groups if g.prunable or not (g.reason or "").endswith(BOUNDARY)]
    refused = [g for g in internal if not g.prunable]
    reasons = collections.Counter((g.reason or "").split(": ", 1)[-1] for g in refused)
    result = {
        "groups": len(internal),
        "refused": len(refused),
        "reason": reasons.most_common(1)[0][0] if reasons else "",
        "uncounted": len(model_stats(model).uncounted),
    }
    for unit, members in (
        ("channels", [g for g in internal if getattr(g, "kind", "channels") not in HEAD_KINDS]),
        ("heads", [g for g in internal if getattr(g, "kind", "channels") in HEAD_KINDS]),
    ):
        total = sum(g.size for g in members)
        prunable = [g for g in members if g.prunable]
        exact = [g for g in prunable if getattr(g, "exact", True)]
        result[unit] = total
        result[f"{unit}_groups"] = len(members)
        result[f"{unit}_prunable"] = sum(g.size for g in prunable) / max(1, total)
        result[f"{unit}_exact"] = sum(g.size for g in exact) / max(1, total)
    return result


def all_layers(model):
    """``(path, layer)`` of every layer, nested models included (``ridurre.graph.all_layers``; the
    releases before it had none)."""
    try:
        from ridurre.graph import all_layers as ridurre_all_layers
    except ImportError:
        return [(layer.name, layer) for layer in model._flatten_layers(include_self=False)]
    return ridurre_all_layers(model)


def _heads_in_layers(model):
    """Attention heads of the model's layers, for a release whose trace has no head groups."""
    return sum(
        int(getattr(layer, "num_heads", 0) or getattr(layer, "num_query_heads", 0) or 0)
        for _, layer in all_layers(model)
    )


def randomize(model, seed):
    """Random biases and normalization parameters (variances positive): slicing them matters."""
    rng = np.random.default_rng(seed)
    for _, layer in all_layers(model):
        if not layer.weights or isinstance(layer, (L.Normalization, keras.Model)):
            continue
        values = []
        for var, value in zip(layer.weights, layer.get_weights()):
            if value.ndim == 1 and value.dtype.kind == "f":
                low = "variance" in var.name or var.name in ("gamma", "scale")
                value = rng.uniform(0.5, 1.5, value.shape) if low else rng.normal(0.0, 0.2, value.shape)
            values.append(np.asarray(value, dtype=var.dtype))
        layer.set_weights(values)
    return model


def _inputs(model, rng):
    out = []
    for t in model.inputs:
        shape = (2,) + tuple(t.shape[1:])
        out.append(rng.integers(0, 100, shape).astype("int32") if "int" in str(t.dtype) else rng.normal(size=shape))
    return out if len(out) > 1 else out[0]


def verify(model, rng, sampled):
    """Groups checked and the largest relative difference between pruned and reference."""
    from ridurre.graph import trace_model
    from ridurre.surgery import Surgeon

    model = randomize(model, int(rng.integers(1 << 30)))
    trace = trace_model(model)
    candidates = [g for g in trace.groups() if g.prunable and g.size >= 2]
    picks = rng.choice(len(candidates), size=min(sampled, len(candidates)), replace=False).tolist()
    plans = [{candidates[i].id: rng.choice(candidates[i].size, candidates[i].size // 2, replace=False)} for i in picks]
    plans.append({g.id: rng.choice(g.size, max(1, round(0.3 * g.size)), replace=False) for g in candidates})
    x = _inputs(model, rng)
    worst, inexact = 0.0, 0
    for plan in plans:
        surgeon = Surgeon(model, trace=trace)
        for gid, channels in plan.items():
            surgeon.delete_group_channels(trace.groups()[gid], channels)
        pruned = np.asarray(surgeon.operate()(x, training=False))
        reference = np.asarray(surgeon.operate(zero=True, delete_inexact=True)(x, training=False))
        if pruned.shape != reference.shape or not np.isfinite(pruned).all():
            raise AssertionError(f"{model.name}: the pruned model's output is {pruned.shape}, non-finite or wrong")
        worst = max(worst, float(np.abs(pruned - reference).max() / max(1.0, np.abs(reference).max())))
        inexact += sum(1 for gid in plan if not trace.groups()[gid].exact)
    return len(picks) + len(candidates), inexact, worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--sampled", type=int, default=3, help="groups verified one at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-verify", action="store_true", help="measure the reach only")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")

    print(f"keras {keras.__version__}, {keras.backend.backend()}, python {platform.python_version()}")
    print(f"load average at start: {os.getloadavg()[0]:.1f}\n")
    head = (
        "| model | internal channels (groups) | prunable | of which exact | heads (groups) | heads prunable |"
        " refused groups: most frequent reason | uncounted layers |"
    )
    if not args.no_verify:
        head += " verified groups (through a norm) | max rel. difference | seconds |"
    print(head)
    print("|" + "---|" * head.count(" |"))
    rng = np.random.default_rng(args.seed)
    for name in names:
        keras.utils.set_random_seed(args.seed)
        started = time.perf_counter()
        model = MODELS[name]()
        r = reach(model)
        if r["heads_groups"]:
            heads = f"{r['heads']} ({r['heads_groups']}) | **{100 * r['heads_prunable']:.0f} %** |"
        else:
            layer_heads = _heads_in_layers(model)
            heads = f"{layer_heads} (no group) | **0 %** |" if layer_heads else "- | - |"
        row = (
            f"| {model.name} | {r['channels']} ({r['channels_groups']}) | **{100 * r['channels_prunable']:.0f} %** | "
            f"{100 * r['channels_exact']:.0f} % | {heads} {r['refused']}: {r['reason'][:70] or '-'} | "
            f"{r['uncounted']} |"
        )
        if not args.no_verify:
            checked, inexact, worst = verify(model, rng, args.sampled)
            row += f" {checked} ({inexact}) | {worst:.1e} | {time.perf_counter() - started:.0f} |"
        print(row, flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
