"""Interventions as data: pytrees of arrays that rewrite one activation.

Each intervention is a frozen pytree dataclass, so a batch of them (one leading axis on any
field) is ``vmap``-able, ``jax.grad`` flows into its fields (e.g. a steering vector), and they
compose: a hook entry may be a list, applied in order. A plain function ``act -> act`` works
as a hook too; interventions add one thing a function cannot know: the *axes* of the activation
they are applied to (from :mod:`jinterp.names`), so ``pos=`` and ``head=`` find the position
axis of ``hook_resid_pre`` (axis 1), of ``attn.hook_z`` (axis 1, heads axis 2) and the query
axis of ``attn.hook_pattern`` (axis 2, heads axis 1) without the user saying which.

Selectors. ``pos`` and ``head`` each take, for an axis of size ``n``:

- ``None``: every index.
- an integer (Python, numpy or a 0-d jax array, traced or not): one index. Negative indices
  follow Python: ``-1`` is the last, ``-n`` the first, and ``-n - 1`` or ``n`` raise.
- a list/tuple of integers or a 1-d integer array: those indices (same range rule).
- a boolean mask: it must have shape ``(n,)``.
- a ``slice`` (Python ints as bounds, any step, negative bounds too): it is turned into a
  hashable :class:`SliceSelector` that is part of the pytree's *structure*, not a leaf, so it
  is static under ``jit`` (a different slice compiles a new program).

Nothing is clamped or dropped silently: an index outside the axis raises, naming the axis, its
size and the value. Python booleans, float arrays and index arrays of rank 2 or more raise too.

Patch shapes. ``Patch(values, pos=..., head=...)`` broadcasts nothing, because numpy-style
broadcasting silently misreads the TransformerLens idiom ``Patch(clean[name][:, p], pos=p)``:
``values`` of shape ``[batch, d_model]`` would be aligned as ``[pos, d_model]`` and, when
``batch`` equals the number of positions, patch one prompt's activation into every prompt.
``values`` must have either

- the activation's full shape (only the selected sites are read from it), or
- its shape *at the selected sites*, each selected axis either **kept** (its size the number
  of selected indices: ``[batch, 1, d_model]`` for ``pos=3``, ``[batch, 2, d_model]`` for
  ``pos=[1, 4]``, ``[batch, n_true, d_model]`` for a mask) or, for an integer selector only,
  **dropped** (``[batch, d_model]`` for ``pos=3``; ``[batch, pos, d_head]`` for ``head=1`` on
  ``hook_z``; both dropped for ``pos=3, head=1``).

When the full shape and a kept shape coincide (every index selected), the full reading wins.
Per-site values are scattered into the selected sites, so they work with traced selectors
under ``vmap``; with repeated indices, which value lands is unspecified. ``MeanAblate``'s
``mean`` (typically ``[1, pos, d_model]``), ``Steer``'s ``vector`` and ``ProjectOut``'s
``direction`` (typically ``[d_model]``) keep numpy broadcasting against the activation:
their documented forms are the same for every example (and, for a vector, every site).
``ResampleAblate``'s ``source`` must have the activation's rank, ``[batch_ref, ...]``.

What is checked where. :meth:`Intervention.check` runs in Python before anything is traced
(the core calls it on every call with the activation's shape and name): shapes always, and
*values* only when Python can read them for free (Python numbers and lists, numpy arrays; see
:func:`jinterp.checks.is_host_value`): index ranges, mask counts, zero directions. It never
copies a device array to the host, which would block on an accelerator and is impossible for
a multi-host array. Values held in jax arrays or tracers (device index arrays and masks,
``ResampleAblate.index``, ``ProjectOut.direction``) are checked inside the program by
:func:`jinterp.checks.device_check` in :meth:`apply`: under ``jit`` the error arrives as a
``JaxRuntimeError`` carrying the same message when the result is computed, with no host sync
before. (The core traces Python numbers too, so those are checked twice: on the host first.)
``apply`` repeats the shape and host checks, so an intervention applied by hand is checked.

Layers. ``layered_fields`` names the fields that may carry an extra leading ``[layer]`` axis
when one intervention serves several layers (``jinterp.At``); :meth:`Intervention.at_layer`
indexes them.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Bool, Float, Int, Real

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


def _where(iv: "Intervention", name: str | None) -> str:
    return f"{type(iv).__name__} on {name!r}: " if name else f"{type(iv).__name__}: "


# ------------------------------------------------------------------------------- selectors
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


# ------------------------------------------------------------------------------- values
def _check_broadcast(shape: tuple[int, ...], target: tuple[int, ...], what: str,
                     where: str) -> None:
    try:
        out = np.broadcast_shapes(shape, target)
    except ValueError:
        raise ValueError(f"{where}{what} of shape {shape} does not broadcast to the activation's "
                         f"shape {target}.") from None
    if out != target:
        raise ValueError(f"{where}{what} of shape {shape} would enlarge the activation of shape "
                         f"{target}.")


def _broadcastable(value, x: Array) -> Array:
    """``value`` in ``x``'s dtype with leading 1s up to ``x``'s rank (explicit broadcasting)."""
    value = jnp.asarray(value, x.dtype)
    return value.reshape((1,) * (x.ndim - value.ndim) + value.shape)


def _patch_form(shape: tuple[int, ...], target: tuple[int, ...], sites: list[_Site],
                where: str) -> tuple[int, ...] | None:
    """Which accepted form ``values`` of ``shape`` is: None (full) or the dropped axes."""
    if shape == target:
        return None
    accepted = [f"{target} (the full activation)"]
    choices = [(False, True) if s.kind == "int" else (False,) for s in sites]
    for combo in itertools.product(*choices) if sites else ():
        dropped = tuple(s.axis for s, drop in zip(sites, combo) if drop)
        want: list[int | None] = list(target)  # None: a device mask's count, known only there
        for site, drop in zip(sites, combo):
            if not drop:
                want[site.axis] = site.count
        limits = [t for i, t in enumerate(target) if i not in dropped]
        want = [w for i, w in enumerate(want) if i not in dropped]
        if len(shape) == len(want) and all(got == w or (w is None and got <= limit)
                                           for got, w, limit in zip(shape, want, limits)):
            return dropped
        sizes = ", ".join("n_true" if w is None else str(w) for w in want)
        form = ", ".join(f"{s.what} {'dropped' if d else 'kept'}" for s, d in zip(sites, combo))
        accepted.append(f"({sizes}{',' if len(want) == 1 else ''}) ({form})")
    hint = ("values at the sites keep each selected axis at its number of indices, or drop it "
            "for an integer selector" if sites else
            "with no selector, values must be the whole activation")
    raise ValueError(f"{where}values of shape {shape} do not fit the activation's shape {target} "
                     f"({hint}; Patch does not broadcast). Accepted shapes: "
                     f"{'; '.join(accepted)}.")


def _scatter(x: Array, values: Array, sites: list[tuple[int, Any]]) -> Array:
    """``x`` with ``values`` written at the index arrays ``sites`` (one per axis, in order).

    ``values`` has ``x``'s shape with each site's axis replaced by its number of indices. One
    axis at a time, so each step has a single advanced index and keeps the axis order.
    """
    (axis, idx), rest = sites[0], sites[1:]
    if rest:  # write the inner sites into the selected slab, then the slab into x
        values = _scatter(jnp.take(x, idx, axis=axis, mode="clip"), values, rest)
    return x.at[(slice(None),) * axis + (idx,)].set(values, mode="drop")


# ------------------------------------------------------------------------------- base classes
class Intervention(abc.ABC):
    """Base class: a pytree that maps an activation (with known axes) to a new one.

    Subclasses implement :meth:`apply`; they may override :meth:`check` (Python-side
    validation before tracing) and set :attr:`layered_fields`.
    """

    #: Fields that may carry an extra leading ``[layer]`` axis under ``jinterp.At``.
    layered_fields: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def apply(self, x: Array, axes: Axes) -> Array:
        """Returns the intervened activation, same shape and dtype as ``x``."""

    def check(self, shape: tuple[int, ...], axes: Axes, name: str, *,
              layers: int | None = None) -> None:
        """Validates this intervention against an activation, in Python, before tracing.

        Cheap and never copies a device array to the host: shapes always, values only when
        they are host values. Called by the core on every call.

        Args:
            shape: the activation's shape (known even when tracing).
            axes: its logical axes, e.g. ``("batch", "pos", "d_model")``.
            name: its name (``blocks.3.attn.hook_z``), quoted in errors.
            layers: when given, each of :attr:`layered_fields` carries a leading ``[layer]``
                axis of this size (as under ``jinterp.At``); the rest is checked per layer.
        """
        where = _where(self, name)
        if len(axes) != len(shape):
            raise ValueError(f"{where}activation of shape {tuple(shape)} does not match its axes "
                             f"{axes}.")
        for field in self.layered_fields if layers is not None else ():
            self._field_shape(field, layers, where)

    def at_layer(self, index) -> "Intervention":
        """A copy with each of :attr:`layered_fields` indexed ``field[index]`` (may be traced)."""
        if not self.layered_fields:
            return self
        return dataclasses.replace(
            self, **{f: _index_leading(getattr(self, f), index) for f in self.layered_fields})

    def _field_shape(self, field: str, layers: int | None, where: str) -> tuple[int, ...]:
        """A field's shape, without its leading ``[layer]`` axis when ``layers`` is given."""
        shape = _shape_of(getattr(self, field))
        if layers is None or field not in self.layered_fields:
            return shape
        if not shape or shape[0] != layers:
            raise ValueError(f"{where}`{field}` has shape {shape}; used at {layers} layers it "
                             f"needs a leading [layer] axis of size {layers}.")
        return shape[1:]

    def __call__(self, x: Array, axes: Axes | None = None) -> Array:
        """Applies to ``x``; ``axes`` defaults to ``batch pos ...`` (heads at axis 2 if rank 4)."""
        if axes is None:
            axes = ("batch", "pos", "n_heads", "d_head")[: x.ndim] if x.ndim == 4 else \
                ("batch", "pos") + tuple(f"d{i}" for i in range(x.ndim - 2))
        return self.apply(x, axes)


