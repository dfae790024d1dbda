"""Attribution patching: every activation-patching sweep estimated from gradients.

``get_attr_patch_X(model, params, corrupted_tokens, clean_cache, patching_metric, method=)``
is the twin of ``get_act_patch_X`` (:mod:`jinterp.patching.activation`): same arguments, same
result shape, and an estimate of the same numbers, ``M(corrupted) + estimated effect`` of
patching each clean node into the corrupted run (denoising; swap the arguments for noising).
Methods (``delta = clean - corrupted`` at the node, gradients on the corrupted run):

- ``"atp"`` (Nanda 2023; Kramár et al. 2024): ``delta . dM/d node`` from one
  ``jinterp.grad_cache`` pass. Exact when the metric is linear in the node.
- ``"atp*"``: AtP with the **QK fix** (Kramár et al. 2024, :mod:`jinterp.patching.attr_qk`):
  for query and key nodes the patched attention pattern is computed exactly (softmax
  included) and only the step after the pattern is linear, so saturated heads are not missed.
  Pattern nodes sit after the softmax already and keep plain AtP.
- ``"ig"``: integrated gradients, ``delta . mean_alpha dM/d node`` along
  ``corrupted + alpha (clean - corrupted)`` with ``steps`` midpoints, the whole site of one
  layer interpolated at once (Marks et al. 2024): the scores of a layer then sum to the effect
  of patching that layer's whole site (completeness), error shrinking as ``steps**-2``. One
  vmapped program over (layer, step); ``chunk_size`` bounds how many run at once.

``grad_drop=True`` (with ``"atp"`` or ``"atp*"``) returns AtP*'s **GradDrop** score instead:
for each layer ``l``, the estimate with the backward pass cut at layer ``l``'s attention and
MLP outputs, and the mean of their absolute values over the layers whose cut does not zero the
node by construction (the other ``L - 1`` for nodes inside a block: heads, q/k/v, patterns;
all ``L`` for residual-stream sites). A node whose direct and indirect effects cancel has a
plain estimate near 0 and a large GradDrop score. These are non-negative effect sizes for
ranking (the paper's use), not metric values.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.loop import run_model
from jinterp.metrics import Metric
from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.patching import suffix
from jinterp.patching.attr_checks import (
    MetricFn,
    clean_stack,
    positive_int,
    scalar_metric,
    token_shape,
)
from jinterp.patching.attr_grads import corrupted_grads, grad_drop_grads, integrated_grads
from jinterp.patching.attr_qk import patched_scores, qk_estimate
from jinterp.patching.sites import EVERY, SITES, Site, get_site, stack_every
from jinterp.patching.sweep import final_metric, query_position, selected_metric
from jinterp.plan import split_leaves
from jinterp.run import _rebuild, context_of, prepare, validate_attention_mask

METHODS = ("atp", "atp*", "ig")
_QK_POINTS = ("attn.hook_pattern", "attn.hook_attn_scores", "hook_attn_out")


def _check_method(method: str, steps: int, grad_drop: bool, model: HookedModel) -> None:
    if method not in METHODS:
        raise ValueError(f"Unknown attribution method {method!r}; choose one of {METHODS} "
                         "(exact patching is get_act_patch_*).")
    positive_int(steps, "steps", "the interpolation steps of integrated gradients (e.g. 16)")
    if grad_drop and method == "ig":
        raise ValueError("grad_drop=True applies to method='atp' or 'atp*', not 'ig'.")
    if grad_drop and model.n_layers < 2:
        raise ValueError("GradDrop drops one layer at a time and needs a model with >= 2 "
                         "layers; pass grad_drop=False.")


def _uses_qk(site: Site, method: str) -> bool:
    return method == "atp*" and site.point in ("attn.hook_q", "attn.hook_k")


def _layer_estimates(model: HookedModel, site: Site, clean, acts: Mapping, grads: Mapping,
                     scores) -> Float[Array, "layer ..."]:
    """``[layer, *node_shape]`` estimated effects from one set of gradients."""
    rows = []
    for layer in range(model.n_layers):
        if scores is not None:
            rows.append(qk_estimate(model, site, scores[layer],
                                    acts["attn.hook_attn_scores"][layer],
                                    acts["attn.hook_pattern"][layer],
                                    grads["attn.hook_pattern"][layer]))
        else:
            delta = clean[layer] - acts[site.point][layer]
            rows.append(site.to_nodes(model, delta * grads[site.point][layer]))
    return jnp.stack(rows)


@functools.partial(jax.jit, static_argnames=("model", "plan", "metric_static"))
def _grads_at_positions(params, tokens, metric_leaves, mask, *, model, plan, metric_static):
    metric = _rebuild(metric_static, metric_leaves)
    ctx = context_of(mask)

    def value(deltas):
        final, _, acts = run_model(model, plan, params, tokens, {}, [],
                                   {"top": {}, "block": deltas}, ctx=ctx)
        return final_metric(model, params, final, metric), acts

    shapes = jax.eval_shape(lambda: run_model(model, plan, params, tokens, {}, [], ctx=ctx)[2])
    zeros = {p: jnp.zeros(s.shape, s.dtype) for p, s in shapes.items()}
    (result, acts), grads = jax.value_and_grad(value, has_aux=True)(zeros)
    return result, acts, grads


@functools.partial(jax.jit, static_argnames=("model", "plan", "metric_static"))
def _resid_grads_one_query(params, tokens, metric_leaves, mask, *, model, plan, metric_static):
    """``hook_resid_pre`` gradients for a metric of one position: blocks ``0 .. L-2`` as usual,
    the last block at that position only (:func:`jinterp.patching.suffix.last_block_at`)."""
    metric = _rebuild(metric_static, metric_leaves)
    n_layers, (batch, n_pos) = model.n_layers, tokens.shape
    query = query_position(metric, n_pos)
    dims = model.dims
    kv = jnp.zeros((n_layers, batch, n_pos, dims["n_kv_heads"], dims["d_head"]))
    ctx = context_of(mask)
    if ctx is None:
        positions = jnp.broadcast_to(jnp.arange(n_pos, dtype=jnp.int32), (batch, n_pos))
        valid = jnp.ones((batch, n_pos), bool)
    else:
        positions, valid = ctx.positions, ctx.valid

    def value(delta):
        block = {"hook_resid_pre": delta[:-1]} if n_layers > 1 else {}
        resid, _, acts = run_model(model, plan, params, tokens, {}, [],
                                   {"top": {}, "block": block}, ctx=ctx)
        resid = resid + delta[-1]  # the last block's input
        # start=0: every key is this call's own, so the unpatched run's fields go unread.
        stub = suffix.Unpatched(resid[None], jnp.zeros_like(resid), (kv.astype(resid.dtype),) * 2,
                                positions, valid)
        out = suffix.last_block_at(model, params, stub, resid, 0, query, {}, {})
        stack = [acts["hook_resid_pre"], resid[None]] if n_layers > 1 else [resid[None]]
        return selected_metric(model, params, out, metric), jnp.concatenate(stack)

    shape = (n_layers, batch, n_pos, model.d_model)
    dtype = jax.eval_shape(lambda: run_model(model, plan, params, tokens, {}, [], ctx=ctx)[0]
                           ).dtype
    (result, acts), grads = jax.value_and_grad(value, has_aux=True)(jnp.zeros(shape, dtype))
    return result, {"hook_resid_pre": acts}, {"hook_resid_pre": grads}


def metric_grads(model: HookedModel, params, tokens, metric, points: tuple[str, ...],
                 mask=None) -> tuple[Float[Array, ""], dict[str, Array], dict[str, Array]]:
    """``(M(corrupted), {point: activations [layer, ...]}, {point: dM/d activation})``.

    A :class:`~jinterp.metrics.Metric` that names its positions gets the sweeps' readout
    (:func:`jinterp.patching.sweep.final_metric`): the run stops at the final residual, which
    is unembedded at those positions (a logit difference: its two tokens) only, forward and
    backward, instead of every position's logits (GPT-2 small at 16 tokens: 30% of a forward
    and of its backward). For the residual stream and a metric of one position, the last
    block runs at that position only (the others give it keys and values). Any other metric:
    :func:`~jinterp.patching.attr_grads.corrupted_grads`.
    """
    if not (isinstance(metric, Metric) and metric.pos is not None):
        return corrupted_grads(model, params, tokens, metric, points, mask)
    leaves, static, treedef = split_leaves(metric)
    n = model.n_layers
    if (points == ("hook_resid_pre",) and query_position(metric, 1) is not None
            and suffix.supported(model)):
        names = [block_name(layer, points[0]) for layer in range(n - 1)]
        prep = prepare(model, params, tokens, names, None, None, n - 1)
        return _resid_grads_one_query(params, prep.inputs, leaves, mask, model=model,
                                      plan=prep.plan, metric_static=(treedef, static))
    names = [block_name(layer, p) for p in points for layer in range(n)]
    prep = prepare(model, params, tokens, names, None, None, n)
    return _grads_at_positions(params, prep.inputs, leaves, mask, model=model, plan=prep.plan,
                               metric_static=(treedef, static))


def _inside_block(site: Site) -> bool:
    return site.point.startswith(("attn.", "mlp."))


def attr_patch(model: HookedModel, params, corrupted_tokens, clean_cache: Mapping,
               patching_metric: MetricFn, site: str | Site, *, method: str = "atp",
               steps: int = 16, grad_drop: bool = False, chunk_size: int | None = None,
               attention_mask=None) -> Float[Array, "..."]:
    """Estimates :func:`~jinterp.patching.activation.act_patch` of ``site`` from gradients.

    Args:
        model, params: the model.
        corrupted_tokens: ``[batch, pos]`` token ids of the run patched into.
        clean_cache: the clean run's activations with the site's point at every layer (and,
            for ``"atp*"`` on q/k sites, the clean q / k, which the site's point is).
        patching_metric: ``logits -> scalar`` (see :mod:`jinterp.metrics`).
        site: a name of :data:`~jinterp.patching.sites.SITES`.
        method: ``"atp"``, ``"atp*"`` or ``"ig"`` (module docstring).
        steps: interpolation steps of ``"ig"``.
        grad_drop: return AtP*'s GradDrop scores (module docstring).
        chunk_size: ``"ig"`` runs vmapped at once (None: all ``layers * steps``).
        attention_mask: ``[batch, pos]`` padding mask of the corrupted prompts (1 real, 0 pad),
            as in :func:`~jinterp.patching.activation.act_patch`; every forward and backward
            attends with it (compute ``clean_cache`` with the clean prompts' mask).

    Returns:
        ``[layer, *node_axes]``, as ``get_act_patch_*``: ``M(corrupted) + estimate`` (float32),
        or with ``grad_drop`` the GradDrop scores.
    """
    site = get_site(site)
    _check_method(method, steps, grad_drop, model)
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size", "the runs vmapped at once (or None for all)")
    batch, n_pos = token_shape(corrupted_tokens, "corrupted_tokens")
    clean = clean_stack(model, site, clean_cache, batch, n_pos)
    scalar_metric(model, patching_metric, batch, n_pos)
    tokens = jnp.asarray(corrupted_tokens)
    mask = validate_attention_mask(model, attention_mask, tokens)
    qk = _uses_qk(site, method)
    points = (site.point,) + (_QK_POINTS if qk else ())
    base, acts, grads = metric_grads(model, params, tokens, patching_metric, points, mask)
    if method == "ig":
        mean_grads = integrated_grads(model, params, tokens, patching_metric, site.point, clean,
                                      acts[site.point], steps, chunk_size, mask)
        est = _layer_estimates(model, site, clean, acts, {site.point: mean_grads}, None)
        return (base + est).astype(jnp.float32)
    scores = None
    if qk:
        scores = patched_scores(model, params, tokens, clean_cache,
                                _by_name(model, acts, "hook_attn_out"), site.point, mask)
    if not grad_drop:
        est = _layer_estimates(model, site, clean, acts, grads, scores)
        return (base + est).astype(jnp.float32)
    dropped = grad_drop_grads(model, params, tokens, patching_metric, points, mask)
    terms = jnp.stack([jnp.abs(_layer_estimates(model, site, clean, acts,
                                                {p: g[l] for p, g in dropped.items()}, scores))
                       for l in range(model.n_layers)])
    n_terms = model.n_layers - 1 if _inside_block(site) else model.n_layers
    return (terms.sum(0) / n_terms).astype(jnp.float32)



def _by_name(model: HookedModel, acts: Mapping, point: str) -> dict:
    """``{blocks.{l}.point: acts[point][l]}`` (a stacked capture as per-name entries)."""
    return {block_name(l, point): acts[point][l] for l in range(model.n_layers)}


def _define(site_name: str):
    site = SITES[site_name]

    def estimate(model: HookedModel, params, corrupted_tokens, clean_cache: Mapping,
                 patching_metric: MetricFn, *, method: str = "atp", steps: int = 16,
                 grad_drop: bool = False, chunk_size: int | None = None,
                 attention_mask=None) -> Float[Array, "..."]:
        return attr_patch(model, params, corrupted_tokens, clean_cache, patching_metric, site,
                          method=method, steps=steps, grad_drop=grad_drop,
                          chunk_size=chunk_size, attention_mask=attention_mask)

    estimate.__name__ = estimate.__qualname__ = f"get_attr_patch_{site_name}"
    estimate.__doc__ = (f"Estimates ``get_act_patch_{site_name}`` (``{site.point}``) from "
                        "gradients; arguments as :func:`attr_patch`.\n")
    return estimate


def _define_every(every: str):
    def estimate(model: HookedModel, params, corrupted_tokens, clean_cache: Mapping,
                 patching_metric: MetricFn, *, method: str = "atp", steps: int = 16,
                 grad_drop: bool = False, chunk_size: int | None = None,
                 attention_mask=None) -> Float[Array, "..."]:
        results = [attr_patch(model, params, corrupted_tokens, clean_cache, patching_metric,
                              name, method=method, steps=steps, grad_drop=grad_drop,
                              chunk_size=chunk_size, attention_mask=attention_mask)
                   for name in EVERY[every]]
        return stack_every(model, every, results)

    estimate.__name__ = estimate.__qualname__ = f"get_attr_patch_{every}"
    estimate.__doc__ = (f"Estimates ``get_act_patch_{every}`` ({', '.join(EVERY[every])} "
                        "stacked); arguments as :func:`attr_patch`.\n")
    return estimate


get_attr_patch_resid_pre = _define("resid_pre")
get_attr_patch_resid_mid = _define("resid_mid")
get_attr_patch_attn_out = _define("attn_out")
get_attr_patch_mlp_out = _define("mlp_out")
get_attr_patch_attn_head_out_all_pos = _define("attn_head_out_all_pos")
get_attr_patch_attn_head_q_all_pos = _define("attn_head_q_all_pos")
get_attr_patch_attn_head_k_all_pos = _define("attn_head_k_all_pos")
get_attr_patch_attn_head_v_all_pos = _define("attn_head_v_all_pos")
get_attr_patch_attn_head_pattern_all_pos = _define("attn_head_pattern_all_pos")
get_attr_patch_attn_head_out_by_pos = _define("attn_head_out_by_pos")
get_attr_patch_attn_head_q_by_pos = _define("attn_head_q_by_pos")
get_attr_patch_attn_head_k_by_pos = _define("attn_head_k_by_pos")
get_attr_patch_attn_head_v_by_pos = _define("attn_head_v_by_pos")
get_attr_patch_attn_head_pattern_by_pos = _define("attn_head_pattern_by_pos")
get_attr_patch_attn_head_pattern_dest_src_pos = _define("attn_head_pattern_dest_src_pos")
get_attr_patch_block_every = _define_every("block_every")
get_attr_patch_attn_head_all_pos_every = _define_every("attn_head_all_pos_every")
get_attr_patch_attn_head_by_pos_every = _define_every("attn_head_by_pos_every")
