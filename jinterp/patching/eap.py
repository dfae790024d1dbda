"""Edge attribution patching: EAP (Syed et al. 2023) and EAP-IG (Hanna et al. 2024).

Scores every edge ``u -> d`` of the node graph (:mod:`jinterp.patching.attr_graph`) with

    score(u -> d) = sum over batch and positions of (out_u(clean) - out_u(corrupted)) . g_d

where ``out_u`` is ``u``'s output in the residual stream (the embedding: the residual entering
block 0; a head: ``attn.hook_result``; an MLP: ``hook_mlp_out``) and ``g_d`` the gradient of
the metric with respect to ``d``'s *own* input (the residual as only that head's query, key or
value, that MLP, or the unembedding reads it; norms belong to the reader). This is the
denoising direction of :mod:`jinterp.patching.attribution` (clean edges into the corrupted
run, gradients on the corrupted run); swap the token arguments for noising.

``g_d`` comes from one ``jinterp.grad_cache`` pass (gradients at every ``hook_q`` / ``hook_k``
/ ``hook_v`` / ``mlp.hook_pre``) pulled back to the residual through the reader's own maps, one
vector-Jacobian product per input slot, all slots of a layer vmapped: layer ``l``'s block
(``start_at_layer=l``, ``stop_at_layer=l + 1``) is the map, so norms, biases, GQA and gated
MLPs need no special cases. **EAP-IG** averages ``g_d`` over ``steps`` runs whose input
embedding is ``corrupted + alpha (clean - corrupted)`` at midpoints ``alpha = (k + 1/2) /
steps``, vmapped in one program.

On post-norm models (Gemma 2 / 3) a head's output passes through ``ln1_post`` before it joins
the residual, so ``attn.hook_result`` deltas are the heads' outputs before that norm and the
scores of one layer's heads no longer add up to that layer's residual change.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jinterp.grad import grad_cache
from jinterp.interventions import Patch
from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.patching.attr_checks import MetricFn, positive_int, same_shape, scalar_metric
from jinterp.patching.attr_graph import Node, downstream_nodes, has_mlp, is_edge, upstream_nodes
from jinterp.plan import split_leaves
from jinterp.run import _rebuild, run_with_cache


@dataclasses.dataclass(frozen=True)
class EdgeScores:
    """Edge scores and the node index they refer to.

    Attributes:
        scores: ``[n_edges]`` float32, one per edge.
        edges: ``[n_edges, 2]`` int: ``(upstream index, downstream index)`` of each edge.
        upstream: the output nodes, indexed by ``edges[:, 0]`` (forward order).
        downstream: the input nodes, indexed by ``edges[:, 1]`` (forward order).
    """

    scores: Float[Array, " n"]
    edges: Int[np.ndarray, "n 2"]
    upstream: tuple[Node, ...]
    downstream: tuple[Node, ...]

    def matrix(self) -> Float[Array, "..."]:
        """``[upstream, downstream]`` scores, NaN where two nodes are not joined by an edge."""
        out = jnp.full((len(self.upstream), len(self.downstream)), jnp.nan, jnp.float32)
        return out.at[self.edges[:, 0], self.edges[:, 1]].set(self.scores)

    def top(self, k: int = 10) -> list[tuple[Node, Node, float]]:
        """The ``k`` edges of largest ``|score|``: ``(upstream, downstream, score)``."""
        scores = np.asarray(self.scores)
        order = np.argsort(-np.abs(scores))[:k]
        return [(self.upstream[self.edges[i, 0]], self.downstream[self.edges[i, 1]],
                 float(scores[i])) for i in order]


@functools.lru_cache(maxsize=64)
def edge_index(model: HookedModel) -> Int[np.ndarray, "n 2"]:
    """``[n_edges, 2]`` (upstream, downstream) indices of every edge of ``model``'s graph."""
    up, down = upstream_nodes(model), downstream_nodes(model)
    pairs = [(i, j) for i, u in enumerate(up) for j, d in enumerate(down) if is_edge(model, u, d)]
    return np.asarray(pairs, np.int32).reshape(-1, 2)


def _grad_points(model: HookedModel) -> tuple[str, ...]:
    points = ["attn.hook_q", "attn.hook_k", "attn.hook_v", "hook_resid_pre"]
    if has_mlp(model):
        points += ["hook_resid_mid", "mlp.hook_pre"]
        if "mlp.hook_pre_linear" in model.block_point_axes:
            points.append("mlp.hook_pre_linear")
    return tuple(points + ["hook_resid_post"])


def _slots(n: int, offset: int, total: int) -> Float[Array, "..."]:
    return jax.nn.one_hot(jnp.arange(n) + offset, total)


def _attention_input_grads(model, params, layer, resid, grads) -> Float[Array, "..."]:
    """``g_d`` for every q, k and v slot of ``layer``: ``[n_heads + 2 n_kv_heads, b, p, d]``."""
    names = [block_name(layer, f"attn.hook_{x}") for x in "qkv"]

    def qkv(x):
        _, cache = run_with_cache(model, params, x, names=names, start_at_layer=layer,
                                  stop_at_layer=layer + 1)
        return tuple(cache[n] for n in names)

    _, pull = jax.vjp(qkv, resid)
    n_heads, n_kv = model.dims["n_heads"], model.dims["n_kv_heads"]
    total = n_heads + 2 * n_kv
    masks = [_slots(n_heads, 0, total), _slots(n_kv, n_heads, total),
             _slots(n_kv, n_heads + n_kv, total)]
    g = [grads[n] for n in names]

    def one(slot):  # the cotangent of one head's slot only
        cot = tuple(gi * m[:, slot][None, None, :, None] for gi, m in zip(g, masks))
        return pull(cot)[0]

    return jax.vmap(one)(jnp.arange(total))


