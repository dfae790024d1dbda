"""A PNG grid of attention patterns: one destination x source panel per (layer, head).

The static companion of :mod:`jinterp.viz.pattern_html` (which is interactive). Patterns are
``blocks.{l}.attn.hook_pattern`` of one prompt: ``cache.stack("attn.hook_pattern")[:, b]``
gives ``[layer, n_heads, q_pos, k_pos]``. Weights are in ``[0, 1]`` and drawn on a fixed
``0..1`` scale (so heads compare); rows are destinations (queries), columns sources (keys).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from jaxtyping import ArrayLike, Float

from jinterp.viz._common import as_array, plt, save, token_labels

MAX_TICKS = 32


def check_patterns(patterns: Float[ArrayLike, "..."], what: str) -> np.ndarray:
    """``[layer, n_heads, q_pos, k_pos]`` from 4-D patterns or 3-D ``[n_heads, q, k]`` (one
    layer), with a clear error for anything else (e.g. a batch axis left in)."""
    x = np.asarray(patterns, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    hint = ("Pass one prompt's patterns: cache.stack('attn.hook_pattern')[:, b] "
            "(or cache['blocks.L.attn.hook_pattern'][b] for one layer).")
    x = as_array(x, ("layer", "n_heads", "q_pos", "k_pos"), what, hint)
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"{what}: patterns need q_pos == k_pos; got shape {tuple(x.shape)}. "
                         + hint)
    return x


def plot_attention_patterns(patterns: Float[ArrayLike, "..."], out: str | os.PathLike, *,
                            tokens=None, tokenizer=None, title: str | None = None,
                            cmap: str = "Blues") -> Path:
    """Writes a layer x head grid of attention patterns to the PNG ``out``.

    Args:
        patterns: ``[layer, n_heads, q_pos, k_pos]`` (or ``[n_heads, q_pos, k_pos]``).
        tokens, tokenizer: position labels (strings, or ids and a tokenizer); shown on the
            first column and the last row when there are at most 32 positions.
    """
    x = check_patterns(patterns, "plot_attention_patterns")
    n_layers, n_heads, n_pos, _ = x.shape
    labels = token_labels(tokens, n_pos, tokenizer)
    side = min(max(1.8, 0.12 * n_pos + 1.0), 5.0)
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(side * n_heads + 1, side * n_layers),
                             squeeze=False, layout="constrained")
    image = None
    for (l, h), ax in np.ndenumerate(axes):
        image = ax.imshow(x[l, h], cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(f"L{l}H{h}", fontsize=9)
        ticks = n_pos <= MAX_TICKS
        ax.set_xticks(range(n_pos) if ticks and l == n_layers - 1 else [],
                      labels if ticks and l == n_layers - 1 else [], rotation=90, fontsize=6)
        ax.set_yticks(range(n_pos) if ticks and h == 0 else [],
                      labels if ticks and h == 0 else [], fontsize=6)
    fig.supxlabel("source (key) position", fontsize=9)
    fig.supylabel("destination (query) position", fontsize=9)
    fig.colorbar(image, ax=axes.reshape(-1).tolist(), shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, out)
