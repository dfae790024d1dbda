"""The site table: what a patching sweep patches, node by node.

A *site* is one kind of activation-patching target with TransformerLens's name
(``"resid_pre"``, ``"attn_head_out_by_pos"``, ...). It names

- ``point``: the block point patched at every layer (``"attn.hook_z"``);
- ``node_axes``: the activation axes that index one node within a layer, in the order of the
  result (``("pos", "n_heads")`` for ``attn_head_out_by_pos``). Every other axis of the
  activation (batch, d_model, d_head, ...) is patched whole, for every example at once.

One sweep over a site patches every node of every layer, one at a time, and returns an array of
``site.result_shape(model, n_pos) == (n_layers, *site.node_shape(model, n_pos))``, which is
TransformerLens's shape for the same function (``[layer, pos]``, ``[layer, head]``,
``[layer, pos, head]``, ``[layer, head, dest]``, ``[layer, head, dest, src]``).

Node ``i`` (a flat index into ``node_shape``, C order) is patched by a boolean mask over the
activation (:meth:`Site.node_mask`): ``x <- where(mask, source, x)``, with ``source`` the clean
activation (activation patching), zeros, a mean or a resampled activation (ablation). The same
mask tells attribution methods which entries of ``delta * grad`` belong to a node
(:meth:`Site.to_nodes` sums an activation-shaped array over everything but the node axes).

k and v live on ``n_kv_heads`` (never expanded): on grouped- or multi-query models their
head-indexed sites have ``n_kv_heads`` entries on the head axis, and patching one kv head
changes every query head of its group. :func:`every_layout` says how the ``*_every`` functions
stack sites of unequal head counts (kv results are repeated over their group's query heads).

Interface (stable; other modules of :mod:`jinterp.patching` build on it):
``SITES[name] -> Site``, :func:`get_site` (an unknown name raises, listing the closest ones),
``Site.point / node_axes``, ``Site.hook_name(layer)``, ``Site.node_shape(model, n_pos)``,
``Site.result_shape(model, n_pos)``, ``Site.n_nodes(model, n_pos)``,
``Site.node_mask(model, n_pos, index)``, ``Site.node_patch(model, n_pos, index, source)``
(a :class:`Replace` intervention), ``Site.to_nodes(model, x)``, ``EVERY[name]``,
:func:`stack_every`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math

import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Bool, Float, Int

from jinterp.interventions import Intervention
from jinterp.model import HookedModel
from jinterp.names import Axes, block_name


def _sizes(model: HookedModel, n_pos: int) -> dict[str, int]:
    return {"pos": n_pos, "q_pos": n_pos, "k_pos": n_pos, **model.dims}


@dataclasses.dataclass(frozen=True)
class Site:
    """One patching target: a block point and the axes that index its nodes.

    Attributes:
        name: TransformerLens's name of the sweep (``get_act_patch_{name}``).
        point: the block point patched (``"hook_resid_pre"``, ``"attn.hook_z"``, ...).
        node_axes: the activation's axes that index a node, in the result's order.
    """

    name: str
    point: str
    node_axes: Axes

    def hook_name(self, layer: int) -> str:
        """The full activation name at ``layer`` (``blocks.3.attn.hook_z``)."""
        return block_name(layer, self.point)

    def axes(self, model: HookedModel) -> Axes:
        """The patched activation's axes (``("batch", "pos", "n_heads", "d_head")``)."""
        if self.point not in model.block_point_axes:
            raise ValueError(f"Site {self.name!r} patches {self.point!r}, which "
                             f"{type(model).__name__} does not compute (e.g. an attention-only "
                             f"model has no MLP); its block points are {model.block_points}.")
        return model.block_point_axes[self.point]

    def node_shape(self, model: HookedModel, n_pos: int) -> tuple[int, ...]:
        """The sizes of the node axes for sequences of ``n_pos`` tokens."""
        self.axes(model)
        sizes = _sizes(model, n_pos)
        return tuple(sizes[a] for a in self.node_axes)

    def result_shape(self, model: HookedModel, n_pos: int) -> tuple[int, ...]:
        """``(n_layers, *node_shape)``: the shape a sweep over this site returns."""
        return (model.n_layers, *self.node_shape(model, n_pos))

    def n_nodes(self, model: HookedModel, n_pos: int) -> int:
        """Nodes per layer."""
        return math.prod(self.node_shape(model, n_pos))

    def node_mask(self, model: HookedModel, n_pos: int,
                  index: Int[Array, ""] | int) -> Bool[Array, "..."]:
        """The entries node ``index`` patches: a mask that broadcasts against the activation.

        Args:
            index: flat node index in ``[0, n_nodes)`` (C order over ``node_axes``); may be
                traced, so one program serves every node under ``vmap``.

        Returns:
            A boolean array of the activation's rank, size 1 on every axis but the node axes.
        """
        axes, sizes = self.axes(model), _sizes(model, n_pos)
        shape = self.node_shape(model, n_pos)
        coords = jnp.unravel_index(jnp.asarray(index), shape) if shape else ()
        mask = jnp.ones((1,) * len(axes), bool)
        for axis, coord in zip(self.node_axes, coords):
            where = axes.index(axis)
            dims = [1] * len(axes)
            dims[where] = sizes[axis]
            mask = mask & (jnp.arange(sizes[axis]) == coord).reshape(dims)
        return mask

    def to_nodes(self, model: HookedModel, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """Sums an activation-shaped array over every axis but the node axes: ``node_shape``.

        ``x`` has the activation's shape (e.g. ``delta * grad`` for attribution patching); the
        result's axes are ``node_axes`` in order. A patch changes every example of the batch,
        so the batch axis is summed too.
        """
        axes = self.axes(model)
        if x.ndim != len(axes):
            raise ValueError(f"Site {self.name!r}: expected an array with axes {axes} (rank "
                             f"{len(axes)}); got shape {tuple(x.shape)}.")
        keep = [axes.index(a) for a in self.node_axes]
        summed = x.sum(axis=tuple(i for i in range(x.ndim) if i not in keep))
        ranked = sorted(keep)  # summed keeps the activation's axis order
        return jnp.transpose(summed, [ranked.index(k) for k in keep])


    def node_patch(self, model: HookedModel, n_pos: int, index: Int[Array, ""] | int,
                   source: Float[Array, "..."]) -> "Replace":
        """The intervention that patches node ``index`` with ``source`` (see :class:`Replace`)."""
        return Replace(source, self.node_mask(model, n_pos, index))


@struct.dataclass
class Replace(Intervention):
    """``x <- where(mask, source, x)``: one node's patch or ablation.

    ``source`` (the clean activation, zeros, a mean ``[1, ...]``, resampled activations) and
    ``mask`` (from :meth:`Site.node_mask`) broadcast against the activation; both may be
    traced, so a sweep vmaps over nodes in one program.
    """

    source: Float[Array, "..."]
    mask: Bool[Array, "..."]

    def check(self, shape, axes, name, *, layers=None):
        super().check(shape, axes, name, layers=layers)
        for label, value in (("source", self.source), ("mask", self.mask)):
            try:
                ok = np.broadcast_shapes(np.shape(value), tuple(shape)) == tuple(shape)
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"Replace on {name!r}: {label} of shape {np.shape(value)} does "
                                 f"not broadcast to the activation's shape {tuple(shape)}.")

    def apply(self, x: Array, axes: Axes) -> Array:
        return jnp.where(self.mask, jnp.asarray(self.source, x.dtype), x)


