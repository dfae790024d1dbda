"""Path patching (Wang et al. 2022, the IOI paper; Goldowsky-Dill et al. 2023).

Activation patching asks what a node does along *every* path; path patching asks what it does
along the paths into chosen *receivers* only. Senders (heads, MLPs, the embedding) take their
corrupted values, the clean run is otherwise untouched, and the change reaches the receivers
(a head's query, key or value input, an MLP's input, the final residual) directly, through the
residual stream, never through another node. Three runs, as in the paper:

1. clean and corrupted runs, caching every head's ``hook_z`` and every ``hook_mlp_out``;
2. the clean run with the senders set to their corrupted values and **every other node frozen
   to its clean value** (heads at ``hook_z``, MLPs at ``hook_mlp_out``; norms are recomputed),
   caching the receivers' inputs (``hook_q`` / ``hook_k`` / ``hook_v`` of the receiver head,
   ``mlp.hook_pre`` (and ``hook_pre_linear``) of a receiver MLP, the last ``hook_resid_post``);
3. the clean run with only the receivers' inputs replaced by those values, everything
   downstream recomputed. The result is the metric of run 3.

The final residual as a receiver gets the senders' *direct* change added (run 2's final
residual minus the clean one), so with other receivers in the set their effects are kept;
alone, that is the usual replacement. Receiver k/v inputs on grouped- or multi-query models
are kv heads (``Node.k(layer, kv_head)``), shared by the query heads of their group.

:func:`get_path_patch_head_to_receivers` sweeps every sender head for one receiver set as one
compiled program (``vmap`` over the sender, ``chunk_size`` senders at a time); run 3 starts at
the first receiver's layer from the clean residual. :func:`path_patch` patches one sender set.

Padded batches: every function takes ``attention_mask`` (``[batch, pos]``, 1 real, 0 pad; left
or right), used by all three runs, so each prompt's result is what it is unpadded (positions
count real tokens, pads are never attended to). Clean and corrupted prompts share the mask:
pair them with equal lengths, as the IOI templates are.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from jaxtyping import Array, ArrayLike, Bool, Float

from jinterp.hooks import At
from jinterp.interventions import Intervention, Patch, Steer
from jinterp.model import HookedModel
from jinterp.names import Axes, block_name
from jinterp.patching.attr_checks import MetricFn, positive_int, same_shape, scalar_metric
from jinterp.patching.attr_graph import Node, check_node, has_mlp
from jinterp.plan import split_leaves
from jinterp.run import _rebuild, run_with_cache, run_with_hooks, validate_attention_mask


@struct.dataclass
class Choose(Intervention):
    """``x <- where(mask, corrupt, clean)``: senders corrupted, every other node frozen clean.

    ``mask`` is a scalar (a whole activation: an MLP, the embedding) or ``[n_heads]`` (per
    head, on the activation's ``n_heads`` axis). Under ``jinterp.At(..., stacked=True)`` every
    field carries a leading ``[layer]`` axis.
    """

    layered_fields = ("clean", "corrupt", "mask")

    clean: Float[Array, "..."]
    corrupt: Float[Array, "..."]
    mask: Bool[Array, "..."]

    def apply(self, x: Array, axes: Axes) -> Array:
        mask = jnp.asarray(self.mask)
        if mask.ndim == 1:
            shape = [1] * x.ndim
            shape[axes.index("n_heads")] = mask.shape[0]
            mask = mask.reshape(shape)
        return jnp.where(mask, self.corrupt, self.clean).astype(x.dtype)


@struct.dataclass
class Senders:
    """Which nodes are senders: ``heads [layer, n_heads]``, ``mlps [layer]``, ``embed []``."""

    heads: Bool[Array, "layer n_heads"]
    mlps: Bool[Array, " layer"]
    embed: Bool[Array, ""]


def _frozen_names(model: HookedModel) -> list[str]:
    names = [block_name(0, "hook_resid_pre")]
    names += [block_name(l, "attn.hook_z") for l in range(model.n_layers)]
    if has_mlp(model):
        names += [block_name(l, "hook_mlp_out") for l in range(model.n_layers)]
    return names


def _sender_hooks(model: HookedModel, clean, corrupt, senders: Senders) -> dict:
    """Run 2's hooks: senders corrupted, every other head and MLP frozen to its clean value."""
    layers = jnp.arange(model.n_layers)
    hooks = {
        "hook_resid_pre": At(0, Choose(clean[block_name(0, "hook_resid_pre")],
                                       corrupt[block_name(0, "hook_resid_pre")], senders.embed)),
        "attn.hook_z": At(layers, Choose(clean.stack("attn.hook_z"),
                                         corrupt.stack("attn.hook_z"), senders.heads),
                          stacked=True),
    }
    if has_mlp(model):
        hooks["hook_mlp_out"] = At(layers, Choose(clean.stack("hook_mlp_out"),
                                                  corrupt.stack("hook_mlp_out"), senders.mlps),
                                   stacked=True)
    return hooks


def _receiver_points(model: HookedModel, node: Node) -> list[tuple[str, int | None]]:
    """``(full name, head index or None)`` of the activations that carry ``node``'s input."""
    if node.kind == "final":
        return [(block_name(model.n_layers - 1, "hook_resid_post"), None)]
    if node.kind == "mlp_in":
        points = ["mlp.hook_pre"] + (["mlp.hook_pre_linear"]
                                     if "mlp.hook_pre_linear" in model.block_point_axes else [])
        return [(block_name(node.layer, p), None) for p in points]
    return [(block_name(node.layer, f"attn.hook_{node.kind}"), node.index)]


def _receiver_table(model: HookedModel, receivers: tuple[Node, ...]
                    ) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
    """Receivers grouped by activation name: ``((name, heads or None), ...)``, forward order."""
    table: dict[str, list[int] | None] = {}
    for node in receivers:
        for name, head in _receiver_points(model, node):
            if head is None:
                table[name] = None
            elif table.get(name, []) is not None:
                table[name] = sorted(set(table.get(name, [])) | {head})
    order = {n: i for i, n in enumerate(model.hook_names())}
    return tuple((name, None if heads is None else tuple(heads))
                 for name, heads in sorted(table.items(), key=lambda item: order[item[0]]))


def _start_layer(model: HookedModel, table) -> int:
    layers = [int(name.split(".")[1]) for name, _ in table]
    return min(layers)


def _path_metric(model, params, clean, corrupt, senders: Senders, table, metric, final_name,
                 mask=None):
    """Runs 2 and 3 for one sender set: the metric of the clean run with receivers patched
    (both with the padding mask ``mask``, when given)."""
    hooks = _sender_hooks(model, clean, corrupt, senders)
    names = [name for name, _ in table]
    _, frozen = run_with_cache(model, params, clean[block_name(0, "hook_resid_pre")],
                               names=names, hooks=hooks, start_at_layer=0, attention_mask=mask)
    patches = {}
    for name, heads in table:
        if name == final_name:
            patches[name] = Steer(frozen[name] - clean[name], scale=1.0)
        else:
            patches[name] = Patch(frozen[name], head=None if heads is None else np.array(heads))
    start = _start_layer(model, table)
    resid = clean[block_name(start, "hook_resid_pre")]
    return metric(run_with_hooks(model, params, resid, patches, start_at_layer=start,
                                 attention_mask=mask))


@functools.partial(jax.jit, static_argnames=("model", "table", "metric_static", "chunk"))
def _head_sweep(params, clean, corrupt, metric_leaves, mask, *, model, table, metric_static,
                chunk):
    metric = _rebuild(metric_static, metric_leaves)
    n_layers, n_heads = model.n_layers, model.dims["n_heads"]
    final = block_name(n_layers - 1, "hook_resid_post")

    def one(index):
        heads = jax.nn.one_hot(index, n_layers * n_heads, dtype=bool).reshape(n_layers, n_heads)
        senders = Senders(heads, jnp.zeros(n_layers, bool), jnp.zeros((), bool))
        return _path_metric(model, params, clean, corrupt, senders, table, metric, final, mask)

    index = jnp.arange(n_layers * n_heads)
    values = lax.map(one, index, batch_size=chunk)
    return values.reshape(n_layers, n_heads).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("model", "table", "metric_static"))
