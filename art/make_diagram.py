"""Draw art/pruning_framework.png: the prune-and-finetune loop of ridurre and its plug-in points.

Run from the repository root:  .venv/bin/python art/make_diagram.py
"""

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Patch

HERE = os.path.dirname(os.path.abspath(__file__))

STEP = "#DCE8F5"      # what the loop does
CRITERION = "#DFF0D8"  # the criterion's hooks (subclass methods)
CALLBACK = "#FCE4C8"   # the user's callbacks
SETTING = "#EEEEEE"    # options of BasePruning


def box(ax, x, y, w, h, title, body, color, title_size=12):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.12", linewidth=1.4,
                                edgecolor="#333333", facecolor=color))
    ax.text(x + w / 2, y + h - 0.22, title, ha="center", va="top", fontsize=title_size, weight="bold")
    ax.text(x + w / 2, y + h - 0.62, body, ha="center", va="top", fontsize=10.5, linespacing=1.4,
            family="DejaVu Sans")


def arrow(ax, start, end, text=None, rad=0.0, color="#333333", offset=(0, 0.15), style="-|>", ls="-"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=18, linewidth=1.6, color=color,
                                 connectionstyle=f"arc3,rad={rad}", linestyle=ls))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=9, style="italic", color=color)


def main(path=os.path.join(HERE, "pruning_framework.png")):
    fig = Figure(figsize=(17, 9.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 17.2)
    ax.set_ylim(0, 9.6)
    ax.axis("off")
    ax.text(8.6, 9.3, "ridurre: the prune-and-finetune loop (BasePruning.run_pruning)", ha="center",
            fontsize=17, weight="bold")
    ax.text(8.6, 8.88, "every iteration: score -> select -> delete (one rebuild) -> verify -> compile -> finetune "
                       "-> record; the user's model is never modified", ha="center", fontsize=11, color="#444444")

    w, h = 3.55, 2.25
    top, bottom = 5.85, 1.95
    xs = [0.95, 5.1, 9.25, 13.4]
    # top row: left to right
    box(ax, xs[0], top, w, h, "1  trace",
        "graph.trace_model(model)\nchannel groups: coupled channels\n(residual Add, Concatenate, BN,\n"
        "depthwise, Flatten -> Dense)\nunprunable groups keep a reason", STEP)
    box(ax, xs[1], top, w, h, "2  score",
        "score_channels(view) -> one score\nper channel (higher = keep)\nview = GroupView: weight_matrices(),\n"
        "bn_gammas(), activations(data)\nL1/L2, KMeans, BN, APoZ, random", CRITERION)
    box(ax, xs[2], top, w, h, "3  select",
        "select_channels(view, n_remove)\n(default: the n lowest scores)\nrun_pruning_for_conv2d_layer(\n"
        "  factor, layer, weights)  [0.0.2]\nranking: local | global", CRITERION)
    box(ax, xs[3], top, w, h, "4  fit to limits",
        "per group: min_channels,\nmax_fraction_per_layer, round_to\noverall: maximum_pruning_percent,\n"
        "max_params_reduction,\nmax_macs_reduction / target_speedup", SETTING)
    # bottom row: right to left
    box(ax, xs[3], bottom, w, h, "5  delete",
        "Surgeon: one rebuild for all\ngroups; weights sliced in numpy\n(Keras public API only)\n"
        "layers / exclude patterns\nchoose what may be touched", STEP)
    box(ax, xs[2], bottom, w, h, "6  verify",
        "forward pass on a few inputs:\noutput shape, finite values\nverify='exact': equal to the\n"
        "original with those channels\nzeroed (CLI: --verify exact)", STEP)
    box(ax, xs[1], bottom, w, h, "7  compile",
        "model_compile_fn(new_model)\ncalled on EVERY rebuilt model\n(CLI: the model's own compile\n"
        "config, else Adam 1e-3 +\ncrossentropy + accuracy)", CALLBACK)
    box(ax, xs[0], bottom, w, h, "8  finetune",
        "model_finetune_fn(new_model,\n  initial_epoch, end_epoch)\nend = initial + nb_finetune_epochs\n"
        "returns e.g. a keras History\nevaluate_fn(model) -> metric", CALLBACK)

    mid = top + h / 2
    for a, b in zip(xs[:-1], xs[1:]):
        arrow(ax, (a + w, mid), (b, mid))
    arrow(ax, (xs[3] + w / 2, top), (xs[3] + w / 2, bottom + h), "plan", offset=(0.35, -0.05))
    midb = bottom + h / 2
    for a, b in zip(xs[:0:-1], xs[-2::-1]):
        arrow(ax, (a, midb), (b + w, midb))

    # record / checkpoint and the way back
    box(ax, 0.95, 0.12, 7.35, 1.3, "9  record and checkpoint",
        "history: IterationRecord(removed, channels, params, MACs, metric)\noutput_dir: models/iteration_NNN.keras, "
        "logs/history.csv + .json,\nstate.json (atomic writes; resume=True continues)", SETTING, title_size=11)
    arrow(ax, (xs[0] + w / 2, bottom), (xs[0] + w / 2, 1.42))
    back = "#1F5F9F"  # the way back: box 9 -> left margin -> up -> box 1
    ax.plot([0.95, 0.45, 0.45], [0.77, 0.77, top + 0.6], color=back, linewidth=1.8)
    arrow(ax, (0.45, top + 0.6), (xs[0], top + 0.6), color=back)
    ax.text(0.3, 4.6, "next iteration", rotation=90, ha="center", va="center", fontsize=11, color=back,
            weight="bold")
    box(ax, 8.75, 0.12, 8.15, 1.3, "schedule and stop",
        "before each iteration: factor = prune_factor_scheduler_fn(factor, iteration)\n(ridurre.schedules); stop: "
        "maximum_prune_iterations, a pruning limit\nreached, or nothing left -> returns (pruned_model, last_epoch)",
        SETTING, title_size=11)
    arrow(ax, (8.3, 0.77), (8.75, 0.77))

    fig.legend(handles=[Patch(facecolor=STEP, edgecolor="#333333", label="the loop (ridurre)"),
                        Patch(facecolor=CRITERION, edgecolor="#333333", label="criterion hooks (subclass methods)"),
                        Patch(facecolor=CALLBACK, edgecolor="#333333", label="your callbacks"),
                        Patch(facecolor=SETTING, edgecolor="#333333", label="options and bookkeeping")],
               loc="upper center", bbox_to_anchor=(0.5, 0.885), ncols=4, fontsize=10, frameon=False)
    fig.savefig(path)
    return path


if __name__ == "__main__":
    print(main())
