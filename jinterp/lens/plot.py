"""Figures of a tuned-lens run: per-layer KL / loss, logit vs tuned lens, and training curves."""

from __future__ import annotations

import numpy as np

from jinterp.probes.plot import pyplot  # matplotlib on Agg, imported on first use


def plot_tuned_lens(history: dict, summary: dict, path: str) -> None:
    """Writes a three-panel PNG: KL by layer, next-token loss by layer, KL during training."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    layers = np.arange(len(summary["logit_kl"]))
    for key, label in (("logit", "logit lens"), ("tuned", "tuned lens")):
        axes[0].plot(layers, summary[f"{key}_kl"], marker="o", label=label)
        axes[1].plot(layers, summary[f"{key}_ce"], marker="o", label=label)
    axes[1].axhline(summary["final_ce"], color="grey", ls="--", label="model")
    axes[0].set(xlabel="layer (residual entering the block)", ylabel="KL(final || lens), nats",
                title="KL to the final logits")
    axes[1].set(xlabel="layer", ylabel="next-token loss, nats", title="Next-token loss")
    kl = np.asarray(history["kl"]) if history["kl"] else np.zeros((0, len(layers)))
    for layer in range(kl.shape[1]):
        axes[2].plot(history["step"], kl[:, layer], label=f"layer {layer}")
    axes[2].set(xlabel="step", ylabel="KL on the batch", title="Training", yscale="log")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

