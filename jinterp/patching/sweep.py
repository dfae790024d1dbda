"""The sweep runner: every node of a site patched, one compiled program per start layer.

Why it is fast (a plain ``vmap`` of full forwards is not faster than a Python loop on a CPU):

- **Start at the layer.** Patching node ``n`` at layer ``l`` leaves blocks ``0 .. l-1`` as in
  the unpatched run, so each patch starts from that run's ``blocks.{l}.hook_resid_pre``
  (``start_at_layer=l``): a 12-layer sweep computes 78 blocks per position instead of 144.
  Patches are grouped by start layer, vmapped over the layer's nodes.
- **Start at the position** (``suffix_buckets``, :mod:`jinterp.patching.suffix`). A node at
  position ``p`` leaves positions ``< p`` unchanged (causal attention), so it recomputes
  positions ``p ..`` only (from its bucket's first position), reading earlier keys and values
  from the unpatched run; a node after the keys and values (a head's output, q, the pattern,
  attn_out, the MLP) runs its own layer at its position alone. One program per layer and
  bucket.
- **Only the logits the metric reads.** A :class:`jinterp.metrics.Metric` names its positions:
  the patched run stops at the final residual and unembeds those positions only; a logit
  difference computes its two tokens' logits only; a metric of one position runs the last
  block at that position alone (the others only give it keys and values).
- **No host sync per patch.** Node indices are data; the per-layer programs are dispatched
  back to back and the results stay on the device.
- **Bounded memory.** ``chunk_size`` nodes are vmapped at a time (``lax.map`` over chunks),
  so activations are ``chunk_size`` times one forward's.
- **Several devices.** The vmapped node axis of each chunk is sharded over ``devices``
  (chunks padded to a multiple of the device count; params and caches replicated).

Any other ``metric`` (a JAX function ``logits [batch, pos, d_vocab] -> scalar``) gets the full
logits. A Python function is part of the jit key (a new lambda compiles anew); metrics from
:mod:`jinterp.metrics` are pytrees whose arrays are data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, Float, Int

from jinterp import distributed, readout
from jinterp.hooks import Hooks
from jinterp.metrics import LogitDiff, Metric, NormalisedLogitDiff, take_positions
from jinterp.model import HookedModel
from jinterp.patching import suffix
from jinterp.patching.sites import Site
from jinterp.plan import split_leaves
from jinterp.run import run_with_cache, run_with_hooks, validate_attention_mask

MetricFn = Callable[[Float[Array, "batch pos d_vocab"]], Float[Array, ""]]

#: Suffix lengths compiled per layer (:mod:`jinterp.patching.suffix`).
DEFAULT_BUCKETS = 4


def check_chunk_size(chunk_size: int | None) -> None:
    """``chunk_size`` is None (every node of a layer at once) or an int >= 1."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be an int >= 1 or None; got {chunk_size!r}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: it is the number of patches vmapped at once "
                         "and must be >= 1 (or None for every node of a layer at once).")


def check_metric(model: HookedModel, metric: MetricFn, batch: int, n_pos: int) -> None:
    """The metric must map logits ``[batch, pos, d_vocab]`` to a scalar."""
    if not callable(metric):
        raise TypeError(f"patching_metric must be a function logits -> scalar (e.g. "
                        f"jinterp.metrics.logit_diff(answer, wrong)); got {type(metric).__name__}.")
    logits = jax.ShapeDtypeStruct((batch, n_pos, model.d_vocab), jnp.float32)
    out = jax.eval_shape(metric, logits)
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(f"patching_metric must return a scalar; on logits of shape "
                         f"{logits.shape} it returned {shape if shape is not None else out!r}. "
                         "Reduce over the batch (e.g. .mean()).")


def _token_reads(metric: MetricFn):
    """``(ids [batch, k], metric on those k columns)`` for metrics that read a few tokens' logits
    (logit differences), else None."""
    if not isinstance(metric, (LogitDiff, NormalisedLogitDiff)):
        return None
    answer, wrong = (jnp.asarray(t, jnp.int32) for t in (metric.answer, metric.wrong))
    shape = jnp.broadcast_shapes(answer.shape, wrong.shape)
    ids = jnp.stack([jnp.broadcast_to(answer, shape), jnp.broadcast_to(wrong, shape)], -1)
    return ids, metric.replace(answer=0, wrong=1)


