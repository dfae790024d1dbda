"""Interventions as data: pytrees of arrays that rewrite one activation.

Each intervention is a frozen pytree dataclass, so a batch of them (one leading axis on any
field) is ``vmap``-able, ``jax.grad`` flows into its fields (e.g. a steering vector), and they
compose: a hook entry may be a list, applied in order. A plain function ``act -> act`` works
as a hook too; interventions add one thing a function cannot know: the *axes* of the activation
they are applied to (from :mod:`jinterp.names`), so ``pos=`` and ``head=`` find the position
axis of ``hook_resid_pre`` (axis 1), of ``attn.hook_z`` (axis 1, heads axis 2) and the query
axis of ``attn.hook_pattern`` (axis 2, heads axis 1) without the user saying which.

Selectors. ``pos`` and ``head`` take ``None`` (every index), an integer (negative indices
follow Python), integer indices, a boolean mask or a ``slice``; an index outside the axis
raises. The full rules, and where each selector check runs, are in :mod:`jinterp.selectors`,
which also provides :func:`site_mask` and :class:`SliceSelector` (re-exported here).

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
from jaxtyping import Array, Float, Int, Real

from jinterp.checks import device_check, is_host_value
from jinterp.names import Axes
from jinterp.selectors import (
    AnyArray,
    Selector,
    SliceSelector,
    _describe,
    _esc,
    _Index,
    _indices,
    _mask,
    _normalise_selector,
    _resolve_sites,
    _shape_of,
    _Site,
    site_mask,
)

__all__ = [
    "AnyArray", "Hook", "Intervention", "MeanAblate", "Patch", "ProjectOut", "ResampleAblate",
    "Selector", "SliceSelector", "Steer", "ZeroAblate", "apply_intervention", "site_mask",
]


def _where(iv: "Intervention", name: str | None) -> str:
    return f"{type(iv).__name__} on {name!r}: " if name else f"{type(iv).__name__}: "


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
