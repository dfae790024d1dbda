"""Figures of the induction-heads study (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jinterp.experiments.induction.phase import smooth  # noqa: E402
from jinterp.experiments.induction.train import METRICS  # noqa: E402


def _save(fig, out_dir: str, name: str) -> str:
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(a: dict, window: int, out_dir: str) -> str:
    """Left: 2-layer losses with the phase change marked. Right: 1-layer vs 2-layer."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.arange(1, len(a["history2"]) + 1)
    for column, style in (("loss_predictable", "-"), ("loss_random", "--"), ("loss", ":")):
        curve = smooth(a["history2"][:, METRICS.index(column)], window)
        left.plot(steps, curve, style, label=column)
    phase = a["phase2"]
    if phase is not None:
        left.axvspan(phase.start, phase.end, color="orange", alpha=0.2, label="drop (10%-90%)")
        left.axvline(phase.step, color="red", lw=1, label=f"phase change, step {phase.step}")
    for ax in (left, right):
        ax.axhline(a["ln_vocab"], color="grey", lw=0.8, label="ln(d_vocab)")
        ax.set_xlabel("step")
        ax.set_ylabel(f"cross-entropy (nats, {window}-step mean)")
    left.set_title("2-layer attention-only model")
    col = METRICS.index("loss_predictable")
    right.plot(steps, smooth(a["history2"][:, col], window), label="2 layers, repeated tokens")
    right.plot(steps, smooth(a["history1"][:, col], window), label="1 layer, repeated tokens")
    right.set_title("1 layer vs 2 layers (predictable targets)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    return _save(fig, out_dir, "loss_curve.png")


def _heatmap(ax, values: np.ndarray, title: str) -> None:
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    for (l, h), v in np.ndenumerate(values):
        ax.text(h, l, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.6 else "k",
                fontsize=8)
    plt.colorbar(im, ax=ax, fraction=0.046)


def head_scores(a: dict, out_dir: str) -> str:
    """Induction and previous-token scores per head, before and after the phase change."""
    fig, axes = plt.subplots(2, 2, figsize=(9, 5))
    b, steps = a["before"], a["snapshot_steps"]
    _heatmap(axes[0, 0], a["traj_induction"][b], f"induction score, step {steps[b]} (before)")
    _heatmap(axes[0, 1], a["traj_induction"][-1], f"induction score, step {steps[-1]} (after)")
    _heatmap(axes[1, 0], a["traj_previous"][b], f"previous-token score, step {steps[b]} (before)")
    _heatmap(axes[1, 1], a["traj_previous"][-1], f"previous-token score, step {steps[-1]} (after)")
    return _save(fig, out_dir, "head_scores.png")


def score_trajectories(a: dict, window: int, out_dir: str) -> str:
    """Every head's induction / previous-token score over training, with the loss behind."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = a["snapshot_steps"]
    loss = smooth(a["history2"][:, METRICS.index("loss_predictable")], window)
    for ax, key, title in ((axes[0], "traj_induction", "induction score"),
                           (axes[1], "traj_previous", "previous-token score")):
        for (l, h) in np.ndindex(a[key].shape[1:]):
            ax.plot(steps, a[key][:, l, h], "-" if l else "--", label=f"L{l}H{h}")
        twin = ax.twinx()
        twin.plot(np.arange(1, len(loss) + 1), loss, color="grey", alpha=0.4)
        twin.set_ylabel("loss on repeated tokens", color="grey")
        if a["phase2"] is not None:
            ax.axvline(a["phase2"].step, color="red", lw=1)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, out_dir, "score_trajectories.png")


def _bars(ax, values: np.ndarray, title: str, ylabel: str) -> None:
    labels = [f"L{l}H{h}" for l, h in np.ndindex(values.shape)]
    colors = ["tab:blue" if l == 0 else "tab:orange" for l, _ in np.ndindex(values.shape)]
    ax.bar(labels, values.reshape(-1), color=colors)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=7)


def patching(a: dict, out_dir: str) -> str:
    """The three vmapped per-head sweeps of :mod:`.patching`."""
    p = a["patching"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _bars(axes[0], p["ablation_increase"], "zero-ablate head (clean r r)", "loss increase (nats)")
    _bars(axes[1], p["noising_increase"], "patch corrupted head into clean run",
          "loss increase (nats)")
    _bars(axes[2], p["denoising_recovery"], "patch clean head into corrupted run",
          "fraction of loss gap recovered")
    return _save(fig, out_dir, "patching.png")


def composition(a: dict, baseline: float, out_dir: str) -> str:
    """K-composition L0 -> L1 heads, and OV copying scores of every head."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    im = left.imshow(a["kcomp"], cmap="magma")
    left.set_xticks(range(a["kcomp"].shape[1]))
    left.set_yticks(range(a["kcomp"].shape[0]))
    left.set_xlabel("layer-1 head (reader: keys)")
    left.set_ylabel("layer-0 head (writer)")
    left.set_title(f"K-composition (random baseline {baseline:.2f})", fontsize=9)
    for (w, r), v in np.ndenumerate(a["kcomp"]):
        left.text(r, w, f"{v:.2f}", ha="center", va="center", color="c", fontsize=8)
    plt.colorbar(im, ax=left, fraction=0.046)
    _bars(right, a["copying"], "OV copying score: sum(eig) / sum(|eig|) of W_E W_V W_O W_U",
          "score")
    right.set_ylim(-1, 1)
    return _save(fig, out_dir, "composition.png")


def all_figures(a: dict, summary: dict, window: int, out_dir: str) -> list[str]:
    """Writes every figure; returns their paths."""
    return [loss_curves(a, window, out_dir), head_scores(a, out_dir),
            score_trajectories(a, window, out_dir), patching(a, out_dir),
            composition(a, summary["k_composition_random_baseline"], out_dir)]