def _column_logits(model: HookedModel, params, resid: Float[Array, "batch n d_model"],
                   ids: Int[Array, "*b k"]) -> Float[Array, "batch n k"]:
    """The logits of tokens ``ids`` (per example or shared) only: the port's unembedding
    (final norm, ``W_U``, ``b_U``, soft-cap) on ``k`` columns instead of ``d_vocab``."""
    x = readout.ln_final(model, params, resid)
    W, b = model.unembed_weights(params)
    ids = jnp.broadcast_to(ids, (resid.shape[0], ids.shape[-1]))  # batch k
    logits = jnp.einsum("bnd,dbk->bnk", x, jnp.take(W, ids, axis=1))  # batch n k
    if b is not None:
        logits = logits + b[ids][:, None, :]
    return readout.soft_cap_logits(model, logits)


def final_metric(model: HookedModel, params, final: Float[Array, "batch pos d_model"],
                 metric: MetricFn) -> Float[Array, ""]:
    """The metric of the residual after the last block, computing only the logits it reads.

    A :class:`~jinterp.metrics.Metric` with positions is unembedded at ``metric.pos`` only
    (ports' unembeddings act on each position alone); a logit difference there computes its
    two tokens' logits only (through the port's reading protocol, :mod:`jinterp.readout`).
    """
    if not (isinstance(metric, Metric) and metric.pos is not None):
        return metric(run_with_hooks(model, params, final, {}, start_at_layer=model.n_layers))
    return selected_metric(model, params, take_positions(final, metric.pos), metric)


def selected_metric(model: HookedModel, params, selected: Float[Array, "batch n d_model"],
                    metric: Metric) -> Float[Array, ""]:
    """A positioned metric from the final residual at its positions ``[batch, n_sel, d_model]``."""
    reads = _token_reads(metric)
    if reads is not None and _readable(model):
        ids, on_columns = reads
        return on_columns.at_positions(_column_logits(model, params, selected, ids))
    logits = run_with_hooks(model, params, selected, {}, start_at_layer=model.n_layers)
    return metric.at_positions(logits)


def query_position(metric: MetricFn, n_pos: int) -> Int[Array, ""] | None:
    """The one position a metric reads (``0 .. n_pos - 1``), or None (several, or unknown)."""
    if not (isinstance(metric, Metric) and metric.pos is not None and np.ndim(metric.pos) == 0):
        return None
    pos = jnp.asarray(metric.pos, jnp.int32)
    return jnp.where(pos < 0, pos + n_pos, pos)


def _readable(model: HookedModel) -> bool:
    try:
        readout.check_reading_protocol(model)
    except TypeError:
        return False
    return True


def patched_metric(model: HookedModel, params, resid: Float[Array, "batch pos d_model"],
                   hooks: Hooks, start_at_layer: int, metric: MetricFn,
                   attention_mask: ArrayLike | None = None) -> Float[Array, ""]:
    """The metric of a run from ``resid`` at ``start_at_layer`` with ``hooks``.

    A :class:`~jinterp.metrics.Metric` with positions gets the logits of those positions only
    (the run stops at the final residual, which is unembedded at ``metric.pos``).
    """
    final = run_with_hooks(model, params, resid, hooks, start_at_layer=start_at_layer,
                           stop_at_layer=model.n_layers, attention_mask=attention_mask)
    return final_metric(model, params, final, metric)


def corrupted_resid(model: HookedModel, params, tokens, attention_mask: ArrayLike | None = None
                    ) -> Float[Array, "layer batch pos d_model"]:
    """``hook_resid_pre`` of every layer of the unpatched run: where each patch starts."""
    _, cache = run_with_cache(model, params, tokens, attention_mask=attention_mask,
                              names=lambda name: name.endswith(".hook_resid_pre"))
    return cache.stack("hook_resid_pre")


def _rebuild(static, leaves):
    treedef, static_leaves = static
    return jax.tree.unflatten(treedef, [d if s is None else s
                                        for d, s in zip(leaves, static_leaves)])