def _mlp_input_grad(model, params, layer, resid_pre, resid_mid, grads
                    ) -> Float[Array, "batch pos d_model"]:
    points = [p for p in ("mlp.hook_pre", "mlp.hook_pre_linear") if p in model.block_point_axes]
    names = [block_name(layer, p) for p in points]

    def mlp_in(x):
        hooks = {block_name(layer, "hook_resid_mid"): Patch(x)}
        _, cache = run_with_cache(model, params, resid_pre, names=names, hooks=hooks,
                                  start_at_layer=layer, stop_at_layer=layer + 1)
        return tuple(cache[n] for n in names)

    _, pull = jax.vjp(mlp_in, resid_mid)
    return pull(tuple(grads[n] for n in names))[0]


def _input_grads(model, params, tokens, metric, hooks) -> Float[Array, "n batch pos d"]:
    """``g_d`` for every downstream node, in :func:`downstream_nodes` order."""
    _, acts, grads = grad_cache(model, params, tokens, metric,
                                names=lambda n: n.endswith(_grad_points(model)), hooks=hooks)
    rows = []
    for layer in range(model.n_layers):
        rows.append(_attention_input_grads(model, params, layer,
                                           acts[block_name(layer, "hook_resid_pre")], grads))
        if has_mlp(model):
            rows.append(_mlp_input_grad(model, params, layer,
                                        acts[block_name(layer, "hook_resid_pre")],
                                        acts[block_name(layer, "hook_resid_mid")], grads)[None])
    rows.append(grads[block_name(model.n_layers - 1, "hook_resid_post")][None])
    return jnp.concatenate(rows)


def _output_deltas(model: HookedModel, clean, corrupt) -> Float[Array, "n batch pos d"]:
    """``out_u(clean) - out_u(corrupted)`` for every upstream node, in forward order."""
    first = block_name(0, "hook_resid_pre")
    rows = [(clean[first] - corrupt[first])[None]]
    for layer in range(model.n_layers):
        name = block_name(layer, "attn.hook_result")
        rows.append(jnp.moveaxis(clean[name] - corrupt[name], 2, 0))  # n_heads b p d
        if has_mlp(model):
            name = block_name(layer, "hook_mlp_out")
            rows.append((clean[name] - corrupt[name])[None])
    return jnp.concatenate(rows)


def _output_names(model: HookedModel) -> list[str]:
    names = [block_name(0, "hook_resid_pre")]
    for layer in range(model.n_layers):
        names.append(block_name(layer, "attn.hook_result"))
        if has_mlp(model):
            names.append(block_name(layer, "hook_mlp_out"))
    return names


@functools.partial(jax.jit, static_argnames=("model", "steps", "metric_static"))
def _scores(params, corrupted, clean_tokens, metric_leaves, *, model, steps, metric_static):
    metric = _rebuild(metric_static, metric_leaves)
    names = _output_names(model)
    _, clean = run_with_cache(model, params, clean_tokens, names=names)
    _, corrupt = run_with_cache(model, params, corrupted, names=names)
    deltas = _output_deltas(model, clean, corrupt)
    if steps is None:
        grads = _input_grads(model, params, corrupted, metric, None)
    else:
        first = block_name(0, "hook_resid_pre")
        start, step = corrupt[first], clean[first] - corrupt[first]

        def at(alpha):
            hooks = {first: Patch(start + alpha.astype(start.dtype) * step)}
            return _input_grads(model, params, corrupted, metric, hooks)

        alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
        grads = jax.vmap(at)(alphas).mean(0)
    matrix = jnp.einsum("ubpd,vbpd->uv", deltas.astype(jnp.float32),
                        grads.astype(jnp.float32))  # n_up n_down
    index = edge_index(model)
    return matrix[index[:, 0], index[:, 1]]


def _run(model, params, corrupted_tokens, clean_tokens, metric, steps) -> EdgeScores:
    batch, n_pos = same_shape(clean_tokens, corrupted_tokens)
    scalar_metric(model, metric, batch, n_pos)
    leaves, static, treedef = split_leaves(metric)
    scores = _scores(params, jnp.asarray(corrupted_tokens), jnp.asarray(clean_tokens), leaves,
                     model=model, steps=steps, metric_static=(treedef, static))
    return EdgeScores(scores, edge_index(model), upstream_nodes(model), downstream_nodes(model))


def eap(model: HookedModel, params, corrupted_tokens, clean_tokens,
        patching_metric: MetricFn) -> EdgeScores:
    """Edge attribution patching: every edge's first-order effect of its clean value.

    Args:
        model, params: the model.
        corrupted_tokens: ``[batch, pos]`` ids of the run the edges are patched into.
        clean_tokens: where the edges' values come from (same shape).
        patching_metric: ``logits -> scalar``.

    Returns:
        :class:`EdgeScores`: one score per edge (``score.matrix()`` for the
        ``[upstream, downstream]`` table, ``score.top(k)`` for the largest).
    """
    return _run(model, params, corrupted_tokens, clean_tokens, patching_metric, None)


def eap_ig(model: HookedModel, params, corrupted_tokens, clean_tokens,
           patching_metric: MetricFn, *, steps: int = 16) -> EdgeScores:
    """EAP-IG: :func:`eap` with the gradients averaged over ``steps`` interpolated inputs."""
    steps = positive_int(steps, "steps", "the interpolation steps of EAP-IG (e.g. 16)")
    return _run(model, params, corrupted_tokens, clean_tokens, patching_metric, steps)
