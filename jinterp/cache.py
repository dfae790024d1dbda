"""The activation cache: a read-only mapping from activation names to arrays, and a pytree.

It is what ``run_with_cache`` returns (and ``grad_cache``'s gradients). One representation:
activations outside the blocks by name, block activations stacked per point as the layer loop
produced them (``stacked={point: (array [n_captured, ...], layers)}``); ``cache[name]`` is a
view that indexes the stack, and ``cache.stack(point)`` is the stack itself, no copy.

As a pytree its leaves are *per name*, so ``jax.tree.map(lambda a: a.mean(0), cache)`` means
"mean over the batch" for every activation, as a reader expects (a leaf per stacked point would
silently average over layers instead); unflattening restacks them. Inside a jitted function
this is free; outside, ``jax.tree.map`` over a cache copies once per activation, as any
``tree.map`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array

from jinterp.names import block_name, split_name, unknown_name_error


@jax.tree_util.register_pytree_with_keys_class
class ActivationCache(Mapping):
    """Named activations from one forward pass, in forward order.

    Example:
        >>> logits, cache = jinterp.run_with_cache(model, params, tokens)
        >>> cache["blocks.0.attn.hook_pattern"].shape   # (batch, n_heads, q_pos, k_pos)
        >>> resid = cache.stack("hook_resid_post")     # (layer, batch, pos, d_model)
    """

    def __init__(self, activations: Mapping[str, Array] | None = None, *,
                 stacked: Mapping[str, tuple[object, tuple[int, ...]]] | None = None,
                 order: list[str] | None = None):
        top: dict[str, Array] = {}
        loose: dict[str, dict[int, Array]] = {}
        for name, value in (activations or {}).items():
            layer, point = split_name(name)
            if layer is None:
                top[name] = value
            else:
                loose.setdefault(point, {})[layer] = value
        self._top = top
        self._stacked: dict[str, tuple[object, tuple[int, ...]]] = dict(stacked or {})
        for point, by_layer in loose.items():
            if point in self._stacked:
                raise ValueError(f"{point!r} is given both stacked and by name")
            layers = tuple(sorted(by_layer))
            self._stacked[point] = (_restack([by_layer[l] for l in layers]), layers)
        self._where = {block_name(l, p): (p, i) for p, (_, layers) in self._stacked.items()
                       for i, l in enumerate(layers)}
        names = [*self._top, *self._where]
        self._order = list(order) if order is not None else names
        if sorted(self._order) != sorted(names):
            raise ValueError("order must list exactly the cached names")

    def __getitem__(self, name: str) -> Array:
        if name in self._top:
            return self._top[name]
        if name in self._where:
            point, i = self._where[name]
            return self._stacked[point][0][i]
        raise unknown_name_error(name, self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._top or name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(self[k].shape)}" for k in self._order[:6])
        more = f", ... ({len(self)} in all)" if len(self) > 6 else ""
        return f"ActivationCache({shapes}{more})"

    def layers(self, point: str) -> list[int]:
        """The layers at which block point ``point`` (e.g. ``'attn.hook_z'``) was captured."""
        return list(self._stacked[point][1]) if point in self._stacked else []

    def stack(self, point: str) -> Array:
        """Block point ``point``'s activations over its captured layers: ``[layer, ...]``.

        No copy: this is the array the layer loop produced. :meth:`layers` says which layers.
        """
        if point not in self._stacked:
            raise KeyError(f"No layer of {point!r} was captured; captured: {self._order[:8]}...")
        values = self._stacked[point][0]
        return jnp.stack(values) if isinstance(values, tuple) else values

    def to_dict(self) -> dict[str, Array]:
        """A plain ``dict`` of every cached activation, in forward order."""
        return {k: self[k] for k in self._order}

    def tree_flatten_with_keys(self):
        keys = tuple(self._order)
        children = [(jax.tree_util.DictKey(k), self[k]) for k in keys]
        return children, keys

    @classmethod
    def tree_unflatten(cls, keys, children) -> ActivationCache:
        return cls(dict(zip(keys, children)), order=list(keys))


def _restack(values: list) -> object:
    """Stack arrays of one shape; anything else (placeholders JAX uses) stays a tuple."""
    if all(isinstance(v, (jax.Array, jax.core.Tracer)) or hasattr(v, "__array__")
           for v in values):
        shapes = {tuple(getattr(v, "shape", ())) for v in values}
        dtypes = {str(getattr(v, "dtype", "")) for v in values}
        if len(shapes) == 1 and len(dtypes) == 1:
            return jnp.stack(values)
    return tuple(values)