def _index_leading(value, index):
    if is_host_value(value) and is_host_value(index):
        return np.asarray(value)[index]  # stays on the host, so check() can still read it
    return jnp.asarray(value)[index]


class _SiteIntervention(Intervention):
    """The built-ins: a rewrite of the sites chosen by ``pos`` / ``head``.

    Subclasses are dataclasses with ``pos`` and ``head`` fields; they implement
    :meth:`_check_values` (shapes, and host values) and :meth:`_rewrite`.
    """

    def __post_init__(self):
        object.__setattr__(self, "pos", _normalise_selector(self.pos))
        object.__setattr__(self, "head", _normalise_selector(self.head))

    def check(self, shape, axes, name, *, layers=None):
        super().check(shape, axes, name, layers=layers)
        where = _where(self, name)
        sites = _resolve_sites(self.pos, self.head, tuple(shape), axes, where)  # selectors first
        self._check_values(tuple(shape), sites, where, layers)

    def apply(self, x: Array, axes: Axes, name: str | None = None) -> Array:
        """The intervened activation; ``name`` (the activation's) only feeds error messages."""
        where = _where(self, name)
        sites = _resolve_sites(self.pos, self.head, x.shape, axes, where)
        self._check_values(x.shape, sites, where, None)
        return self._rewrite(x, sites, where)

    def _check_values(self, shape: tuple[int, ...], sites: list[_Site], where: str,
                      layers: int | None) -> None:
        """Checks the value fields against the activation's shape (and host values)."""

    @abc.abstractmethod
    def _rewrite(self, x: Array, sites: list[_Site], where: str) -> Array:
        """The new activation, fields already checked."""


