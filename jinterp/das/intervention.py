"""The interchange intervention on a subspace: DAS's edit, as a jinterp intervention.

Given a base activation ``h``, the same activation ``s`` from a *source* input, and a basis
``B [n, d]`` with orthonormal rows (the first ``n`` rows of a rotation ``R``), the base's
coordinates in the subspace are replaced by the source's and everything orthogonal is kept::

    h' = h + B^T (B s - B h)                        (DAS, Geiger et al. 2023)
    h' = h + B^T (m * (B s - B h)),  m in [0, 1]^n   (boundless DAS: a soft mask over rows)

With ``B`` the whole rotation and ``m`` all ones, ``h' = s`` (a plain patch); with ``m`` all
zeros, ``h' = h``. :class:`Interchange` is a pytree like ``Patch``: it goes wherever a hook goes
(``run_with_hooks``, ``At`` with a stacked ``[layer, ...]`` source, lists of hooks), ``jax.grad``
reaches its basis and weights, and ``vmap`` over any field is one program.

Every hook point works: the basis acts on the activation's *last* axis (``d_model`` for the
residual stream, ``d_head`` for ``attn.hook_z`` with ``head=``, ``d_mlp`` for ``mlp.hook_post``),
at the sites that ``pos`` / ``head`` select (the selectors of :mod:`jinterp.selectors`). The
source is the source run's activation at the same point, of the activation's shape, so each
base example is paired with the source example in the same batch row and position.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float

from jinterp.interventions import AnyArray, Intervention, Selector, site_mask
from jinterp.names import Axes


def interchange(base: Float[AnyArray, "*lead d"], source: Float[AnyArray, "*lead d"],
                basis: Float[AnyArray, "n d"], weights: Float[AnyArray, " n"] | None = None
                ) -> Float[Array, "*lead d"]:
    """``base + basis^T (weights * basis (source - base))``: the subspace of ``basis`` swapped.

    ``basis`` rows are assumed orthonormal (as :class:`~jinterp.das.rotation.Rotation` gives);
    computed in float32 at least, returned in ``base``'s dtype.
    """
    base, source, basis = jnp.asarray(base), jnp.asarray(source), jnp.asarray(basis)
    compute = jnp.promote_types(base.dtype, jnp.float32)
    b = basis.astype(compute)
    delta = (source.astype(compute) - base.astype(compute)) @ b.T  # *lead n
    if weights is not None:
        w = jnp.asarray(weights).astype(compute)  # n
        delta = delta * w.reshape((1,) * (delta.ndim - 1) + w.shape)
    return (base.astype(compute) + delta @ b).astype(base.dtype)  # *lead d


def _shape(value) -> tuple[int, ...]:
    return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)


@struct.dataclass
class Interchange(Intervention):
    """Replace the base activation's component in a subspace with the source's.

    Attributes:
        basis: ``[n, d]`` orthonormal rows (the first ``n`` rows of a learned rotation); ``d``
            is the activation's last axis.
        source: the source run's activation at this point, the activation's shape (under
            ``jinterp.At`` it may carry a leading ``[layer]`` axis, as ``cache.stack`` gives).
        weights: ``[n]`` interchange weights in ``[0, 1]`` (boundless DAS's mask), or ``None``
            for all ones (plain DAS).
        pos / head: which positions and heads are intervened (``None``: all), as in ``Patch``.
    """

    layered_fields: ClassVar[tuple[str, ...]] = ("source",)

    basis: Float[AnyArray, "n d"]
    source: Float[AnyArray, "..."]
    weights: Float[AnyArray, " n"] | None = None
    pos: Selector = None
    head: Selector = None

    def check(self, shape, axes, name, *, layers=None):
        super().check(shape, axes, name, layers=layers)
        shape = tuple(shape)
        where = f"Interchange on {name!r}: "
        basis = _shape(self.basis)
        if len(basis) != 2:
            raise ValueError(f"{where}basis has shape {basis}; it needs [n, d]: n orthonormal "
                             f"rows of the activation's width d={shape[-1]}.")
        if basis[1] != shape[-1]:
            raise ValueError(f"{where}the basis rotates vectors of width {basis[1]} but this "
                             f"activation's last axis has width {shape[-1]} (shape {shape}): "
                             f"build the rotation for d={shape[-1]} or pick the hook it was "
                             "trained on.")
        if basis[0] > basis[1]:
            raise ValueError(f"{where}basis has {basis[0]} rows but width {basis[1]}: at most "
                             f"d={basis[1]} orthonormal rows exist.")
        if self.weights is not None and _shape(self.weights) != (basis[0],):
            raise ValueError(f"{where}weights have shape {_shape(self.weights)}; they need "
                             f"({basis[0]},), one per basis row.")
        source = self._field_shape("source", layers, where)
        if source != shape:
            hint = ""
            if len(source) == len(shape) and source[0] != shape[0]:
                hint = (f" The base batch has {shape[0]} examples and the source {source[0]}: "
                        "pair every base example with one source example.")
            raise ValueError(f"{where}source has shape {source}; it must be the source run's "
                             f"activation at this point, of the activation's shape {shape}."
                             f"{hint}")
        # The selectors' checks, traced on a placeholder: nothing is allocated.
        jax.eval_shape(lambda: site_mask(jnp.zeros(shape), axes, self.pos, self.head, name))

    def apply(self, x: Array, axes: Axes) -> Array:
        self.check(x.shape, axes, "the activation")
        out = interchange(x, jnp.asarray(self.source), jnp.asarray(self.basis),
                          None if self.weights is None else jnp.asarray(self.weights))
        if self.pos is None and self.head is None:
            return out
        return jnp.where(site_mask(x, axes, self.pos, self.head), out, x)
