"""One PNG per reading method, drawn from the study's ``summary.json`` numbers alone.

Every figure reads only the summary (nothing else), so what a figure shows is exactly what
``summary.json`` records.
"""

from __future__ import annotations

import os

import numpy as np

from jinterp.probes.plot import pyplot  # matplotlib on Agg, imported on first use

FIGURES = ("dla", "logit_lens", "tuned_lens", "probes", "steering", "composition",
           "weight_processing")


def _save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, f"{name}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    pyplot().close(fig)
    return path


def dla(s: dict, out_dir: str) -> str:
    """Mean direct logit attribution per component, repeated vs first-occurrence targets."""
    plt, d = pyplot(), s["dla"]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    x = np.arange(len(d["labels"]))
    ax.bar(x - 0.2, d["repeated"], 0.4, label="repeated (2nd copy)")
    ax.bar(x + 0.2, d["first_occurrence"], 0.4, label="first occurrence")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, d["labels"], rotation=45, fontsize=8)
    ax.set(ylabel="logit of the next token\n(minus mean logit)",
           title=f"Direct logit attribution, 2-layer induction model (top: "
                 f"{d['top_head_repeated']})")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "dla")


def logit_lens(s: dict, out_dir: str) -> str:
    """Per-layer next-token loss and accuracy of the logit lens, both models."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, model, mark in (("induction", "2-layer attn-only", "o"), ("norm", "4-layer LN", "s")):
        c = s["logit_lens"][key]
        x = np.arange(len(c["layers"]))
        for kind, style in (("repeated", "-"), ("first_occurrence", "--")):
            label = f"{model}, {kind.replace('_', ' ')}"
            left.plot(x, c[f"loss_{kind}"], style, marker=mark, label=label)
            right.plot(x, c[f"accuracy_{kind}"], style, marker=mark, label=label)
    left.axhline(s["ln_vocab"], color="grey", lw=0.8, label="ln(d_vocab)")
    left.set(xlabel="layer read (last = model output)", ylabel="next-token loss (nats)",
             title="Logit lens: loss")
    right.set(xlabel="layer read (last = model output)", ylabel="top-1 accuracy",
              title="Logit lens: accuracy")
    left.legend(fontsize=7)
    return _save(fig, out_dir, "logit_lens")


def tuned_lens(s: dict, out_dir: str) -> str:
    """Held-out KL to the final logits by layer, logit lens vs tuned lens (LN model)."""
    plt, t = pyplot(), s["tuned_lens"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.arange(len(t["logit_kl"]))
    left.plot(x, t["logit_kl"], marker="o", label="logit lens")
    left.plot(x, t["tuned_kl"], marker="s", label="tuned lens")
    left.set(xlabel="layer (residual entering the block)", ylabel="KL(final || lens), nats",
             title="4-layer LN model: KL to the output", yscale="log")
    right.plot(x, t["logit_ce"], marker="o", label="logit lens")
    right.plot(x, t["tuned_ce"], marker="s", label="tuned lens")
    right.axhline(t["final_ce"], color="grey", ls="--", label="model output")
    right.set(xlabel="layer", ylabel="next-token loss (nats)", title="Next-token loss")
    for ax in (left, right):
        ax.set_xticks(x)
        ax.legend(fontsize=8)
    return _save(fig, out_dir, "tuned_lens")


def probes(s: dict, out_dir: str) -> str:
    """Previous-token probe: accuracy by layer (control task, selectivity) and by position."""
    plt, p = pyplot(), s["probes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.arange(len(p["layers"]))
    names = ["embed", *[f"after L{l}" for l in range(len(x) - 1)]]
    left.plot(x, p["test_by_layer"], marker="o", label="probe (test)")
    left.plot(x, p["train_by_layer"], marker=".", ls=":", label="probe (train)")
    left.plot(x, p["control_by_layer"], marker="x", label="control task (test)")
    left.plot(x, p["selectivity_by_layer"], marker="s", ls="--", label="selectivity")
    left.axhline(p["chance"], color="grey", lw=0.8, label="majority class")
    left.set_xticks(x, names)
    left.set(ylim=(-0.05, 1.05), ylabel="accuracy",
             title="Probe for the previous token's identity")
    left.legend(fontsize=7)
    for name, row in zip(names, p["test"]):
        right.plot(p["positions"], row, marker="o", label=name)
    right.set(ylim=(-0.05, 1.05), xlabel="position", ylabel="test accuracy", title="By position")
    right.legend(fontsize=7)
    return _save(fig, out_dir, "probes")


def steering(s: dict, out_dir: str) -> str:
    """Left: ablating each layer's direction vs random ones. Right: steering sweeps."""
    plt, t = pyplot(), s["steering"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    x = np.arange(len(t["layers"]))
    names = [f"after L{l}" for l in range(len(x))]
    left.bar(x, t["ablated_separation_fraction"], 0.6, label="diff-in-means direction")
    mean, std = t["random_separation_fraction_mean"], t["random_separation_fraction_std"]
    left.axhspan(mean - std, mean + std, color="grey", alpha=0.3,
                 label="random directions (mean ± sd)")
    left.axhline(1.0, color="black", lw=0.6)
    left.set_xticks(x, names)
    left.set(ylabel="A-vs-B logit separation kept", title="Directional ablation (all layers)")
    left.legend(fontsize=7)
    for name, flipped in zip(names, t["steered_flipped"]):
        right.plot(t["scales"], flipped, marker="o", label=f"v({name}), added there")
    right.plot(t["scales"], t["random_steered_flipped"], "--", color="grey",
               label=f"random vector, after L{len(x) - 1}")
    right.set(xlabel="scale (1 = mean difference)", ylabel="share of B-prompts answering A",
              title="Steering at the last position", ylim=(-0.05, 1.05))
    right.legend(fontsize=7)
    return _save(fig, out_dir, "steering")


def composition(s: dict, out_dir: str) -> str:
    """Q/K/V composition heatmaps from layer-0 heads (rows) to layer-1 heads (columns)."""
    plt, c = pyplot(), s["composition"]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    k = np.asarray(c["k_composition_l0_to_l1"])
    top = max(np.max(np.asarray(c[f"{m}_composition_l0_to_l1"])) for m in "qkv")
    for ax, mode in zip(axes, "qkv"):
        m = np.asarray(c[f"{mode}_composition_l0_to_l1"])
        image = ax.imshow(m, vmin=0, vmax=top, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white")
        ax.set(xlabel="layer-1 head (reader)", ylabel="layer-0 head (writer)",
               title=f"{mode.upper()}-composition", xticks=range(k.shape[1]),
               yticks=range(k.shape[0]))
    fig.colorbar(image, ax=axes, shrink=0.8, label=f"score (random: {c['random_baseline']:.2f})")
    return _save(fig, out_dir, "composition")


def weight_processing(s: dict, out_dir: str) -> str:
    """Left: max |log-prob change| after each step. Right: DLA sum error without / with."""
    plt, w = pyplot(), s["weight_processing"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    labels = [*w["steps"], "process(...)"]
    values = [*w["max_abs_logprob_diff"], w["process_max_abs_logprob_diff"]]
    left.barh(np.arange(len(labels)), np.maximum(values, 1e-9))
    left.axvline(w["float32_resolution_of_max_logprob"], color="red", ls="--", lw=0.8,
                 label="float32 eps x max |log p|")
    left.set_yticks(np.arange(len(labels)), labels, fontsize=8)
    left.invert_yaxis()
    left.set(xscale="log", xlabel="max |log p - log p original| (cumulative)",
             title="4-layer LN model: each step keeps the outputs")
    left.legend(fontsize=8)
    err = w["dla_sum_max_abs_error"]
    right.bar([0, 1], np.maximum([err["unprocessed"], err["processed"]], 1e-9))
    right.set_xticks([0, 1], ["unprocessed", "processed"])
    right.set(yscale="log", ylabel="max |sum of DLA - logit|", title="DLA adds up")
    return _save(fig, out_dir, "weight_processing")


def all_figures(summary: dict, out_dir: str) -> list[str]:
    """Writes every figure into ``out_dir``; returns their paths in :data:`FIGURES` order."""
    return [globals()[name](summary, out_dir) for name in FIGURES]
