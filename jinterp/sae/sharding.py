"""SAE training state on a device mesh: the logical axes of every state leaf, and sharded top-k.

The logical -> mesh axis table is :mod:`jinterp.sharding`'s (one table for model params,
activations and SAE state): ``batch -> data``, ``d_sae -> model``, and ``d_in``,
``d_target``, ``n_experts`` replicated (they are small, <= a few thousand). Each device then
encodes its share of tokens with its slice of the dictionary (encoder columns, decoder rows,
Adam moments, dead-latent counters). This module adds what is SAE-specific: the logical axes
of every SAE parameter (:data:`PARAM_AXES`, matched by leaf name, so Adam's moments follow
their parameter and a sweep's leading instance axis stays replicated), placement and
constraints for a whole :class:`~jinterp.sae.train_step.TrainState`, and :func:`top_k`.

The training step stays the same function on one device or a mesh: it calls
:func:`constrain_batch` and :func:`constrain_state`, which are no-ops without a mesh and
``with_sharding_constraint`` with one; XLA's SPMD partitioner inserts the collectives
(a reduce-scatter of the decoder gradient over ``data``, an all-reduce of the reconstruction
over ``model``).

Top-k over a ``model``-sharded ``d_sae`` is the one operation XLA partitions badly: left
alone it all-gathers the full ``[batch, d_sae]`` pre-activations onto every device (over the
data axis too) and every device sorts all of them. :func:`top_k` instead takes a local top-k
on each ``d_sae`` shard, all-gathers only those ``k`` candidates per shard and takes the top-k
of the ``k * n_model`` candidates -- the same values and indices as ``lax.top_k``, ties
included (lowest index wins in both). The TopK encoder (:mod:`jinterp.sae.topk`, TopK's
``encode``) and the AuxK selection of dead latents call it; it is ``lax.top_k`` unless a
mesh with a ``model`` axis is active (:func:`active_mesh`, which the training step enters, or
``jax.set_mesh``). Measured on 8 fake CPU devices (TopK SAE, d_in 256, d_sae 8192, batch
2048, k 32, one training step, load average ~1.5): mesh 2 x 4, collective output 353 MB ->
70 MB and 1.15 s -> 0.34 s; 4 x 2, 305 MB -> 58 MB and 1.31 s -> 0.46 s. BatchTopK gains
only in its AuxK selection (395 MB -> 314 MB, 2.27 s -> 1.77 s): its batch-level selection
(one top-k over the flattened ``[batch * d_sae]``) still gathers the full matrix.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int

from jinterp import sharding as table
from jinterp.distributed import place_host
from jinterp.sharding import DATA, MODEL, make_mesh

__all__ = ["DATA", "MODEL", "PARAM_AXES", "active_mesh", "batch_sharding", "constrain_batch",
           "constrain_state", "make_mesh", "place_host", "shard_batch", "shard_state",
           "state_shardings", "top_k"]

# Logical axes of every SAE parameter (and so of its Adam moments, found by the same name).
PARAM_AXES: dict[str, tuple[str, ...]] = {
    "W_enc": ("d_in", "d_sae"),
    "b_enc": ("d_sae",),
    "W_dec": ("d_sae", "d_target"),
    "b_dec": ("d_target",),
    "log_threshold": ("d_sae",),
    "b_gate": ("d_sae",),
    "r_mag": ("d_sae",),
    "b_mag": ("d_sae",),
    "W_router": ("d_in", "n_experts"),
    "b_router": ("n_experts",),
    "steps_since_fired": ("d_sae",),
}


def _leaf_name(path) -> str | None:
    """The innermost dict key or attribute name on a pytree path (e.g. ``W_enc``)."""
    for entry in reversed(path):
        name = getattr(entry, "key", None) or getattr(entry, "name", None)
        if isinstance(name, str):
            return name
    return None


def _leaf_axes(path, leaf) -> tuple[str | None, ...]:
    """Logical axes of one state leaf: its named axes, extra leading axes (sweep instances)
    replicated; leaves without a known name (counters, keys, scalars) replicated."""
    axes = PARAM_AXES.get(_leaf_name(path))
    ndim = np.ndim(leaf) if not hasattr(leaf, "ndim") else leaf.ndim
    if axes is None or ndim < len(axes):
        return (None,) * ndim
    return (None,) * (ndim - len(axes)) + axes


def state_shardings(state: Any, mesh: table.AnyMesh) -> Any:
    """A pytree of ``NamedSharding`` matching ``state`` (params, Adam moments, counters).

    Raises:
        ValueError: a mesh axis does not divide the dimension it splits (e.g. ``d_sae`` not a
            multiple of the ``model`` size); the message names the leaf and the fix.
    """
    def one(path, leaf):
        shape = leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)
        return table.named_sharding(_leaf_axes(path, leaf), shape, mesh,
                                    name=f"SAE state {jax.tree_util.keystr(path)}")

    return jax.tree_util.tree_map_with_path(one, state)


def shard_state(state: Any, mesh: Mesh) -> Any:
    """Places a training state (or params) on ``mesh``: ``d_sae`` split over ``model``.

    In a multi-process run pass host values that every process computed alike: they are
    placed by :func:`place_host` (``jax.device_put`` would compare them across processes,
    one collective per leaf).
    """
    shardings = state_shardings(state, mesh)
    if jax.process_count() > 1:
        return place_host(jax.device_get(state), shardings)
    return jax.device_put(state, shardings)


def _batch_axes(ndim: int) -> tuple[str | None, ...]:
    return (None,) * (ndim - 2) + ("batch", "d_in")


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a ``[batch, d_in]`` batch (or ``[n_steps, batch, d_in]`` with ndim=3)."""
    return NamedSharding(mesh, table.spec(_batch_axes(ndim), mesh))


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places a batch (array or (x, target) tuple) with its token axis split over ``data``."""
    def one(a):
        return jax.device_put(a, table.named_sharding(_batch_axes(a.ndim), a.shape, mesh,
                                                      name="SAE batch"))

    return jax.tree.map(one, batch)


def constrain_batch(x: jax.Array, mesh: Mesh | None) -> jax.Array:
    """Inside a jitted step: the token axis of ``x`` [batch, d] is split over ``data``."""
    if mesh is None:
        return x
    return jax.lax.with_sharding_constraint(x, batch_sharding(mesh, x.ndim))


def constrain_state(state: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted step: keeps every state leaf on its logical sharding."""
    if mesh is None:
        return state

    def one(path, leaf):
        return jax.lax.with_sharding_constraint(
            leaf, NamedSharding(mesh, table.spec(_leaf_axes(path, leaf), mesh)))

    return jax.tree_util.tree_map_with_path(one, state)


