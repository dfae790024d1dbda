"""Fast TopK: sparse encoder backward and sparse decode with hand-written VJPs.

A TopK SAE step naively costs three dense ``[batch, d_sae] x [d_sae, d]`` matmuls besides the
encoder forward: the decode, its backward to ``W_dec``, and the encoder backward to ``W_enc``
(``x^T @ d_pre`` with a dense ``d_pre`` that is zero outside the k kept latents). Here all of
them touch only the ``k`` selected latents per token, so their cost is ``batch * k * d``
instead of ``batch * d_sae * d`` and a step costs close to one dense encoder matmul.

* `topk_encode(x, W_enc, b_enc, k)`: dense forward (one matmul + ``lax.top_k``); backward
  scatters ``x[b] * dv[b, j]`` into the selected columns of ``dW_enc`` and gathers the selected
  columns of ``W_enc`` for ``dx``.
* `sparse_decode(values, indices, W_dec)`: ``sum_j values[b, j] * W_dec[indices[b, j]]``;
  backward gathers rows for ``d(values)`` and scatter-adds into the touched rows of ``dW_dec``.

The gathers and scatters loop over the k slots, so temporaries are ``[batch, d]`` (never
``[batch, k, d]`` or ``[batch, d_sae]`` beyond the forward's pre-activations).

The value of each function equals the dense formula exactly (up to summation order), and the
tests compare values and gradients against ``jax.grad`` of the dense version.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jinterp.sae import sharding

# ----------------------------------------------------------------------------- gathers
# Each helper loops over the k slots (a `lax.scan` of k steps over [batch, d] slices) instead of
# materialising a [batch, k, d] gather: on XLA:CPU this measured 3x faster for the gather and
# 2-3x faster for the scatter-add at batch 4096, k 32, d 768 (benchmarks/bench_topk_decode.py),
# and it bounds the temporary memory to one [batch, d] slice. The loop costs O(k) row passes,
# a dense matmul O(d_sae / ~100) on the same machine (0.01 s per slot vs 2 s per matmul), so
# when the slots exceed `DENSE_SLOT_FRACTION * n` (e.g. AuxK's 512 latents) the helpers fall
# back to scattering into a dense [batch, n] code and one matmul.
DENSE_SLOT_FRACTION = 1.0 / 64.0


def _prefer_dense(k: int, n: int) -> bool:
    return k > DENSE_SLOT_FRACTION * n


def _dense_code(coeffs: Array, indices: Array, n: int) -> Float[Array, "batch n"]:
    rows = jnp.arange(coeffs.shape[0])[:, None]
    return jnp.zeros((coeffs.shape[0], n), jnp.float32).at[rows, indices].add(
        coeffs.astype(jnp.float32))


def _gather_rows_dot(coeffs: Float[Array, "batch k"], indices: Int[Array, "batch k"],
                     table: Float[Array, "n d"]) -> Float[Array, "batch d"]:
    """``out[b] = sum_j coeffs[b, j] * table[indices[b, j]]`` (a sparse row combination)."""
    out_dtype = jnp.result_type(coeffs, table)
    if _prefer_dense(indices.shape[1], table.shape[0]):
        dense = _dense_code(coeffs, indices, table.shape[0])  # [batch, n]
        return (dense @ table.astype(jnp.float32)).astype(out_dtype)

    def body(acc, slot):
        c, i = slot  # [batch], [batch]
        return acc + c[:, None].astype(jnp.float32) * table[i].astype(jnp.float32), None

    init = jnp.zeros((coeffs.shape[0], table.shape[1]), jnp.float32)
    out, _ = jax.lax.scan(body, init, (coeffs.T, indices.T))
    return out.astype(out_dtype)


def _gather_rows_project(vec: Float[Array, "batch d"], indices: Int[Array, "batch k"],
                         table: Float[Array, "n d"]) -> Float[Array, "batch k"]:
    """``out[b, j] = <vec[b], table[indices[b, j]]>``."""
    vec32 = vec.astype(jnp.float32)
    if _prefer_dense(indices.shape[1], table.shape[0]):
        full = vec32 @ table.astype(jnp.float32).T  # [batch, n]
        return jnp.take_along_axis(full, indices, axis=1)

    def body(_, i):
        return None, jnp.sum(vec32 * table[i].astype(jnp.float32), axis=-1)  # [batch]

    _, cols = jax.lax.scan(body, None, indices.T)  # [k, batch]
    return cols.T


def _scatter_outer(coeffs: Float[Array, "batch k"], indices: Int[Array, "batch k"],
                   vec: Float[Array, "batch d"], n: int) -> Float[Array, "n d"]:
    """``out[i] = sum_{b, j: indices[b, j] = i} coeffs[b, j] * vec[b]`` (a segment-sum of
    outer products)."""
    vec32 = vec.astype(jnp.float32)
    if _prefer_dense(indices.shape[1], n):
        return _dense_code(coeffs, indices, n).T @ vec32  # [n, d]

    def body(acc, slot):
        c, i = slot
        return acc.at[i].add(c[:, None].astype(jnp.float32) * vec32), None

    out, _ = jax.lax.scan(body, jnp.zeros((n, vec.shape[1]), jnp.float32), (coeffs.T, indices.T))
    return out


# ----------------------------------------------------------------------------- sparse decode
@jax.custom_vjp
def sparse_decode(values: Float[Array, "batch k"], indices: Int[Array, "batch k"],
                  W_dec: Float[Array, "d_sae d"]) -> Float[Array, "batch d"]:
    """Decode a top-k code without the dense ``[batch, d_sae] @ [d_sae, d]`` matmul.

    Args:
        values: Activations of the selected latents.
        indices: Their latent ids (distinct within a row for TopK; duplicates would add up).
        W_dec: Decoder, rows are latent directions.

    Returns:
        ``sum_j values[b, j] * W_dec[indices[b, j]]`` (no bias; add ``b_dec`` yourself).
    """
    return _gather_rows_dot(values, indices, W_dec)


def _sparse_decode_fwd(values, indices, W_dec):
    return _gather_rows_dot(values, indices, W_dec), (values, indices, W_dec)


def _sparse_decode_bwd(res, g):
    values, indices, W_dec = res
    d_values = _gather_rows_project(g, indices, W_dec).astype(values.dtype)  # [batch, k]
    d_w = _scatter_outer(values.astype(jnp.float32), indices, g.astype(jnp.float32),
                         W_dec.shape[0]).astype(W_dec.dtype)  # [d_sae, d]
    return d_values, None, d_w


sparse_decode.defvjp(_sparse_decode_fwd, _sparse_decode_bwd)


# ----------------------------------------------------------------------------- top-k encoder
@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 5))
def topk_encode(x: Float[Array, "batch d_in"], W_enc: Float[Array, "d_in d_sae"],
                b_enc: Float[Array, " d_sae"], k: int,
                aux_mask: Bool[Array, " d_sae"] | None = None, aux_k: int = 0
                ) -> tuple[Float[Array, "batch k_total"], Int[Array, "batch k_total"]]:
    """Top-k pre-activations ``(values, indices)`` of ``x @ W_enc + b_enc`` with a sparse VJP.

    The forward is the one dense matmul an SAE cannot avoid. The backward only touches the
    selected latents: ``dW_enc[:, i] = sum_{b,j: idx=i} x[b] dv[b, j]`` (a segment-sum),
    ``db_enc`` likewise, and ``dx[b] = sum_j dv[b, j] W_enc[:, idx[b, j]]``.
    Values are the raw pre-activations (apply the ReLU outside; its VJP is cheap).

    Args:
        x: Encoder input (already centred if the architecture subtracts b_dec).
        W_enc, b_enc: Encoder.
        k: Latents kept per token.
        aux_mask: Optional bool mask of latents eligible for a second, auxiliary selection
            (the dead latents of AuxK). Ineligible latents get value ``-inf`` in that part.
        aux_k: Size of the auxiliary selection (ignored without ``aux_mask``).

    Returns:
        ``[batch, k]`` values and indices, or ``[batch, k + aux_k]`` with the auxiliary
        selection appended when ``aux_mask`` is given; both parts come from one matmul.
    """
    return _topk_forward(x, W_enc, b_enc, k, aux_mask, aux_k)


def _topk_forward(x, W_enc, b_enc, k, aux_mask=None, aux_k=0):
    """The selection; ``sharding.top_k`` keeps it shard-local when ``d_sae`` is split."""
    pre = x @ W_enc + b_enc[None, :]  # [batch, d_sae]
    values, indices = sharding.top_k(pre, k)  # [batch, k]
    if aux_mask is None or aux_k == 0:
        return values, indices
    masked = jnp.where(aux_mask[None, :], pre, -jnp.inf)  # [batch, d_sae]
    aux_v, aux_i = sharding.top_k(masked, aux_k)  # [batch, aux_k]
    return jnp.concatenate([values, aux_v], -1), jnp.concatenate([indices, aux_i], -1)


def _topk_encode_fwd(x, W_enc, b_enc, k, aux_mask, aux_k):
    values, indices = _topk_forward(x, W_enc, b_enc, k, aux_mask, aux_k)
    return (values, indices), (x, W_enc, indices, aux_mask)


def _topk_encode_bwd(k, aux_k, res, cotangents):
    x, W_enc, indices, aux_mask = res
    d_values, _ = cotangents  # the integer output has no cotangent
    d_sae = W_enc.shape[1]
    dv32 = jnp.nan_to_num(d_values.astype(jnp.float32))  # zero where the value was -inf
    d_b = jax.ops.segment_sum(dv32.reshape(-1), indices.reshape(-1), num_segments=d_sae)
    d_w_t = _scatter_outer(dv32, indices, x.astype(jnp.float32), d_sae)  # [d_sae, d_in]
    d_x = _gather_rows_dot(dv32, indices, W_enc.T.astype(jnp.float32))  # [batch, d_in]
    d_mask = None if aux_mask is None else jnp.zeros(aux_mask.shape, jax.dtypes.float0)
    return d_x.astype(x.dtype), d_w_t.T.astype(W_enc.dtype), d_b.astype(W_enc.dtype), d_mask


topk_encode.defvjp(_topk_encode_fwd, _topk_encode_bwd)


# ----------------------------------------------------------------------------- dense references
def dense_topk_encode(x: Float[Array, "batch d_in"], W_enc: Float[Array, "d_in d_sae"],
                      b_enc: Float[Array, " d_sae"], k: int
                      ) -> tuple[Float[Array, "batch k"], Int[Array, "batch k"]]:
    """The obvious implementation (autodiff through ``lax.top_k``; dense backward)."""
    return _topk_forward(x, W_enc, b_enc, k)


def dense_decode(values: Float[Array, "batch k"], indices: Int[Array, "batch k"],
                 W_dec: Float[Array, "d_sae d"]) -> Float[Array, "batch d"]:
    """Scatter into a dense ``[batch, d_sae]`` code and matmul (the baseline that
    `sparse_decode` beats)."""
    rows = jnp.arange(values.shape[0])[:, None]
    dense = jnp.zeros((values.shape[0], W_dec.shape[0]), values.dtype).at[rows, indices].add(values)
    return dense @ W_dec  # [batch, d]
