"""Why ridurre's L1 trails Torch-Pruning's L1 on a BN network: which channel scores predict the damage.

Usage::

    python bench/channel_scores.py [--dataset mnist1d] [--seeds 0,1,2] [--base-epochs 10]

For each seed, the twin BN CNN of ``bench/compare_torch_pruning.py`` is trained in torch and copied
into Keras. For every channel of every convolution, the script measures the **damage** of removing
that channel alone (the increase of the cross-entropy on 2,000 training examples when its BN
output is set to zero, which is what deleting it does: its ReLU output is 0 and every consumer
sees nothing), and how well each score ranks the channels by that damage (Spearman correlation
per layer, averaged over the layers and seeds; 1 = the score orders the channels exactly as the
damage, 0 = no better than random):

- ``ridurre l1``, ``ridurre bn``: the registered criteria, scored by ridurre itself
  (``Pruner(name).score_groups`` on the Keras copy);
- ``tp l1 (group)``, ``tp l1_first``: Torch-Pruning's ``MagnitudeImportance(p=1)`` on the group
  (the convolution's filters, the BN's gamma, the next layer's input weights) and with
  ``group_reduction="first"`` (the filters alone);
- the parts of the group score: the filter's L1 at initialization, the BN |gamma|, the next
  layer's input-weight L1, and the L1 of the filter with the BN folded in
  (``|gamma| / sqrt(running_var + eps) * ||w||_1``).

It also shows that the producer's filter norm is not a property of the function: scaling each
filter of a convolution followed by BN by a random factor in [0.1, 10] (its bias and the BN's
running mean by the same factor, its running variance by the square) leaves every output
unchanged (the maximum difference is printed) while the ranking by filter L1 becomes arbitrary.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import twin_networks as tn  # noqa: E402

from ridurre import Pruner  # noqa: E402


def spearman(a, b) -> float:
    ra, rb = (np.argsort(np.argsort(v, kind="stable")).astype(float) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def layers_of(model):
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    consumers = convs[1:] + [[m for m in model.modules() if isinstance(m, nn.Linear)][-1]]
    return convs, norms, consumers


def damage(model, data, n=2000):
    """Per conv layer, the loss increase when each channel alone is removed (its BN output zeroed)."""
    import torch

    x = torch.from_numpy(data.torch_x(data.x_train[:n]))
    y = torch.from_numpy(data.y_train[:n])
    loss_fn = torch.nn.CrossEntropyLoss()
    model.eval()
    out = []
    with torch.no_grad():
        base = float(loss_fn(model(x), y))
        for norm in layers_of(model)[1]:
            values = []
            for j in range(norm.num_features):
                saved = norm.weight[j].clone(), norm.bias[j].clone()
                norm.weight[j], norm.bias[j] = 0.0, 0.0
                values.append(float(loss_fn(model(x), y)) - base)
                norm.weight[j], norm.bias[j] = saved
            out.append(np.array(values))
    return out


def tp_scores(model, arch, **importance_options):
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, example_inputs=tn_example(arch))
    importance = tp.importance.MagnitudeImportance(p=1, **importance_options)
    out = []
    for conv in layers_of(model)[0]:
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
        out.append(importance(group).numpy())
    return out


def tn_example(arch):
    import torch

    return torch.zeros((1, arch.input_shape[-1]) + tuple(arch.input_shape[:-1]))


def ridurre_scores(kmodel, criterion, **options):
    """ridurre's scores of each conv group, in conv order (the first producer names the group)."""
    pruner = Pruner(criterion, tn.keras_compile, criterion_options=options or None)
    by_name = {group.producers[0]: scores for group, scores in pruner.score_groups(kmodel)}
    return [by_name[f"conv{i}"] for i in range(len(by_name))]


def l1_rows(layer, inputs=False):
    """L1 norm of each output filter (``inputs``: of each input channel's weights) of a conv/linear layer."""
    w = layer.weight.detach().abs()
    return (w.transpose(0, 1) if inputs else w).flatten(1).sum(1).numpy()


