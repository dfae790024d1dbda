"""Low-rank matrices kept as factors, and the per-head OV and QK circuits.

A head's OV circuit ``W_V @ W_O`` and QK circuit ``W_Q @ W_K.T`` are ``d_model x d_model`` but
of rank ``d_head``: stored as factors ``A [..., m, k]`` and ``B [..., k, n]`` they cost
``2 * d_model * d_head`` per head instead of ``d_model**2``, and their SVD, norm and
eigenvalues come from ``k x k`` problems (a QR of each factor, then the small core). Leading
axes are batch axes (``[layer, n_heads]``), so every operation is vectorised over heads and
works under ``jit`` / ``vmap``. The idea is TransformerLens's ``FactoredMatrix``; this is a
pytree of two arrays.

Circuits for grouped-query attention read key/value head ``h // group`` for query head ``h``.
For RoPE models the QK circuit is the position-free bilinear form of the un-rotated queries
and keys (the actual scores also depend on the relative position), as in TL.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FactoredMatrix:
    """The matrix ``A @ B`` without forming it: ``A [*lead, m, k]``, ``B [*lead, k, n]``.

    Example:
        >>> ov = jinterp.OV_circuit(model, params)          # [layer, n_heads, d_model, d_model]
        >>> ov.S.shape                                       # (layer, n_heads, d_head)
        >>> ov[0, 3].AB                                      # L0H3's d_model x d_model matrix
    """

    A: Float[Array, "*lead d k"]
    B: Float[Array, "*lead k n"]

    def __post_init__(self):
        a, b = getattr(self.A, "shape", None), getattr(self.B, "shape", None)
        if a is None or b is None:  # placeholders JAX puts in pytrees (tree ops, transforms)
            return
        if len(a) < 2 or len(b) < 2 or a[-1] != b[-2] or a[:-2] != b[:-2]:
            raise ValueError(f"FactoredMatrix needs A [..., m, k] and B [..., k, n] with the same "
                             f"leading axes, got A {a} and B {b}.")

    # ------------------------------------------------------------------ shape
    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.A.shape[:-1], self.B.shape[-1])

    @property
    def ndim(self) -> int:
        return self.A.ndim

    @property
    def rank(self) -> int:
        """The inner dimension ``k`` (an upper bound on the rank)."""
        return self.A.shape[-1]

    def __getitem__(self, index) -> FactoredMatrix:
        """Indexes the leading (batch) axes only: ``ov[layer, head]``."""
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > self.ndim - 2:
            raise IndexError(f"Index {index} has more axes than the {self.ndim - 2} leading axes.")
        return FactoredMatrix(self.A[index], self.B[index])

    # ------------------------------------------------------------------ products
    @property
    def AB(self) -> Float[Array, "*lead d n"]:
        """The full matrix (``m x n`` per leading index: memory!)."""
        return self.A @ self.B

    @property
    def BA(self) -> Float[Array, "*lead k k"]:
        """``B @ A`` (square matrices only): same non-zero eigenvalues as ``A @ B``, ``k x k``."""
        if self.A.shape[-2] != self.B.shape[-1]:
            raise ValueError(f"BA needs a square matrix, this is {self.shape[-2:]}.")
        return self.B @ self.A

    @property
    def T(self) -> FactoredMatrix:
        return FactoredMatrix(jnp.swapaxes(self.B, -1, -2), jnp.swapaxes(self.A, -1, -2))

    def __matmul__(self, other) -> FactoredMatrix:
        """Products stay factored: the inner factors are multiplied, the outer ones kept."""
        if isinstance(other, FactoredMatrix):
            return FactoredMatrix(self.A, (self.B @ other.A) @ other.B)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other) -> FactoredMatrix:
        return FactoredMatrix(other @ self.A, self.B)

    # ------------------------------------------------------------------ spectra
    def svd(self) -> tuple[Array, Array, Array]:
        """Thin SVD ``U [*lead, m, k]``, ``S [*lead, k]``, ``Vh [*lead, k, n]`` of ``A @ B``.

        From a QR of each factor and the SVD of the ``k x k`` core (needs ``k <= m, n``, true
        of circuits); singular values descend.
        """
        qa, ra = jnp.linalg.qr(self.A)  # *lead m k, *lead k k
        qb, rb = jnp.linalg.qr(jnp.swapaxes(self.B, -1, -2))  # *lead n k, *lead k k
        u, s, vh = jnp.linalg.svd(ra @ jnp.swapaxes(rb, -1, -2))  # *lead k k
        return qa @ u, s, vh @ jnp.swapaxes(qb, -1, -2)

    @property
    def U(self) -> Array:
        return self.svd()[0]

    @property
    def S(self) -> Array:
        return self.svd()[1]

    @property
    def Vh(self) -> Array:
        return self.svd()[2]

    def eigenvalues(self) -> Array:
        """The ``k`` eigenvalues of ``A @ B`` that can be non-zero (complex), from ``B @ A``.

        ``jnp.linalg.eigvals`` of a non-symmetric matrix runs on CPU only in JAX.
        """
        return jnp.linalg.eigvals(self.BA)

    def norm(self) -> Array:
        """Frobenius norm per leading index, from ``k x k`` Gram matrices:
        ``||AB||^2 = tr((A^T A)(B B^T))``."""
        gram_a = jnp.swapaxes(self.A, -1, -2) @ self.A  # *lead k k
        gram_b = self.B @ jnp.swapaxes(self.B, -1, -2)  # *lead k k
        return jnp.sqrt(jnp.maximum(jnp.sum(gram_a * gram_b, axis=(-2, -1)), 0.0))

    def make_even(self) -> FactoredMatrix:
        """The same matrix as ``U sqrt(S)`` times ``sqrt(S) Vh`` (balanced factors)."""
        u, s, vh = self.svd()
        root = jnp.sqrt(s)
        return FactoredMatrix(u * root[..., None, :], root[..., :, None] * vh)


def _per_query_head(w: Array, n_heads: int) -> Array:
    """``[layer, n_kv_heads, ...]`` -> ``[layer, n_heads, ...]`` (query head h reads h // group)."""
    return jnp.repeat(w, n_heads // w.shape[1], axis=1)


def OV_circuit(model, params) -> FactoredMatrix:
    """Every head's ``W_V @ W_O``: ``[layer, n_heads, d_model, d_model]``, factored."""
    attn = params["blocks"]["attn"]
    W_O = attn["W_O"]  # layer n_heads d_head d_model
    return FactoredMatrix(_per_query_head(attn["W_V"], W_O.shape[1]), W_O)


def QK_circuit(model, params) -> FactoredMatrix:
    """Every head's ``W_Q @ W_K.T``: ``[layer, n_heads, d_model, d_model]``, factored."""
    attn = params["blocks"]["attn"]
    W_Q = attn["W_Q"]  # layer n_heads d_model d_head
    W_K = _per_query_head(attn["W_K"], W_Q.shape[1])
    return FactoredMatrix(W_Q, jnp.swapaxes(W_K, -1, -2))
