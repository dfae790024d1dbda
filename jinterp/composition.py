"""Composition scores between every pair of heads, and each head's copying score.

Elhage et al. (2021), "A Mathematical Framework for Transformer Circuits": head ``a`` composes
with a later head ``b`` when what ``a`` writes (its OV circuit) is what ``b`` reads, through
its queries (Q-composition, ``OV_a @ QK_b``), keys (K-composition, ``OV_a @ QK_b.T``) or
values (V-composition, ``OV_a @ OV_b``). The score is ``||OV_a R_b||_F / (||OV_a||_F
||R_b||_F)``, TransformerLens's ``all_composition_scores``: ``[layer, n_heads, layer,
n_heads]``, zero unless ``a``'s layer is before ``b``'s.

Every norm comes from ``d_head x d_head`` Gram matrices of the factors (no ``d_model x
d_model`` product is formed), vectorised over all pairs and mapped over the first layer to
bound memory (``[n_heads, layer * n_heads, d_head, d_head]`` at a time).

The copying score of a head is ``sum(eig) / sum(|eig|)`` over the eigenvalues of its full OV
circuit ``W_E W_V W_O W_U`` (positive for heads that copy tokens), computed from the
``d_head x d_head`` matrix ``W_O W_U W_E W_V`` with the same non-zero eigenvalues. Use the
processed weights (:func:`jinterp.weights.process`) as the paper does; eigenvalues of
non-symmetric matrices run on CPU only in JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp import readout
from jinterp.factored import OV_circuit, QK_circuit

_MODES = ("Q", "K", "V")


def composition_scores(model, params, mode: str) -> Float[Array, "layer n_heads layer n_heads"]:
    """``scores[l1, h1, l2, h2]``: how much L{l1}H{h1}'s output feeds L{l2}H{h2}'s ``mode``.

    Args:
        mode: ``"Q"``, ``"K"`` or ``"V"``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode={mode!r}; choose 'Q', 'K' or 'V'.")
    left = OV_circuit(model, params)
    right = {"Q": QK_circuit(model, params), "K": QK_circuit(model, params).T,
             "V": OV_circuit(model, params)}[mode]
    n_layers, n_heads = left.A.shape[:2]
    flat = lambda x: x.reshape(n_layers * n_heads, *x.shape[2:])
    gram_left = jnp.swapaxes(left.A, -1, -2) @ left.A  # layer heads k k
    right_A, gram_right = flat(right.A), flat(right.B @ jnp.swapaxes(right.B, -1, -2))

    def one_layer(args):
        g_a, B_a = args  # heads k k, heads k d_model
        inner = jnp.einsum("aed,bdf->abef", B_a, right_A)  # heads (layer heads) k k
        sq = jnp.einsum("aef,abfg,bhg,abeh->ab", g_a, inner, gram_right, inner)
        return jnp.sqrt(jnp.maximum(sq, 0.0))

    products = jax.lax.map(one_layer, (gram_left, left.B))  # layer heads (layer heads)
    products = products.reshape(n_layers, n_heads, n_layers, n_heads)
    denom = left.norm()[:, :, None, None] * right.norm()[None, None]
    scores = products / denom
    earlier = jnp.arange(n_layers)[:, None, None, None] < jnp.arange(n_layers)[None, None, :, None]
    return jnp.where(earlier, scores, 0.0)


def copying_scores(model, params) -> Float[Array, "layer n_heads"]:
    """Each head's ``sum(eig) / sum(|eig|)`` of ``W_E W_V W_O W_U`` (in ``[-1, 1]``)."""
    W_U = readout.W_U(model, params)  # d_model d_vocab
    W_E = params["embed"]["W_E"]  # d_vocab d_model
    ov = OV_circuit(model, params)
    loop = W_U @ W_E  # d_model d_model: unembed then re-embed
    core = ov.B @ loop @ ov.A  # layer heads d_head d_head
    eig = jnp.linalg.eigvals(core)
    return jnp.real(eig.sum(-1)) / jnp.abs(eig).sum(-1)
