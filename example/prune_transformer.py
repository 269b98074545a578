"""Prune attention heads, FFN widths and the hidden size of two small Keras transformers.

Two models, built from ``keras.layers`` only (no keras-hub, no custom layers), are trained,
pruned with ``ridurre.Pruner`` to at least ``--speedup`` (2x) fewer MACs, finetuned, and
compared before and after (test accuracy, parameters, MACs, measured latency):

* **vit**: a Vision Transformer on scikit-learn's bundled 8x8 digits (no download). The image
  is cut into 2x2 patches by a strided ``Conv2D`` (the patch embedding), positions come from a
  depthwise convolution over the patch grid (CPVT's "positional encoding generator": it keeps
  the model free of custom layers), then pre-norm blocks of ``LayerNormalization`` ->
  ``MultiHeadAttention`` -> ``Add`` and ``LayerNormalization`` -> FFN -> ``Add``;
* **text**: a text transformer on a synthetic task: sequences of 8 to 24 tokens, padded with 0
  (``Embedding(mask_zero=True)``: the padding mask reaches the attention), labelled with the
  "marker" token (1 to 4) that occurs most often among noise tokens.

What is pruned, per iteration of the loop (``ridurre.Pruner``):

* whole **heads** of every ``MultiHeadAttention`` (``head_pruning_factor``: their own share,
  ranked by ``head_criterion``, here the mean magnitude of each head's contribution to the
  attention output on training data);
* **head dimensions** (``key_dim``), **FFN widths** and the **hidden size** (the residual
  stream: patch embedding or token embedding, every attention output projection and FFN output,
  the LayerNormalizations and the classifier's inputs) as channels, ranked by the group L2 norm
  of their weights. The residual stream runs through LayerNormalization, whose statistics change
  when hidden dimensions go: those groups are flagged *inexact* (``IterationRecord.inexact``) and
  the finetuning repairs them, as Torch-Pruning does for a ViT's hidden size.

``size_steps_to_limits=True`` sizes the steps so that the MAC target is reached at the last of
``--iterations`` iterations; ``verify="exact"`` checks every surgery against the model with the
same channels zeroed (the groups through a LayerNormalization structurally).

Running it::

    python example/prune_transformer.py --quick --output /tmp/ridurre_xformer   # ~2 minutes of CPU time
    python example/prune_transformer.py --output runs/xformer                    # wider, longer: a GPU helps

What ends up in ``--output``: ``<model>/baseline.keras``, ``<model>/final.keras``, ridurre's
``<model>/logs/history.{json,csv}`` and checkpoints, and ``summary.json`` with the numbers
printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ridurre  # noqa: E402
from ridurre.metrics import measure_latency, model_stats  # noqa: E402
from ridurre.zoo.datasets import load_digits  # noqa: E402

L = keras.layers

# Settings of the two modes; every value can be overridden on the command line.
FULL = dict(
    hidden=96,
    heads=6,
    blocks=4,
    epochs=120,
    finetune_epochs=8,
    final_epochs=20,
    iterations=6,
    text_samples=20000,
    batch_size=64,
    lr=2e-3,
    latency_batch=64,
)
QUICK = dict(
    hidden=32,
    heads=4,
    blocks=2,
    epochs=20,
    finetune_epochs=2,
    final_epochs=3,
    iterations=3,
    text_samples=1200,
    batch_size=64,
    lr=3e-3,
    latency_batch=64,
)
VOCABULARY, MARKERS, MAX_LENGTH = 32, 4, 24


# -------------------------------------------------------------------------------------------
# 1. Data
# -------------------------------------------------------------------------------------------
def digits_data(seed):
    """The bundled digits, as (x_train, y_train), (x_val, y_val), (x_test, y_test)."""
    data = load_digits(seed=seed)
    return (data.x_train, data.y_train), (data.x_val, data.y_val), (data.x_test, data.y_test)


def marker_data(n, seed):
    """Token sequences of 8 to 24 tokens padded with 0; the label is the most frequent marker.

    Markers are the tokens 1..4, noise tokens 5..31; one marker is made the most frequent by
    construction (ties are impossible), so the task is learnable exactly. Split 70/15/15.
    """
    rng = np.random.default_rng(seed)
    x = np.zeros((n, MAX_LENGTH), dtype="int32")
    y = rng.integers(0, MARKERS, n)
    for i in range(n):
        length = int(rng.integers(8, MAX_LENGTH + 1))
        counts = rng.integers(0, 3, MARKERS)
        counts[y[i]] = counts.max() + 1 + int(rng.integers(0, 2))
        tokens = np.concatenate([np.repeat(np.arange(1, MARKERS + 1), counts)])
        noise = rng.integers(MARKERS + 1, VOCABULARY, max(0, length - len(tokens)))
        sequence = rng.permutation(np.concatenate([tokens, noise]))[:MAX_LENGTH]
        x[i, : len(sequence)] = sequence
    a, b = int(0.7 * n), int(0.85 * n)
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


# -------------------------------------------------------------------------------------------
# 2. The models: keras.layers only
# -------------------------------------------------------------------------------------------
def encoder_block(h, hidden, heads, name, mask=None):
    """A pre-norm transformer block: LN -> MHA -> Add, LN -> Dense(4 hidden, gelu) -> Dense -> Add."""
    a = L.LayerNormalization(epsilon=1e-6, name=f"{name}_ln1")(h)
    a = L.MultiHeadAttention(heads, hidden // heads, name=f"{name}_mha")(a, a, attention_mask=mask)
    h = L.Add(name=f"{name}_add1")([h, a])
    f = L.LayerNormalization(epsilon=1e-6, name=f"{name}_ln2")(h)
    f = L.Dense(4 * hidden, activation="gelu", name=f"{name}_ffn1")(f)
    f = L.Dense(hidden, name=f"{name}_ffn2")(f)
    return L.Add(name=f"{name}_add2")([h, f])


def vit(args, image_shape=(8, 8, 1), classes=10):
    """ViT for 8x8 digits: 2x2 patches (16 tokens), a depthwise positional convolution, blocks."""
    x = keras.Input(image_shape, name="image")
    grid = L.Conv2D(args.hidden, 2, strides=2, name="patch_embedding")(x)
    grid = L.Add(name="add_position")([grid, L.DepthwiseConv2D(3, padding="same", name="position")(grid)])
    h = L.Reshape((-1, args.hidden), name="tokens")(grid)
    for i in range(args.blocks):
        h = encoder_block(h, args.hidden, args.heads, f"block{i}")
    h = L.LayerNormalization(epsilon=1e-6, name="final_ln")(h)
    return keras.Model(x, L.Dense(classes, name="classifier")(L.GlobalAveragePooling1D()(h)), name="vit_digits")


def text_transformer(args, classes=MARKERS):
    """Token embedding (0 is padding: its mask reaches the attention) -> blocks -> mean -> classifier."""
    x = keras.Input((MAX_LENGTH,), dtype="int32", name="tokens")
    h = L.Embedding(VOCABULARY, args.hidden, mask_zero=True, name="token_embedding")(x)
    for i in range(args.blocks):
        h = encoder_block(h, args.hidden, args.heads, f"block{i}")
    h = L.LayerNormalization(epsilon=1e-6, name="final_ln")(h)
    pooled = L.GlobalAveragePooling1D(name="mean")(h)  # the mask leaves the padding out of the mean
    return keras.Model(x, L.Dense(classes, name="classifier")(pooled), name="text_transformer")


# -------------------------------------------------------------------------------------------
# 3. The callbacks ridurre needs, and measuring
# -------------------------------------------------------------------------------------------
def make_compile_fn(lr):
    def compile_model(model):
        # a new optimizer for every pruned model: its state has the shapes of the old weights
        model.compile(
            optimizer=keras.optimizers.AdamW(lr, weight_decay=1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )

    return compile_model


def make_finetune_fn(train, val, batch_size, verbose):
    def finetune_model(model, initial_epoch, end_epoch):
        return model.fit(
            *train,
            validation_data=val,
            batch_size=batch_size,
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            verbose=verbose,
        )

    return finetune_model


def attention_heads(model):
    return sum(layer.num_heads for layer in model.layers if isinstance(layer, L.MultiHeadAttention))


def measure(model, test, latency_batch):
    """Test accuracy, parameters, MACs per example, heads and the compiled forward pass's time."""
    logits = model.predict(test[0], batch_size=256, verbose=0)
    stats = model_stats(model)
    result = {
        "accuracy": float(np.mean(np.argmax(logits, axis=1) == test[1])),
        "params": int(stats.total_params),
        "macs": int(stats.total_macs),
        "heads": attention_heads(model),
        "hidden": int(model.get_layer("block0_ffn2").units),
        "ffn": int(model.get_layer("block0_ffn1").units),
    }
    if latency_batch:
        # the compiled forward pass (what deployed inference runs); the best of 3 medians, since a
        # shared machine can make one median an outlier
        result["latency_ms"] = min(
            float(measure_latency(model, batch_size=latency_batch, repeats=30, compiled=True).median_ms)
            for _ in range(3)
        )
    return result


