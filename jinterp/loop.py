"""The core's layer loop: embed, scan the blocks ``start .. stop``, unembed, as one plan says.

A port provides the parts (:class:`jinterp.model.HookedModel`: ``embed``, ``layer_inputs``,
``block``, ``unembed``) and calls a hook at every named activation; this module composes them.
What each hook call does is decided at trace time from the :class:`~jinterp.plan.Plan`:
nothing (a plain forward compiles to the bare maths), apply hook groups, add a zero "delta"
(``grad_cache`` differentiates with respect to it), record for the cache.

Blocks run under one ``lax.scan`` over the stacked layer inputs, so compile time is flat in
depth and the layer index is a traced value: a hook group reads its slot for the current layer
and an ``At`` hook compares its (possibly traced) layer with it. Captures come out stacked
per point: a point captured at every layer run is a scan output ``[layer, ...]``; a point
captured at a few layers is a carried buffer with one slot per captured layer, so caching one
layer of a deep model costs that one activation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jinterp import sharding
from jinterp.hooks import HookInfo, LayerIndex, apply_chain, at_active, at_chain
from jinterp.model import AttnContext
from jinterp.names import Axes, block_name
from jinterp.plan import Group, Plan, is_dynamic

#: The key under which ``run_blocks`` returns the blocks' new ``(k, v)`` (``ctx.return_kv``).
KV_OUT = "__kv__"


class TopHook:
    """``hook(name, x)`` for the points outside the blocks (embeddings, final norm)."""

    def __init__(self, plan: Plan, axes: Mapping[str, Axes], chains: Mapping[str, tuple],
                 deltas: Mapping[str, jax.Array]):
        self._plan, self._axes, self._chains, self._deltas = plan, axes, chains, deltas
        self._capture = set(plan.top_capture)
        self.recorded: dict[str, jax.Array] = {}

    def __call__(self, name: str, x: jax.Array) -> jax.Array:
        if name in self._chains:
            x = apply_chain(self._chains[name], x, self._axes[name], HookInfo(name))
        if name in self._deltas:
            x = x + self._deltas[name]
        if name in self._capture:
            self.recorded[name] = sharding.constrain(x, self._axes[name])
        return x

    def wants(self, name: str) -> bool:
        return name in self._capture or name in self._chains


class BlockHook:
    """``hook(point, x)`` inside one block; ``hook.wants(point)`` for optional points."""

    def __init__(self, fn: Callable[[str, jax.Array], jax.Array], wanted: frozenset[str]):
        self._fn, self._wanted = fn, wanted

    def __call__(self, point: str, x: jax.Array) -> jax.Array:
        return self._fn(point, x)

    def wants(self, point: str) -> bool:
        return point in self._wanted


def _stack_chains(chains: list[tuple]) -> tuple:
    """One chain whose dynamic leaves gain a leading slot axis (static leaves are equal)."""
    if len(chains) == 1:
        return chains[0]
    flat = [jax.tree.flatten(c) for c in chains]
    treedef = flat[0][1]
    leaves = [jnp.stack(column) if is_dynamic(column[0]) else column[0]
              for column in zip(*(f[0] for f in flat))]
    return jax.tree.unflatten(treedef, leaves)


def _slot_chain(stacked: tuple, slot: jax.Array) -> tuple:
    leaves, treedef = jax.tree.flatten(stacked)
    return jax.tree.unflatten(treedef, [lax.dynamic_index_in_dim(x, slot, keepdims=False)
                                        if is_dynamic(x) else x for x in leaves])


class _Groups:
    """The plan's hook groups with their (traced) data, ready to apply inside the scan."""

    def __init__(self, plan: Plan, groups_data: list, axes: Mapping[str, Axes]):
        self._plan, self._axes = plan, axes
        self._by_point: dict[str, list[tuple[Group, Any, np.ndarray | None]]] = {}
        for group, data in zip(plan.groups, groups_data):
            table = None
            if not group.is_at:
                data = _stack_chains(data)
                table = np.full(plan.stop - plan.start, -1, np.int32)
                table[np.asarray(group.layers) - plan.start] = np.arange(len(group.layers))
            self._by_point.setdefault(group.point, []).append((group, data, table))

    def apply(self, point: str, x: jax.Array, layer: jax.Array | int,
              earlier: Mapping[str, jax.Array] | None = None) -> jax.Array:
        for group, data, table in self._by_point.get(point, ()):
            x = self._apply_one(point, group, data, table, x, layer, dict(earlier or {}))
        return x

    def _apply_one(self, point, group: Group, data, table, x, layer, earlier):
        axes = self._axes[point]
        if group.is_at:
            chain, info = at_chain(data, group.flags, layer), HookInfo(point, layer, earlier)
            active = at_active(data, layer)
        else:
            slot = jnp.asarray(table)[layer - self._plan.start]
            chain = data if len(group.layers) == 1 else _slot_chain(data, jnp.maximum(slot, 0))
            info = (HookInfo(block_name(group.layers[0], point), LayerIndex(group.layers[0]),
                             earlier) if len(group.layers) == 1 else
                    HookInfo(point, layer, earlier))
            if (table >= 0).all():  # applies at every layer run: no condition at all
                return apply_chain(chain, x, axes, info)
            active = slot >= 0

        def hooked(a, chain=chain, info=info):
            return apply_chain(chain, a, axes, info)

        return lax.cond(active, hooked, lambda a: a, x)


