"""Matryoshka SAE over a BatchTopK base (Bussmann et al. 2025; Nabeshima 2024).

Latents are ordered; for nested widths ``m_1 < ... < m_M = d_sae`` every prefix of the
dictionary must reconstruct ``x`` on its own, which pushes general features into the early
latents and stops wide dictionaries from splitting them (feature absorption):

    f      = BatchTopK_k(ReLU(W_enc^T (x - b_dec) + b_enc))           (selection over all d_sae)
    x_hat_m = sum_{i < m} f_i W_dec,i + b_dec
    L      = sum_{j=1..M} ||x - x_hat_{m_j}||^2 + alpha * L_auxK

The prefix reconstructions are built from per-segment partial decodes and a cumulative sum,
so all M of them cost one decode. Inference and the threshold are BatchTopK's. SAELens
(``matryoshka_batchtopk``) computes the same sum: its base loss is the full-width term and
each inner width adds one more.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.sae.architectures import batchtopk, common
from jinterp.sae.config import LossContext, SAEConfig

init = batchtopk.init
encode = batchtopk.encode
after_update = batchtopk.after_update


def prefix_reconstructions(cfg: SAEConfig, params: common.Params, f: Float[Array, "batch d_sae"]
                           ) -> Float[Array, "n_prefix batch d_target"]:
    """``x_hat`` using only the first ``m_j`` latents, for every width of the config."""
    bounds = (0,) + cfg.matryoshka_widths
    parts = [f[:, lo:hi] @ params["W_dec"][lo:hi]  # [batch, d_target] per segment
             for lo, hi in zip(bounds[:-1], bounds[1:])]
    prefixes = jnp.cumsum(jnp.stack(parts), axis=0)  # [n_prefix, batch, d_target]
    return prefixes + params["b_dec"][None, None, :]


def loss(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"],
         target: Float[Array, "batch d_target"], ctx: LossContext):
    pre, f = batchtopk.train_latents(cfg, params, x)
    x_hats = prefix_reconstructions(cfg, params, f)
    sq_err = jnp.sum(jnp.square(target[None] - x_hats), axis=-1)  # [n_prefix, batch]
    prefix_mse = jnp.mean(sq_err, axis=-1)  # [n_prefix]
    aux = common.aux_k_loss(cfg, params, pre, target - x_hats[-1], ctx.dead_mask)
    total = jnp.sum(prefix_mse) + cfg.aux_k_coefficient * aux
    return common.finish_metrics(total, prefix_mse[-1], f, aux_k=aux,
                                 prefix_mse_sum=jnp.sum(prefix_mse),
                                 min_active=batchtopk.min_active(f))
