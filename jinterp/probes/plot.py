"""Accuracy-by-layer figures of a probe fit: real task vs control, and the layer x pos map."""

from __future__ import annotations

import numpy as np

from jinterp.probes.fit import ProbeResult


def plot_probe_scores(result: ProbeResult, path: str, *, pos: int = -1,
                      title: str = "probe") -> None:
    """Writes a PNG: scores by layer at position ``pos`` (train, test, control, chance) and a
    layer x position heat map of the test score."""
    plt = pyplot()
    test, train = np.asarray(result.test_score), np.asarray(result.train_score)
    layers = np.arange(test.shape[0])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    left.plot(layers, test[:, pos], marker="o", label="test")
    left.plot(layers, train[:, pos], marker=".", ls=":", label="train")
    if result.control_score is not None:
        left.plot(layers, np.asarray(result.control_score)[:, pos], marker="x",
                  label="control task (test)")
    if result.metric == "accuracy":
        left.axhline(result.chance, color="grey", ls="--", label="chance")
    left.set(xlabel="layer", ylabel=result.metric, title=f"{title}: position {pos}")
    left.legend(fontsize=8)
    image = right.imshow(test.T, aspect="auto", origin="lower", cmap="viridis")
    right.set(xlabel="layer", ylabel="position", title=f"test {result.metric}")
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use (importing this package
    does not pay for matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
