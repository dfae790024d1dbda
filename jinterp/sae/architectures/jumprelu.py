"""JumpReLU SAE (Rajamanoharan et al. 2024b, "Jumping Ahead"; the Gemma Scope recipe).

    pi(x) = W_enc^T x + b_enc,   theta = exp(log_threshold) > 0        (per latent)
    f(x)  = JumpReLU_theta(pi) = pi * H(pi - theta)
    L     = ||x - x_hat||^2 + lambda * s_t * ||f(x)||_0,   ||f||_0 = sum_i H(pi_i - theta_i)
            [+ lambda_P * sum_{i dead} ReLU(theta_i - pi_i)]   (optional, off by default)
With ``jumprelu_tanh_scale = c`` the L0 term becomes Anthropic's smooth version (January 2025),
``lambda * s_t * sum_i tanh(c * f_i * ||W_dec,i||)``; decoder rows are unit-norm, so the norm
factor is 1. Its gradient reaches theta through the JumpReLU STE and pi through active f_i.

With ``jumprelu_target_l0 = T`` the L0 term becomes Gemma Scope 2's quadratic
``lambda * s_t * (2 / T) (||f||_0 - T)^2`` (per token, then averaged), which pulls thresholds
down when a token has fewer than T active latents.

H has zero derivative almost everywhere, so theta is trained with straight-through
pseudo-derivatives built from a kernel K of bandwidth eps (rectangle K(u) = 1[|u| < 1/2]):

    d JumpReLU / d theta = -(theta / eps) K((pi - theta) / eps)
    d H(pi - theta) / d theta = -(1 / eps) K((pi - theta) / eps)
    d JumpReLU / d pi = H(pi - theta),    d H / d pi = 0 (no STE to pi through the step)

With ``jumprelu_ste_to_input`` (Anthropic's variant) pi also gets the straight-through term:
both functions depend on pi only through ``pi - theta``, so their pseudo-derivative in pi is
minus the one in theta (``d JumpReLU / d pi = H(pi - theta) + (theta / eps) K(...)``,
``d H / d pi = (1 / eps) K(...)``). DeepMind's version trains the encoder from the
reconstruction of active latents only; this one also tells a latent just below its
threshold whether firing would pay.

``theta`` is stored as ``log_threshold`` (keeps it positive; the chain rule through exp is
automatic); `jinterp.sae.io` converts to SAELens' / Gemma Scope's ``threshold``. Decoder rows
are unit-norm (`after_grad` / `after_update`). The paper's defaults: eps = theta_0 = 0.001
with activations scaled to unit mean squared norm; lambda warmed up over the first 10k steps.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.sae.architectures import common
from jinterp.sae.config import LossContext, SAEConfig


def init(cfg: SAEConfig, key: jax.Array) -> common.Params:
    log_t = jnp.full((cfg.d_sae,), jnp.log(cfg.jumprelu_init_threshold), cfg.param_dtype)
    return {**common.init_linear(cfg, key), "log_threshold": log_t}


def rectangle(u: Array) -> Array:
    """The rectangle kernel ``K(u) = 1[|u| < 1/2]``."""
    return (jnp.abs(u) < 0.5).astype(u.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def jumprelu(pre: Array, threshold: Array, bandwidth: float, ste_to_input: bool = False) -> Array:
    """``pre * H(pre - threshold)`` with the STE pseudo-derivative for ``threshold`` (and for
    ``pre`` too when ``ste_to_input``)."""
    return pre * (pre > common.lead(threshold, pre.ndim))


def _jumprelu_fwd(pre, threshold, bandwidth, ste_to_input):
    return jumprelu(pre, threshold, bandwidth, ste_to_input), (pre, threshold)


def _jumprelu_bwd(bandwidth, ste_to_input, res, g):
    pre, threshold = res
    t = common.lead(threshold, pre.ndim)
    ste = (t / bandwidth) * rectangle((pre - t) / bandwidth) * g
    d_pre = g * (pre > t) + (ste if ste_to_input else 0.0)
    return d_pre, _sum_to_shape(-ste, threshold.shape)


jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def step(pre: Array, threshold: Array, bandwidth: float, ste_to_input: bool = False) -> Array:
    """Heaviside ``H(pre - threshold)`` with the STE pseudo-derivative for ``threshold`` (and
    for ``pre`` too when ``ste_to_input``)."""
    return (pre > common.lead(threshold, pre.ndim)).astype(pre.dtype)


def _step_fwd(pre, threshold, bandwidth, ste_to_input):
    return step(pre, threshold, bandwidth, ste_to_input), (pre, threshold)


def _step_bwd(bandwidth, ste_to_input, res, g):
    pre, threshold = res
    ste = (1.0 / bandwidth) * rectangle((pre - common.lead(threshold, pre.ndim)) / bandwidth) * g
    d_pre = ste if ste_to_input else jnp.zeros_like(pre)
    return d_pre, _sum_to_shape(-ste, threshold.shape)


step.defvjp(_step_fwd, _step_bwd)


def _sum_to_shape(g: Array, shape: tuple[int, ...]) -> Array:
    """Undo broadcasting of a per-latent parameter over the token axes."""
    return jnp.sum(g, axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g


def threshold(params: common.Params) -> Float[Array, " d_sae"]:
    return jnp.exp(params["log_threshold"])


def encode(cfg: SAEConfig, params: common.Params,
           x: Float[Array, "batch d_in"]) -> Float[Array, "batch d_sae"]:
    pre = common.pre_activations(cfg, params, x)
    return jnp.where(pre > threshold(params)[None, :], pre, 0.0)


def loss(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"],
         target: Float[Array, "batch d_target"], ctx: LossContext):
    pre = common.pre_activations(cfg, params, x)  # [batch, d_sae]
    theta = threshold(params)
    eps, to_input = cfg.jumprelu_bandwidth, cfg.jumprelu_ste_to_input
    f = jumprelu(pre, theta, eps, to_input)
    x_hat = common.linear_decode(params, f)  # [batch, d_target]
    mse = common.sum_sq_error(x_hat, target)
    if cfg.jumprelu_tanh_scale is not None:
        l0_penalty = jnp.mean(jnp.sum(jnp.tanh(cfg.jumprelu_tanh_scale * f), axis=-1))
    else:
        l0_per_token = jnp.sum(step(pre, theta, eps, to_input), axis=-1)  # [batch]
        if cfg.jumprelu_target_l0 is not None:
            target_l0 = cfg.jumprelu_target_l0
            l0_per_token = (2.0 / target_l0) * jnp.square(l0_per_token - target_l0)
        l0_penalty = jnp.mean(l0_per_token)
    total = mse + ctx.penalty_scale * cfg.l0_coefficient * l0_penalty
    terms = {"l0_penalty": l0_penalty}
    if cfg.pre_act_loss_coefficient:
        terms["pre_act_loss"] = common.dead_pre_act_loss(pre, theta, ctx.dead_mask)
        total = total + cfg.pre_act_loss_coefficient * terms["pre_act_loss"]
    return common.finish_metrics(total, mse, f, **terms)