def run_blocks(model, plan: Plan, params, resid: jax.Array, groups_data: list,
               deltas: Mapping[str, jax.Array], unroll: int | bool = 1,
               ctx: AttnContext | None = None, per_layer: list | None = None
               ) -> tuple[jax.Array, dict[str, Any]]:
    """Scans ``model.block`` over layers ``plan.start .. plan.stop``.

    Captures go into carried buffers ``[n_captured, ...]``, one slot per captured layer,
    written in place each layer (``lax.scan``'s own stacked outputs would do the same, but
    start from one zero broadcast that XLA then copies into every buffer of a shape). Each
    buffer gets its own fill value, so no two can be merged into one broadcast; every slot
    is overwritten before it is read.

    Args:
        deltas: block point -> zeros added at its captured layers (``grad_cache``), shape
            ``[n_captured, ...]``.
        ctx: the attention context (padding, KV cache), or None for a plain call. Its ``kv``
            (``[layer, ...]``, the layers this call runs) rides the scan as per-layer inputs;
            with ``return_kv`` each block's new ``(k, v)`` comes out as a scan output.
        per_layer: :func:`split_layers` of this call's layer inputs, made once outside a loop
            that calls this many times (decoding): the blocks then run as a Python loop over
            layers, each reading its own weight buffers. A scan over stacked weights slices
            each layer's weights out per call, which XLA's CPU backend copies (it cannot feed a
            dot from a dynamic slice): at one token a step that copy doubles the memory traffic.

    Returns:
        The residual after the last block run, and the captures stacked per point; with
        ``ctx.return_kv`` the captures also hold ``KV_OUT``: ``(k, v)`` stacked over layers,
        each ``[layer, batch, pos, n_kv_heads, d_head]``.
    """
    axes = model.points
    n_run = plan.stop - plan.start
    if per_layer is not None:
        if len(per_layer) != n_run:
            raise ValueError(f"per_layer holds {len(per_layer)} layers; this plan runs {n_run}.")
        xs = jax.tree.map(lambda a: a[None], _restored(per_layer[0]))  # for shapes only
    else:
        xs = model.layer_inputs(params)
        if (plan.start, plan.stop) != (0, model.n_layers):
            xs = jax.tree.map(lambda a: a[plan.start:plan.stop], xs)
    groups = _Groups(plan, groups_data, axes)
    captured = plan.captured_layers()
    every = {p for p, ls in captured.items() if len(ls) == n_run}  # slot = layer - start
    slots = {}
    for p, ls in captured.items():
        table = np.full(n_run, -1, np.int32)
        table[np.asarray(ls) - plan.start] = np.arange(len(ls))
        slots[p] = table

    def run_block(resid, x_l, layer, delta_l, kv_l=None):
        recorded: dict[str, jax.Array] = {}
        earlier: dict[str, jax.Array] = {}  # this block's activations so far (HookInfo.earlier)

        def hook(point, act):
            act = groups.apply(point, act, layer, earlier)
            if point in captured:
                if point in delta_l:
                    act = act + delta_l[point]
                recorded[point] = sharding.constrain(act, axes[point])
            earlier[point] = act
            return act

        block_hook = BlockHook(hook, plan.wanted)
        if ctx is None:
            return model.block(resid, x_l, block_hook), recorded
        out = model.block(resid, x_l, block_hook, ctx.at_layer(kv_l))
        if ctx.return_kv:
            out, recorded[KV_OUT] = out
        return out, recorded

    buffers = {}
    if captured:
        x0 = jax.tree.map(lambda a: a[0], xs)
        d0 = {p: d[0] for p, d in deltas.items()}
        kv0 = None if ctx is None else jax.tree.map(lambda a: a[plan.start], ctx.kv)
        shapes = jax.eval_shape(lambda r, x, d, kv: run_block(r, x, plan.start, d, kv)[1],
                                resid, x0, d0, kv0)
        buffers = {p: jnp.full((len(ls),) + shapes[p].shape, i, shapes[p].dtype)
                   for i, (p, ls) in enumerate(captured.items())}

    def body(carry, inputs):
        resid, bufs = carry
        x_l, layer, d_every, kv_l = inputs
        slot = {p: jnp.asarray(slots[p])[layer - plan.start] for p in captured}
        delta_l = dict(d_every)
        for p, d in deltas.items():
            if p not in every:
                s = jnp.maximum(slot[p], 0)
                d_l = lax.dynamic_index_in_dim(d, s, keepdims=False)
                delta_l[p] = jnp.where(slot[p] >= 0, d_l, jnp.zeros_like(d_l))
        resid, recorded = run_block(resid, x_l, layer, delta_l, kv_l)
        kv_new = recorded.pop(KV_OUT, None)
        missing = sorted(set(captured) - set(recorded))
        if missing:
            raise RuntimeError(f"{type(model).__name__}.block never reported {missing}, which it "
                               "declares in block_point_axes; every declared point must be hooked.")
        new_bufs = {}
        for p, buf in bufs.items():
            s = jnp.maximum(slot[p], 0)
            value = recorded[p]
            if p not in every:  # a layer not captured rewrites slot 0 with what it holds
                value = jnp.where(slot[p] >= 0, value, lax.dynamic_index_in_dim(buf, s, 0, False))
            new_bufs[p] = lax.dynamic_update_index_in_dim(buf, value, s, 0)
        return (resid, new_bufs), kv_new

    # Deltas of points captured at every layer ride the scan as per-layer inputs: their
    # gradients then come out of the backward scan as stacked outputs, not accumulated into
    # a carried buffer.
    d_every = {p: d for p, d in deltas.items() if p in every}
    layer_ids = jnp.arange(plan.start, plan.stop)
    kv = None if ctx is None else ctx.kv
    if kv is not None and (plan.start, plan.stop) != (0, model.n_layers):
        kv = jax.tree.map(lambda a: a[plan.start:plan.stop], kv)
    if per_layer is None:
        (resid, buffers), kv_new = lax.scan(body, (resid, buffers),
                                            (xs, layer_ids, d_every, kv), unroll=unroll)
    else:
        carry, kv_steps = (resid, buffers), []
        for i, x_l in enumerate(per_layer):
            take = functools.partial(lambda i, a: a[i], i)
            carry, kv_l = body(carry, (_restored(x_l), plan.start + i, jax.tree.map(take, d_every),
                                       jax.tree.map(take, kv)))
            kv_steps.append(kv_l)
        (resid, buffers) = carry
        kv_new = None if kv_steps[0] is None else jax.tree.map(lambda *a: jnp.stack(a),
                                                               *kv_steps)
    if kv_new is not None:
        buffers = {**buffers, KV_OUT: kv_new}
    return resid, buffers