# ----------------------------------------------------------------------------- sharded top-k
_ACTIVE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("sae_mesh", default=None)


@contextlib.contextmanager
def active_mesh(mesh: Mesh | None) -> Iterator[None]:
    """While tracing under this context, :func:`top_k` shards over ``mesh``'s ``model`` axis."""
    token = _ACTIVE_MESH.set(mesh)
    try:
        yield
    finally:
        _ACTIVE_MESH.reset(token)


def _top_k_mesh() -> Any | None:
    """The mesh :func:`top_k` shards over: :func:`active_mesh`'s, else ``jax.set_mesh``'s."""
    mesh = _ACTIVE_MESH.get()
    if mesh is not None:
        return mesh
    context = jax.sharding.get_abstract_mesh()
    return None if context.empty else context


def top_k(x: Float[Array, "batch d_sae"], k: int
          ) -> tuple[Float[Array, "batch k"], Int[Array, "batch k"]]:
    """``lax.top_k`` over the last axis, computed shard-locally when ``d_sae`` is split.

    With a mesh active (see :func:`_top_k_mesh`) that has a ``model`` axis of size ``n > 1``
    (and ``d_sae`` divisible by it) each device keeps the top ``min(k, d_sae / n)`` of its own
    slice, the candidates (``[batch, k * n]``, not ``[batch, d_sae]``) are all-gathered over
    ``model``, and a second top-k picks the winners. Elsewhere it is exactly ``lax.top_k``.
    Differentiable (the values' gradient flows back to the selected entries).
    """
    mesh = _top_k_mesh()
    n_model = 0 if mesh is None or MODEL not in mesh.axis_names else mesh.shape[MODEL]
    if n_model <= 1 or x.ndim != 2 or x.shape[-1] % n_model:
        values, indices = jax.lax.top_k(x, k)
        return values, indices
    d_local = x.shape[-1] // n_model
    k_local = min(k, d_local)
    n_data = mesh.shape[DATA] if DATA in mesh.axis_names else 1
    batch_axis = DATA if n_data > 1 and x.shape[0] % n_data == 0 else None

    def local(xs: Float[Array, "b d_local"]):
        values, indices = jax.lax.top_k(xs, k_local)  # [b, k_local]
        indices = indices + jax.lax.axis_index(MODEL) * d_local  # global latent ids
        values = jax.lax.all_gather(values, MODEL, axis=1, tiled=True)  # [b, k_local * n]
        indices = jax.lax.all_gather(indices, MODEL, axis=1, tiled=True)
        best, pos = jax.lax.top_k(values, k)  # [b, k]
        return best, jnp.take_along_axis(indices, pos, axis=1)

    spec_in = PartitionSpec(batch_axis, MODEL)
    spec_out = PartitionSpec(batch_axis, None)
    values, indices = jax.shard_map(local, mesh=mesh, in_specs=spec_in,
                                    out_specs=(spec_out, spec_out), check_vma=False)(x)
    return values, indices
