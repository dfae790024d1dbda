"""Figures of the Tracr study: method AUCs per program, edge ROC curves, compressed accuracy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _columns(results: dict) -> list[tuple[str, str]]:
    first = next(iter(results.values()))["scores"]["effective"]
    return [(level, m) for level in ("nodes", "edges") for m in first[level]]


def plot_auc(results: dict, path: str) -> None:
    """Heatmaps ``program x method`` of ROC AUC, one panel per ground truth."""
    cols = _columns(results)
    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(2.2 + 0.9 * len(cols) * 2, 1.2 + 0.45 * len(names)),
                             squeeze=False)
    for ax, truth in zip(axes[0], ("effective", "structural")):
        grid = np.array([[results[n]["scores"][truth][lvl][m]["auc"] for lvl, m in cols]
                         for n in names], dtype=float)
        ax.imshow(np.nan_to_num(grid, nan=0.5), vmin=0.5, vmax=1.0, cmap="viridis",
                  aspect="auto")
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", va="center",
                    color="w" if np.isnan(v) or v < 0.8 else "k", fontsize=8)
        ax.set_xticks(range(len(cols)), [f"{m}\n({lvl})" for lvl, m in cols], fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(f"ROC AUC vs the {truth} circuit")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_edge_roc(results: dict, path: str, truth: str = "effective") -> None:
    """One panel per program: each edge method's ROC (ACDC: its threshold sweep)."""
    names = list(results)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 2.8 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        for method, (fpr, tpr) in results[name]["roc"][truth].items():
            auc = results[name]["scores"][truth]["edges"][method]["auc"]
            label = f"{method} ({'n/a' if auc is None else f'{auc:.2f}'})"
            ax.plot(fpr, tpr, marker="o" if method == "acdc" else None,
                    ms=3, label=label)
        ax.plot([0, 1], [0, 1], "k:", lw=0.7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"Edge ROC against the {truth} circuit", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
