"""ACDC: automatic circuit discovery by pruning edges (Conmy et al. 2023), batched.

ACDC starts from the full graph and visits the downstream nodes (inputs) in reverse
topological order -- the final residual, then the last layer's MLP input, its heads' value, key
and query inputs, and so on back to layer 0. At each node it tries removing each incoming edge
(the edge then carries the corrupted value, :mod:`jinterp.patching.circuit`) and keeps the
removal if the metric moves by less than ``threshold``.

**Deviation: one vmapped call per node.** The paper's greedy loop tries one edge at a time and
judges each against the circuit as it stands after the previous removals. Here every candidate
edge into a node is tried in *one* compiled call (``vmap`` over the masks ``circuit - e``,
``chunk_size`` at a time), each against the same circuit, and every edge that passes is
removed together. Two edges that are each dispensable but not both (redundant paths) are then
both removed where the greedy loop would keep one; nodes are still visited in ACDC's order, so
later nodes see the effect of earlier removals. ``group="layer"`` batches every q/k/v input of
a layer in one call too (fewer, larger calls; a looser approximation of the greedy order).
The metric of the current circuit is the first row of each call, so a node costs one call.

As in ACDC, a node whose output no longer reaches anything has its incoming edges removed
without a test (its inputs cannot matter), and the default metric is ``KL(clean || circuit)``
(:func:`~jinterp.patching.circuit.kl_to_clean`) with a signed test (an edge goes if the KL
grows by less than ``threshold``); any other metric is tested on ``|change|``.
"""

from __future__ import annotations

import dataclasses
import time

import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from jinterp.model import HookedModel
from jinterp.patching.attr_checks import MetricFn, positive_int
from jinterp.patching.attr_graph import Node, downstream_nodes, upstream_nodes
from jinterp.patching.circuit import (
    Circuit,
    CircuitKL,
    baselines,
    circuit_metrics,
    prepare,
    split_metric,
)
from jinterp.patching.eap import edge_index


@dataclasses.dataclass(frozen=True)
class AcdcStep:
    """One visit: the node(s) whose incoming edges were tried, and what each trial gave.

    Attributes:
        nodes: the downstream node(s) visited (one, or a layer's q/k/v inputs).
        base: the metric of the circuit before this step's removals.
        edges: the tried edges ``(upstream, downstream)``.
        changes: metric(circuit - edge) - base, one per tried edge (NaN: removed untested,
            its node's output is unused).
        removed: which of ``edges`` were removed.
    """

    nodes: tuple[Node, ...]
    base: float
    edges: tuple[tuple[Node, Node], ...]
    changes: Float[np.ndarray, " n"]
    removed: tuple[bool, ...]


@dataclasses.dataclass(frozen=True)
class AcdcLog:
    """What :func:`acdc` did.

    Attributes:
        steps: one :class:`AcdcStep` per visit, in visiting order.
        metric_clean / metric_corrupted: the metric of the full and the empty circuit.
        metric_final: the metric of the circuit returned.
        faithfulness: ``(final - corrupted) / (clean - corrupted)``.
        n_forward: masked forward passes run (tried circuits, including padding).
        seconds: wall time of the search.
    """

    steps: tuple[AcdcStep, ...]
    metric_clean: float
    metric_corrupted: float
    metric_final: float
    faithfulness: float
    n_forward: int
    seconds: float


def _bucket(n: int) -> int:
    """Calls are padded to a power of two rows (at least 8), so a search compiles a handful of
    programs (one on a toy model) whatever the in-degrees of its nodes."""
    return max(8, 1 << max(n - 1, 1).bit_length())


def _owners(model: HookedModel, node: Node) -> list[int]:
    """Indices (in upstream_nodes) of the outputs that read ``node``'s input; [] for final."""
    up = {n: i for i, n in enumerate(upstream_nodes(model))}
    if node.kind == "final":
        return []
    if node.kind == "mlp_in":
        return [up[Node.mlp(node.layer)]]
    if node.kind == "q":
        return [up[Node.head(node.layer, node.index)]]
    group = model.dims["n_heads"] // model.dims["n_kv_heads"]  # query heads per kv head
    return [up[Node.head(node.layer, h)] for h in range(node.index * group,
                                                        (node.index + 1) * group)]


def _visits(model: HookedModel, group: str) -> list[tuple[Node, ...]]:
    """Downstream nodes in reverse topological order, one per visit or a layer's q/k/v."""
    order = list(reversed(downstream_nodes(model)))
    if group == "node":
        return [(n,) for n in order]
    visits: list[tuple[Node, ...]] = []
    for node in order:
        attn = node.kind in ("q", "k", "v")
        if attn and visits and visits[-1][0].kind in ("q", "k", "v") and \
                visits[-1][0].layer == node.layer:
            visits[-1] = visits[-1] + (node,)
        else:
            visits.append((node,))
    return visits


