"""The sweep runner: every node of a site patched, one compiled program per start layer.

Why it is fast (a plain ``vmap`` of full forwards is not faster than a Python loop on a CPU):

- **Start at the layer.** Patching node ``n`` at layer ``l`` leaves blocks ``0 .. l-1`` as in
  the unpatched run, so each patch starts from that run's cached ``blocks.{l}.hook_resid_pre``
  (``start_at_layer=l``): a 12-layer sweep computes 78 blocks per position instead of 144.
  Patches are grouped by start layer: one program per layer, cached by ``jit`` (and JAX's
  persistent compilation cache), vmapped over the layer's nodes.
- **Only the logits the metric reads.** A :class:`jinterp.metrics.Metric` names its positions:
  the patched run stops at the final residual and unembeds those positions only.
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
from jaxtyping import Array, Float

from jinterp.hooks import Hooks
from jinterp.metrics import Metric, take_positions
from jinterp.model import HookedModel
from jinterp.patching.sites import Site
from jinterp.plan import split_leaves
from jinterp.run import run_with_cache, run_with_hooks

MetricFn = Callable[[Float[Array, "batch pos d_vocab"]], Float[Array, ""]]


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


def patched_metric(model: HookedModel, params, resid: Float[Array, "batch pos d_model"],
                   hooks: Hooks, start_at_layer: int, metric: MetricFn) -> Float[Array, ""]:
    """The metric of a run from ``resid`` at ``start_at_layer`` with ``hooks``.

    A :class:`~jinterp.metrics.Metric` with positions gets the logits of those positions only
    (the run stops at the final residual, which is unembedded at ``metric.pos``); ports'
    unembeddings act on each position alone, so the values are the same.
    """
    n = model.n_layers
    if isinstance(metric, Metric) and metric.pos is not None:
        final = run_with_hooks(model, params, resid, hooks, start_at_layer=start_at_layer,
                               stop_at_layer=n)
        logits = run_with_hooks(model, params, take_positions(final, metric.pos), {},
                                start_at_layer=n)
        return metric.at_positions(logits)
    return metric(run_with_hooks(model, params, resid, hooks, start_at_layer=start_at_layer))


def corrupted_resid(model: HookedModel, params, tokens) -> Float[Array, "layer batch pos d_model"]:
    """``hook_resid_pre`` of every layer of the unpatched run: where each patch starts."""
    _, cache = run_with_cache(model, params, tokens,
                              names=lambda name: name.endswith(".hook_resid_pre"))
    return cache.stack("hook_resid_pre")


def _rebuild(static, leaves):
    treedef, static_leaves = static
    return jax.tree.unflatten(treedef, [d if s is None else s
                                        for d, s in zip(leaves, static_leaves)])


def _layer_sweep(params, resid, source, metric, *, model, site, layer, n_nodes, chunk, mesh):
    """The metric of every node of ``site`` at ``layer`` patched, from ``resid`` at ``layer``."""
    n_pos = resid.shape[1]

    def one(index):
        hooks = {site.hook_name(layer): site.node_patch(model, n_pos, index, source)}
        return patched_metric(model, params, resid, hooks, layer, metric)

    n_chunks = -(-n_nodes // chunk)
    index = jnp.minimum(jnp.arange(n_chunks * chunk), n_nodes - 1).reshape(n_chunks, chunk)
    if mesh is not None:
        spec = NamedSharding(mesh, PartitionSpec(None, "sweep"))
        index = lax.with_sharding_constraint(index, spec)
    if n_chunks == 1:
        values = jax.vmap(one)(index[0])[None]
    else:
        values = lax.map(jax.vmap(one), index)
    return values.reshape(-1)[:n_nodes].astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("model", "site", "n_nodes", "chunk",
                                             "metric_static", "mesh"))
def _sweep(params, tokens, sources, metric_leaves, *, model, site, n_nodes, chunk,
           metric_static, mesh):
    metric = _rebuild(metric_static, metric_leaves)
    resid = corrupted_resid(model, params, tokens)
    rows = [_layer_sweep(params, resid[layer], sources[layer], metric, model=model, site=site,
                         layer=layer, n_nodes=n_nodes, chunk=chunk, mesh=mesh)
            for layer in range(model.n_layers)]
    return jnp.stack(rows)


def _mesh(devices: Sequence | None) -> Mesh | None:
    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.array(devices), ("sweep",)) if len(devices) > 1 else None


def _prepare(model, params, tokens, site, sources, metric, chunk_size, devices):
    check_chunk_size(chunk_size)
    batch, n_pos = np.shape(tokens)
    check_metric(model, metric, batch, n_pos)
    n_nodes = site.n_nodes(model, n_pos)
    mesh = _mesh(devices)
    chunk = n_nodes if chunk_size is None else min(int(chunk_size), n_nodes)
    sources = list(sources)
    if mesh is not None:
        n_dev = mesh.devices.size
        chunk = n_dev * math.ceil(chunk / n_dev)
        replicated = NamedSharding(mesh, PartitionSpec())
        params, tokens, sources = jax.device_put((params, jnp.asarray(tokens), sources),
                                                 replicated)
    leaves, static, treedef = split_leaves(metric)
    static_args = dict(model=model, site=site, n_nodes=n_nodes, chunk=chunk,
                       metric_static=(treedef, static), mesh=mesh)
    return (params, tokens, sources, leaves), static_args


def run_sweep(model: HookedModel, params, tokens, site: Site,
              sources: Sequence[Float[Array, "..."]], metric: MetricFn, *,
              chunk_size: int | None = None, devices: Sequence | None = None
              ) -> Float[Array, "..."]:
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
            nodes at once.
        devices: devices to shard each chunk's nodes over; default every device (no sharding
            with one).

    Returns:
        ``site.result_shape(model, n_pos)``: the metric of each patched run (float32).
    """
    args, static_args = _prepare(model, params, tokens, site, sources, metric, chunk_size,
                                 devices)
    rows = _sweep(*args, **static_args)
    return rows.reshape(site.result_shape(model, np.shape(tokens)[1]))


def lower_sweep(model: HookedModel, params, tokens, site: Site,
                sources: Sequence[Float[Array, "..."]], metric: MetricFn, *,
                chunk_size: int | None = None, devices: Sequence | None = None
                ) -> jax.stages.Lowered:
    """The program :func:`run_sweep` runs, for inspection (``.compile()``, memory, HLO)."""
    args, static_args = _prepare(model, params, tokens, site, sources, metric, chunk_size,
                                 devices)
    return _sweep.lower(*args, **static_args)