class Relaid(NamedTuple):
    """A weight stored transposed (``stored = transpose(weight, perm)``) for a loop to read."""

    stored: jax.Array
    perm: tuple[int, ...]

    def restore(self) -> jax.Array:
        return jnp.transpose(self.stored, np.argsort(self.perm))


def _matmul_layout(dims: Mapping[str, int], shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The axis order a per-layer head weight is read fastest in by a one-token matmul.

    ``[heads, d_model, d_head]`` (query, key, value) contracts its middle axis, so a matmul
    needs ``[d_model, heads * d_head]`` contiguous; ``[heads, d_head, d_model]`` (output)
    needs ``[d_head, heads, d_model]`` (the order XLA's CPU backend copies it into). Shapes
    that could be either are left alone (a layout is only a speed, never a value).
    """
    heads = {dims.get("n_heads"), dims.get("n_kv_heads")} - {None}
    d_model, d_head = dims.get("d_model"), dims.get("d_head")
    if len(shape) != 3 or shape[0] not in heads or d_model == d_head:
        return None
    if shape[1:] in ((d_model, d_head), (d_head, d_model)):
        return (1, 0, 2)  # heads second: [d_model, heads, d_head] / [d_head, heads, d_model]
    return None


def split_layers(model, params, start: int = 0, stop: int | None = None) -> list:
    """``model.layer_inputs(params)`` as one pytree per layer ``start .. stop - 1``, each leaf
    its own buffer, head weights stored in the order a one-token matmul reads (see
    ``run_blocks``'s ``per_layer``)."""
    xs = model.layer_inputs(params)
    stop = model.n_layers if stop is None else stop
    dims = getattr(model, "dims", {})

    def one(a, i):
        a = a[i]
        perm = _matmul_layout(dims, tuple(a.shape))
        if perm is None:
            return a
        # the barrier keeps XLA from folding the transpose back into the loop's body
        return Relaid(lax.optimization_barrier(jnp.transpose(a, perm)), perm)

    return [jax.tree.map(lambda a, i=i: one(a, i), xs) for i in range(start, stop)]


def _restored(x_l):
    return jax.tree.map(lambda a: a.restore() if isinstance(a, Relaid) else a, x_l,
                        is_leaf=lambda a: isinstance(a, Relaid))


def run_model(model, plan: Plan, params, inputs: jax.Array, top_chains: Mapping[str, tuple],
              groups_data: list, deltas: Mapping[str, Any] | None = None, unroll: int | bool = 1,
              ctx: AttnContext | None = None, per_layer: list | None = None
              ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, Any]]:
    """One forward as ``plan`` says: ``(logits or residual, top captures, block captures)``.

    ``ctx`` (padding, KV cache) goes to ``embed`` and every ``block``; without it the ports
    are called exactly as before (their three-argument form). ``per_layer``: as
    :func:`run_blocks`'s.
    """
    deltas = deltas or {"top": {}, "block": {}}
    top = TopHook(plan, model.points, top_chains, deltas["top"])
    if not plan.from_tokens:
        resid = inputs
    else:
        resid = model.embed(params, inputs, top) if ctx is None else model.embed(params, inputs,
                                                                                 top, ctx)
    stacked: dict[str, jax.Array] = {}
    if plan.stop > plan.start:
        resid, stacked = run_blocks(model, plan, params, resid, groups_data, deltas["block"],
                                    unroll, ctx, per_layer)
    out = model.unembed(params, resid, top) if plan.to_logits else resid
    if plan.to_logits and out.ndim == 3:  # logits split by vocab over `model` like W_U, not
        out = sharding.constrain(out, ("batch", "pos", "d_vocab"))  # replicated over `data`
    return out, top.recorded, stacked