def _chunked(one, node_arrays: Sequence[np.ndarray], chunk: int | None, n_dev: int,
             mesh) -> Float[Array, " n"]:
    """``one(*per_node)`` for every node, ``chunk`` nodes vmapped at a time (``lax.map``).

    ``node_arrays`` are static per-node integers (indices, positions); the last chunk is padded
    with copies of the last node, and with a mesh each chunk's nodes are sharded over it.
    """
    n = len(node_arrays[0])
    chunk = n if chunk is None else min(chunk, n)
    chunk = n_dev * math.ceil(chunk / n_dev)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    arrays = [jnp.asarray(np.concatenate([a, np.repeat(a[-1:], pad)]).reshape(n_chunks, chunk))
              for a in node_arrays]
    if mesh is not None:
        spec = NamedSharding(mesh, PartitionSpec(None, "sweep"))
        arrays = [lax.with_sharding_constraint(a, spec) for a in arrays]
    if n_chunks == 1:
        values = jax.vmap(one)(*(a[0] for a in arrays))[None]
    else:
        values = lax.map(lambda xs: jax.vmap(one)(*xs), tuple(arrays))
    return values.reshape(-1)[:n].astype(jnp.float32)


def _layer_sweep(params, resid, source, metric, mask, *, model, site, layer, n_nodes, chunk,
                 n_dev, mesh):
    """The metric of every node of ``site`` at ``layer`` patched, from ``resid`` at ``layer``."""
    n_pos = resid.shape[1]

    def one(index):
        hooks = {site.hook_name(layer): site.node_patch(model, n_pos, index, source)}
        return patched_metric(model, params, resid, hooks, layer, metric, mask)

    return _chunked(one, [np.arange(n_nodes, dtype=np.int32)], chunk, n_dev, mesh)


def _layer_sweep_suffix(params, run, source, metric, *, model, site, layer, n_nodes, chunk,
                        n_dev, mesh, n_buckets):
    """As :func:`_layer_sweep`, each node recomputing only the positions it changes
    (:mod:`jinterp.patching.suffix`), one program per bucket of positions; a metric that reads
    one position gets the last block at that position only."""
    n_pos = run.final.shape[1]
    query = query_position(metric, n_pos)
    parts = suffix.groups(model, site, n_pos, n_buckets)
    values = []
    for start, nodes, positions in parts:
        def one(index, pos, start=start):
            final = suffix.patched_final(model, params, run, source, index, pos, site=site,
                                         layer=layer, start=start, query=query)
            if query is None:
                return final_metric(model, params, final, metric)
            return selected_metric(model, params, final, metric)

        values.append(_chunked(one, [nodes, positions], chunk, n_dev, mesh))
    inverse = suffix.node_order([nodes for _, nodes, _ in parts], n_nodes)
    return jnp.concatenate(values)[inverse]


@functools.partial(jax.jit, static_argnames=("model", "site", "n_nodes", "chunk", "n_dev",
                                             "metric_static", "mesh", "n_buckets"))
def _sweep(params, tokens, sources, metric_leaves, mask, *, model, site, n_nodes, chunk, n_dev,
           metric_static, mesh, n_buckets):
    metric = _rebuild(metric_static, metric_leaves)
    common = dict(model=model, site=site, n_nodes=n_nodes, chunk=chunk, n_dev=n_dev, mesh=mesh)
    if n_buckets is None:
        resid = corrupted_resid(model, params, tokens, mask)
        rows = [_layer_sweep(params, resid[layer], sources[layer], metric, mask, layer=layer,
                             **common)
                for layer in range(model.n_layers)]
    else:
        run = suffix.unpatched_run(model, params, tokens, mask)
        rows = [_layer_sweep_suffix(params, run, sources[layer], metric, layer=layer,
                                    n_buckets=n_buckets, **common)
                for layer in range(model.n_layers)]
    return jnp.stack(rows)


def _mesh(devices: Sequence | None) -> Mesh | None:
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), ("sweep",)) if len(devices) > 1 else None


def _gathered(x: jax.Array) -> np.ndarray:
    """A host copy of a global array (gathered from the processes that hold its shards)."""

    return distributed.to_host(x)


