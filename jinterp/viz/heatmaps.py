"""Heatmaps of every patching-sweep result shape (``jinterp.patching``'s TransformerLens shapes).

One function per shape, each writing one PNG (and :func:`plot_sweep`, which picks the function
from the sweep's name through :data:`jinterp.patching.SITES`, the one table of what a sweep
returns):

====================================  ==========================  ===============================
shape                                 sweeps                      figure
====================================  ==========================  ===============================
``[layer, pos]``                      resid_pre/mid, attn/mlp_out  layer x position (token labels)
``[layer, head]``                     attn_head_*_all_pos         layer x head
``[layer, pos, head]``                attn_head_*_by_pos          one layer x position panel a head
``[layer, head, dest]``               attn_head_pattern_by_pos    one head x dest panel a layer
``[layer, head, dest, src]``          pattern_dest_src_pos        layer x head grid of dest x src
``[3, layer, pos]``                   block_every                 resid_pre, attn_out, mlp_out
``[5, layer, head]``                  attn_head_all_pos_every     out, q, k, v, pattern
``[5, layer, pos, head]``             attn_head_by_pos_every      5 rows (sites) x heads
``[n, layer, head]`` + names          any n head maps             side by side (plot_head_stack)
====================================  ==========================  ===============================

Panels of one figure share one colour scale (so they compare), diverging and centred on
``center`` (0 by default: patching effects are signed; pass ``center=None`` for min..max).
Positions are labelled ``"{token} {i}"`` when ``tokens`` (strings, or ids with a
``tokenizer``) are given. Small grids print their values in the cells.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import ArrayLike, Float

from jinterp.patching.sites import EVERY, SITES
from jinterp.viz._common import as_array, plt, save, symmetric_limits, token_labels

BLOCK_EVERY = EVERY["block_every"]
HEAD_EVERY = ("out", "q", "k", "v", "pattern")
ANNOTATE_MAX_CELLS = 64
CMAP = "RdBu_r"


def _panel(ax, grid: np.ndarray, *, xlabels, ylabels, xlabel: str, ylabel: str, title: str,
           limits: dict, cmap: str, show_x: bool = True, show_y: bool = True,
           annotate: bool = True):
    """One heatmap on ``ax``; returns the image (for the colour bar).

    ``show_x`` / ``show_y``: tick labels and axis label on this panel (small multiples label
    only the outer panels); ``annotate``: print the values in the cells.
    """
    image = ax.imshow(grid, cmap=cmap, aspect="auto", interpolation="nearest", **limits)
    if show_x:
        ax.set_xticks(range(grid.shape[1]), xlabels, rotation=90 if len(xlabels) > 8 else 0,
                      fontsize=7 if len(xlabels) > 16 else 8)
        ax.set_xlabel(xlabel, fontsize=8)
    else:
        ax.set_xticks([])
    if show_y:
        ax.set_yticks(range(grid.shape[0]), ylabels, fontsize=7 if len(ylabels) > 16 else 8)
        ax.set_ylabel(ylabel, fontsize=8)
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if annotate:
        middle = (limits["vmin"] + limits["vmax"]) / 2
        span = max(limits["vmax"] - limits["vmin"], 1e-12)
        for (r, c), v in np.ndenumerate(grid):
            dark = abs(v - middle) > 0.3 * span
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="w" if dark else "k")
    return image


def _figure(panels: list[dict], *, ncols: int, title: str | None, center: float | None,
            cmap: str, out, panel_size: tuple[float, float]) -> Path:
    """Small multiples with one shared colour scale and colour bar.

    Panels share their axes' labels, so only the bottom row shows x ticks and the first column
    y ticks; values are printed in the cells when the whole figure has few cells.
    """
    stacked = np.concatenate([p["grid"].reshape(-1) for p in panels])
    limits = symmetric_limits(stacked, center)
    nrows = math.ceil(len(panels) / ncols)
    width, height = panel_size
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols + 1.2, height * nrows + 0.6),
                             squeeze=False, layout="constrained")
    annotate = stacked.size <= ANNOTATE_MAX_CELLS * 2 and panels[0]["grid"].size <= (
        ANNOTATE_MAX_CELLS)
    image = None
    for i, (ax, panel) in enumerate(zip(axes.reshape(-1), panels)):
        col = i % ncols
        last_in_column = i + ncols >= len(panels)
        image = _panel(ax, limits=limits, cmap=cmap, show_x=last_in_column, show_y=col == 0,
                       annotate=annotate, **panel)
    for ax in axes.reshape(-1)[len(panels):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.reshape(-1).tolist(), shrink=0.9)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, out)


def _size_for(n_x: int, n_y: int) -> tuple[float, float]:
    return (min(max(2.2, 0.28 * n_x + 1.0), 14.0), min(max(1.6, 0.28 * n_y + 0.9), 12.0))


def _layers(n: int) -> list[str]:
    return [f"L{l}" for l in range(n)]


def _heads(n: int) -> list[str]:
    return [f"H{h}" for h in range(n)]


def plot_layer_pos(values: Float[ArrayLike, "layer pos"], out: str | os.PathLike, *,
                   tokens=None, tokenizer=None, title: str | None = None,
                   center: float | None = 0.0, cmap: str = CMAP) -> Path:
    """``[layer, pos]`` (``get_act_patch_resid_pre`` and friends): layer x position."""
    x = as_array(values, ("layer", "pos"), "plot_layer_pos")
    xl = token_labels(tokens, x.shape[1], tokenizer)
    panel = {"grid": x, "xlabels": xl, "ylabels": _layers(x.shape[0]), "xlabel": "position",
             "ylabel": "layer", "title": title or "layer x position"}
    return _figure([panel], ncols=1, title=None, center=center, cmap=cmap, out=out,
                   panel_size=_size_for(x.shape[1], x.shape[0]))


def plot_layer_head(values: Float[ArrayLike, "layer n_heads"], out: str | os.PathLike, *,
                    title: str | None = None, center: float | None = 0.0,
                    cmap: str = CMAP) -> Path:
    """``[layer, head]`` (``get_act_patch_attn_head_*_all_pos``): layer x head."""
    x = as_array(values, ("layer", "head"), "plot_layer_head")
    panel = {"grid": x, "xlabels": _heads(x.shape[1]), "ylabels": _layers(x.shape[0]),
             "xlabel": "head", "ylabel": "layer", "title": title or "layer x head"}
    return _figure([panel], ncols=1, title=None, center=center, cmap=cmap, out=out,
                   panel_size=_size_for(x.shape[1], x.shape[0]))


def plot_layer_pos_head(values: Float[ArrayLike, "layer pos n_heads"], out: str | os.PathLike, *,
                        tokens=None, tokenizer=None, title: str | None = None,
                        center: float | None = 0.0, cmap: str = CMAP, ncols: int = 4) -> Path:
    """``[layer, pos, head]`` (``*_by_pos``): one layer x position panel per head."""
    x = as_array(values, ("layer", "pos", "head"), "plot_layer_pos_head")
    xl = token_labels(tokens, x.shape[1], tokenizer)
    panels = [{"grid": x[:, :, h], "xlabels": xl, "ylabels": _layers(x.shape[0]),
               "xlabel": "position", "ylabel": "layer", "title": f"head {h}"}
              for h in range(x.shape[2])]
    return _figure(panels, ncols=min(ncols, len(panels)), title=title, center=center, cmap=cmap,
                   out=out, panel_size=_size_for(x.shape[1], x.shape[0]))


def plot_layer_head_dest(values: Float[ArrayLike, "layer n_heads q_pos"], out: str | os.PathLike, *,
                         tokens=None, tokenizer=None, title: str | None = None,
                         center: float | None = 0.0, cmap: str = CMAP, ncols: int = 4) -> Path:
    """``[layer, head, dest]`` (``attn_head_pattern_by_pos``): one head x dest panel per layer."""
    x = as_array(values, ("layer", "head", "dest"), "plot_layer_head_dest")
    xl = token_labels(tokens, x.shape[2], tokenizer)
    panels = [{"grid": x[l], "xlabels": xl, "ylabels": _heads(x.shape[1]),
               "xlabel": "destination position", "ylabel": "head", "title": f"layer {l}"}
              for l in range(x.shape[0])]
    return _figure(panels, ncols=min(ncols, len(panels)), title=title, center=center, cmap=cmap,
                   out=out, panel_size=_size_for(x.shape[2], x.shape[1]))


def plot_layer_head_dest_src(values: Float[ArrayLike, "layer n_heads q_pos k_pos"],
                             out: str | os.PathLike, *, tokens=None, tokenizer=None,
                             title: str | None = None, center: float | None = 0.0,
                             cmap: str = CMAP) -> Path:
    """``[layer, head, dest, src]`` (``attn_head_pattern_dest_src_pos``): a layer x head grid of
    destination x source panels."""
    x = as_array(values, ("layer", "head", "dest", "src"), "plot_layer_head_dest_src")
    if x.shape[2] != x.shape[3]:
        raise ValueError(f"plot_layer_head_dest_src takes dest == src positions; got shape "
                         f"{tuple(x.shape)}.")
    labels = token_labels(tokens, x.shape[2], tokenizer)
    panels = [{"grid": x[l, h], "xlabels": labels, "ylabels": labels, "xlabel": "source",
               "ylabel": "destination", "title": f"L{l}H{h}"}
              for l in range(x.shape[0]) for h in range(x.shape[1])]
    side = min(max(2.0, 0.22 * x.shape[2] + 1.0), 8.0)
    return _figure(panels, ncols=x.shape[1], title=title, center=center, cmap=cmap, out=out,
                   panel_size=(side, side))


def plot_block_every(values: Float[ArrayLike, "3 layer pos"], out: str | os.PathLike, *,
                     tokens=None, tokenizer=None, title: str | None = None,
                     center: float | None = 0.0, cmap: str = CMAP) -> Path:
    """``[3, layer, pos]`` (``get_act_patch_block_every``): resid_pre, attn_out, mlp_out."""
    x = as_array(values, ("3", "layer", "pos"), "plot_block_every")
    xl = token_labels(tokens, x.shape[2], tokenizer)
    panels = [{"grid": x[i], "xlabels": xl, "ylabels": _layers(x.shape[1]),
               "xlabel": "position", "ylabel": "layer", "title": name}
              for i, name in enumerate(BLOCK_EVERY)]
    return _figure(panels, ncols=3, title=title, center=center, cmap=cmap, out=out,
                   panel_size=_size_for(x.shape[2], x.shape[1]))


def plot_head_stack(values: Float[ArrayLike, "n layer n_heads"], names: Sequence[str],
                    out: str | os.PathLike, *, title: str | None = None,
                    center: float | None = 0.0, cmap: str = CMAP, ncols: int = 5) -> Path:
    """``[n, layer, head]``: ``n`` named layer x head maps side by side on one colour scale
    (several sweeps over heads, e.g. path patching into q, k and v)."""
    x = as_array(values, ("n", "layer", "head"), "plot_head_stack")
    if len(names) != x.shape[0]:
        raise ValueError(f"plot_head_stack: {len(names)} names for {x.shape[0]} maps; give one "
                         "name per map.")
    panels = [{"grid": x[i], "xlabels": _heads(x.shape[2]), "ylabels": _layers(x.shape[1]),
               "xlabel": "head", "ylabel": "layer", "title": str(name)}
              for i, name in enumerate(names)]
    return _figure(panels, ncols=min(ncols, len(panels)), title=title, center=center, cmap=cmap,
                   out=out, panel_size=_size_for(x.shape[2], x.shape[1]))


def plot_head_every(values: Float[ArrayLike, "5 layer n_heads"], out: str | os.PathLike, *,
                    title: str | None = None, center: float | None = 0.0,
                    cmap: str = CMAP) -> Path:
    """``[5, layer, head]`` (``get_act_patch_attn_head_all_pos_every``): out, q, k, v, pattern."""
    x = as_array(values, ("5", "layer", "head"), "plot_head_every")
    return plot_head_stack(x, [f"head {name}" for name in HEAD_EVERY], out, title=title,
                           center=center, cmap=cmap)


def plot_head_by_pos_every(values: Float[ArrayLike, "5 layer pos n_heads"], out: str | os.PathLike,
                           *, tokens=None, tokenizer=None, title: str | None = None,
                           center: float | None = 0.0, cmap: str = CMAP) -> Path:
    """``[5, layer, pos, head]`` (``get_act_patch_attn_head_by_pos_every``): a row per site
    (out, q, k, v, pattern), a column per head, each layer x position."""
    x = as_array(values, ("5", "layer", "pos", "head"), "plot_head_by_pos_every")
    xl = token_labels(tokens, x.shape[2], tokenizer)
    panels = [{"grid": x[i, :, :, h], "xlabels": xl, "ylabels": _layers(x.shape[1]),
               "xlabel": "position", "ylabel": "layer", "title": f"{name} H{h}"}
              for i, name in enumerate(HEAD_EVERY) for h in range(x.shape[3])]
    return _figure(panels, ncols=x.shape[3], title=title, center=center, cmap=cmap, out=out,
                   panel_size=_size_for(x.shape[2], x.shape[1]))


_BY_NODE_AXES = {
    ("pos",): plot_layer_pos,
    ("n_heads",): plot_layer_head,
    ("n_kv_heads",): plot_layer_head,
    ("pos", "n_heads"): plot_layer_pos_head,
    ("pos", "n_kv_heads"): plot_layer_pos_head,
    ("n_heads", "q_pos"): plot_layer_head_dest,
    ("n_heads", "q_pos", "k_pos"): plot_layer_head_dest_src,
}
_BY_EVERY = {"block_every": plot_block_every, "attn_head_all_pos_every": plot_head_every,
             "attn_head_by_pos_every": plot_head_by_pos_every}
_NO_TOKENS = (plot_layer_head, plot_head_every)


def figure_for(sweep: str):
    """The figure function for a sweep's result: ``"resid_pre"``, ``"get_act_patch_resid_pre"``,
    ``"get_attr_patch_attn_head_out_all_pos"``, ``"block_every"``, ..."""
    name = sweep
    for prefix in ("get_act_patch_", "get_attr_patch_"):
        name = name.removeprefix(prefix)
    if name in _BY_EVERY:
        return _BY_EVERY[name]
    if name in SITES:
        return _BY_NODE_AXES[SITES[name].node_axes]
    raise ValueError(f"Unknown sweep {sweep!r}; plot_sweep knows {sorted(SITES)} and "
                     f"{sorted(_BY_EVERY)} (with or without get_act_patch_ / get_attr_patch_).")


def plot_sweep(values: Float[ArrayLike, "..."], sweep: str, out: str | os.PathLike, *,
               tokens: Sequence | None = None, tokenizer=None, **kwargs) -> Path:
    """Plots a patching sweep's result with the figure for its shape (see the module table).

    Args:
        values: the sweep's result (any ``get_act_patch_*`` / ``get_attr_patch_*``).
        sweep: the sweep's name, with or without ``get_act_patch_`` (the shape follows from it).
        out: the PNG to write.
        tokens, tokenizer: position labels (ignored by the per-head figures, which have none).
        kwargs: ``title``, ``center``, ``cmap`` (and ``ncols`` for small multiples).
    """
    fn = figure_for(sweep)
    if fn in _NO_TOKENS:
        return fn(values, out, **kwargs)
    return fn(values, out, tokens=tokens, tokenizer=tokenizer, **kwargs)
