"""The one table that maps logical axes to mesh axes, for params, activations and SAE state.

Model code, SAE code and probes name logical axes only (the vocabulary ``jinterp.names.AXES``,
which includes the SAE's ``d_sae``, ``d_in``, ``d_target``, ``n_experts``); this module is the
single place that says how they lie on a ``data x model`` device mesh:

==============================  ==========  ===============================================
logical axis                    mesh axis   why
==============================  ==========  ===============================================
``batch``                       ``data``    data parallel: each device runs its share of
                                            sequences (or SAE tokens)
``n_heads``, ``n_kv_heads``     ``model``   Megatron-style tensor parallel attention: heads
                                            are independent until ``W_O``, so each device
                                            holds whole heads and one all-reduce follows
``d_mlp``                       ``model``   ``W_in`` split by columns, ``W_out`` by rows: one
                                            all-reduce per MLP
``d_vocab``                     ``model``   the embedding and unembedding are the largest
                                            matrices of small models; logits come out split
``d_sae``                       ``model``   an SAE dictionary is split by latents (encoder
                                            columns, decoder rows, their Adam moments)
everything else                 replicated  ``d_model``, ``d_head``, ``pos``, ``layer`` ... are
                                            contracted or scanned over; splitting them costs
                                            a collective per use
==============================  ==========  ===============================================

FSDP (:data:`FSDP_RULES`, or ``fsdp=True``) additionally splits ``d_model`` of *parameters*
over ``data``: each data replica stores ``1 / n_data`` of every weight and XLA all-gathers a
weight where it is used, trading a collective per layer for ``n_data`` times less parameter
memory. Activations never use it (``batch`` already occupies ``data``); :func:`constrain`
always takes the activation table.

Two rules make one table work for every array:

* a mesh axis that the mesh lacks is dropped (a data-only mesh just replicates ``model`` dims);
* a mesh axis is used at most once per array: a later dimension that maps to a mesh axis an
  earlier one already took stays replicated (``W_E [d_vocab, d_model]`` under FSDP is
  ``P('model', 'data')``; ``hook_pattern [batch n_heads q_pos k_pos]`` is ``P('data', 'model')``).

Parameters must divide evenly (:func:`shard_params` raises a ``ValueError`` naming the
parameter and the fix); an activation dimension that does not divide its mesh axis is left
replicated by :func:`constrain` (e.g. a single key/value head of multi-query attention).

Caveat (memory): ``shard_params`` places every parameter once; a sharded parameter costs
``1 / n_model`` (and ``1 / n_data`` more under FSDP) per device, replicated ones cost full
size on every device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec

DATA = "data"
MODEL = "model"

Rules = Mapping[str, str | None]
AnyMesh = Mesh | AbstractMesh  # a concrete mesh, or the abstract one inside ``jit``

#: Logical axis -> mesh axis (None: replicated) for activations and (non-FSDP) parameters.
RULES: Rules = {
    "batch": DATA,
    "pos": None,
    "q_pos": None,
    "k_pos": None,
    "n_ctx": None,
    "layer": None,
    "d_model": None,
    "d_head": None,
    "half": None,
    "n_heads": MODEL,
    "n_kv_heads": MODEL,
    "d_mlp": MODEL,
    "d_vocab": MODEL,
    "d_sae": MODEL,
    "d_in": None,
    "d_target": None,
    "n_experts": None,
    "n_blocks": None,  # a crosscoder's blocks (layers or models): few, kept whole
    "d_block": None,
}

#: Parameters only: as :data:`RULES`, plus ``d_model`` of every weight split over ``data``.
FSDP_RULES: Rules = {**RULES, "d_model": DATA}


def make_mesh(data: int, model: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``data x model`` mesh (axes :data:`DATA`, :data:`MODEL`) over the first devices.

    Args:
        data: size of the data-parallel axis.
        model: size of the tensor-parallel axis.
        devices: devices to use (default ``jax.devices()``); the first ``data * model`` are taken.
    """
    devices = jax.devices() if devices is None else list(devices)
    if data < 1 or model < 1:
        raise ValueError(f"mesh sizes must be positive, got data={data}, model={model}")
    if data * model > len(devices):
        raise ValueError(f"mesh {data} x {model} needs {data * model} devices, only "
                         f"{len(devices)} available (for tests set XLA_FLAGS="
                         f"--xla_force_host_platform_device_count=8 before importing jax)")
    grid = np.asarray(devices[:data * model], dtype=object).reshape(data, model)
    return Mesh(grid, (DATA, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def spec(axes: Sequence[str | None], mesh: AnyMesh, rules: Rules | None = None) -> PartitionSpec:
    """The ``PartitionSpec`` of an array whose dimensions have these logical axes.

    Args:
        axes: one logical axis name per dimension; ``None`` or a size literal such as ``"1"``
            (the kept axis of a norm scale) is replicated.
        mesh: a ``Mesh`` or ``AbstractMesh``; mesh axes it lacks are dropped.
        rules: the table to use (default :data:`RULES`).

    Returns:
        One entry per dimension; a mesh axis appears at most once (the first dimension that
        maps to it takes it, later ones stay replicated).

    Raises:
        ValueError: an axis name is neither in the table nor a size literal (a typo would
            otherwise replicate silently).
    """
    rules = _check_axes(axes, rules)
    available = set(mesh.axis_names)
    used: set[str] = set()
    out: list[str | None] = []
    for axis in axes:
        target = None if axis is None or axis.isdigit() else rules[axis]
        if target is None or target not in available or target in used:
            out.append(None)
            continue
        used.add(target)
        out.append(target)
    return PartitionSpec(*out)


def _check_axes(axes: Sequence[str | None], rules: Rules | None) -> Rules:
    """The rules (default :data:`RULES`) after checking that they name every axis."""
    rules = RULES if rules is None else rules
    for axis in axes:
        if axis is not None and not axis.isdigit() and axis not in rules:
            raise ValueError(f"unknown logical axis {axis!r} in {tuple(axes)}: the sharding "
                             f"table knows {sorted(rules)}; add it to jinterp.names.AXES and "
                             f"the rules (or use None to replicate)")
    return rules


def _resolve(rules: Rules | None, fsdp: bool) -> Rules:
    rules = RULES if rules is None else rules
    return {**rules, "d_model": DATA} if fsdp else rules


def _is_axes(x: Any) -> bool:
    return isinstance(x, tuple)


def _path_name(path: Sequence[Any]) -> str:
    """``blocks.attn.W_K`` for a pytree path of dict keys / attributes / indices."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return ".".join(parts)


def named_sharding(axes: Sequence[str | None], shape: Sequence[int], mesh: AnyMesh,
                   rules: Rules | None = None, *, name: str = "array") -> NamedSharding:
    """The ``NamedSharding`` of one array with these logical axes, checked against its shape.

    Args:
        axes: one logical axis per dimension.
        shape: the array's shape.
        mesh: the device mesh.
        rules: the table (default :data:`RULES`).
        name: what to call the array in errors (a parameter path such as ``blocks.attn.W_K``).

    Raises:
        ValueError: the axes do not match the rank, or a mesh axis does not divide the
            dimension it splits; the message names the array, its shape and axes, the mesh
            shape and the fix.
    """
    axes, shape = tuple(axes), tuple(int(s) for s in shape)
    if len(axes) != len(shape):
        raise ValueError(f"{name} has shape {shape} but its logical axes {axes} name "
                         f"{len(axes)} dimensions; give one axis per dimension")
    pspec = spec(axes, mesh, rules)
    for size, axis, mesh_axis in zip(shape, axes, pspec):
        if mesh_axis is not None and size % mesh.shape[mesh_axis]:
            raise ValueError(
                f"{name} of shape {shape} (axes {axes}): dimension {axis!r} of size {size} "
                f"is split over mesh axis {mesh_axis!r} of size {mesh.shape[mesh_axis]}, which "
                f"does not divide it (mesh shape {dict(mesh.shape)}). Use a mesh whose "
                f"{mesh_axis!r} size divides {size}, or rules that replicate {axis!r} (e.g. "
                f"{{**jinterp.sharding.RULES, {axis!r}: None}}).")
    return NamedSharding(mesh, pspec)


def _shape(leaf: Any) -> tuple[int, ...]:
    return tuple(leaf.shape) if hasattr(leaf, "shape") else np.shape(leaf)


def _shardings(axes_tree: Any, shapes_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    axes_leaves, treedef = jax.tree_util.tree_flatten_with_path(axes_tree, is_leaf=_is_axes)
    shape_leaves, shape_def = jax.tree_util.tree_flatten_with_path(shapes_tree)
    if treedef != shape_def:
        want = {_path_name(p) for p, _ in axes_leaves}
        have = {_path_name(p) for p, _ in shape_leaves}
        raise ValueError(f"params and model.param_axes() differ: params lack "
                         f"{sorted(want - have)}, param_axes() lacks {sorted(have - want)} "
                         f"(build params with model.init or fix param_axes())")
    out = [named_sharding(axes, _shape(leaf), mesh, rules, name=f"parameter {_path_name(path)}")
           for (path, axes), (_, leaf) in zip(axes_leaves, shape_leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


def param_shardings(model: Any, mesh: Mesh, rules: Rules | None = None, *,
                    fsdp: bool = False) -> Any:
    """A params-shaped pytree of ``NamedSharding`` from ``model.param_axes()``.

    Nothing is allocated: shapes come from ``model.param_shapes()`` (``jax.eval_shape``).
    Use it as ``jax.jit(..., out_shardings=...)`` to initialise a model already sharded.

    Args:
        model: a port with ``param_axes()`` and ``param_shapes()``.
        mesh: the device mesh.
        rules: the table (default :data:`RULES`).
        fsdp: additionally split ``d_model`` over ``data`` (:data:`FSDP_RULES`).
    """
    return _shardings(model.param_axes(), model.param_shapes(), mesh, _resolve(rules, fsdp))


def shard_params(model: Any, params: Any, mesh: Mesh, rules: Rules | None = None, *,
                 fsdp: bool = False) -> Any:
    """``params`` placed on ``mesh`` by their logical axes (``jax.device_put`` of every leaf).

    Raises:
        ValueError: a mesh axis does not divide the dimension it splits (the message names the
            parameter, its shape and axes, the mesh and the fix), or params and
            ``model.param_axes()`` have different structures.
    """
    shardings = _shardings(model.param_axes(), params, mesh, _resolve(rules, fsdp))
    return jax.device_put(params, shardings)


def _context_mesh() -> AbstractMesh | None:
    """The mesh of ``jax.set_mesh`` (abstract inside ``jit``), or None when there is none."""
    mesh = jax.sharding.get_abstract_mesh()
    return None if mesh.empty else mesh


def constrain(x: jax.Array, axes: Sequence[str | None], mesh: AnyMesh | None = None,
              rules: Rules | None = None) -> jax.Array:
    """``with_sharding_constraint`` of an activation by its logical axes.

    Uses ``mesh`` when given, else the mesh set with ``jax.set_mesh`` (if any); without a mesh
    it returns ``x`` unchanged (after checking the axis names), so model code can call it
    unconditionally. A dimension whose size its mesh axis does not divide stays replicated.
    On a mesh whose axes are all ``Explicit`` it reshards instead (there
    ``with_sharding_constraint`` only asserts).

    Args:
        x: the activation, e.g. ``hook_z`` ``[batch pos n_heads d_head]``.
        axes: its logical axes, e.g. ``("batch", "pos", "n_heads", "d_head")``.
        mesh: a concrete mesh; None = JAX's context mesh.
        rules: the activation table (default :data:`RULES`; never FSDP's).
    """
    if len(axes) != x.ndim:
        raise ValueError(f"constrain got {len(axes)} logical axes {tuple(axes)} for an array "
                         f"of shape {tuple(x.shape)}; give one name per dimension")
    _check_axes(axes, rules)  # a typo fails on one device too, not only on a mesh
    target = mesh if mesh is not None else _context_mesh()
    if target is None:
        return x
    pspec = spec(axes, target, rules)
    pspec = PartitionSpec(*[a if a is not None and size % target.shape[a] == 0 else None
                            for size, a in zip(x.shape, pspec)])
    sharding = NamedSharding(target, pspec)
    if all(t == AxisType.Explicit for t in target.axis_types):
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)