def _check_threshold(threshold) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"threshold must be a number >= 0; got {threshold!r}.")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold={threshold} must be a finite number >= 0: an edge is removed "
                         "when removing it changes the metric by less than threshold (e.g. "
                         "0.01 for the KL default).")
    return float(threshold)


def acdc(model: HookedModel, params, clean_tokens, corrupted_tokens, metric: MetricFn | None,
         threshold: float, *, chunk_size: int | None = None, group: str = "node",
         signed: bool | None = None) -> tuple[Circuit, AcdcLog]:
    """Prunes the full graph to a circuit with ACDC, one vmapped call per node.

    Args:
        model, params: the model.
        clean_tokens: ``[batch, pos]`` prompts the circuit must explain.
        corrupted_tokens: where removed edges take their values (same shape).
        metric: ``logits -> scalar``; None for ``KL(clean || circuit)`` at every position
            (:func:`~jinterp.patching.circuit.kl_to_clean`, ACDC's default; pass your own
            ``kl_to_clean(clean_logits, positions)`` to read some positions only).
        threshold: an edge is removed when removing it changes the metric by less than this
            (``>= 0``; 0 removes only edges with no effect at all).
        chunk_size: tried circuits vmapped at once (memory); None: all of a call at once.
        group: ``"node"`` (one call per downstream node) or ``"layer"`` (one call for all q/k/v
            inputs of a layer).
        signed: test ``metric(circuit - e) - metric(circuit) < threshold`` (a metric to keep
            low, like KL) instead of ``|change| < threshold``; None: signed for a
            :class:`~jinterp.patching.circuit.CircuitKL` (the default), else not.

    Returns:
        ``(circuit, log)``: the binary :class:`Circuit` found and an :class:`AcdcLog`.
    """
    threshold = _check_threshold(threshold)
    if group not in ("node", "layer"):
        raise ValueError(f"group must be 'node' or 'layer'; got {group!r}.")
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size", "the tried circuits vmapped at once (or None)")
    start = time.perf_counter()
    inputs, metric = prepare(model, params, clean_tokens, corrupted_tokens, metric)
    signed = isinstance(metric, CircuitKL) if signed is None else bool(signed)
    leaves, static = split_metric(metric)
    index = edge_index(model)
    up_nodes, down_nodes = upstream_nodes(model), downstream_nodes(model)
    mask = np.ones(len(index), np.float32)
    steps, n_forward = [], 0

    def evaluate(masks: np.ndarray) -> np.ndarray:
        nonlocal n_forward
        rows = _bucket(len(masks))
        padded = np.concatenate([masks, np.repeat(masks[:1], rows - len(masks), 0)])
        chunk = rows if chunk_size is None else min(int(chunk_size), rows)
        n_forward += rows
        values = circuit_metrics(params, jnp.asarray(padded), inputs, leaves, model=model,
                                 metric_static=static, chunk=chunk)
        return np.asarray(values)[:len(masks)]

    for visit in _visits(model, group):
        live = [j for j in np.flatnonzero(mask) if down_nodes[index[j, 1]] in visit]
        if not live:
            continue
        dead = [j for j in live if _unused(model, down_nodes[index[j, 1]], mask, index)]
        tried = [j for j in live if j not in set(dead)]
        changes = np.full(len(live), np.nan, np.float32)
        removed = [j in set(dead) for j in live]
        base = float("nan")
        if tried:
            masks = np.repeat(mask[None], len(tried) + 1, 0)
            masks[np.arange(1, len(tried) + 1), tried] = 0.0
            values = evaluate(masks)
            base, diff = float(values[0]), values[1:] - values[0]
            passed = (diff if signed else np.abs(diff)) < threshold
            for k, j in enumerate(tried):
                changes[live.index(j)] = diff[k]
                removed[live.index(j)] = bool(passed[k])
        mask[[j for j, r in zip(live, removed) if r]] = 0.0
        steps.append(AcdcStep(visit, base, tuple((up_nodes[index[j, 0]], down_nodes[index[j, 1]])
                                                 for j in live), changes, tuple(removed)))
    final = float(evaluate(mask[None])[0])
    base = baselines(model, params, clean_tokens, corrupted_tokens, metric)
    log = AcdcLog(tuple(steps), base.clean, base.corrupted, final, base.faithfulness(final),
                  n_forward, time.perf_counter() - start)
    return Circuit(jnp.asarray(mask), model), log


def _unused(model: HookedModel, node: Node, mask: np.ndarray, index: np.ndarray) -> bool:
    """Whether no output that reads ``node``'s input has a kept outgoing edge."""
    owners = _owners(model, node)
    if not owners:
        return False
    kept = index[mask > 0.5, 0]
    return not np.isin(owners, kept).any()
