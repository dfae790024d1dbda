"""Step 4: circuit discovery, ACDC and a learned edge mask, and their faithfulness.

Both search the node graph of :mod:`jinterp.patching.attr_graph` (edges from the embedding and
every head's output into every later head's query, key and value and into the logits) for a
small set of edges that, kept clean while every other edge carries its corrupted value, keeps
the metric:

- ACDC (Conmy et al. 2023, :func:`jinterp.patching.acdc`): from the logits backwards, remove
  each edge whose removal moves the metric by less than ``threshold``;
- a learned edge mask (:func:`jinterp.patching.learn_edge_mask`): a continuous mask trained
  with an L1 penalty ``sparsity``, then rounded.

Faithfulness (:func:`jinterp.patching.faithfulness`) is the fraction of the clean metric the
circuit alone recovers. The study then asks whether the circuit holds the edge path patching
singled out: previous-token head -> induction head *key*.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from jinterp import patching
from jinterp.patching import Node

API = ("acdc", "learn_edge_mask", "faithfulness", "Circuit")


def check_api() -> None:
    """Raises when :mod:`jinterp.patching` lacks the circuit-discovery functions."""
    missing = [name for name in API if not hasattr(patching, name)]
    if missing:
        raise RuntimeError(f"jinterp.patching has no {missing}: circuit discovery (ACDC, learned "
                           "edge masks, faithfulness) is not available in this checkout, so the "
                           "study cannot run its step 4. Update jinterp.")


def acdc_weights(log) -> dict:
    """``{(up, down): change}``: how much removing each edge moved the metric when ACDC tried it
    (the last time it was tried; NaN for edges removed untested)."""
    weights = {}
    for step in log.steps:
        for edge, change in zip(step.edges, step.changes):
            weights[edge] = float(change)
    return weights


def mask_weights(model, log) -> dict:
    """``{(up, down): soft mask}`` of every edge: the learned mask before its cutoff."""
    soft = patching.Circuit.from_mask(model, log.mask)
    full = patching.Circuit.full(model)
    return {(u, d): soft.weight(u, d) for u, d in full.edges()}


def discover_circuits(model, params, clean, corrupted, metric, *, acdc_threshold: float,
             sparsity: float, steps: int, lr: float, seed: int,
             prev_head: int | None, induction_heads: list[int], edge_mask: bool = True,
             chunk_size: int | None = None, tick: Callable[[str], None] | None = None) -> dict:
    """Runs ACDC (and, with ``edge_mask``, the learned edge mask) and scores the circuits.

    Returns:
        ``{"acdc": {...}, "edge_mask": {...}}``, each with ``circuit`` (the
        :class:`~jinterp.patching.Circuit`), ``weights`` (``{edge: weight}`` of its edges:
        ACDC's metric change on removal, the mask's soft value), ``edges`` (as strings),
        ``n_edges``, ``n_total``, ``faithfulness`` (:func:`jinterp.patching.faithfulness`),
        ``search`` (the search's own numbers) and ``k_edges``: which previous-token ->
        induction-head key edges it keeps.
    """
    check_api()
    acdc_circuit, acdc_log = patching.acdc(model, params, clean, corrupted, metric,
                                           acdc_threshold, chunk_size=chunk_size)
    if tick is not None:
        tick("acdc")
    searches = {
        "acdc": (acdc_circuit, acdc_weights(acdc_log),
                 {"threshold": acdc_threshold, "n_forward": acdc_log.n_forward,
                  "seconds": round(acdc_log.seconds, 2), "visits": len(acdc_log.steps),
                  "faithfulness": round(acdc_log.faithfulness, 4)}),
    }
    if edge_mask:
        mask_circuit, mask_log = patching.learn_edge_mask(
            model, params, clean, corrupted, metric, sparsity=sparsity, steps=steps, lr=lr,
            key=jax.random.key(seed))
        if tick is not None:
            tick("edge_mask")
        searches["edge_mask"] = (mask_circuit, mask_weights(model, mask_log),
                                 {"sparsity": sparsity, "steps": steps, "lr": lr,
                                  "final_loss": round(float(mask_log.loss[-1]), 4),
                                  "seconds": round(mask_log.seconds, 2),
                                  "faithfulness": round(mask_log.faithfulness, 4)})
    out = {}
    for name, (circuit, weights, search) in searches.items():
        edges = circuit.edges()
        kept = set(edges)
        k_edges = ({} if prev_head is None else
                   {f"L0H{prev_head}->L1H{h}.k": (Node.head(0, prev_head), Node.k(1, h)) in kept
                    for h in induction_heads})
        out[name] = {
            "circuit": circuit, "weights": {e: weights.get(e, 1.0) for e in edges},
            "edges": [[str(u), str(d)] for u, d in edges],
            "n_edges": circuit.n_edges, "n_total": circuit.n_total,
            "faithfulness": float(patching.faithfulness(model, params, circuit, clean,
                                                        corrupted, metric)),
            "search": search, "k_edges": k_edges,
        }
        if tick is not None:
            tick(f"faithfulness {name}")
    return out


def n_steps(edge_mask: bool) -> int:
    """Progress-bar ticks of :func:`discover_circuits`: each search and its faithfulness."""
    return 4 if edge_mask else 2