def _replicate(tree, mesh: Mesh):
    """Every leaf replicated over ``mesh``, also when the mesh spans several processes.

    One process: ``jax.device_put``. Several: each leaf must be a host value that every
    process holds alike (or a global array, which is resharded in a program); host values are
    placed slice by slice with no cross-process traffic (``jax.device_put`` would first
    all-gather every leaf to check that the processes agree).
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, replicated)

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.jit(lambda a: a, out_shardings=replicated)(x)
        return distributed.place_host(x, replicated)

    return jax.tree.map(one, tree)


def check_buckets(n_buckets: int | None) -> None:
    """``n_buckets`` is None (every position recomputed) or an int >= 1."""
    if n_buckets is None:
        return
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, (int, np.integer)) \
            or n_buckets < 1:
        raise ValueError(f"suffix_buckets={n_buckets!r}: it is the number of suffix lengths "
                         "compiled (an int >= 1), or None to recompute every position.")


def _prepare(model, params, tokens, site, sources, metric, chunk_size, devices, n_buckets,
             attention_mask):
    check_chunk_size(chunk_size)
    check_buckets(n_buckets)
    batch, n_pos = np.shape(tokens)
    check_metric(model, metric, batch, n_pos)
    if isinstance(tokens, jax.Array) and not tokens.is_fully_addressable:
        tokens = _gathered(tokens)  # a global batch: every process needs all of it
    mask = validate_attention_mask(model, attention_mask, np.asarray(tokens))
    n_nodes = site.n_nodes(model, n_pos)
    mesh = _mesh(devices)
    sources = list(sources)
    n_dev = 1
    if mesh is not None:
        n_dev = mesh.devices.size
        params, tokens, sources, mask = _replicate((params, tokens, sources, mask), mesh)
    if not suffix.supported(model):
        n_buckets = None
    leaves, static, treedef = split_leaves(metric)
    static_args = dict(model=model, site=site, n_nodes=n_nodes,
                       chunk=None if chunk_size is None else int(chunk_size), n_dev=n_dev,
                       metric_static=(treedef, static), mesh=mesh,
                       n_buckets=None if n_buckets is None else int(n_buckets))
    return (params, tokens, sources, leaves, mask), static_args


def run_sweep(model: HookedModel, params, tokens, site: Site,
              sources: Sequence[Float[Array, "..."]], metric: MetricFn, *,
              chunk_size: int | None = None, devices: Sequence | None = None,
              suffix_buckets: int | None = DEFAULT_BUCKETS,
              attention_mask: ArrayLike | None = None) -> Float[Array, "..."]:
    """Patches every node of ``site`` at every layer into the run on ``tokens``, one at a time.

    Args:
        model, params: the model.
        tokens: the run patched into ``[batch, pos]`` (the corrupted prompts for denoising).
        site: which activations and nodes (:mod:`jinterp.patching.sites`).
        sources: one array per layer that broadcasts to the site's activation: what a node's
            entries are replaced with (clean activations, zeros, means, resampled values).
        metric: ``logits -> scalar``; a :class:`~jinterp.metrics.Metric` computes only the
            logits it reads.
        chunk_size: nodes vmapped at once (memory: ``chunk_size`` forwards); None: a layer's
            nodes at once (with suffix buckets: a bucket's).
        devices: devices to shard each chunk's nodes over; default every device (no sharding
            with one). In a multi-process run (:mod:`jinterp.distributed`) the default spans
            every process: pass host values that all processes hold alike (or global arrays);
            the result is then a global array, read it with ``distributed.to_host``.
        suffix_buckets: each node recomputes only the positions it can change, from its
            bucket's first position on (:mod:`jinterp.patching.suffix`); this many suffix
            lengths are compiled per layer. None: every position from the node's layer on (also
            what ports without an attention context get).
        attention_mask: ``[batch, pos]`` 1 for real tokens, 0 for padding (left or right), for
            prompts of different lengths in one batch: every patched run attends as
            :func:`jinterp.run_with_cache` with this mask does (pads are never attended to,
            positions count real tokens). Nodes at pad positions are patched too (their
            values are the pads' own); the metric reads the slots it names, so with right
            padding give each row's last real slot (left padding keeps it at ``-1``).

    Returns:
        ``site.result_shape(model, n_pos)``: the metric of each patched run (float32).
    """
    args, static_args = _prepare(model, params, tokens, site, sources, metric, chunk_size,
                                 devices, suffix_buckets, attention_mask)
    rows = _sweep(*args, **static_args)
    return rows.reshape(site.result_shape(model, np.shape(tokens)[1]))


def lower_sweep(model: HookedModel, params, tokens, site: Site,
                sources: Sequence[Float[Array, "..."]], metric: MetricFn, *,
                chunk_size: int | None = None, devices: Sequence | None = None,
                suffix_buckets: int | None = DEFAULT_BUCKETS,
                attention_mask: ArrayLike | None = None) -> jax.stages.Lowered:
    """The program :func:`run_sweep` runs, for inspection (``.compile()``, memory, HLO)."""
    args, static_args = _prepare(model, params, tokens, site, sources, metric, chunk_size,
                                 devices, suffix_buckets, attention_mask)
    return _sweep.lower(*args, **static_args)
