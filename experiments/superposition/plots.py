"""Figures for the superposition studies (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from .analysis import DIMENSIONALITY_LINES, PHASE_NAMES  # noqa: E402

_PHASE_COLORS = ListedColormap(["#d9d9d9", "#2b83ba", "#d7191c", "#fdae61"])


def _save(fig, path, dpi=120):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_pentagon(result: dict, path: str) -> str:
    """Columns of the best 2-D model as arrows from the origin, with their D_i."""
    W = result["W"]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    theta = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(theta), np.sin(theta), color="0.85", lw=1)
    for i in range(W.shape[1]):
        ax.annotate("", xy=W[:, i], xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=f"C{i}"))
        ax.text(*(W[:, i] * 1.12), f"{result['dimensionalities'][i]:.2f}", ha="center", va="center")
    gaps = ", ".join(f"{g:.1f}" for g in result["angles_deg"])
    ax.set_title(f"n=5, m=2, 1-S=0.05 (best seed)\ngaps: {gaps} deg", fontsize=9)
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.set_xlabel("hidden dim 0")
    ax.set_ylabel("hidden dim 1")
    return _save(fig, path)


def plot_phase_diagram(result: dict, path: str) -> str:
    """Trained (best seed) and analytic phases side by side on importance x density axes."""
    r, p = result["relative_importance"], result["density"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    panels = (("trained (best of seeds)", result["trained_phase"]),
              ("analytic optimum", result["analytic_phase"]))
    for ax, (title, phase) in zip(axes, panels):
        ax.pcolormesh(p, r, phase, cmap=_PHASE_COLORS, vmin=-0.5, vmax=3.5, shading="nearest")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("feature density 1-S")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("relative importance of extra feature")
    handles = [Patch(color=_PHASE_COLORS(i), label=name) for i, name in enumerate(PHASE_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(f"n=2, m=1 phase diagram: agreement {result['agreement']:.1%}", fontsize=11)
    fig.subplots_adjust(bottom=0.2)
    return _save(fig, path)


def plot_dims_per_feature(result: dict, path: str) -> str:
    """m / ||W||_F^2 against 1/(1-S) with the sticky values 1 and 1/2 marked."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(result["inv_density"], result["dims_per_feature"], "o-", color="k", ms=4)
    for y in (1.0, 0.5):
        ax.axhline(y, color="C3", ls="--", lw=1)
        ax.text(result["inv_density"][-1], y + 0.02, f"{y:g}", color="C3", ha="right")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("1 / (1 - S)")
    ax.set_ylabel("dimensions per feature  m / ||W||_F^2")
    ax.set_title("uniform superposition", fontsize=10)
    return _save(fig, path)


def plot_feature_dimensionality(result: dict, path: str) -> str:
    """Every feature's D_i against its model's 1/(1-S), lines at the polytope fractions."""
    d = result["feature_dimensionality"]  # [instance feature]
    x = np.repeat(result["inv_density"][:, None], d.shape[1], axis=1)
    jitter = np.exp(np.random.default_rng(0).uniform(-0.03, 0.03, x.shape))
    fig, ax = plt.subplots(figsize=(6, 4))
    rep = result["represented"]
    ax.scatter((x * jitter)[~rep], d[~rep], s=3, alpha=0.25, color="0.6", lw=0,
               label="not represented (||W_i||^2 <= 0.5)")
    ax.scatter((x * jitter)[rep], d[rep], s=4, alpha=0.4, color="k", lw=0, label="represented")
    ax.legend(loc="upper right", fontsize=7, markerscale=3)
    for label, y in DIMENSIONALITY_LINES.items():
        ax.axhline(y, color="C0", ls=":", lw=1)
        ax.text(result["inv_density"][0] * 0.97, y, label, color="C0", ha="right", va="center",
                fontsize=8)
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.1)
    ax.set_xlabel("1 / (1 - S)")
    ax.set_ylabel("feature dimensionality D_i")
    peaks = ", ".join(f"{v:.3f}" for v in result["dimensionality_peaks"])
    ax.set_title(f"feature dimensionality (histogram peaks: {peaks})", fontsize=9)
    return _save(fig, path)