def rescale_check(model, data, seed):
    """Scale each filter of every conv by a random factor (BN statistics to match): the largest
    output change relative to the largest logit, and the Spearman correlation of the filter L1
    ranks before and after."""
    import copy

    import torch

    scaled = copy.deepcopy(model).eval()
    rng = np.random.default_rng(seed)
    rhos = []
    with torch.no_grad():
        for conv, norm in zip(*layers_of(scaled)[:2]):
            before = l1_rows(conv)
            c = torch.from_numpy(np.exp(rng.uniform(np.log(0.1), np.log(10), conv.out_channels)).astype(np.float32))
            conv.weight.mul_(c.view(-1, *([1] * (conv.weight.dim() - 1))))
            conv.bias.mul_(c)
            norm.running_mean.mul_(c)
            norm.running_var.mul_(c**2)  # eps stays: the tiny difference it leaves is what is printed
            rhos.append(spearman(before, l1_rows(conv)))
        x = torch.from_numpy(data.torch_x(data.x_test[:512]))
        reference = model.eval()(x)
        diff = float((scaled(x) - reference).abs().max() / reference.abs().max())
    return diff, float(np.mean(rhos))


def analyse(arch, data, seed, base_epochs):
    import copy

    tmodel = tn.torch_model(arch, seed)
    initial = [l1_rows(c) for c in layers_of(tmodel)[0]]
    tn.torch_train(tmodel, data, 0, base_epochs, seed)
    kmodel = tn.keras_model(arch)
    tn.torch_to_keras(tmodel, kmodel)
    hurt = damage(tmodel, data)
    convs, norms, consumers = layers_of(tmodel)
    sample = {
        "data": data.x_train[:512],
        "labels": data.y_train[:512],
        "batch_size": 64,
        "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }
    scores = {
        "ridurre l1 (group, mean)": ridurre_scores(kmodel, "l1"),
        **{f"ridurre l1 (group, {r})": ridurre_scores(kmodel, "l1", reduction=r) for r in ("sum", "max", "prod")},
        "ridurre l2 (group, mean)": ridurre_scores(kmodel, "l2"),
        "ridurre l1, scope=producers (0.0.2)": ridurre_scores(kmodel, "l1", scope="producers"),
        "ridurre bn": ridurre_scores(kmodel, "bn"),
        "ridurre taylor (512 examples)": ridurre_scores(kmodel, "taylor", **sample),
        "tp l1 (group)": tp_scores(copy.deepcopy(tmodel), arch),
        "tp l1_first": tp_scores(copy.deepcopy(tmodel), arch, group_reduction="first", normalizer=None),
        "filter L1 at initialization": initial,
        "BN |gamma|": [n.weight.detach().abs().numpy() for n in norms],
        "next layer's input-weight L1": [l1_rows(m, inputs=True) for m in consumers],
        "filter L1 with the BN folded in": [
            l1_rows(c) * n.weight.detach().abs().numpy() / np.sqrt(n.running_var.numpy() + n.eps)
            for c, n in zip(convs, norms)
        ],
    }  # fmt: skip
    rho = {name: [spearman(s, h) for s, h in zip(per_layer, hurt)] for name, per_layer in scores.items()}
    rho["filter L1 now vs at initialization"] = [spearman(l1_rows(c), i) for c, i in zip(convs, initial)]
    diff, rescaled = rescale_check(tmodel, data, seed)
    return rho, diff, rescaled, tn.torch_accuracy(tmodel, data)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist1d", choices=sorted(tn.ARCHITECTURES))
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--base-epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    arch, data = tn.ARCHITECTURES[args.dataset], tn.load_dataset(args.dataset)
    results = [analyse(arch, data, seed, args.base_epochs) for seed in args.seeds]
    accs = ", ".join(f"{100 * r[3]:.2f}" for r in results)
    print(f"### {args.dataset}, seeds {args.seeds}: trained accuracy {accs} %\n")
    print("Spearman correlation of each score with the damage of removing the channel, per conv layer")
    print("(mean over seeds; `all` = mean over layers):\n")
    n_layers = len(arch.blocks)
    print("| score | " + " | ".join(f"conv{i}" for i in range(n_layers)) + " | all |")
    print("|---|" + "---:|" * (n_layers + 1))
    for name in results[0][0]:
        per_layer = np.mean([r[0][name] for r in results], axis=0)
        cells = " | ".join(f"{v:+.2f}" for v in per_layer)
        print(f"| {name} | {cells} | {statistics.mean(per_layer):+.2f} |")
    print(
        f"\nScaling every filter by a random factor in [0.1, 10] (BN statistics to match) changes the logits "
        f"by {100 * max(r[1] for r in results):.2g} % of the largest at most; filter-L1 ranks before vs after: "
        "Spearman "
        f"{statistics.mean(r[2] for r in results):+.2f}."
    )


if __name__ == "__main__":
    main()