# ------------------------------------------------------------------------------- built-ins
@struct.dataclass
class Patch(_SiteIntervention):
    """Replace the activation with ``values`` at the selected positions / heads.

    ``values`` usually comes from another run's cache (clean -> corrupted patching). It has
    the activation's full shape, or its shape at the selected sites with each selected axis
    kept or (integer selectors only) dropped: ``Patch(clean[name][:, 3], pos=3)``. No other
    broadcasting (see the module docstring for why).
    """

    layered_fields: ClassVar[tuple[str, ...]] = ("values",)

    values: Float[AnyArray, "..."]
    pos: Selector = None
    head: Selector = None

    def _check_values(self, shape, sites, where, layers):
        _patch_form(self._field_shape("values", layers, where), shape, sites, where)

    def _rewrite(self, x, sites, where):
        values = jnp.asarray(self.values, x.dtype)
        dropped = _patch_form(values.shape, x.shape, sites, where)
        if dropped is None:
            return jnp.where(_mask(x.ndim, sites, where), values, x)
        values = jnp.expand_dims(values, dropped) if dropped else values  # every axis kept
        return _scatter(x, values, [(s.axis, _indices(s, where, values.shape[s.axis]))
                                    for s in sites])


@struct.dataclass
class ZeroAblate(_SiteIntervention):
    """Set the selected positions / heads to zero."""

    layered_fields: ClassVar[tuple[str, ...]] = ()

    pos: Selector = None
    head: Selector = None

    def _rewrite(self, x, sites, where):
        return jnp.where(_mask(x.ndim, sites, where), jnp.zeros((), x.dtype), x)


