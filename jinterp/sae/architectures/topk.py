"""TopK SAE with the AuxK dead-latent loss (Gao et al. 2024, "Scaling and evaluating SAEs").

    z     = TopK_k(W_enc^T (x - b_pre) + b_enc)            (then ReLU on the kept values)
    x_hat = W_dec^T z + b_pre                                (b_pre is our b_dec)
    L     = ||x - x_hat||^2 + alpha * ||e - e_hat||^2,  e = x - x_hat,  e_hat = W_dec^T z_aux

where ``z_aux`` keeps the ``k_aux`` largest pre-activations among dead latents (alpha = 1/32,
k_aux = 512). Decoder rows are kept unit-norm: `after_grad` removes the gradient component
parallel to each row, `after_update` renormalises. The training path uses `jinterp.sae.topk`:
the k (and k_aux) selected latents are the only ones the backward pass touches, so a step
costs about one dense encoder matmul.

SAELens differences: its AuxK target is computed with b_dec added to ``e_hat``, it scales the
term by ``min(n_dead / k_aux, 1)`` and defaults the coefficient to 1; we follow the paper.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.sae import sharding
from jinterp.sae import topk as fast
from jinterp.sae.architectures import common
from jinterp.sae.config import LossContext, SAEConfig

init = common.init_linear


def encode(cfg: SAEConfig, params: common.Params,
           x: Float[Array, "batch d_in"]) -> Float[Array, "batch d_sae"]:
    values, indices = sharding.top_k(common.pre_activations(cfg, params, x), cfg.k)  # [batch, k]
    return common.scatter_dense(jax.nn.relu(values), indices, cfg.d_sae)


def loss(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"],
         target: Float[Array, "batch d_target"], ctx: LossContext):
    x_in = common.encoder_input(cfg, params, x)  # [batch, d_in]
    k_aux = cfg.aux_k_effective if ctx.dead_mask is not None else 0
    values, indices = fast.topk_encode(x_in, params["W_enc"], params["b_enc"], cfg.k,
                                       ctx.dead_mask, k_aux)  # [batch, k + k_aux]
    values = jax.nn.relu(values)
    top_v, top_i = values[:, :cfg.k], indices[:, :cfg.k]  # [batch, k]
    x_hat = fast.sparse_decode(top_v, top_i, params["W_dec"]) + params["b_dec"][None, :]
    mse = common.sum_sq_error(x_hat, target)
    aux = _aux_from_selection(values[:, cfg.k:], indices[:, cfg.k:], params, target - x_hat,
                              ctx.dead_mask)
    total = mse + cfg.aux_k_coefficient * aux
    f_fired = jnp.zeros((cfg.d_sae,), bool).at[top_i.reshape(-1)].max(top_v.reshape(-1) > 0)
    return total, {"loss": total, "mse": mse, "aux_k": aux,
                   "l0": jnp.mean(jnp.sum(top_v > 0, axis=-1).astype(jnp.float32)),
                   "fired": f_fired}


def _aux_from_selection(aux_v, aux_i, params, residual, dead_mask):
    """AuxK term from the already-selected dead latents (see module docstring)."""
    if dead_mask is None:
        return jnp.zeros((), jnp.float32)
    e_hat = fast.sparse_decode(aux_v, aux_i, params["W_dec"])  # [batch, d_target]
    aux = common.sum_sq_error(e_hat, jax.lax.stop_gradient(residual))
    return jnp.where(jnp.any(dead_mask), aux, 0.0)
