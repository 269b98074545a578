"""Prune EEGNet's temporal filters by their SSVEP frequency response.

    python example/ssvep_pruning.py [--quick] [--output DIR] [--seed N]

1. Train EEGNet (:func:`ridurre.zoo.models.eegnet`) on synthetic SSVEP trials
   (:func:`ridurre.zoo.datasets.make_ssvep_dataset`: 4 stimulus frequencies, 8 electrodes,
   fs = 128 Hz, 2 s trials), keeping a quarter of the trials for testing.
2. Score each temporal filter (``temporal_conv``) by the share of its frequency response at the
   stimulus frequencies and their harmonics (:func:`ridurre.ssvep.score_model_layer`) and write
   the scores with :func:`ridurre.ssvep.write_scores_csv`.
3. Prune half of the temporal filters in one shot from the score file
   (:func:`ridurre.scorefile.prune_by_scores`), once zeroing them (``mode="mask"``) and once
   removing them (``mode="remove"``), without finetuning.
4. Prune iteratively with :class:`ridurre.ssvep.SSVEPScorePruning`: rescore, remove a
   quarter of the temporal filters, finetune briefly, three times.
5. Print a table: held-out accuracy, parameters and MACs (:func:`ridurre.metrics.model_stats`)
   of each model, and each temporal filter's peak frequency, score and fate.

Outputs in ``--output`` (default ``ssvep_pruning_output``): ``eegnet.keras`` (trained),
``filter_stats.csv`` (scores), ``mask/pruned_weights.npz``, ``remove/pruned_model.keras`` (with
``pruned_filters.txt`` and ``pruning_visualization.png`` each), ``iterative/`` (the loop's
history and checkpoints), ``ssvep_pruned.keras`` (the iteratively pruned model) and
``summary.json``. ``--quick`` trains on fewer trials for fewer epochs (about a minute on two
CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from ridurre.metrics import model_stats  # noqa: E402
from ridurre.scorefile import (
    apply_pruned_weights,  # noqa: E402
    prune_by_scores,  # noqa: E402
)
from ridurre.ssvep import (  # noqa: E402
    SSVEPScorePruning,  # noqa: E402
    score_model_layer,
    write_scores_csv,
)
from ridurre.zoo.datasets import make_ssvep_dataset  # noqa: E402
from ridurre.zoo.models import eegnet  # noqa: E402

FS = 128.0
STIMULI = (8.0, 10.0, 12.0, 15.0)
HARMONICS = 2
BANDWIDTH = 1.0
CHANNELS = 8
SAMPLES = 256  # 2 s at 128 Hz
LAYER = "temporal_conv"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Prune EEGNet's temporal filters by SSVEP frequency response.")
    parser.add_argument("--quick", action="store_true", help="fewer trials and epochs (about a minute)")
    parser.add_argument("--output", default="ssvep_pruning_output", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the pruning")
    return parser.parse_args(argv)


def compile_model(model):
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def accuracy(model, x, y):
    """Share of trials classified right (a direct call: no predict function traced per model)."""
    probabilities = keras.ops.convert_to_numpy(model(x, training=False))
    return float(np.mean(np.argmax(probabilities, axis=-1) == y))


def peak_frequencies(kernel, fs=FS, n_fft=1024):
    """Frequency of the largest response of each temporal filter, (1, K, 1, F) -> (F,)."""
    taps = np.asarray(kernel, dtype=np.float64).reshape(kernel.shape[1], -1)
    power = np.abs(np.fft.rfft(taps, n=n_fft, axis=0)) ** 2
    return np.fft.rfftfreq(n_fft, d=1.0 / fs)[np.argmax(power, axis=0)]


def cost(model):
    stats = model_stats(model)
    return int(stats.total_params), int(stats.total_macs)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    n_trials, epochs, finetune_epochs = (200, 8, 1) if args.quick else (480, 15, 2)

    # 1. data and training --------------------------------------------------------------------
    x, y = make_ssvep_dataset(
        n_trials=n_trials,
        channels=CHANNELS,
        samples=SAMPLES,
        fs=FS,
        stimulus_freqs=STIMULI,
        harmonics=HARMONICS,
        noise=1.0,
        seed=args.seed,
    )
    n_train = int(0.75 * n_trials)
    x_train, y_train, x_test, y_test = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    keras.utils.set_random_seed(args.seed)
    model = eegnet(
        num_classes=len(STIMULI), channels=CHANNELS, samples=SAMPLES, F1=8, D=2, F2=16, kernel_length=64, dropout=0.25
    )
    compile_model(model)
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    model_path = os.path.join(out, "eegnet.keras")
    model.save(model_path)
    acc_before = accuracy(model, x_test, y_test)
    print(
        f"trained EEGNet on {n_train} trials for {epochs} epochs: held-out accuracy "
        f"{acc_before:.1%} ({len(y_test)} trials)"
    )

    # 2. frequency-response scores ------------------------------------------------------------
    kernel = model.get_layer(LAYER).get_weights()[0]
    scores = score_model_layer(model, LAYER, fs=FS, target_freqs=STIMULI, harmonics=HARMONICS, bandwidth=BANDWIDTH)
    peaks = peak_frequencies(kernel)
    stats_path = os.path.join(out, "filter_stats.csv")
    write_scores_csv(stats_path, {LAYER: scores})

    # 3. one-shot pruning from the score file -----------------------------------------------------
    mask = prune_by_scores(
        model_path, stats_path, os.path.join(out, "mask"), percentage=0.5, mode="mask", overwrite=True
    )
    masked = apply_pruned_weights(model, os.path.join(out, "mask", "pruned_weights.npz"))
    prune_by_scores(model_path, stats_path, os.path.join(out, "remove"), percentage=0.5, mode="remove", overwrite=True)
    removed_model = keras.saving.load_model(os.path.join(out, "remove", "pruned_model.keras"), compile=False)
    one_shot = mask.selection.by_layer().get(LAYER, [])

    # 4. iterative pruning with finetuning -----------------------------------------------------------
    def finetune(m, initial_epoch, end_epoch):
        return m.fit(x_train, y_train, initial_epoch=initial_epoch, epochs=end_epoch, batch_size=32, verbose=0)

    pruning = SSVEPScorePruning(
        0.25,
        compile_model,
        finetune,
        finetune_epochs,
        maximum_prune_iterations=3,
        nb_trained_for_epochs=epochs,
        fs=FS,
        target_freqs=STIMULI,
        harmonics=HARMONICS,
        bandwidth=BANDWIDTH,
        output_dir=os.path.join(out, "iterative"),
        seed=args.seed,
        evaluate_fn=lambda m: accuracy(m, x_test, y_test),
    )
    pruned, _ = pruning.run_pruning(model)
    pruned.save(os.path.join(out, "ssvep_pruned.keras"))
    alive = np.arange(len(scores))
    removed_at = {}
    for record in pruning.history:  # positions -> original filter indices
        positions = record.removed.get(LAYER, [])
        for f in alive[positions]:
            removed_at[int(f)] = record.iteration + 1
        alive = np.delete(alive, positions)
    acc_after = accuracy(pruned, x_test, y_test)

    # 5. report -------------------------------------------------------------------------------------
    n_filters = model.get_layer(LAYER).filters
    rows = [  # (name, model, accuracy, live temporal filters, how to show them)
        ("original", model, acc_before, n_filters, str(n_filters)),
        (
            "one-shot mask",
            masked,
            accuracy(masked, x_test, y_test),
            n_filters - len(one_shot),
            f"{n_filters - len(one_shot)} + {len(one_shot)} zeroed",
        ),
        (
            "one-shot remove",
            removed_model,
            accuracy(removed_model, x_test, y_test),
            removed_model.get_layer(LAYER).filters,
            str(removed_model.get_layer(LAYER).filters),
        ),
        (
            f"iterative + finetune ({len(pruning.history)}x)",
            pruned,
            acc_after,
            pruned.get_layer(LAYER).filters,
            str(pruned.get_layer(LAYER).filters),
        ),
    ]
    summary = {"accuracy_before": acc_before, "accuracy_after_finetune": acc_after, "models": {}, "filters": []}
    print()
    print(f"{'model':<28} {'accuracy':>8} {'params':>8} {'MACs':>10} {'temporal filters':>17}")
    for name, m, acc, live, shown in rows:
        params, macs = cost(m)
        summary["models"][name] = {"accuracy": acc, "params": params, "macs": macs, "temporal_filters": live}
        print(f"{name:<28} {acc:>8.1%} {params:>8,} {macs:>10,} {shown:>17}")
    print()
    print(
        f"temporal filters (stimuli {', '.join(f'{f:g}' for f in STIMULI)} Hz, harmonics {HARMONICS}, "
        f"bandwidth ±{BANDWIDTH:g} Hz):"
    )
    print(f"{'filter':>6} {'peak Hz':>8} {'score':>6}  {'one-shot':<9} iterative (removed in iteration)")
    for f in range(len(scores)):
        fate = f"removed ({removed_at[f]})" if f in removed_at else "kept"
        print(f"{f:>6} {peaks[f]:>8.1f} {scores[f]:>6.3f}  {'removed' if f in one_shot else 'kept':<9} {fate}")
        summary["filters"].append(
            {
                "filter": f,
                "peak_hz": float(peaks[f]),
                "score": float(scores[f]),
                "one_shot_removed": f in one_shot,
                "iterative_removed_at": removed_at.get(f),
            }
        )
    print("iterative: held-out accuracy after each finetune " + ", ".join(f"{r.metric:.1%}" for r in pruning.history))
    print(
        f"one shot removed {len(one_shot)} filters, peaks "
        f"{', '.join(f'{peaks[f]:.1f}' for f in one_shot) or '-'} Hz; the iterative loop removed "
        f"{len(removed_at)}, peaks {', '.join(f'{peaks[f]:.1f}' for f in sorted(removed_at)) or '-'} Hz"
    )
    summary["seconds"] = time.perf_counter() - started
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"outputs in {out} ({summary['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
