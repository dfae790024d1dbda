"""Suffix recomputation: a patch re-runs only the positions it can change.

Attention is causal, so patching a node at layer ``l`` and position ``p`` leaves every position
``< p`` as in the unpatched run, at every layer. A patch therefore starts from the unpatched
run's ``blocks.{l}.hook_resid_pre`` at positions ``s .. n-1`` (some ``s <= p``) and reads the
keys and values of positions ``< s`` from the unpatched run, through the port's attention
context (:class:`jinterp.model.AttnContext`: this call's keys are written into the layer's cache
at slot ``s``, the queries attend over every slot). Two kinds of sites:

- **Feeding keys** (``hook_resid_pre``, ``ln1.*``, ``attn.hook_k`` / ``hook_v`` / ``hook_rot_k``,
  the key norm): at layer ``l`` the node changes the keys or values at ``p``, so every position
  ``>= p`` changes from layer ``l`` on: blocks ``l ..`` run on the suffix.
- **Local** (everything after the keys and values: q, scores, pattern, z, attn_out, resid_mid,
  the MLP's points): at layer ``l`` only position ``p`` changes, so block ``l`` runs on that one
  position (its query against the cached keys) and blocks ``l + 1 ..`` on the suffix. Patching a
  head's output then skips the layer's attention altogether but for one query.

A node without a position axis (``*_all_pos``) changes every position: its suffix is the whole
sequence (the plain sweep, through the same code).

**Buckets.** The suffix length is part of a program's shape, so positions are grouped into
``n_buckets`` ranges ``[s_b, s_{b+1})`` of about equal width; a node at ``p`` runs positions
``s_b .. n-1`` of its bucket, the extra ``p - s_b`` positions recomputing the unpatched values.
For a node uniformly placed the work is ``(1 + 1/n_buckets) / 2`` of the full sweep's (4 buckets:
0.625; one per position: ``(n + 1) / 2n``); each bucket compiles one program per layer.

Values equal the full recomputation's up to float rounding (the keys of positions ``< s`` are
the unpatched run's, computed in another program): ``tests/patching/test_sweep_speed_paths.py``
checks every kind against it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from jinterp.loop import KV_OUT, run_model
from jinterp.model import AttnContext, HookedModel
from jinterp.names import Axes, block_name
from jinterp.patching.sites import Replace, Site
from jinterp.run import _rebuild, prepare

#: Block points whose change at position ``p`` reaches the keys or values at ``p``; a node on
#: any other block point changes only its own position within its layer.
FEEDS_KEYS = frozenset({
    "hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", "attn.hook_k", "attn.hook_v",
    "attn.k_norm.hook_scale", "attn.k_norm.hook_normalized", "attn.hook_rot_k"})

#: Axes that index query positions (what a suffix slices); ``k_pos`` keeps the cache's length.
_POS_AXES = ("pos", "q_pos")


def supported(model: HookedModel) -> bool:
    """Whether the port takes an attention context (a key/value prefix) and is causal (a
    position's change reaches only later positions; a non-causal port, such as a Tracr
    program's, recomputes every position)."""
    return bool(getattr(model, "accepts_context", False)) and bool(getattr(model, "causal", True))


def is_local(site: Site) -> bool:
    """Whether a node of ``site`` changes only its own position in its layer: it has a
    position and sits after the keys and values (an ``*_all_pos`` node changes every
    position, so it runs as a suffix from position 0)."""
    return site.point not in FEEDS_KEYS and any(a in _POS_AXES for a in site.node_axes)


@struct.dataclass
class Unpatched:
    """What every patch reads from the run patched into.

    Attributes:
        resid: ``hook_resid_pre`` of every layer ``[layer, batch, pos, d_model]``.
        final: the residual after the last block ``[batch, pos, d_model]``.
        kv: each layer's keys (after RoPE) and values, ``[layer, batch, pos, n_kv_heads,
            d_head]`` each, as the port's attention caches them.
        positions: ``[batch, pos]`` position of each slot (``0 .. n-1``; with padding the
            count of real tokens before it, :meth:`AttnContext.from_mask`).
        valid: ``[batch, pos]`` which slots hold real tokens (all True without a mask).
    """

    resid: Float[Array, "layer batch pos d_model"]
    final: Float[Array, "batch pos d_model"]
    kv: tuple
    positions: Int[Array, "batch pos"]
    valid: Bool[Array, "batch pos"]

    def context(self, offset, kv=None) -> AttnContext:
        """The context of a call whose first query sits at slot ``offset`` (keys and values of
        the other slots from ``kv``, default the unpatched run's)."""
        return AttnContext(self.positions, self.valid, offset,
                           kv=self.kv if kv is None else kv)


def unpatched_run(model: HookedModel, params, tokens: Int[Array, "batch pos"],
                  attention_mask: Array | None = None) -> Unpatched:
    """One forward of ``tokens`` keeping each layer's residual, keys and values.

    With ``attention_mask`` (1 real, 0 pad; left or right padding) the run is the padded
    forward of :func:`jinterp.run_with_cache`, and every patched suffix attends with the
    same mask (pads are never attended to, positions count real tokens).
    """
    batch, n_pos = tokens.shape
    if attention_mask is None:
        positions = jnp.broadcast_to(jnp.arange(n_pos, dtype=jnp.int32), (batch, n_pos))
        ctx = AttnContext(positions, jnp.ones((batch, n_pos), bool), return_kv=True)
    else:
        ctx = AttnContext.from_mask(attention_mask, return_kv=True)
    names = [block_name(layer, "hook_resid_pre") for layer in range(model.n_layers)]
    prep = prepare(model, params, tokens, names, None, None, model.n_layers)
    final, _, stacked = run_model(model, prep.plan, params, prep.inputs, {}, [], ctx=ctx)
    return Unpatched(stacked["hook_resid_pre"], final, tuple(stacked[KV_OUT]), ctx.positions,
                     ctx.valid)


def run_span(model: HookedModel, params, resid: Float[Array, "batch m d_model"], hooks,
             start: int, stop: int, ctx: AttnContext) -> Float[Array, "batch m d_model"]:
    """Blocks ``start .. stop - 1`` on ``resid`` (positions ``ctx.offset ..``) with ``hooks``."""
    prep = prepare(model, params, resid, False, hooks, start, stop)
    data = _rebuild((prep.treedef, prep.static_leaves), prep.leaves)
    out, _, _ = run_model(model, prep.plan, params, prep.inputs, data["top"], data["groups"],
                          ctx=ctx)
    return out


def bucket_starts(n_pos: int, n_buckets: int) -> tuple[int, ...]:
    """The first position of each bucket: ``n_buckets`` ranges of about equal width."""
    k = max(1, min(int(n_buckets), n_pos))
    return tuple(sorted({(b * n_pos) // k for b in range(k)}))


def node_positions(model: HookedModel, site: Site, n_pos: int) -> np.ndarray:
    """The first position each node changes (its position coordinate; 0 without one)."""
    shape = site.node_shape(model, n_pos)
    if not shape:  # a site without node axes patches the whole point: one node at 0
        return np.zeros(1, np.int32)
    coords = np.unravel_index(np.arange(int(np.prod(shape))), shape)
    for axis, coord in zip(site.node_axes, coords):
        if axis in _POS_AXES:
            return np.asarray(coord, np.int32)
    return np.zeros(int(np.prod(shape)), np.int32)


def groups(model: HookedModel, site: Site, n_pos: int, n_buckets: int
           ) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """``(start, node indices, node positions)`` of each bucket holding nodes."""
    pos = node_positions(model, site, n_pos)
    starts = bucket_starts(n_pos, n_buckets)
    bounds = list(starts[1:]) + [n_pos]
    out = []
    for start, stop in zip(starts, bounds):
        nodes = np.flatnonzero((pos >= start) & (pos < stop)).astype(np.int32)
        if nodes.size:
            out.append((start, nodes, pos[nodes]))
    return out


def _slice_positions(x: Array, axes: Axes, n_pos: int, start, length: int) -> Array:
    """``x`` (broadcastable to an activation with ``axes``) at positions ``start ..``.

    Query-position axes of full length are sliced; broadcast (size 1) axes stay.
    """
    x = jnp.asarray(x)
    x = x.reshape((1,) * (len(axes) - x.ndim) + x.shape)
    for i, axis in enumerate(axes):
        if axis in _POS_AXES and x.shape[i] == n_pos:
            x = lax.dynamic_slice_in_dim(x, start, length, axis=i)
    return x


@struct.dataclass
class SpanReplace(Replace):
    """:class:`Replace` in a run over some positions with a key cache.

    ``source`` and ``mask`` are already cut to the run's positions; an attention pattern's key
    axis keeps the cache's length, which the core's shape check (sized by this call's
    positions) cannot know, so only ranks are checked here. The sweep builds both from the
    site's own masks, so their shapes are right by construction.
    """

    def check(self, shape, axes, name, *, layers=None):
        if np.ndim(self.mask) != len(shape) or np.ndim(self.source) > len(shape):
            raise ValueError(f"SpanReplace on {name!r}: mask of rank {np.ndim(self.mask)} and "
                             f"source of rank {np.ndim(self.source)} for an activation of rank "
                             f"{len(shape)}.")


def _patch(model: HookedModel, site: Site, layer: int, n_pos: int, index, source, start,
           length: int) -> dict:
    axes = site.axes(model)
    mask = _slice_positions(site.node_mask(model, n_pos, index), axes, n_pos, start, length)
    src = _slice_positions(source, axes, n_pos, start, length)
    return {site.hook_name(layer): SpanReplace(src, mask)}


def patched_final(model: HookedModel, params, run: Unpatched, source: Float[Array, "..."],
                  index: Int[Array, ""], pos: Int[Array, ""], *, site: Site, layer: int,
                  start: int, query: Int[Array, ""] | None = None
                  ) -> Float[Array, "batch _ d_model"]:
    """The final residual with node ``index`` (at position ``pos >= start``) of ``layer``
    patched, recomputing positions ``start ..`` only.

    Args:
        query: None for every position's final residual ``[batch, pos, d_model]``; a position
            (``0 .. n-1``, may be traced) for that one only ``[batch, 1, d_model]``, whose last
            block then runs at that position alone (see :func:`last_block_at`).
    """
    n_layers, n_pos = model.n_layers, run.final.shape[1]
    length = n_pos - start

    def patch(at, size):
        return _patch(model, site, layer, n_pos, index, source, at, size)

    if is_local(site):  # block `layer` at the node's own position, then the suffix
        here = lax.dynamic_slice_in_dim(run.resid[layer], pos, 1, axis=1)  # batch 1 d_model
        out = run_span(model, params, here, patch(pos, 1), layer, layer + 1, run.context(pos))
        if layer + 1 == n_layers:
            final = lax.dynamic_update_slice_in_dim(run.final, out, pos, axis=1)
            return final if query is None else lax.dynamic_slice_in_dim(final, query, 1, axis=1)
        resid = lax.dynamic_update_slice_in_dim(run.resid[layer + 1][:, start:], out,
                                                pos - start, axis=1)  # batch length d_model
        first, hooks = layer + 1, {}
    else:
        resid, first, hooks = run.resid[layer][:, start:], layer, patch(start, length)
    if query is None:
        out = run_span(model, params, resid, hooks, first, n_layers, run.context(start))
        return jnp.concatenate([run.final[:, :start], out], axis=1) if start else out
    last = n_layers - 1
    if first < last:
        resid = run_span(model, params, resid, hooks, first, last, run.context(start))
        return last_block_at(model, params, run, resid, start, query, {}, {})
    if not hooks:  # a local node of the layer before: the last block runs unpatched
        return last_block_at(model, params, run, resid, start, query, {}, {})
    return last_block_at(model, params, run, resid, start, query, hooks, patch(query, 1))


def last_block_at(model: HookedModel, params, run: Unpatched,
                  resid: Float[Array, "batch m d_model"], start: int, query: Int[Array, ""],
                  suffix_hooks, query_hooks) -> Float[Array, "batch 1 d_model"]:
    """The last block's output at position ``query`` only, from its input at ``start ..``.

    A metric that reads one position needs the last block there alone; the other positions
    matter only through their keys and values. So the block runs twice: on the suffix for its
    keys and values (XLA drops the rest of that block: queries, the MLP), then at ``query``
    against them. ``suffix_hooks`` / ``query_hooks`` patch the last layer in each pass (the
    same node, cut to each pass's positions). A ``query`` before the suffix is unchanged.
    """
    last = model.n_layers - 1
    prep = prepare(model, params, resid, False, suffix_hooks, last, last + 1)
    data = _rebuild((prep.treedef, prep.static_leaves), prep.leaves)
    ctx = run.context(start).replace(return_kv=True)
    _, _, stacked = run_model(model, prep.plan, params, prep.inputs, data["top"],
                              data["groups"], ctx=ctx)
    kv = tuple(_last_layer_only(lax.dynamic_update_slice_in_dim(cached[last], new[0], start,
                                                                axis=1), model.n_layers)
               for cached, new in zip(run.kv, stacked[KV_OUT]))  # layer batch pos kv d_head
    here = lax.dynamic_slice_in_dim(resid, query - start, 1, axis=1)  # batch 1 d_model
    ctx = run.context(query, kv)
    out = run_span(model, params, here, query_hooks, last, last + 1, ctx)
    unchanged = lax.dynamic_slice_in_dim(run.final, query, 1, axis=1)
    return jnp.where(query >= start, out, unchanged)


def _last_layer_only(x: Array, n_layers: int) -> Array:
    """``x`` as the last entry of a ``[layer, ...]`` stack (the loop slices that entry out; the
    zeros before it are never read)."""
    return jnp.concatenate([jnp.zeros((n_layers - 1, *x.shape), x.dtype), x[None]])


def node_order(parts: list[np.ndarray], n_nodes: int) -> np.ndarray:
    """The permutation that puts values computed bucket by bucket back in node order."""
    order = np.concatenate(parts)
    inverse = np.empty(n_nodes, np.int32)
    inverse[order] = np.arange(n_nodes, dtype=np.int32)
    return inverse