def _site(name: str, point: str, *node_axes: str) -> Site:
    return Site(name, point, tuple(node_axes))


#: Every site, under TransformerLens's names (``get_act_patch_{name}``).
SITES: dict[str, Site] = {s.name: s for s in [
    _site("resid_pre", "hook_resid_pre", "pos"),
    _site("resid_mid", "hook_resid_mid", "pos"),
    _site("attn_out", "hook_attn_out", "pos"),
    _site("mlp_out", "hook_mlp_out", "pos"),
    _site("attn_head_out_all_pos", "attn.hook_z", "n_heads"),
    _site("attn_head_q_all_pos", "attn.hook_q", "n_heads"),
    _site("attn_head_k_all_pos", "attn.hook_k", "n_kv_heads"),
    _site("attn_head_v_all_pos", "attn.hook_v", "n_kv_heads"),
    _site("attn_head_pattern_all_pos", "attn.hook_pattern", "n_heads"),
    _site("attn_head_out_by_pos", "attn.hook_z", "pos", "n_heads"),
    _site("attn_head_q_by_pos", "attn.hook_q", "pos", "n_heads"),
    _site("attn_head_k_by_pos", "attn.hook_k", "pos", "n_kv_heads"),
    _site("attn_head_v_by_pos", "attn.hook_v", "pos", "n_kv_heads"),
    _site("attn_head_pattern_by_pos", "attn.hook_pattern", "n_heads", "q_pos"),
    _site("attn_head_pattern_dest_src_pos", "attn.hook_pattern", "n_heads", "q_pos", "k_pos"),
]}

#: The ``*_every`` functions: the sites they stack, in TransformerLens's order.
EVERY: dict[str, tuple[str, ...]] = {
    "block_every": ("resid_pre", "attn_out", "mlp_out"),
    "attn_head_all_pos_every": ("attn_head_out_all_pos", "attn_head_q_all_pos",
                                "attn_head_k_all_pos", "attn_head_v_all_pos",
                                "attn_head_pattern_all_pos"),
    "attn_head_by_pos_every": ("attn_head_out_by_pos", "attn_head_q_by_pos",
                               "attn_head_k_by_pos", "attn_head_v_by_pos",
                               "attn_head_pattern_by_pos"),
}


def get_site(name: str | Site) -> Site:
    """The site called ``name`` (a :class:`Site` passes through)."""
    if isinstance(name, Site):
        return name
    if name not in SITES:
        close = difflib.get_close_matches(str(name), list(SITES), n=3, cutoff=0.4)
        hint = f" Closest: {close}." if close else ""
        raise ValueError(f"Unknown patching site {name!r}.{hint} Valid sites: {list(SITES)}.")
    return SITES[name]


def _to_query_heads(model: HookedModel, result: Array, head_axis: int) -> Array:
    """A result over kv heads repeated over each group's query heads (GQA/MQA)."""
    n_heads, n_kv = model.dims["n_heads"], model.dims["n_kv_heads"]
    return jnp.repeat(result, n_heads // n_kv, axis=head_axis)


def stack_every(model: HookedModel, every: str, results: list[Array]) -> Array:
    """Stacks the per-site results of ``EVERY[every]`` into TransformerLens's layout.

    ``attn_head_by_pos_every`` stores the pattern's ``[layer, head, dest]`` as
    ``[layer, dest, head]`` (as TransformerLens does); results over kv heads are repeated over
    their group's query heads, so every row has ``n_heads`` (identical to TransformerLens when
    ``n_kv_heads == n_heads``).
    """
    out = []
    for name, result in zip(EVERY[every], results):
        site = SITES[name]
        if "n_kv_heads" in site.node_axes:
            result = _to_query_heads(model, result, 1 + site.node_axes.index("n_kv_heads"))
        if name == "attn_head_pattern_by_pos":
            result = jnp.swapaxes(result, 1, 2)  # [layer, head, dest] -> [layer, dest, head]
        out.append(result)
    return jnp.stack(out)
