"""Figures for interpretability results: patching heatmaps, attention patterns, circuits.

- :mod:`jinterp.viz.heatmaps`: one PNG heatmap per patching-sweep result shape (``[layer,
  pos]`` with token labels, ``[layer, head]``, ``[layer, pos, head]``, ``[layer, head, dest]``,
  ``[layer, head, dest, src]``, the ``*_every`` stacks), and :func:`plot_sweep`, which picks the
  figure from the sweep's name;
- :mod:`jinterp.viz.patterns`: a PNG grid of attention patterns (layer x head);
- :mod:`jinterp.viz.pattern_html`: a self-contained interactive HTML pattern viewer;
- :mod:`jinterp.viz.circuit_graph`: a circuit graph of :class:`jinterp.patching.Node` edges.

Matplotlib runs on the Agg backend (no display needed). Every function checks its input's
shape and names the shape it expects.
"""

from jinterp.viz.circuit_graph import edges_from_scores, node_positions, plot_circuit
from jinterp.viz.heatmaps import (
    figure_for,
    plot_block_every,
    plot_head_by_pos_every,
    plot_head_every,
    plot_head_stack,
    plot_layer_head,
    plot_layer_head_dest,
    plot_layer_head_dest_src,
    plot_layer_pos,
    plot_layer_pos_head,
    plot_sweep,
)
from jinterp.viz.pattern_html import attention_viewer_html, write_attention_viewer
from jinterp.viz.patterns import plot_attention_patterns

__all__ = [
    "attention_viewer_html", "edges_from_scores", "figure_for", "node_positions",
    "plot_attention_patterns", "plot_block_every", "plot_circuit", "plot_head_by_pos_every",
    "plot_head_every", "plot_head_stack", "plot_layer_head", "plot_layer_head_dest",
    "plot_layer_head_dest_src", "plot_layer_pos", "plot_layer_pos_head", "plot_sweep",
    "write_attention_viewer",
]
