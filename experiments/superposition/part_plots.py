"""Figures for the ``--part`` studies: dimensionality, correlated, computation, basis."""

from __future__ import annotations

import numpy as np

from .geometry import POLYTOPE_LINES
from .plots import _save, plt


def plot_dimensionality(result: dict, path: str, title: str) -> str:
    """D_i of every represented feature against 1/(1-S), D* curve, lines with their fractions."""
    d, rep, inv = result["feature_dimensionality"], result["represented"], result["inv_density"]
    x = np.repeat(inv[:, None], d.shape[1], axis=1)
    jitter = np.exp(np.random.default_rng(0).uniform(-0.025, 0.025, x.shape))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter((x * jitter)[rep], d[rep], s=4, alpha=0.35, color="k", lw=0,
               label="D_i (represented features)")
    ax.plot(inv, result["dims_per_feature"], "-", color="C1", lw=1.5, label="m / ||W||_F^2")
    for name, y in POLYTOPE_LINES.items():
        frac = result["line_fractions"][name]
        ax.axhline(y, color="C0", ls=":", lw=1)
        offset = {"2/5": 0.012, "3/8": -0.012}.get(name, 0.0)  # 0.025 apart: keep both legible
        ax.text(inv[-1] * 1.08, y + offset, f"{name}: {frac:.1%}", color="C0", va="center",
                fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("1 / (1 - S)")
    ax.set_ylabel("feature dimensionality D_i")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    ax.set_title(f"{title}: {result['lines_held']} of 5 lines hold >= 3% of "
                 f"{result['represented_features']} represented features", fontsize=9)
    return _save(fig, path)


def plot_peak_gram_blocks(result: dict, path: str, peaks: list[float]) -> str:
    """For each D_i peak, the Gram matrix W^T W of one tegum factor whose features sit on it."""
    W, labels, d = result["W"], result["factor_labels"], result["feature_dimensionality"]
    picks = []
    for peak in peaks:
        best = None
        for s in range(W.shape[0]):
            for c in np.unique(labels[s][labels[s] >= 0]):
                members = np.nonzero(labels[s] == c)[0]
                err = abs(np.median(d[s, members]) - peak)
                if members.size >= 2 and (best is None or err < best[0]):
                    best = (err, s, members)
        if best is not None:
            picks.append((peak, best[1], best[2]))
    fig, axes = plt.subplots(1, max(len(picks), 1), figsize=(3.2 * max(len(picks), 1), 3.3))
    axes = np.atleast_1d(axes)
    for ax, (peak, s, members) in zip(axes, picks):
        G = W[s][:, members].T @ W[s][:, members]
        rank = int(np.sum(np.linalg.svd(W[s][:, members], compute_uv=False) > 0.1 *
                          np.linalg.norm(W[s][:, members], 2)))
        ax.imshow(G, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(f"peak {peak:.3f}: k={members.size}, rank {rank}\n"
                     f"1/(1-S)={result['inv_density'][s]:.2f}, "
                     f"median D={np.median(d[s, members]):.3f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return _save(fig, path, dpi=70)


def plot_correlated(result: dict, path: str) -> str:
    """One row per experiment, one panel per density: the 2-D feature arrows, pairs coloured."""
    names = [k for k in result if k != "density"]
    dens = result["density"]
    fig, axes = plt.subplots(len(names), len(dens), figsize=(2.2 * len(dens), 2.3 * len(names)))
    for row, name in enumerate(names):
        for col, p in enumerate(dens):
            ax = axes[row, col]
            W = result[name]["W"][col]
            for i in range(W.shape[1]):
                ax.annotate("", xy=W[:, i], xytext=(0, 0),
                            arrowprops=dict(arrowstyle="-|>", color=f"C{i // 2}",
                                            ls="-" if i % 2 == 0 else "--"))
            ax.set_xlim(-1.4, 1.4)
            ax.set_ylim(-1.4, 1.4)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            angles = ", ".join(f"{a:.0f}" for a in result[name]["pair_angles_deg"][col])
            ax.set_title(f"1-S={p:g}; pair angles {angles}", fontsize=7)
        axes[row, 0].set_ylabel(f"{name}\n({result[name]['match_fraction']:.0%} match)",
                                fontsize=8)
    return _save(fig, path)


def _stack_plot(ax, W, importance_rank, title):
    """Per-neuron stacked bars of |W[k, i]| (positive up, negative down), coloured by feature."""
    cmap = plt.get_cmap("viridis")
    n_neurons, n_feat = W.shape
    order = np.argsort([importance_rank[np.argmax(np.abs(W[k]))] for k in range(n_neurons)])
    for x, k in enumerate(order):
        up = down = 0.0
        for i in np.argsort(-np.abs(W[k])):
            h = W[k, i]
            if abs(h) < 1e-3:
                continue
            color = cmap(importance_rank[i] / max(n_feat - 1, 1))
            if h > 0:
                ax.bar(x, h, bottom=up, color=color, width=0.85, lw=0)
                up += h
            else:
                ax.bar(x, h, bottom=down, color=color, width=0.85, lw=0)
                down += h
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])


def plot_neuron_stacks(Ws: np.ndarray, density: np.ndarray, path: str, label: str,
                       counts: dict) -> str:
    """One stacked-bar panel per density (neurons sorted by their top feature's importance)."""
    fig, axes = plt.subplots(1, len(density), figsize=(2.6 * len(density), 2.8), sharey=True)
    axes = np.atleast_1d(axes)
    rank = np.arange(Ws.shape[2])
    for j, ax in enumerate(axes):
        _stack_plot(ax, Ws[j], rank, f"1-S={density[j]:g}\nmono {counts['monosemantic'][j]}, "
                                     f"poly {counts['polysemantic'][j]}")
    axes[0].set_ylabel(f"{label} weight per neuron")
    return _save(fig, path)


def plot_computed(result: dict, path: str) -> str:
    """Computed sides and features against density, with the m and m/2 ceilings."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.plot(result["density"], result["n_sides"], "D-", color="C2",
            label="sides computed alone (one neuron each without superposition)")
    ax.plot(result["density"], result["n_computed"], "o-", color="k",
            label="features computed (beats best constant by 10%)")
    ax.plot(result["density"], result["n_both_signs"], "s-", color="C0",
            label="both signs (rel. error < 0.1)")
    ax.axhline(result["n_neurons"], color="C3", ls=":", label="m neurons: sides without superp.")
    ax.axhline(result["no_superposition_max"], color="C3", ls="--",
               label="m/2: both signs without superposition")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("feature density 1 - S")
    ax.set_ylabel("features or sides")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_basis_summary(result: dict, path: str) -> str:
    """Aligned fraction and mono/polysemantic neuron counts against density, with control."""
    dens = result["density"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.5, 3.3))
    a.plot(dens, result["relu"]["aligned_fraction"], "o-", color="k", label="ReLU hidden")
    a.plot(dens, result["linear_control"]["aligned_fraction"], "s--", color="0.5",
           label="linear hidden (control)")
    a.set_ylabel("represented features on one neuron")
    b.plot(dens, result["relu"]["monosemantic"], "o-", color="C0", label="monosemantic")
    b.plot(dens, result["relu"]["polysemantic"], "o-", color="C3", label="polysemantic")
    b.set_ylabel("neurons (ReLU hidden)")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("feature density 1 - S")
        ax.legend(fontsize=7)
    return _save(fig, path)