# -------------------------------------------------------------------------------------------
# 4. Train -> prune (heads, FFN, hidden size; finetuning after each step) -> finetune -> compare
# -------------------------------------------------------------------------------------------
def run_one(name, build, data, args, output):
    train, val, test = data
    keras.utils.set_random_seed(args.seed)
    model = build(args)
    compile_model = make_compile_fn(args.lr)
    compile_model(model)
    print(f"\n# {model.name}: training {model.count_params():,} parameters for {args.epochs} epochs", flush=True)
    started = time.perf_counter()
    model.fit(*train, validation_data=val, batch_size=args.batch_size, epochs=args.epochs, verbose=args.verbose)
    train_seconds = time.perf_counter() - started
    model.save(output / "baseline.keras")
    before = measure(model, test, args.latency_batch)

    # The head criterion sees the attention output on a sample of training inputs.
    sample = train[0][: min(256, len(train[0]))]
    pruner = ridurre.Pruner(
        "l2",
        make_compile_fn(args.lr / 3),  # finetuning: a smaller learning rate
        make_finetune_fn(train, val, args.batch_size, args.verbose),
        args.finetune_epochs,
        nb_trained_for_epochs=args.epochs,
        pruning_factor=0.25,
        head_pruning_factor=args.head_ratio,
        head_criterion="activation_mean",
        head_criterion_options={"data": sample},
        target_speedup=args.speedup,
        maximum_prune_iterations=args.iterations,
        maximum_pruning_percent=0.95,
        size_steps_to_limits=True,
        round_to=args.round_to,
        verify="exact",
        seed=args.seed,
        output_dir=str(output),
    )
    started = time.perf_counter()
    pruned, epoch = pruner.run_pruning(model)
    prune_seconds = time.perf_counter() - started
    if args.final_epochs:
        compile_model = make_compile_fn(args.lr / 3)
        compile_model(pruned)
        pruned.fit(
            *train,
            validation_data=val,
            batch_size=args.batch_size,
            initial_epoch=epoch,
            epochs=epoch + args.final_epochs,
            verbose=args.verbose,
        )
    pruned.save(output / "final.keras")
    after = measure(pruned, test, args.latency_batch)
    inexact = sorted({group for record in pruner.history for group in record.inexact})
    return {
        "model": model.name,
        "before": before,
        "after": after,
        "iterations": len(pruner.history),
        "train_seconds": train_seconds,
        "prune_seconds": prune_seconds,
        "inexact_groups": inexact,
        "history": [
            {k: getattr(r, k) for k in ("iteration", "params", "macs", "metric", "seconds")} for r in pruner.history
        ],
    }


