"""Learned orthogonal bases for DAS: exactly orthonormal at every optimizer step.

DAS (Geiger et al. 2023) searches for a rotation ``R`` of a hidden vector ``h`` (width ``d``)
whose first ``n`` coordinates hold a causal variable. Gradient descent on ``R`` itself leaves
the orthogonal group after one step, so ``R`` is a smooth function of unconstrained parameters.
Two parametrisations (:class:`Parametrisation`):

``EXPM`` (the default). ``R = A @ expm(S - S^T)``: ``A`` is a fixed Haar-random rotation (the
*anchor*) and ``S`` a trainable ``[d, d]`` matrix, zero at the start. Why this one:

- The exponential of a skew-symmetric matrix is a rotation to rounding error whatever ``S``
  is, and it reaches every rotation of determinant +1 (a row's sign never matters for a
  subspace), so no alignment is out of reach. PyTorch's ``parametrizations.orthogonal``, which
  pyvene's ``RotateLayer`` uses, also picks the matrix exponential for square matrices.
- Cayley's map ``(I - K)^-1 (I + K)`` cannot reach rotations with eigenvalue -1 and needs a
  linear solve; a product of ``d`` Householder reflections is ``d`` sequential steps that XLA
  cannot fuse.
- The anchor makes the starting subspace Haar-random rather than the first ``n`` coordinate
  axes (a bias towards the neuron basis), and keeps ``S`` near zero, where the exponential map
  is best conditioned: its gradient at ``S = 0`` is the Riemannian gradient on the group.

Cost: one ``expm`` of a ``d x d`` matrix per step, ``O(d^3)`` (about a dozen matmuls). Fine for
toy models and residual widths up to a few thousand on an accelerator; boundless DAS needs the
full ``R`` anyway, because its mask ranges over all ``d`` rotated coordinates.

``QR`` (for wide activations and a fixed, small ``n``). The ``n`` basis rows are the
orthonormalised columns of a trainable ``[d, n]`` matrix ``W`` (the ``Q`` of ``W = QR``, signs
fixed so ``R``'s diagonal is positive, which makes the map smooth and unique). ``O(d n^2)``
per step; ``W`` starts at ``n`` Haar-random orthonormal columns. This is the counterpart of
pyvene's ``LowRankRotateLayer``. Only ``n`` rows exist, so it serves plain DAS, not boundless.

A basis is always returned as *rows*: ``basis @ h`` gives the rotated coordinates ``[n]``.
"""

from __future__ import annotations

import enum
import functools

import jax
import jax.numpy as jnp
from flax import struct
from jax.scipy.linalg import expm
from jaxtyping import Array, Float


class Parametrisation(enum.Enum):
    """How a learned basis is parametrised (see the module docstring for why)."""

    EXPM = "expm"
    QR = "qr"


@functools.partial(jax.jit, static_argnums=1)
def random_orthogonal(key: jax.Array, d: int) -> Float[Array, "d d"]:
    """A Haar-random ``d x d`` orthogonal matrix (QR of a Gaussian, signs fixed by R's diagonal).

    Without the sign fix, QR's output is not Haar-distributed (Mezzadri 2007).
    """
    q, r = jnp.linalg.qr(jax.random.normal(key, (d, d), jnp.float32))  # d d each
    return q * jnp.sign(jnp.diagonal(r))[None, :]


@jax.jit
def expm_rotation(anchor: Float[Array, "d d"], generator: Float[Array, "d d"]
                  ) -> Float[Array, "d d"]:
    """``anchor @ expm(S - S^T)``: a rotation for any ``generator`` ``S``."""
    return anchor @ expm(generator - generator.T)  # d d


@jax.jit
def qr_rows(w: Float[Array, "d n"]) -> Float[Array, "n d"]:
    """The orthonormalised columns of ``w`` as rows (QR with a positive diagonal)."""
    q, r = jnp.linalg.qr(w)  # q: d n, r: n n
    sign = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(q.dtype)  # never 0, unlike sign
    return (q * sign[None, :]).T


@struct.dataclass
class Rotation:
    """A learned orthonormal basis: trainable ``generator``, fixed ``anchor``.

    Attributes:
        generator: the trainable parameters: ``S [d, d]`` (EXPM, zero at init) or
            ``W [d, n]`` (QR).
        anchor: the fixed Haar-random rotation ``[d, d]`` of EXPM; for QR a zero-size
            placeholder ``[0, d]`` (QR has no anchor), so both kinds are the same pytree kind.
        parametrisation: which map (static).
    """

    generator: Float[Array, "d _"]
    anchor: Float[Array, "_ d"]
    parametrisation: Parametrisation = struct.field(pytree_node=False)

    @property
    def d(self) -> int:
        """The width of the hidden vector rotated."""
        return self.generator.shape[0]

    @property
    def n_rows(self) -> int:
        """How many basis rows exist: ``d`` for EXPM, ``n`` for QR."""
        if self.parametrisation is Parametrisation.EXPM:
            return self.d
        return self.generator.shape[1]

    def matrix(self) -> Float[Array, "n d"]:
        """Every basis row: the full rotation ``[d, d]`` (EXPM) or ``[n, d]`` (QR)."""
        if self.parametrisation is Parametrisation.EXPM:
            return expm_rotation(self.anchor, self.generator)
        return qr_rows(self.generator)

    def basis(self, n: int) -> Float[Array, "n d"]:
        """The first ``n`` rows: the subspace DAS intervenes on."""
        if not 0 < n <= self.n_rows:
            raise ValueError(f"basis(n={n}): this rotation has {self.n_rows} rows (width "
                             f"d={self.d}); n must lie in 1..{self.n_rows}.")
        return self.matrix()[:n]


def init_rotation(key: jax.Array, d: int, n: int | None = None,
                  parametrisation: Parametrisation | str = Parametrisation.EXPM) -> Rotation:
    """A rotation starting at a Haar-random basis.

    Args:
        key: PRNG key of the random start.
        d: the width of the activation (its last axis).
        n: the subspace size; needed by QR (its number of columns), ignored by EXPM.
        parametrisation: ``EXPM`` (or ``"expm"``) or ``QR`` (``"qr"``).
    """
    kind = Parametrisation(parametrisation)
    if d <= 0:
        raise ValueError(f"init_rotation: the width d must be positive, got {d}.")
    anchor = random_orthogonal(key, d)
    if kind is Parametrisation.EXPM:
        return Rotation(jnp.zeros((d, d), jnp.float32), anchor, kind)
    if n is None or not 0 < n <= d:
        raise ValueError(f"init_rotation: QR needs the subspace size n in 1..d={d}; got n={n}.")
    return Rotation(anchor[:, :n], jnp.zeros((0, d), jnp.float32), kind)
