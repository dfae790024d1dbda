"""A circuit graph as a PNG, drawn with matplotlib alone (no graphviz).

Nodes are those of :class:`jinterp.patching.Node`: the embedding at the bottom, each layer's
heads (and MLP) on one row above the last, the final residual (the logits) on top. An edge
``u -> d`` joins an output node ``u`` (``Node.embed()``, ``Node.head(l, h)``, ``Node.mlp(l)``) to
an input slot ``d`` of a later node (``Node.q/k/v(l, h)``, ``Node.mlp_in(l)``,
``Node.final()``); it is drawn into the node that owns the slot, coloured by the slot (q, k, v,
MLP input, final), as wide as ``|weight|`` relative to the largest, and labelled with the
weight. Nodes that touch an edge are drawn dark; the rest of the model stays grey for
orientation. A circuit with ``edges()`` (e.g. what :func:`jinterp.patching.acdc` returns)
passes as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.patches import FancyArrowPatch

from jinterp.patching.attr_graph import DOWNSTREAM_KINDS, UPSTREAM_KINDS, Node
from jinterp.viz._common import plt, save

SLOT_COLOURS = {"q": "tab:blue", "k": "tab:orange", "v": "tab:green", "mlp_in": "tab:purple",
                "final": "tab:gray"}
SLOT_BEND = {"q": -0.25, "k": 0.0, "v": 0.25, "mlp_in": 0.1, "final": 0.0}
MAX_LABELS = 24


def _edge_list(edges, weights: Mapping | None) -> list[tuple[Node, Node, float]]:
    """``[(up, down, weight)]`` from edges ``(u, d)`` / ``(u, d, w)``, a mapping or ``.edges()``."""
    if hasattr(edges, "edges") and callable(edges.edges):
        edges = edges.edges()
    if isinstance(edges, Mapping):
        edges = [(u, d, w) for (u, d), w in edges.items()]
    out = []
    for item in edges:
        if len(item) not in (2, 3):
            raise ValueError(f"An edge is (up, down) or (up, down, weight); got {item!r}.")
        up, down = item[0], item[1]
        weight = item[2] if len(item) == 3 else (weights or {}).get((up, down), 1.0)
        if not (isinstance(up, Node) and up.kind in UPSTREAM_KINDS):
            raise ValueError(f"Edge {item!r}: the first node must be an output node "
                             f"({UPSTREAM_KINDS}: Node.embed(), Node.head(l, h), Node.mlp(l)).")
        if not (isinstance(down, Node) and down.kind in DOWNSTREAM_KINDS):
            raise ValueError(f"Edge {item!r}: the second node must be an input node "
                             f"({DOWNSTREAM_KINDS}: Node.q/k/v(l, h), Node.mlp_in(l), "
                             "Node.final()).")
        if not np.isfinite(float(weight)):
            raise ValueError(f"Edge {up} -> {down}: its weight {weight} is not finite; drop the "
                             "edge or give it a number.")
        out.append((up, down, float(weight)))
    return out


def _shape(edges, n_layers, n_heads, has_mlp):
    layers = [n.layer for e in edges for n in e[:2] if n.layer is not None]
    heads = [n.index for e in edges for n in e[:2] if n.index is not None]
    n_layers = n_layers if n_layers is not None else (max(layers) + 1 if layers else 1)
    n_heads = n_heads if n_heads is not None else (max(heads) + 1 if heads else 1)
    if has_mlp is None:
        has_mlp = any(n.kind in ("mlp", "mlp_in") for e in edges for n in e[:2])
    for e in edges:
        for n in e[:2]:
            if (n.layer is not None and n.layer >= n_layers) or (
                    n.index is not None and n.index >= n_heads):
                raise ValueError(f"Edge node {n} lies outside a model of {n_layers} layers and "
                                 f"{n_heads} heads; pass n_layers= / n_heads= of the model.")
    return n_layers, n_heads, has_mlp


def node_positions(n_layers: int, n_heads: int, has_mlp: bool) -> dict[Node, tuple[float, float]]:
    """``(x, y)`` of every output node and of the final residual: a row per layer."""
    width = n_heads + (1 if has_mlp else 0)
    centre = (width - 1) / 2
    pos = {Node.embed(): (centre, 0.0), Node.final(): (centre, float(n_layers + 1))}
    for l in range(n_layers):
        for h in range(n_heads):
            pos[Node.head(l, h)] = (float(h), float(l + 1))
        if has_mlp:
            pos[Node.mlp(l)] = (float(n_heads), float(l + 1))
    return pos


def _owner(down: Node) -> Node:
    """The drawn node that an input slot belongs to."""
    if down.kind == "final":
        return Node.final()
    if down.kind == "mlp_in":
        return Node.mlp(down.layer)
    return Node.head(down.layer, down.index)


def _label(node: Node) -> str:
    if node.kind == "head":
        return f"L{node.layer}H{node.index}"
    if node.kind == "mlp":
        return f"MLP{node.layer}"
    return "logits" if node.kind == "final" else "embed"


def plot_circuit(edges: Iterable | Mapping | Any, out: str | os.PathLike, *,
                 weights: Mapping | None = None,
                 n_layers: int | None = None, n_heads: int | None = None,
                 has_mlp: bool | None = None, title: str | None = None,
                 weight_name: str = "weight") -> Path:
    """Writes the circuit graph of ``edges`` to the PNG ``out``.

    Args:
        edges: ``[(up, down)]`` or ``[(up, down, weight)]`` of :class:`~jinterp.patching.Node`,
            a ``{(up, down): weight}`` mapping, or an object with ``edges()`` (a circuit).
        weights: ``{(up, down): weight}`` for edges given without one (default 1).
        n_layers, n_heads, has_mlp: the model's shape (default: the smallest that holds the
            edges). Grouped-query k/v slots are drawn into the query head of the same index.
        weight_name: what the weights are (the legend's title), e.g. ``"effect (nats)"``.
    """
    edge_list = _edge_list(edges, weights)
    n_layers, n_heads, has_mlp = _shape(edge_list, n_layers, n_heads, has_mlp)
    pos = node_positions(n_layers, n_heads, has_mlp)
    used = {u for u, _, _ in edge_list} | {_owner(d) for _, d, _ in edge_list}
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(set(x for x, _ in pos.values())) + 1.5),
                                    1.3 * (n_layers + 2) + 0.6))
    biggest = max([abs(w) for _, _, w in edge_list] + [1e-12])
    for up, down, weight in edge_list:
        slot = down.kind
        arrow = FancyArrowPatch(pos[up], pos[_owner(down)], arrowstyle="-|>", mutation_scale=12,
                                connectionstyle=f"arc3,rad={SLOT_BEND[slot]}",
                                color=SLOT_COLOURS[slot], lw=0.8 + 4.2 * abs(weight) / biggest,
                                alpha=0.85, shrinkA=14, shrinkB=14, zorder=1)
        ax.add_patch(arrow)
        if len(edge_list) <= MAX_LABELS:
            (x0, y0), (x1, y1) = pos[up], pos[_owner(down)]
            bend = SLOT_BEND[slot]
            mx, my = (x0 + x1) / 2 + bend * (y1 - y0) / 2, (y0 + y1) / 2 - bend * (x1 - x0) / 2
            ax.text(mx, my, f"{weight:.2g}", fontsize=7, color=SLOT_COLOURS[slot], ha="center",
                    va="center", bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5})
    for node, (x, y) in pos.items():
        on = node in used
        ax.scatter([x], [y], s=900, zorder=2, color="#335" if on else "#ddd",
                   edgecolor="k" if on else "#bbb")
        ax.text(x, y, _label(node), fontsize=7, ha="center", va="center", zorder=3,
                color="white" if on else "#888")
    xs = [x for x, _ in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-0.7, n_layers + 1.7)
    ax.set_yticks(range(n_layers + 2), ["embed"] + [f"layer {l}" for l in range(n_layers)]
                  + ["logits"], fontsize=8)
    ax.set_xticks([])
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    slots = sorted({d.kind for _, d, _ in edge_list}, key=list(SLOT_COLOURS).index)
    handles = [plt.Line2D([], [], color=SLOT_COLOURS[s], lw=2.5,
                          label={"mlp_in": "MLP input", "final": "logits"}.get(s, f"into {s}"))
               for s in slots]
    if handles:
        ax.legend(handles=handles, title=f"edge (width: |{weight_name}|)", fontsize=7,
                  title_fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"circuit: {len(edge_list)} edges", fontsize=10)
    return save(fig, out)


def edges_from_scores(scores: Mapping, top: int | None = None,
                      min_abs: float = 0.0) -> list[tuple[Node, Node, float]]:
    """The edges of a ``{(up, down): score}`` mapping with ``|score| >= min_abs``, largest
    first, at most ``top`` of them: a circuit to draw from edge scores (EAP, path patching)."""
    items = sorted(scores.items(), key=lambda kv: -abs(float(kv[1])))
    kept = [(u, d, float(w)) for (u, d), w in items if abs(float(w)) >= min_abs]
    return kept if top is None else kept[: int(top)]


__all__ = ["edges_from_scores", "node_positions", "plot_circuit"]
