"""Selectors: which positions and heads of an activation an intervention touches.

A selector is the value of an intervention's ``pos=`` or ``head=`` field. It names indices
along one axis of the activation, and that axis is found from the activation's logical axes
(:mod:`jinterp.names`), never given by the user: ``pos`` is the ``pos`` axis (or the query
axis ``q_pos`` of ``attn.hook_pattern``), ``head`` the ``n_heads`` (or ``n_kv_heads``) axis.
An activation without such an axis raises when a selector asks for it.

Rules, for an axis of size ``n``:

- ``None``: every index.
- an integer (Python, numpy or a 0-d jax array, traced or not): one index. Negative indices
  follow Python: ``-1`` is the last, ``-n`` the first, and ``-n - 1`` or ``n`` raise.
- a list/tuple of integers or a 1-d integer array: those indices, in order (same range rule).
- a boolean mask: it must have shape ``(n,)``.
- a ``slice`` (Python ints as bounds, any non-zero step, negative bounds too): it is turned
  into a hashable :class:`SliceSelector` that is part of the pytree's *structure*, not a
  leaf, so it is static under ``jit`` (a different slice compiles a new program).

Nothing is clamped or dropped silently: an index outside the axis raises, naming the axis, its
size and the value. Python booleans, float arrays and index arrays of rank 2 or more raise too.

Where the checks run. :func:`_resolve` runs in Python before anything is traced and checks the
selector's shape and dtype always, and its *values* (index ranges, mask counts) only when
Python can read them for free (:func:`jinterp.checks.is_host_value`); it never copies a device
array to the host. Indices held in jax arrays or tracers are range-checked inside the program
by :func:`jinterp.checks.device_check` when :func:`_indices` turns them into positions: under
``jit`` the error arrives as a ``JaxRuntimeError`` carrying the same message when the result is
computed. :func:`site_mask` exposes the resolved sites as a boolean mask that broadcasts to the
activation; the interventions themselves live in :mod:`jinterp.interventions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from jinterp.checks import device_check, is_host_value
from jinterp.names import Axes

_POS_AXES = ("pos", "q_pos")
_HEAD_AXES = ("n_heads", "n_kv_heads")
_CANDIDATES = {"pos": _POS_AXES, "head": _HEAD_AXES}

#: A jax array (or tracer) or a numpy array: what value fields and selectors may hold.
AnyArray = Union[jax.Array, np.ndarray]


@dataclasses.dataclass(frozen=True)
class SliceSelector:
    """A ``slice`` as a hashable, static selector (Python's ``slice`` is unhashable in 3.11).

    Registered as a pytree node with no leaves, so it lives in the tree structure: ``jit``
    treats it as static and ``vmap``/``tree.map`` pass over it.
    """

    start: int | None
    stop: int | None
    step: int | None

    @classmethod
    def from_slice(cls, s: slice) -> "SliceSelector":
        bounds = []
        for part in (s.start, s.stop, s.step):
            if part is not None and not isinstance(part, (int, np.integer)):
                raise TypeError(f"Slice selector {s} has a bound of type {type(part).__name__}; "
                                "slice bounds must be Python ints or None. For traced "
                                "positions pass an integer index array instead.")
            bounds.append(None if part is None else int(part))
        if bounds[2] == 0:
            raise ValueError(f"Slice selector {s} has step 0; a slice step must be non-zero.")
        return cls(*bounds)

    def indices(self, size: int) -> np.ndarray:
        """The selected indices along an axis of ``size``, in slice order."""
        return np.arange(size)[slice(self.start, self.stop, self.step)]

    def __repr__(self) -> str:
        return f"slice({self.start}, {self.stop}, {self.step})"


jax.tree_util.register_static(SliceSelector)

_Index = Union[int, np.integer, Int[Array, "..."]]
Selector = Union[None, _Index, np.bool_, slice, SliceSelector, Sequence[_Index],
                 Int[AnyArray, "..."], Bool[AnyArray, "..."]]


def _normalise_selector(selector):
    """``slice`` -> :class:`SliceSelector`; anything else unchanged.

    Runs in ``__post_init__``, which JAX also calls when it unflattens the pytree with tracers
    or placeholder leaves, so it must only touch what is unmistakably a user's slice.
    """
    return SliceSelector.from_slice(selector) if isinstance(selector, slice) else selector


def _esc(text: str) -> str:
    """Escapes ``{}`` for :func:`device_check`, which ``str.format``s its message."""
    return text.replace("{", "{{").replace("}", "}}")


def _shape_of(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


# ------------------------------------------------------------------------------- resolution
@dataclasses.dataclass(frozen=True)
class _Site:
    """A selector resolved against one axis of an activation."""

    what: str  # "pos" or "head"
    axis: int
    axis_name: str
    size: int
    kind: str  # "int" | "indices" | "mask" | "slice"
    count: int | None  # number of selected indices; None for a mask only the device can count
    host: np.ndarray | None  # the selector's value when Python can read it for free
    raw: Any  # the selector as given (a jax array, a tracer or a list of them)

    @property
    def label(self) -> str:
        return f"`{self.what}` ({self.axis_name}, axis {self.axis})"


def _axis_of(axes: Axes, what: str, where: str) -> int:
    candidates = _CANDIDATES[what]
    for i, a in enumerate(axes):
        if a in candidates:
            return i
    raise ValueError(
        f"{where}this activation has axes {axes} and no {what} axis ({'/'.join(candidates)}); "
        f"drop `{what}=` or hook an activation that has one."
    )


def _describe(selector) -> tuple[tuple[int, ...], np.dtype, np.ndarray | None]:
    """Shape, dtype and (for host values) the value of a selector, touching no device data."""
    if isinstance(selector, (list, tuple)):
        if all(is_host_value(e) for e in selector):
            value = np.asarray(selector) if len(selector) else np.zeros((0,), np.int32)
            return value.shape, value.dtype, value
        shapes = {_shape_of(e) for e in selector}
        shape = (len(selector),) + (shapes.pop() if len(shapes) == 1 else (-1,))
        return shape, np.dtype(jnp.result_type(*selector)), None
    if is_host_value(selector):
        value = np.asarray(selector)
        return value.shape, value.dtype, value
    return tuple(selector.shape), np.dtype(selector.dtype), None


def _resolve(selector, what: str, shape: tuple[int, ...], axes: Axes, where: str) -> _Site | None:
    """Validates one selector against the activation's shape (values too, when on the host)."""
    if selector is None:
        return None
    axis = _axis_of(axes, what, where)
    size = shape[axis]
    base = dict(what=what, axis=axis, axis_name=axes[axis], size=size, raw=selector)
    if isinstance(selector, SliceSelector):
        idx = selector.indices(size)
        return _Site(kind="slice", count=len(idx), host=idx, **base)
    if isinstance(selector, (bool, np.bool_)):
        raise TypeError(f"{where}`{what}={selector}` is a boolean; pass an integer index, "
                        f"integer indices or a boolean mask of shape ({size},).")
    sel_shape, dtype, host = _describe(selector)
    if dtype == np.bool_:
        if sel_shape != (size,):
            raise ValueError(f"{where}`{what}` mask has shape {sel_shape} but the activation's "
                             f"{what} axis ({axes[axis]}, axis {axis}) has size {size}: pass a "
                             f"boolean mask of shape ({size},) or indices.")
        count = None if host is None else int(host.sum())
        return _Site(kind="mask", count=count, host=host, **base)
    if not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{where}`{what}` must be None, an integer, integer indices, a boolean "
                        f"mask or a slice; got dtype {dtype}.")
    if len(sel_shape) > 1:
        raise ValueError(f"{where}`{what}` indices have shape {sel_shape}; pass one integer or a "
                         "1-d list of indices (for a sweep, vmap over a 1-d selector).")
    if host is not None:
        outside = (host < -size) | (host >= size)
        if outside.any():
            raise ValueError(f"{where}`{what}` index {int(host[outside].flat[0])} is out of range "
                             f"for the {what} axis ({axes[axis]}, axis {axis}) of size {size}: "
                             f"valid indices are {-size}..{size - 1}.")
    if not sel_shape:
        return _Site(kind="int", count=1, host=host, **base)
    return _Site(kind="indices", count=sel_shape[0], host=host, **base)