def _one_set(params, clean, corrupt, senders, metric_leaves, mask, *, model, table,
             metric_static):
    metric = _rebuild(metric_static, metric_leaves)
    final = block_name(model.n_layers - 1, "hook_resid_post")
    return _path_metric(model, params, clean, corrupt, senders, table, metric, final, mask)


def _caches(model: HookedModel, params, clean_tokens, corrupted_tokens, metric, attention_mask):
    """Run 1 (clean and corrupted, with the padding mask) and the checked mask."""
    batch, n_pos = same_shape(clean_tokens, corrupted_tokens)
    scalar_metric(model, metric, batch, n_pos)
    mask = validate_attention_mask(model, attention_mask, np.empty((batch, n_pos), bool))
    names = _frozen_names(model) + [n for n in model.hook_names()
                                    if n.endswith(("hook_resid_pre", "hook_resid_post"))]
    names = list(dict.fromkeys(names))
    _, clean = run_with_cache(model, params, clean_tokens, names=names, attention_mask=mask)
    _, corrupt = run_with_cache(model, params, corrupted_tokens, names=names,
                                attention_mask=mask)
    return clean, corrupt, mask


def _check_receivers(model: HookedModel, receivers) -> tuple[Node, ...]:
    if isinstance(receivers, Node):
        receivers = [receivers]
    receivers = tuple(check_node(model, r, upstream=False, role="receiver") for r in receivers)
    if not receivers:
        raise ValueError("receivers is empty: pass at least one receiver node, e.g. "
                         "[Node.final()] or [Node.q(layer, head)].")
    return receivers