def print_summary(result, latency_batch):
    before, after = result["before"], result["after"]

    def change(key):
        return f"{before[key] / after[key]:.2f}x fewer" if after[key] else ""

    print(f"\n## {result['model']}: before / after pruning (test split)\n")
    print("| | unpruned | pruned | change |")
    print("|---|---:|---:|---:|")
    print(
        f"| test accuracy | {before['accuracy']:.2%} | {after['accuracy']:.2%} "
        f"| {100 * (after['accuracy'] - before['accuracy']):+.2f} points |"
    )
    for key, label in (("params", "parameters"), ("macs", "MACs per example")):
        print(f"| {label} | {before[key]:,} | {after[key]:,} | {change(key)} |")
    for key, label in (("heads", "attention heads"), ("hidden", "hidden size"), ("ffn", "FFN width (block 0)")):
        print(f"| {label} | {before[key]} | {after[key]} | |")
    if latency_batch:
        print(
            f"| latency, compiled forward pass, batch of {latency_batch} (ms) | {before['latency_ms']:.2f} "
            f"| {after['latency_ms']:.2f} | {change('latency_ms').replace('fewer', 'faster')} |"
        )
    print(
        f"\n{result['iterations']} pruning iterations in {result['prune_seconds']:.0f} s "
        f"(training: {result['train_seconds']:.0f} s); groups through a LayerNormalization (inexact, "
        f"repaired by the finetuning): {len(result['inexact_groups'])}"
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small models, short schedules (~2 min of CPU time)")
    parser.add_argument("--output", default="runs/prune_transformer", help="a new directory for the run")
    parser.add_argument("--models", default="vit,text", help="comma-separated: vit, text")
    parser.add_argument("--speedup", type=float, default=2.2, help="target MAC reduction (the limit)")
    parser.add_argument("--head-ratio", type=float, default=0.25, help="share of each layer's heads per iteration")
    parser.add_argument("--round-to", type=int, default=None, help="keep channel counts multiples of this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=0, help="keras fit verbosity")
    for key, value in FULL.items():
        parser.add_argument("--" + key.replace("_", "-"), type=type(value), default=None)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(names) - {"vit", "text"})
    if unknown or not names:
        parser.error(f"--models takes vit and/or text, got {args.models!r}")
    args.models = names
    if args.hidden % args.heads:
        parser.error(f"--hidden ({args.hidden}) must be a multiple of --heads ({args.heads})")
    return args


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output)
    if (output / "summary.json").exists():
        raise SystemExit(f"{output} already holds a run: choose another --output")
    builders = {
        "vit": (vit, lambda: digits_data(args.seed)),
        "text": (text_transformer, lambda: marker_data(args.text_samples, args.seed)),
    }
    results = {}
    for name in args.models:
        build, load = builders[name]
        (output / name).mkdir(parents=True, exist_ok=True)
        results[name] = run_one(name, build, load(), args, output / name)
        print_summary(results[name], args.latency_batch)
        keras.backend.clear_session()
    summary = {"mode": "quick" if args.quick else "full", "speedup_target": args.speedup, "models": results}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
