"""Crosscoders: one dictionary over several activations at once (layers, or models).

An acausal crosscoder (Lindsey et al. 2024, "Sparse crosscoders for cross-layer features and
model diffing") reads ``n_blocks`` activations of the same token -- the residual stream after
layers 0..3, or one hook of a base and a fine-tuned model -- and reconstructs each of them::

    f       = ReLU(sum_b W_enc^b x_b + b_enc)             (one matmul on the concatenation)
    x_hat_b = f W_dec^b + b_dec^b
    L       = sum_b ||x_b - x_hat_b||^2 + lambda sum_i f_i sum_b ||W_dec,i^b||

In jinterp it is an SAE whose input is the concatenation of the blocks: an
:class:`~jinterp.sae.SAEConfig` with ``n_blocks`` (``d_in = n_blocks * d_block``), so every
trainer, sweep and file format serves it; ``relu`` gets the block-summed decoder norms in its
penalty (above), the top-k family is a TopK crosscoder on the concatenation. Parameters keep
SAELens's names and the flat layout ``W_enc [n_blocks * d_block, d_sae]``, ``W_dec [d_sae,
n_blocks * d_block]``; :func:`decoder_blocks` gives the ``[d_sae, n_blocks, d_block]`` view.

Blocks have different scales (the residual grows with depth), so the trainer on a model scales
each block to ``E||s_b x_b||^2 = d_block`` before concatenating (Anthropic normalises per
layer) and folds the scales back afterwards (:func:`fold_block_scales`): the saved crosscoder
reads and writes raw activations. (:func:`jinterp.sae.train` on arrays that are already
concatenated uses one scale for the whole row: scale the blocks first if their norms differ.)

Splicing: an acausal crosscoder reads later layers to reconstruct an earlier one, so its
reconstruction comes from a clean forward; replacing block ``b`` is a second forward with
``jinterp.Patch(x_hat_b)`` at block ``b``'s hook (:func:`crosscoder_patches`), one block at a
time, which is how :func:`~jinterp.sae.crosscoder_eval.evaluate_crosscoder` scores each block.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from jinterp.interventions import Patch
from jinterp.sae.architectures import Params, encode, reconstruct
from jinterp.sae.config import SAEConfig


def _check(cfg: SAEConfig) -> None:
    if not cfg.is_crosscoder:
        raise ValueError(f"a crosscoder has n_blocks > 1; this config has n_blocks="
                         f"{cfg.n_blocks} (an SAE: use jinterp.sae.splice / evaluate).")


def decoder_blocks(cfg: SAEConfig, params: Params) -> Float[Array, "d_sae n_blocks d_block"]:
    """Each latent's decoder vector in every block (the flat ``W_dec`` reshaped)."""
    _check(cfg)
    return jnp.asarray(params["W_dec"]).reshape(cfg.d_sae, cfg.n_blocks, cfg.d_block)


def block_scales(blocks: Sequence[Float[np.ndarray | Array, "n d_block"]]) -> np.ndarray:
    """Per block ``s_b`` with ``E||s_b x_b||^2 = d_block`` over the given rows (float64)."""
    out = []
    for b, x in enumerate(blocks):
        x = np.asarray(x, np.float64)
        mean_sq = float(np.mean(np.sum(np.square(x), axis=-1)))
        if not mean_sq > 0:
            raise ValueError(f"crosscoder block {b} has mean squared norm 0: cannot normalise it.")
        out.append(np.sqrt(x.shape[-1] / mean_sq))
    return np.asarray(out)


def fold_block_scales(cfg: SAEConfig, params: Params,
                      scales: Float[np.ndarray | Array, " n_blocks"]) -> Params:
    """Parameters for raw blocks from ones trained on ``[s_b x_b]_b`` (latents unchanged).

    Block ``b``'s encoder rows absorb ``s_b``, its decoder columns and ``b_dec`` divide by it
    (a ``b_dec`` subtracted before the encoder then lives in raw units too).
    """
    _check(cfg)
    s = jnp.repeat(jnp.asarray(scales, jnp.float32), cfg.d_block)  # [d_in]
    out = dict(params)
    out["W_enc"] = (params["W_enc"] * s[:, None]).astype(params["W_enc"].dtype)
    out["W_dec"] = (params["W_dec"] / s[None, :]).astype(params["W_dec"].dtype)
    out["b_dec"] = (params["b_dec"] / s).astype(params["b_dec"].dtype)
    if "W_router" in out:
        out["W_router"] = (params["W_router"] * s[:, None]).astype(params["W_router"].dtype)
    return out


def _rows(act: Array) -> Array:
    return act.reshape(act.shape[:2] + (-1,)) if act.ndim == 4 else act


def crosscoder_forward(cfg: SAEConfig, params: Params,
                       acts: Sequence[Float[Array, "batch pos ..."]]
                       ) -> tuple[list[Array], Float[Array, "batch pos d_sae"]]:
    """``(x_hat per block, in each activation's shape; latents)`` from the blocks' activations.

    Args:
        acts: one activation per block, ``[batch, pos, d_block]`` (or ``[batch, pos, n_heads,
            d_head]``, flattened as the store does), in the crosscoder's block order.
    """
    _check(cfg)
    if len(acts) != cfg.n_blocks:
        raise ValueError(f"the crosscoder has {cfg.n_blocks} blocks, got {len(acts)} "
                         "activations.")
    rows = [_rows(jnp.asarray(a)).astype(jnp.float32) for a in acts]
    for b, r in enumerate(rows):
        if r.shape[-1] != cfg.d_block:
            raise ValueError(f"block {b} has rows of width {r.shape[-1]}, the crosscoder's "
                             f"blocks are d_block={cfg.d_block} wide.")
    x = jnp.concatenate(rows, axis=-1)  # [batch, pos, d_in]
    f = encode(cfg, params, x)
    x_hat = reconstruct(cfg, params, x, f)  # [batch, pos, d_in]
    outs = [x_hat[..., b * cfg.d_block:(b + 1) * cfg.d_block].reshape(a.shape)
            for b, a in enumerate(acts)]
    return outs, f


def crosscoder_patches(cfg: SAEConfig, params: Params, acts: Sequence[Array],
                       keep: Bool[Array, "batch pos"] | None = None) -> list[Patch]:
    """One ``jinterp.Patch`` per block: its reconstruction from the clean ``acts`` of every
    block (where ``keep`` is False the clean activation stays). Apply one at a time, each at
    its block's hook (and, for two models, to its block's model)."""
    outs, _ = crosscoder_forward(cfg, params, acts)
    patches = []
    for x_hat, a in zip(outs, acts):
        a = jnp.asarray(a)
        if keep is not None:
            mask = jnp.asarray(keep).reshape(keep.shape + (1,) * (a.ndim - 2))
            x_hat = jnp.where(mask, x_hat, a.astype(x_hat.dtype))
        patches.append(Patch(x_hat.astype(a.dtype)))
    return patches
