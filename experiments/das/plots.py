"""The DAS study's figure, drawn from its summary alone."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jinterp.experiments.das.study import BLOCK  # noqa: E402

LABELS = {"hook_embed": "embedding", BLOCK: "block 0 output"}


def iia_figure(summary: dict, path: str) -> str:
    """IIA against the subspace size ``k``: learned (solid) and random (dashed) per hook and
    variable, chance dotted, boundless DAS's learned size as a marker."""
    rows = summary["rows"]
    variables = sorted({r["variable"] for r in rows})
    fig, axes = plt.subplots(1, len(variables), figsize=(4.6 * len(variables), 4.2),
                             squeeze=False, sharey=True)
    for ax, variable in zip(axes[0], variables):
        for i, hook in enumerate(sorted({r["hook"] for r in rows})):
            mine = sorted((r for r in rows if r["hook"] == hook and r["variable"] == variable),
                          key=lambda r: r["k"])
            ks = [r["k"] for r in mine]
            color = f"C{i}"
            ax.plot(ks, [r["iia"] for r in mine], "o-", color=color,
                    label=f"DAS at {LABELS.get(hook, hook)}")
            ax.plot(ks, [r["iia_random"] for r in mine], "x--", color=color,
                    label=f"random subspace at {LABELS.get(hook, hook)}")
        chance = rows[[r["variable"] for r in rows].index(variable)]["chance"]
        ax.axhline(chance, color="gray", ls=":", label="null intervention (chance)")
        b = summary["boundless"].get(variable)
        if b:
            ax.plot([b["n_dims"]], [b["iia"]], "*", ms=14, color="C3",
                    label=f"boundless DAS (learned size {b['learned_size']:.1f})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("subspace size k")
        ax.set_title(f"aligning {variable}")
        ax.set_ylim(0, 1.05)
    axes[0][0].set_ylabel("interchange-intervention accuracy (held out)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=3)
    fig.suptitle("DAS on a toy MLP trained in-process (V1 = a==b, V2 = c==d, out 2 V1 + V2)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
