"""AtP*'s QK fix (Kramár et al. 2024): the attention softmax recomputed exactly for q/k nodes.

A query or key acts on the model only through its head's attention pattern. When the pattern
is saturated, the softmax's gradient is about zero and plain AtP misses nodes whose patch
moves attention a lot. The QK fix keeps the linear step *after* the pattern and makes the
step through the softmax exact:

    estimate(node) = sum over patterns the node changes of (softmax(s') - A) . dM/dA

where ``A`` and ``dM/dA`` are the corrupted run's pattern and its gradient, and ``s'`` the
attention scores with only that node patched. A score ``s[q, k]`` depends only on query
``q``'s and key ``k``'s vectors (RoPE, q/k norms, soft-caps and masks act entry by entry), so
one extra forward gives every node's ``s'``: the corrupted run with the clean query (or key)
at every layer and each ``hook_attn_out`` frozen to its corrupted value, so the residual stream
(and so every other query and key) stays corrupted. Patching a query at position ``q``
replaces row ``q`` of the scores; patching a key at position ``k`` replaces column ``k`` of
every row and renormalises each row; a kv head's key feeds every query head of its group.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.interventions import Patch
from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.patching.sites import Site
from jinterp.run import run_with_cache

Pattern = Float[Array, "batch n_heads q_pos k_pos"]


def patched_scores(model: HookedModel, params, corrupted_tokens, clean_cache, corrupt_cache,
                   point: str, mask=None) -> Float[Array, "layer batch n_heads q_pos k_pos"]:
    """Scores with the clean ``point`` (``attn.hook_q`` or ``attn.hook_k``) at every layer,
    every query / key else corrupted: one forward, attention outputs frozen to corrupted."""
    hooks = {}
    for layer in range(model.n_layers):
        name = block_name(layer, point)
        hooks[name] = Patch(clean_cache[name])
        out = block_name(layer, "hook_attn_out")
        hooks[out] = Patch(corrupt_cache[out])
    scores = [block_name(layer, "attn.hook_attn_scores") for layer in range(model.n_layers)]
    _, cache = run_with_cache(model, params, corrupted_tokens, names=scores, hooks=hooks,
                              stop_at_layer=model.n_layers, attention_mask=mask)
    return cache.stack("attn.hook_attn_scores")


def _softmax(scores: Pattern) -> Pattern:
    return jax.nn.softmax(scores.astype(jnp.float32), axis=-1)


def query_rows(new: Pattern, pattern: Pattern,
               grad: Pattern) -> Float[Array, "batch n_heads q_pos"]:
    """Each query row replaced on its own: ``(softmax(new) - A) . dM/dA`` summed over keys."""
    return ((_softmax(new) - pattern) * grad).sum(-1)


def key_columns(new: Pattern, scores: Pattern, pattern: Pattern,
                grad: Pattern) -> Float[Array, "batch n_heads k_pos"]:
    """Each key column replaced on its own (every row renormalised), summed over queries."""
    n_k = scores.shape[-1]

    def one(k):
        column = (jnp.arange(n_k) == k)[None, None, None, :]
        return ((_softmax(jnp.where(column, new, scores)) - pattern) * grad).sum((-1, -2))

    return jnp.moveaxis(jax.vmap(one)(jnp.arange(n_k)), 0, -1)  # batch n_heads k_pos


def whole_head(new: Pattern, pattern: Pattern, grad: Pattern) -> Float[Array, "batch n_heads"]:
    """Every query (or key) of a head replaced at once."""
    return ((_softmax(new) - pattern) * grad).sum((-1, -2))


def _to_kv(model: HookedModel, x: Float[Array, "n_heads ..."]) -> Float[Array, "n_kv_heads ..."]:
    n_kv = model.dims["n_kv_heads"]
    return x.reshape(n_kv, x.shape[0] // n_kv, *x.shape[1:]).sum(1)


def qk_estimate(model: HookedModel, site: Site, new: Pattern, scores: Pattern, pattern: Pattern,
                grad: Pattern) -> Float[Array, "..."]:
    """One layer's QK-fixed estimates in ``site``'s node shape (q or k sites only)."""
    by_pos = "pos" in site.node_axes
    if site.point == "attn.hook_q":
        if by_pos:  # [pos, n_heads]
            return query_rows(new, pattern, grad).sum(0).T
        return whole_head(new, pattern, grad).sum(0)  # [n_heads]
    if by_pos:  # [pos, n_kv_heads]
        return _to_kv(model, key_columns(new, scores, pattern, grad).sum(0)).T
    return _to_kv(model, whole_head(new, pattern, grad).sum(0))  # [n_kv_heads]