def _resolve_sites(pos, head, shape: tuple[int, ...], axes: Axes, where: str) -> list[_Site]:
    if len(axes) != len(shape):
        raise ValueError(f"{where}activation of shape {shape} does not match its axes {axes}.")
    sites = [_resolve(pos, "pos", shape, axes, where), _resolve(head, "head", shape, axes, where)]
    return [s for s in sites if s is not None]


def _device_value(site: _Site) -> Array:
    raw = site.raw
    if isinstance(raw, (list, tuple)):
        return jnp.stack([jnp.asarray(e) for e in raw])
    return jnp.asarray(raw)


def _indices(site: _Site, where: str, count: int | None = None) -> Int[AnyArray, " k"]:
    """The selected indices along ``site.axis`` in ``[0, size)``, in selector order.

    Host selectors give a numpy constant. Device selectors add an in-program range check (and,
    for a mask, that it selects ``count`` indices, the size the per-site values were given).
    """
    size = site.size
    if site.host is not None:
        if site.kind == "mask":
            return np.flatnonzero(site.host)
        flat = site.host.reshape(-1).astype(np.int64)
        return np.where(flat < 0, flat + size, flat)
    value = _device_value(site)
    if site.kind == "mask":
        n_true = jnp.sum(value.astype(jnp.int32))
        device_check(n_true != count, _esc(f"{where}{site.label} mask selects ") + "{} indices"
                     + _esc(f" but the per-site values have {count} there; pass values of the "
                            "activation's full shape or a mask with that many True entries."),
                     n_true)
        return jnp.nonzero(value, size=count)[0]
    flat = value.reshape(-1)
    if flat.size == 0:
        return flat
    outside = (flat < -size) | (flat >= size)
    device_check(jnp.any(outside), _esc(f"{where}`{site.what}` index ") + "{}" + _esc(
        f" is out of range for the {site.what} axis ({site.axis_name}, axis {site.axis}) of "
        f"size {size}: valid indices are {-size}..{size - 1}."), flat[jnp.argmax(outside)])
    return jnp.where(flat < 0, flat + size, flat)


def _mask(ndim: int, sites: list[_Site], where: str) -> Bool[AnyArray, "..."]:
    """Where the sites are: a boolean array of rank ``ndim`` that broadcasts to the activation."""
    mask = np.ones((1,) * ndim, bool)
    for site in sites:
        shape = [1] * ndim
        shape[site.axis] = site.size
        if site.kind == "mask" and site.host is None:
            axis_mask = _device_value(site)
        elif site.host is not None:
            axis_mask = np.zeros(site.size, bool)
            axis_mask[_indices(site, where)] = True
        else:
            axis_mask = jnp.zeros(site.size, bool).at[_indices(site, where)].set(True, mode="drop")
        mask = mask & axis_mask.reshape(shape)
    return mask


def site_mask(x: Array, axes: Axes, pos: Selector = None, head: Selector = None,
              name: str | None = None) -> Bool[AnyArray, "..."]:
    """Where an intervention applies: a boolean array of ``x``'s rank that broadcasts to it."""
    where = f"site_mask on {name!r}: " if name else "site_mask: "
    sites = _resolve_sites(_normalise_selector(pos), _normalise_selector(head), x.shape, axes,
                           where)
    return _mask(x.ndim, sites, where)

