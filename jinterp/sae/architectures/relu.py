"""ReLU SAE with a decoder-norm-weighted L1 penalty (Anthropic, "Circuits Updates — April 2024").

    f(x)  = ReLU(W_enc^T x + b_enc)
    x_hat = W_dec^T f(x) + b_dec
    L     = E_x[ ||x - x_hat||_2^2 + lambda * s_t * sum_i f_i(x) ||W_dec,i||_2 ]

The decoder is *not* norm-constrained: putting ``||W_dec,i||`` inside the penalty removes the
incentive to shrink ``f`` by growing decoder rows, which the old unit-norm constraint did by
force. ``s_t`` is `LossContext.penalty_scale` (Anthropic warms lambda up linearly from 0 over
the first 5% of steps). Decoder rows start in random directions with norm 0.1 and
``W_enc = W_dec^T``. Anthropic's encoder sees ``x`` itself (no ``b_dec`` subtraction), which is
our default for this architecture; SAELens' standard SAE subtracts ``b_dec`` by default
(``apply_b_dec_to_input``), settable through the config.

With ``n_blocks > 1`` this is Anthropic's acausal crosscoder (Lindsey et al. 2024): ``x`` is the
concatenation of the blocks' activations (so the summed per-block encoders are one matmul),
each block has its own decoder columns, and ``||W_dec,i||`` becomes ``sum_b ||W_dec,i^b||``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.sae.architectures import common
from jinterp.sae.config import LossContext, SAEConfig

init = common.init_linear


def encode(cfg: SAEConfig, params: common.Params,
           x: Float[Array, "batch d_in"]) -> Float[Array, "batch d_sae"]:
    return jax.nn.relu(common.pre_activations(cfg, params, x))


def loss(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"],
         target: Float[Array, "batch d_target"], ctx: LossContext):
    f = encode(cfg, params, x)  # [batch, d_sae]
    x_hat = common.linear_decode(params, f)  # [batch, d_target]
    mse = common.sum_sq_error(x_hat, target)
    l1 = jnp.mean(f @ common.decoder_block_norms(cfg, params))  # E_x sum_i f_i ||W_dec,i||
    total = mse + ctx.penalty_scale * cfg.l1_coefficient * l1
    return common.finish_metrics(total, mse, f, l1=l1)
