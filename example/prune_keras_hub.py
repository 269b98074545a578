"""Prune keras-hub models with the pruning loop: an image backbone and a text model.

Usage::

    python example/prune_keras_hub.py --quick [--output DIR]
    python example/prune_keras_hub.py [--image-preset resnet_18_imagenet] [--text-preset bert_tiny_en_uncased]

``--quick`` (a CPU smoke test, no download): a small MobileNetV3 backbone and a small BERT
backbone built from constructor arguments (``ridurre.zoo.keras_hub``), each with a pooling and a
Dense head, trained briefly (the bundled scikit-learn digits scaled to 32x32x3; synthetic token
sequences of two "topics", drawn mostly from either half of the vocabulary), then pruned by ``ridurre.Pruner("l1",
...)`` with one epoch of fine-tuning per step until the model has at least 2x fewer MACs (target 2.1x).

The full mode loads keras-hub presets (``from_preset``: the weights must be available to
keras-hub, e.g. downloaded before or cached) and fine-tunes on the same data: the preset's image
converter and tokenizer are kept and used to feed the pruned model, which is what a user keeps
when the keras-hub task class is gone (see the README's "Composite layers and keras-hub models").

The loop inlines keras-hub's composite layers itself (``inline_composites=True``). Prints one
line per model (accuracy and MACs before and after) and writes ``summary.json`` and the pruned
models (``<name>.keras``, loadable with keras-hub imported) to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import ridurre  # noqa: E402
from ridurre.zoo.datasets import load_digits  # noqa: E402
from ridurre.zoo.keras_hub import hub_backbone, with_head  # noqa: E402

SEQUENCE = 16


def digits_images():
    """``(x_train, y_train, x_test, y_test)``: the bundled 8x8 digits as 32x32x3 images."""
    digits = load_digits(validation_split=0.0)

    def scale(x):  # each pixel a 4x4 block, three channels
        return np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3).astype("float32")

    return scale(digits.x_train), digits.y_train, scale(digits.x_test), digits.y_test


def topic_sequences(vocabulary, count=1200, seed=0):
    """Token sequences of two "topics": class 0 draws most of its tokens from the lower half of
    the vocabulary (ids 4 ..), class 1 from the upper half, and a third of the tokens of either
    from anywhere; split 80/20, as the dict inputs of a keras-hub text backbone."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=count)
    middle = (4 + vocabulary) // 2
    low = rng.integers(4, middle, size=(count, SEQUENCE))
    high = rng.integers(middle, vocabulary, size=(count, SEQUENCE))
    tokens = np.where(labels[:, None] == 1, high, low)
    noise = rng.random((count, SEQUENCE)) < 1 / 3
    tokens = np.where(noise, rng.integers(4, vocabulary, size=(count, SEQUENCE)), tokens).astype("int32")
    inputs = {
        "token_ids": tokens,
        "segment_ids": np.zeros_like(tokens),
        "padding_mask": np.ones_like(tokens),
    }
    split = int(0.8 * count)
    train = {k: v[:split] for k, v in inputs.items()}
    test = {k: v[split:] for k, v in inputs.items()}
    return train, labels[:split], test, labels[split:]


def compile_model(model, learning_rate=3e-3):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=128, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def macs(model):
    """MACs of one example, composites inlined (so that their inner layers are counted)."""
    return ridurre.model_stats(ridurre.inline_composites(model)).total_macs


def prune(name, model, data, epochs, output):
    x_train, y_train, x_test, y_test = data
    compile_model(model)
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    before = {"accuracy": accuracy(model, x_test, y_test), "macs": macs(model)}

    def finetune(m, initial_epoch, end_epoch):
        m.fit(x_train, y_train, batch_size=64, initial_epoch=initial_epoch, epochs=end_epoch, verbose=0)

    pruner = ridurre.Pruner(
        "l1", compile_model, finetune, 1, pruning_factor=0.2, target_speedup=2.1, maximum_prune_iterations=12
    )
    pruned, _ = pruner.run_pruning(model)
    after = {"accuracy": accuracy(pruned, x_test, y_test), "macs": macs(pruned)}
    pruned.save(output / f"{name}.keras")
    row = {"model": name, "before": before, "after": after, "macs_reduction": before["macs"] / after["macs"]}
    print(
        f"{name}: accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
        f"MACs {before['macs']:,} -> {after['macs']:,} ({row['macs_reduction']:.2f}x fewer)",
        flush=True,
    )
    return row


def quick_models():
    image = with_head(hub_backbone("mobilenet_v3"), 10, name="mobilenet_v3_digits")
    text = with_head(hub_backbone("bert"), 2, name="bert_topics", sequence_length=SEQUENCE)
    return image, text


def preset_models(image_preset, text_preset):  # pragma: no cover - needs the preset weights
    import keras_hub

    image_backbone = keras_hub.models.Backbone.from_preset(image_preset)
    converter = keras_hub.layers.ImageConverter.from_preset(image_preset, image_size=(32, 32))
    text_backbone = keras_hub.models.Backbone.from_preset(text_preset)
    preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(text_preset, sequence_length=SEQUENCE)
    text = with_head(text_backbone, 2, sequence_length=SEQUENCE)
    return with_head(image_backbone, 10), converter, text, preprocessor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models from constructor arguments, no download")
    parser.add_argument("--image-preset", default="resnet_18_imagenet")
    parser.add_argument("--text-preset", default="bert_tiny_en_uncased")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs before pruning")
    parser.add_argument("--output", default="prune_keras_hub_output")
    args = parser.parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    images = digits_images()
    if args.quick:
        image_model, text_model = quick_models()
        texts = topic_sequences(vocabulary=50)
    else:  # pragma: no cover - needs the preset weights
        image_model, converter, text_model, preprocessor = preset_models(args.image_preset, args.text_preset)
        images = (converter(images[0]), images[1], converter(images[2]), images[3])
        train, y_train, test, y_test = topic_sequences(vocabulary=1000)
        as_text = [" ".join(str(t) for t in row) for row in train["token_ids"]]
        as_text_test = [" ".join(str(t) for t in row) for row in test["token_ids"]]
        texts = (preprocessor(as_text), y_train, preprocessor(as_text_test), y_test)
    epochs = args.epochs or (6 if args.quick else 3)
    rows = [prune("image", image_model, images, epochs, output), prune("text", text_model, texts, epochs, output)]
    (output / "summary.json").write_text(json.dumps({"quick": args.quick, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