@struct.dataclass
class MeanAblate(_SiteIntervention):
    """Replace the selected sites with a mean activation (e.g. over a reference batch).

    ``mean`` broadcasts against the activation (numpy rules), typically ``[1, pos, d_model]``.
    Build it with :meth:`from_activations` to average a reference activation over its batch.
    """

    layered_fields: ClassVar[tuple[str, ...]] = ("mean",)

    mean: Float[AnyArray, "..."]
    pos: Selector = None
    head: Selector = None

    @classmethod
    def from_activations(cls, acts: Float[AnyArray, "batch_ref ..."], pos: Selector = None,
                         head: Selector = None) -> "MeanAblate":
        """Mean over the batch axis (axis 0) of reference activations ``acts``."""
        return cls(jnp.mean(acts, axis=0, keepdims=True), pos, head)

    def _check_values(self, shape, sites, where, layers):
        _check_broadcast(self._field_shape("mean", layers, where), shape, "mean", where)

    def _rewrite(self, x, sites, where):
        return jnp.where(_mask(x.ndim, sites, where), _broadcastable(self.mean, x), x)


@struct.dataclass
class ResampleAblate(_SiteIntervention):
    """Replace the selected sites with the activation of *another* input: ``source[index]``.

    ``source`` holds activations of a reference batch ``[batch_ref, ...]`` with the
    activation's rank; ``index[b]`` (Python's negative-index rule) says which reference
    example example ``b`` gets. :meth:`random` draws ``index`` uniformly.
    """

    layered_fields: ClassVar[tuple[str, ...]] = ("source",)

    source: Float[AnyArray, "..."]
    index: Union[Int[AnyArray, "..."], Sequence[_Index]]
    pos: Selector = None
    head: Selector = None

    @classmethod
    def random(cls, key: jax.Array, source: Float[AnyArray, "batch_ref ..."], batch: int,
               pos: Selector = None, head: Selector = None) -> "ResampleAblate":
        """Draws, for each of ``batch`` examples, a random example of ``source``."""
        return cls(source, jax.random.randint(key, (batch,), 0, source.shape[0]), pos, head)

    def _check_values(self, shape, sites, where, layers):
        index_shape, dtype, host = _describe(self.index)
        if index_shape != (shape[0],):
            raise ValueError(f"{where}index has shape {index_shape}; the activation's batch is "
                             f"{shape[0]}, so it needs shape ({shape[0]},).")
        if not np.issubdtype(dtype, np.integer):
            raise TypeError(f"{where}index must hold integers; got dtype {dtype}.")
        source = self._field_shape("source", layers, where)
        if len(source) != len(shape):
            raise ValueError(f"{where}source of shape {source} needs the activation's rank "
                             f"{len(shape)}: [batch_ref, *{shape[1:]}] (size-1 axes broadcast).")
        _check_broadcast((shape[0],) + source[1:], shape, "source[index]", where)
        n_ref = source[0]
        if host is not None:
            outside = (host < -n_ref) | (host >= n_ref)
            if outside.any():
                raise ValueError(f"{where}index {int(host[outside][0])} is out of range for the "
                                 f"{n_ref} source examples: valid indices are "
                                 f"{-n_ref}..{n_ref - 1}.")

    def _rewrite(self, x, sites, where):
        n_ref = _shape_of(self.source)[0]
        index = jnp.asarray(self.index) if not isinstance(self.index, (list, tuple)) else \
            jnp.stack([jnp.asarray(i) for i in self.index])
        if not is_host_value(self.index) and index.size:
            outside = (index < -n_ref) | (index >= n_ref)
            device_check(jnp.any(outside), _esc(where) + "index {}" + _esc(
                f" is out of range for the {n_ref} source examples: valid indices are "
                f"{-n_ref}..{n_ref - 1}."), index[jnp.argmax(outside)])
        index = jnp.where(index < 0, index + n_ref, index)
        values = jnp.take(jnp.asarray(self.source, x.dtype), index, axis=0, mode="clip")
        return jnp.where(_mask(x.ndim, sites, where), values, x)


