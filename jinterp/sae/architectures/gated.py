"""Gated SAE (Rajamanoharan et al. 2024a, "Improving Dictionary Learning with Gated SAEs").

The gate decides *which* latents fire, a magnitude path *how much*; they share ``W_enc`` up
to a per-latent rescaling ``exp(r_mag)``:

    pi_gate = W_enc^T (x - b_dec) + b_gate
    pi_mag  = exp(r_mag) * (W_enc^T (x - b_dec)) + b_mag
    f       = 1[pi_gate > 0] * ReLU(pi_mag)
    L = ||x - x_hat(f)||^2 + lambda * s_t * ||ReLU(pi_gate)||_1
        + ||x - x_hat_frozen(ReLU(pi_gate))||^2
        [+ lambda_P * sum_{i dead} ReLU(-pi_gate_i)]   (optional, off by default)

``x_hat_frozen`` decodes with stop-gradient copies of ``W_dec`` and ``b_dec``: the auxiliary
term exists only to give the gate path a reconstruction signal (H has no gradient) and must
not pull the decoder toward reconstructing from gate activations. **SAELens differs**: its
``aux_reconstruction_loss`` does not detach the decoder, and it multiplies the L1 term by the
decoder-row norms; we follow the paper (unit-norm decoder rows instead, via `after_grad` /
`after_update`). Params follow SAELens' gated naming: ``W_enc, b_gate, r_mag, b_mag, W_dec,
b_dec`` (no ``b_enc``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.sae.architectures import common
from jinterp.sae.config import LossContext, SAEConfig


def init(cfg: SAEConfig, key: jax.Array) -> common.Params:
    base = common.init_linear(cfg, key)
    zeros = jnp.zeros((cfg.d_sae,), cfg.param_dtype)
    return {"W_enc": base["W_enc"], "b_gate": zeros, "r_mag": zeros, "b_mag": zeros,
            "W_dec": base["W_dec"], "b_dec": base["b_dec"]}


def gate_and_magnitude(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"]):
    """The two pre-activations ``(pi_gate, pi_mag)``, each ``[batch, d_sae]``."""
    h = common.encoder_input(cfg, params, x) @ params["W_enc"]  # [batch, d_sae]
    return (h + params["b_gate"][None, :],
            h * jnp.exp(params["r_mag"])[None, :] + params["b_mag"][None, :])


def encode(cfg: SAEConfig, params: common.Params,
           x: Float[Array, "batch d_in"]) -> Float[Array, "batch d_sae"]:
    pi_gate, pi_mag = gate_and_magnitude(cfg, params, x)
    return jnp.where(pi_gate > 0, jax.nn.relu(pi_mag), 0.0)


def loss(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"],
         target: Float[Array, "batch d_target"], ctx: LossContext):
    pi_gate, pi_mag = gate_and_magnitude(cfg, params, x)
    f = jnp.where(pi_gate > 0, jax.nn.relu(pi_mag), 0.0)  # [batch, d_sae]
    x_hat = common.linear_decode(params, f)
    mse = common.sum_sq_error(x_hat, target)
    gate_acts = jax.nn.relu(pi_gate)
    l1 = jnp.mean(jnp.sum(gate_acts, axis=-1))
    frozen = jax.lax.stop_gradient({"W_dec": params["W_dec"], "b_dec": params["b_dec"]})
    aux = common.sum_sq_error(common.linear_decode(frozen, gate_acts), target)
    total = mse + ctx.penalty_scale * cfg.l1_coefficient * l1 + aux
    terms = {"l1": l1, "aux": aux}
    if cfg.pre_act_loss_coefficient:
        terms["pre_act_loss"] = common.dead_pre_act_loss(pi_gate, 0.0, ctx.dead_mask)
        total = total + cfg.pre_act_loss_coefficient * terms["pre_act_loss"]
    return common.finish_metrics(total, mse, f, **terms)