def get_path_patch_head_to_receivers(model: HookedModel, params, clean_tokens,
                                     corrupted_tokens, metric: MetricFn,
                                     receivers: Node | Sequence[Node], *,
                                     chunk_size: int | None = None,
                                     attention_mask: ArrayLike | None = None
                                     ) -> Float[Array, "layer n_heads"]:
    """Path-patches every head, one at a time, along its paths into ``receivers``.

    Args:
        model, params: the model.
        clean_tokens: the run patched into ``[batch, pos]``.
        corrupted_tokens: where the senders' values come from (same shape).
        metric: ``logits -> scalar`` of the final (run-3) logits.
        receivers: nodes from :class:`~jinterp.patching.attr_graph.Node`: ``Node.q/k/v``,
            ``Node.mlp_in``, ``Node.final``.
        chunk_size: senders vmapped at once (memory); None: every head at once.
        attention_mask: ``[batch, pos]`` 1 for real tokens, 0 for padding (left or right), of
            the clean and the corrupted prompts alike: every run (caches, frozen run, final
            run) attends as :func:`jinterp.run_with_cache` with this mask does. The metric
            reads the slots it names: with right padding give each row's last real slot (left
            padding keeps it at ``-1``).

    Returns:
        ``[layer, n_heads]``: the metric with that head as the only sender (float32). A head
        at or after every receiver's layer has no path to it and gives the clean metric.
    """
    if chunk_size is not None:
        positive_int(chunk_size, "chunk_size", "the senders vmapped at once (or None for all)")
    table = _receiver_table(model, _check_receivers(model, receivers))
    clean, corrupt, mask = _caches(model, params, clean_tokens, corrupted_tokens, metric,
                                   attention_mask)
    n_senders = model.n_layers * model.dims["n_heads"]
    chunk = n_senders if chunk_size is None else min(int(chunk_size), n_senders)
    leaves, static, treedef = split_leaves(metric)
    return _head_sweep(params, clean, corrupt, leaves, mask, model=model, table=table,
                       metric_static=(treedef, static), chunk=chunk)


def path_patch(model: HookedModel, params, clean_tokens, corrupted_tokens, metric: MetricFn,
               senders: Node | Sequence[Node], receivers: Node | Sequence[Node], *,
               attention_mask: ArrayLike | None = None) -> Float[Array, ""]:
    """The metric with ``senders`` path-patched (together) along their paths into ``receivers``.

    Args:
        senders: ``Node.head(layer, head)``, ``Node.mlp(layer)``, ``Node.embed()``.
        receivers, attention_mask: as in :func:`get_path_patch_head_to_receivers`.
    """
    if isinstance(senders, Node):
        senders = [senders]
    senders = [check_node(model, s, upstream=True, role="sender") for s in senders]
    table = _receiver_table(model, _check_receivers(model, receivers))
    clean, corrupt, pads = _caches(model, params, clean_tokens, corrupted_tokens, metric,
                                   attention_mask)
    heads = np.zeros((model.n_layers, model.dims["n_heads"]), bool)
    mlps = np.zeros(model.n_layers, bool)
    embed = False
    for s in senders:
        if s.kind == "head":
            heads[s.layer, s.index] = True
        elif s.kind == "mlp":
            mlps[s.layer] = True
        else:
            embed = True
    mask = Senders(jnp.asarray(heads), jnp.asarray(mlps), jnp.asarray(embed))
    leaves, static, treedef = split_leaves(metric)
    return _one_set(params, clean, corrupt, mask, leaves, pads, model=model, table=table,
                    metric_static=(treedef, static))


def get_path_patch_head_to_final_resid_post(model: HookedModel, params, clean_tokens,
                                            corrupted_tokens, metric: MetricFn, *,
                                            chunk_size: int | None = None,
                                            attention_mask: ArrayLike | None = None
                                            ) -> Float[Array, "layer n_heads"]:
    """Every head's direct effect on the logits: receivers ``[Node.final()]`` (ARENA's name).

    Arguments as :func:`get_path_patch_head_to_receivers` (``attention_mask`` included)."""
    return get_path_patch_head_to_receivers(model, params, clean_tokens, corrupted_tokens,
                                            metric, [Node.final()], chunk_size=chunk_size,
                                            attention_mask=attention_mask)


def get_path_patch_head_to_heads(model: HookedModel, params, clean_tokens, corrupted_tokens,
                                 metric: MetricFn, receiver_heads: Sequence[tuple[int, int]],
                                 receiver_input: str, *, chunk_size: int | None = None,
                                 attention_mask: ArrayLike | None = None
                                 ) -> Float[Array, "layer n_heads"]:
    """Every head path-patched into ``receiver_heads``' ``receiver_input`` (``"q"``, ``"k"``,
    ``"v"``), as in ARENA's IOI notebook; k/v heads are kv heads on GQA models. Other
    arguments as :func:`get_path_patch_head_to_receivers` (``attention_mask`` included)."""
    if receiver_input not in ("q", "k", "v"):
        raise ValueError(f"receiver_input must be 'q', 'k' or 'v'; got {receiver_input!r}.")
    receivers = [Node(receiver_input, int(l), int(h)) for l, h in receiver_heads]
    return get_path_patch_head_to_receivers(model, params, clean_tokens, corrupted_tokens,
                                            metric, receivers, chunk_size=chunk_size,
                                            attention_mask=attention_mask)