@struct.dataclass
class Steer(_SiteIntervention):
    """Add ``scale * vector`` at the selected sites (activation addition / steering).

    ``vector`` broadcasts against the activation, typically shape ``[d_model]``; ``scale`` is
    a scalar. Differentiable in both, so ``jax.grad`` can optimise a steering vector directly.
    """

    layered_fields: ClassVar[tuple[str, ...]] = ("vector",)

    vector: Float[AnyArray, "..."]
    scale: Union[float, int, Real[AnyArray, "..."]] = 1.0
    pos: Selector = None
    head: Selector = None

    def _check_values(self, shape, sites, where, layers):
        _check_broadcast(self._field_shape("vector", layers, where), shape, "vector", where)
        if _shape_of(self.scale) != ():
            raise ValueError(f"{where}scale has shape {_shape_of(self.scale)}; it must be a "
                             "scalar (put per-site factors into `vector`).")

    def _rewrite(self, x, sites, where):
        delta = jnp.asarray(self.scale, x.dtype) * _broadcastable(self.vector, x)
        return jnp.where(_mask(x.ndim, sites, where), x + delta, x)


@struct.dataclass
class ProjectOut(_SiteIntervention):
    """Remove the component along ``direction`` (last axis) at the selected sites.

    ``x <- x - (x . d) d`` with ``d = direction / |direction|`` (directional ablation, as in the
    refusal-direction work). ``direction`` may carry extra leading axes that broadcast (e.g.
    one direction per head: ``[n_heads, d_head]``). A zero direction names nothing to remove
    (its unit vector would be NaN), so it raises.
    """

    layered_fields: ClassVar[tuple[str, ...]] = ("direction",)

    direction: Float[AnyArray, "..."]
    pos: Selector = None
    head: Selector = None

    def _check_values(self, shape, sites, where, layers):
        d = self._field_shape("direction", layers, where)
        if not d:
            raise ValueError(f"{where}direction is a scalar; it needs a last axis of the "
                             f"activation's size {shape[-1]}.")
        _check_broadcast(d, shape, "direction", where)
        if d[-1] != shape[-1]:
            raise ValueError(f"{where}direction has last dim {d[-1]}, the activation "
                             f"{shape[-1]}; the direction lives on the activation's last axis.")
        if is_host_value(self.direction):
            sq = np.sum(np.square(np.asarray(self.direction).astype(np.float32)), axis=-1)
            if (sq == 0).any():
                first = tuple(int(i) for i in np.argwhere(sq == 0)[0])
                at = f" at index {first}" if sq.ndim else ""
                raise ValueError(f"{where}direction has zero norm{at}: a zero vector names no "
                                 "direction to project out. Pass a non-zero direction.")

    def _rewrite(self, x, sites, where):
        compute = jnp.promote_types(x.dtype, jnp.float32)
        d = _broadcastable(self.direction, x).astype(compute)
        sq = jnp.sum(d * d, axis=-1, keepdims=True)
        if not is_host_value(self.direction):
            device_check(jnp.any(sq == 0), _esc(
                f"{where}direction has zero norm: a zero vector names no direction to project "
                "out. Pass a non-zero direction."))
        d = d * jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0))  # no NaN, even for a zero direction
        xc = x.astype(compute)
        projected = (xc - jnp.sum(xc * d, axis=-1, keepdims=True) * d).astype(x.dtype)
        return jnp.where(_mask(x.ndim, sites, where), projected, x)


# ------------------------------------------------------------------------------- hooks
Hook = Union[Intervention, Callable[[Array], Array]]


def apply_intervention(iv: Intervention, x: Array, axes: Axes, name: str) -> Array:
    """``iv.apply(x, axes)``, with the activation's ``name`` in the built-ins' error messages.

    User subclasses implement ``apply(x, axes)`` only, so the name goes to built-ins alone.
    """
    if isinstance(iv, _SiteIntervention):
        return iv.apply(x, axes, name=name)
    return iv.apply(x, axes)
