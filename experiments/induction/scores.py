"""Per-head diagnostics of induction circuits (Elhage et al. 2021; Olsson et al. 2022).

Attention-pattern scores, read from ``jinterp.run_with_cache`` on the ``r r`` probe (a random
sequence ``r`` of ``half_len`` tokens followed by itself):

* induction (prefix-matching) score: mean attention from a query in the second copy to the
  key *after* the query token's earlier occurrence, ``q - half_len + 1``;
* previous-token score: mean attention from each query ``q >= 1`` to ``q - 1``.

Weight-based scores, with the row-vector convention of :mod:`jinterp.models.gpt2` (``x @ W``):

* OV copying score of a head: for the full OV circuit ``M = W_E W_V W_O W_U`` (``[d_vocab,
  d_vocab]``: how attending to token ``s`` moves the logit of token ``t``), the Framework's
  eigenvalue summary ``sum(lambda) / sum(|lambda|)`` in ``[-1, 1]``; +1 means a pure copier
  (attending to ``s`` raises ``s``). ``M = A B`` with ``A = W_E W_V`` (``d_vocab x d_head``), so
  its non-zero eigenvalues are those of the small ``B A = W_O W_U W_E W_V`` (``d_head x d_head``).
* composition scores between a writer head ``h1`` (earlier layer) and a reader ``h2``:
  ``||W_QK^{h2} W_OV^{h1 T}||_F / (||W_QK^{h2}||_F ||W_OV^{h1}||_F)`` for K-composition (the
  reader's keys read the writer's output), with ``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O``
  (both ``d_model x d_model``). This is the paper's formula transposed into our convention.
  The paper subtracts the expectation for random matrices of the same shapes; we report that
  baseline separately (:func:`random_composition_baseline`). Note the paper's erratum: its
  published composition diagram used wrongly computed norms; this is the formula as stated.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

import jinterp

PATTERN = "attn.hook_pattern"


def _check_pattern(pattern: Array, half_len: int | None = None) -> None:
    if pattern.ndim < 2 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError("Expected attention patterns [..., q_pos, k_pos] with q_pos == k_pos; "
                         f"got shape {pattern.shape}.")
    if half_len is not None and pattern.shape[-1] != 2 * half_len:
        raise ValueError(f"The r r probe with half_len={half_len} has {2 * half_len} positions "
                         f"but the pattern has {pattern.shape[-1]}; pass the half_len the probe "
                         "was built with.")


def induction_score(pattern: Float[Array, "... batch n_heads q_pos k_pos"], half_len: int
                    ) -> Float[Array, "... n_heads"]:
    """Mean attention to ``q - half_len + 1`` over queries in the second copy of ``r r``."""
    _check_pattern(pattern, half_len)
    q = jnp.arange(half_len, 2 * half_len)  # queries in the second copy
    picked = pattern[..., q, q - half_len + 1]  # ... batch n_heads half_len
    return picked.mean(axis=(-1, -3))


def previous_token_score(pattern: Float[Array, "... batch n_heads q_pos k_pos"]
                         ) -> Float[Array, "... n_heads"]:
    """Mean attention to ``q - 1`` over queries ``q >= 1``."""
    _check_pattern(pattern)
    q = jnp.arange(1, pattern.shape[-1])
    return pattern[..., q, q - 1].mean(axis=(-1, -3))


def attention_scores(model, params, tokens: Int[Array, "batch pos"], half_len: int
                     ) -> dict[str, Float[Array, "layer n_heads"]]:
    """Induction and previous-token scores of every head on the probe ``tokens`` (``r r``)."""
    _, cache = jinterp.run_with_cache(model, params, tokens, names=lambda n: n.endswith(PATTERN))
    patterns = cache.stack(PATTERN)  # layer batch n_heads q_pos k_pos
    return {"induction": induction_score(patterns, half_len),
            "previous_token": previous_token_score(patterns)}


def ov_circuits(params) -> Float[Array, "layer n_heads d_head d_head"]:
    """The small factor ``W_O W_U W_E W_V`` of each head's full OV circuit.

    It has the same non-zero spectrum as the ``[d_vocab, d_vocab]`` circuit, at ``d_head`` size.
    """
    attn = params["blocks"]["attn"]
    W_E, W_U = params["embed"]["W_E"], params["unembed"]["W_U"]
    readout = jnp.einsum("lhed,dv->lhev", attn["W_O"], W_U)  # layer n_heads d_head d_vocab
    # layer n_heads d_head d_head
    return jnp.einsum("lhev,vd,lhdf->lhef", readout, W_E, attn["W_V"])


def eigenvalue_copying_score(circuit: Float[Array, "... n n"]) -> Float[Array, "..."]:
    """``sum(lambda) / sum(|lambda|)`` of each square matrix (Framework's summary statistic)."""
    eig = np.linalg.eigvals(np.asarray(circuit, np.float64))  # ... n (complex)
    return jnp.asarray(eig.sum(-1).real / np.abs(eig).sum(-1))


def copying_scores(params) -> Float[Array, "layer n_heads"]:
    """OV copying score of every head (see module docstring)."""
    return eigenvalue_copying_score(ov_circuits(params))


def qk_ov_matrices(params) -> tuple[Float[Array, "layer n_heads d_model d_model"],
                                    Float[Array, "layer n_heads d_model d_model"]]:
    """``W_QK = W_Q W_K^T`` and ``W_OV = W_V W_O`` per head (row-vector convention)."""
    attn = params["blocks"]["attn"]
    qk = jnp.einsum("lhde,lhfe->lhdf", attn["W_Q"], attn["W_K"])  # layer n_heads d_model d_model
    ov = jnp.einsum("lhde,lhef->lhdf", attn["W_V"], attn["W_O"])  # layer n_heads d_model d_model
    return qk, ov


def k_composition(qk: Float[Array, "... d_model d_model"], ov: Float[Array, "... d_model d_model"]
                  ) -> Float[Array, "..."]:
    """K-composition ``||QK OV^T||_F / (||QK||_F ||OV||_F)``; leading axes broadcast.

    ``k_composition(qk[None], ov[:, None])`` gives every (writer, reader) pair.
    """
    prod = jnp.einsum("...de,...fe->...df", qk, ov)  # ... d_model d_model
    frob = lambda m: jnp.sqrt(jnp.sum(m ** 2, axis=(-2, -1)))
    return frob(prod) / (frob(qk) * frob(ov))


def random_composition_baseline(key: jax.Array, d_model: int, d_head: int,
                                n_samples: int = 200) -> float:
    """Mean K-composition of Gaussian weights with this model's shapes (the paper's baseline)."""
    return float(_random_composition(key, d_model, d_head, n_samples))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_composition(key: jax.Array, d_model: int, d_head: int,
                        n_samples: int) -> Float[Array, ""]:
    k_q, k_k, k_v, k_o = jax.random.split(key, 4)
    w = lambda k, *s: jax.random.normal(k, (n_samples, *s))
    W_Q, W_K = w(k_q, d_model, d_head), w(k_k, d_model, d_head)
    W_V, W_O = w(k_v, d_model, d_head), w(k_o, d_head, d_model)
    qk = jnp.einsum("nde,nfe->ndf", W_Q, W_K)  # n d_model d_model
    ov = jnp.einsum("nde,nef->ndf", W_V, W_O)  # n d_model d_model
    return k_composition(qk, ov).mean()


def layer_k_composition(params, writer_layer: int = 0,
                        reader_layer: int = 1) -> Float[Array, "n_heads n_heads"]:
    """K-composition from each head of ``writer_layer`` (rows) to each of ``reader_layer``."""
    n_layers = params["blocks"]["attn"]["W_Q"].shape[0]
    if not 0 <= writer_layer < reader_layer < n_layers:
        raise ValueError(f"Need 0 <= writer_layer < reader_layer < n_layers={n_layers}; got "
                         f"{writer_layer}, {reader_layer}.")
    qk, ov = qk_ov_matrices(params)
    return k_composition(qk[reader_layer][None], ov[writer_layer][:, None])  # writer reader


def heads_above(scores: Float[ArrayLike, "layer n_heads"],
                threshold: float) -> list[tuple[list[int], float]]:
    """``([layer, head], score)`` for every head whose score exceeds ``threshold``, best first."""
    s = np.asarray(scores)
    found = [([int(l), int(h)], float(s[l, h])) for l, h in zip(*np.nonzero(s > threshold))]
    return sorted(found, key=lambda item: -item[1])
