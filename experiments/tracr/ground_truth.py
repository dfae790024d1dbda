"""Ground-truth circuits of Tracr-compiled programs, read from the weights.

Tracr gives every RASP variable its own orthogonal residual directions, so which node talks to
which is visible in the weights: an upstream node ``u`` (the embedding, a head, an MLP) writes
the row space of its output map (``W_E`` / ``W_pos``; a head's ``W_V[h] @ W_O[h]``; an MLP's
``W_out``), a downstream input ``d`` reads the column space of its input map (``W_Q`` / ``W_K``
/ ``W_V`` of one head, ``W_in``, ``W_U``). The edge ``u -> d`` exists iff ``write_u @ read_d`` is
non-zero. Nodes and edges use :mod:`jinterp.patching.attr_graph`'s names (``Node.head(l, h)``,
``Node.q(l, h)``, ...), so per-edge scores of ``eap`` / circuits of ``acdc`` score directly.

Caveat: the structural circuit includes edges that carry the constant ``one`` direction, the
BOS token and the positions, which are identical in a clean and a corrupted input of the same
length; patching cannot see them. :func:`ground_truth` therefore also takes ``varying``, the
residual directions that differ between inputs, and keeps only edges carrying one of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jinterp.patching import Node, downstream_nodes, edge_index, upstream_nodes

TOL = 1e-6  # weight products below this are zero (Tracr's weights are exact small numbers)


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """The nodes (heads, MLPs) and edges (``(upstream, downstream)``) a program uses."""

    nodes: frozenset[Node]
    edges: frozenset[tuple[Node, Node]]

    def node_labels(self, model) -> np.ndarray:
        """``[n_up - 1]`` bool over the heads and MLPs of ``upstream_nodes(model)[1:]``."""
        return np.array([n in self.nodes for n in upstream_nodes(model)[1:]])

    def edge_labels(self, model) -> np.ndarray:
        """``[n_edges]`` bool in ``edge_index(model)`` order."""
        up, down = upstream_nodes(model), downstream_nodes(model)
        return np.array([(up[i], down[j]) in self.edges for i, j in edge_index(model)])


def _writes(model, params) -> dict[Node, np.ndarray]:
    """Each upstream node's write map ``[rows, d_model]`` (its output's row space)."""
    b = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in params["blocks"].items()}
    out = {Node.embed(): np.concatenate([np.asarray(params["embed"]["W_E"]),
                                         np.asarray(params["pos_embed"]["W_pos"])])}
    for l in range(model.n_layers):
        for h in range(model.dims["n_heads"]):
            out[Node.head(l, h)] = b["attn"]["W_V"][l, h] @ b["attn"]["W_O"][l, h]  # d_m d_m
        out[Node.mlp(l)] = b["mlp"]["W_out"][l]  # d_mlp d_model
    return out


def _reads(model, params) -> dict[Node, np.ndarray]:
    """Each downstream input's read map ``[d_model, cols]``."""
    b = {k: {n: np.asarray(v) for n, v in d.items()} for k, d in params["blocks"].items()}
    out = {Node.final(): np.asarray(params["unembed"]["W_U"])}
    for l in range(model.n_layers):
        for h in range(model.dims["n_heads"]):
            for kind, w in (("q", "W_Q"), ("k", "W_K"), ("v", "W_V")):
                out[Node(kind, l, h)] = b["attn"][w][l, h]  # d_model d_head
        out[Node.mlp_in(l)] = b["mlp"]["W_in"][l]  # d_model d_mlp
    return out


def _owner(node: Node) -> Node | None:
    """The upstream node whose input ``node`` is (None for the final residual)."""
    if node.kind in ("q", "k", "v"):
        return Node.head(node.layer, node.index)
    return Node.mlp(node.layer) if node.kind == "mlp_in" else None


def ground_truth(model, params, varying: np.ndarray | None = None) -> GroundTruth:
    """The edges whose write and read maps overlap, and the nodes on a path to the output.

    Args:
        model, params: a port from ``models.from_tracr``.
        varying: ``[d_model]`` bool, the residual directions an edge must carry to count
            (None: every direction, the structural circuit).
    """
    keep = np.ones(model.d_model, bool) if varying is None else np.asarray(varying, bool)
    writes, reads = _writes(model, params), _reads(model, params)
    up, down = upstream_nodes(model), downstream_nodes(model)
    edges = set()
    for i, j in edge_index(model):
        u, d = up[i], down[j]
        product = writes[u][:, keep] @ reads[d][keep]
        if np.abs(product).max(initial=0.0) > TOL:
            edges.add((u, d))
    # keep only what reaches the output: walk back from the final residual
    alive, frontier = set(), [Node.final()]
    while frontier:
        d = frontier.pop()
        for u, dd in edges:
            if dd == d and u not in alive:
                alive.add(u)
                frontier += [x for x in down if _owner(x) == u]
    edges = {(u, d) for u, d in edges if u in alive and (d.kind == "final" or _owner(d) in alive)}
    nodes = frozenset(n for n in alive if n.kind != "embed")
    return GroundTruth(nodes, frozenset(edges))


def varying_directions(model, params, io, inputs: list[list]) -> np.ndarray:
    """``[d_model]`` bool: residual directions whose final value differs between ``inputs``.

    Every Tracr variable keeps its own directions to the end, so the final residual holds them
    all; ``inputs`` should share one length (what a clean / corrupted pair of a sweep shares).
    """
    import jinterp

    tokens = io.encode(inputs)
    _, cache = jinterp.run_with_cache(model, params, tokens,
                                      names=[f"blocks.{model.n_layers - 1}.hook_resid_post"])
    resid = np.asarray(cache[f"blocks.{model.n_layers - 1}.hook_resid_post"])  # b p d_model
    return np.ptp(resid, axis=0).max(axis=0) > 1e-4
