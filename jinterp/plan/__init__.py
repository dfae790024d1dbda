"""The plan of one call: which layers run, what is captured where, which hooks apply where.

``run_with_cache`` / ``run_with_hooks`` / ``grad_cache`` compute one frozen :class:`Plan` per
call, before tracing, and it is the static part of the jit key: the model's loop reads it and
nothing else re-derives it. The dynamic part (every array inside the hooks) travels separately,
so new values never recompile.

Hooks on one point at several layers that have the same structure (same intervention type and
selectors kind, same leaf shapes: ``{f"blocks.{l}.attn.hook_z": ZeroAblate(head=m[l])}``) form
one :class:`Group` whose arrays are stacked over its layers ("slots"); inside the scan the
group reads its slot for the current layer. So hooks at many layers cost one application per
point (no per-layer branches), and a group that covers every layer run is applied without any
condition. Hook functions stay one group per layer, so each sees its own
:class:`~jinterp.hooks.HookInfo`. An ``At`` entry is a group whose layers are data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import jax
import numpy as np

from jinterp.hooks import At, Entry
from jinterp.interventions import Intervention


def is_dynamic(leaf) -> bool:
    """Leaves that become traced inputs of the program (arrays and numbers, not bools)."""
    if isinstance(leaf, bool):
        return False
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int, complex))


def split_leaves(tree) -> tuple[list, tuple, Any]:
    """``(dynamic leaves, static leaves, treedef)``; each list holds None where the other has one.

    Raises:
        TypeError: when a static leaf is unhashable (it would be part of the jit key).
    """
    leaves, treedef = jax.tree.flatten(tree)
    dynamic = [leaf if is_dynamic(leaf) else None for leaf in leaves]
    static = tuple(None if is_dynamic(leaf) else leaf for leaf in leaves)
    for leaf in static:
        if leaf is not None and not isinstance(leaf, Hashable):
            raise TypeError(f"A hook holds a {type(leaf).__name__} ({leaf!r}) that is neither an "
                            "array nor hashable; use arrays, numbers or hashable values.")
    return dynamic, static, treedef


def _structure(chain: tuple) -> Hashable:
    """Two chains with equal keys can be stacked into one group."""
    dynamic, static, treedef = split_leaves(chain)
    shapes = tuple(None if d is None else (np.shape(d), str(getattr(d, "dtype", type(d).__name__)))
                   for d in dynamic)
    return treedef, static, shapes


def _has_function(chain: tuple) -> bool:
    return any(not isinstance(h, Intervention) for h in chain)


@dataclasses.dataclass(frozen=True)
class Group:
    """Hooks on one block point, applied together.

    Attributes:
        point: the block point (``attn.hook_z``).
        layers: the layers of the stacked slots (per-name hooks), or None for an ``At`` entry.
        flags: for ``At``, whether each hook's layered fields are stacked over layers.
    """

    point: str
    layers: tuple[int, ...] | None
    flags: tuple[bool, ...] = ()

    @property
    def is_at(self) -> bool:
        return self.layers is None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything static about one call.

    Attributes:
        n_layers: blocks in the model.
        start / stop: the blocks this call runs, ``range(start, stop)``.
        from_tokens: embed tokens (``start_at_layer`` unset) or start from a residual.
        to_logits: unembed at the end (``stop_at_layer`` unset) or return the residual.
        top_capture: captured names outside the blocks.
        block_capture: ``(point, layers)`` for each captured block point, forward order.
        top_hooked: names outside the blocks that carry a hook chain.
        groups: block hook groups, in order of first appearance.
        wanted: block points captured or hooked at some layer (optional points are computed
            only when wanted).
    """

    n_layers: int
    start: int
    stop: int
    from_tokens: bool
    to_logits: bool
    top_capture: tuple[str, ...] = ()
    block_capture: tuple[tuple[str, tuple[int, ...]], ...] = ()
    top_hooked: tuple[str, ...] = ()
    groups: tuple[Group, ...] = ()
    wanted: frozenset[str] = frozenset()

    @property
    def layers(self) -> range:
        return range(self.start, self.stop)

    def captured_layers(self) -> dict[str, tuple[int, ...]]:
        return dict(self.block_capture)


def group_entries(entries: Sequence[Entry], ndim_of, n_layers: int
                  ) -> tuple[dict[str, tuple], list[Group], list[Any]]:
    """Splits normalised entries into top-level chains and block groups with their data.

    Args:
        entries: from :func:`jinterp.hooks.normalise_hooks`.
        ndim_of: point -> rank of its activation (to decide ``At``'s stacked fields).
        n_layers: blocks in the model.

    Returns:
        ``(top, groups, data)``: top-level name -> chain; the groups; per group its data (the
        list of per-layer chains of a static group, or the ``At`` object).
    """
    from jinterp.hooks import layered  # local: keeps the module import graph flat

    top: dict[str, tuple] = {}
    merged: dict[tuple[str, int], tuple] = {}
    order: list[tuple[str, Any]] = []
    for e in entries:
        if e.layer is None and not e.at:
            top[e.point] = top.get(e.point, ()) + e.chain
        elif e.at:
            order.append(("at", e))
        else:
            key = (e.point, e.layer)
            if key not in merged:
                order.append(("named", key))
            merged[key] = merged.get(key, ()) + e.chain
    groups: list[Group] = []
    data: list[Any] = []
    by_key: dict[Hashable, int] = {}
    for kind, item in order:
        if kind == "at":
            at: At = item.chain[0]
            groups.append(Group(item.point, None, layered(at, ndim_of(item.point), n_layers)))
            data.append(at)
            continue
        point, layer = item
        chain = merged[item]
        key = (point, _structure(chain), layer if _has_function(chain) else None)
        if key in by_key:
            i = by_key[key]
            groups[i] = Group(point, groups[i].layers + (layer,))
            data[i].append(chain)
        else:
            by_key[key] = len(groups)
            groups.append(Group(point, (layer,)))
            data.append([chain])
    return top, groups, data
