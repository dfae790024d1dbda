"""Pieces shared by every SAE architecture: init, the linear decoder, losses, constraints.

Parameter naming follows SAELens so files round-trip without a key map: ``W_enc [d_in, d_sae]``,
``b_enc [d_sae]``, ``W_dec [d_sae, d_target]``, ``b_dec [d_target]``. All functions here are
pure and shape-polymorphic over the leading token axes only where stated; losses take
flattened ``[batch, d]`` tokens.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.sae import sharding
from jinterp.sae.config import LossContext, SAEConfig
from jinterp.sae.topk import sparse_decode

# Inputs of the public functions may be numpy arrays too (memmapped activations, params that
# were saved, loaded or fetched to the host); results are jax arrays.
ArrayIn = Array | np.ndarray
# SAE parameters by SAELens name.
Params = dict[str, ArrayIn]
Metrics = dict[str, Array]


# ----------------------------------------------------------------------------- shapes
def check_last_dim(name: str, x: ArrayIn, expected: int) -> None:
    """Raise a ValueError naming both shapes when ``x``'s last axis is not ``expected``."""
    if x.ndim == 0 or x.shape[-1] != expected:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but its last axis must be {expected} "
                         f"(shape [..., {expected}]).")


def flatten_tokens(name: str, x: ArrayIn, width: int) -> Float[Array, "batch d"]:
    """Collapse all leading axes into one token axis after checking the width."""
    check_last_dim(name, x, width)
    return jnp.asarray(x).reshape(-1, width)


def lead(v: ArrayIn, ndim: int) -> Array:
    """``v`` with size-1 leading axes up to rank ``ndim``: a bias ``[d]`` against activations
    ``[..., d]``, broadcast explicitly (implicit rank promotion raises under the tests)."""
    return jnp.expand_dims(v, tuple(range(ndim - v.ndim)))


# ----------------------------------------------------------------------------- init
def init_linear(cfg: SAEConfig, key: jax.Array) -> Params:
    """Encoder/decoder init of Anthropic's and Gao's recipes.

    Decoder rows point in random directions with norm ``cfg.decoder_init_norm`` (0.1 for relu
    per the April 2024 update, 1 for unit-norm architectures); ``W_enc = W_dec.T`` so every
    latent starts as a matched pair (Gao et al. report this prevents early dead latents).
    A transcoder cannot tie the two (different widths), so its encoder columns get their own
    random directions of the same norm. Biases start at zero.
    """
    dtype = cfg.param_dtype
    k_dec, k_enc = jax.random.split(key)
    w_dec = _random_rows(k_dec, cfg.d_sae, cfg.d_target) * cfg.decoder_init_norm  # [d_sae, d_t]
    if cfg.is_transcoder:
        w_enc = (_random_rows(k_enc, cfg.d_sae, cfg.d_in) * cfg.decoder_init_norm).T  # [d_in, d]
    else:
        w_enc = w_dec.T
    return {
        "W_enc": w_enc.astype(dtype),
        "b_enc": jnp.zeros((cfg.d_sae,), dtype),
        "W_dec": w_dec.astype(dtype),
        "b_dec": jnp.zeros((cfg.d_target,), dtype),
    }


def _random_rows(key: jax.Array, n: int, d: int) -> Float[Array, "n d"]:
    w = jax.random.normal(key, (n, d), jnp.float32)
    return w / jnp.linalg.norm(w, axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- encoder / decoder
def encoder_input(cfg: SAEConfig, params: Params, x: Float[Array, "... d_in"]) -> Array:
    """``x - b_dec`` for architectures that centre on the decoder bias (Gao's b_pre), else x."""
    return x - lead(params["b_dec"], x.ndim) if cfg.subtract_b_dec else x


def pre_activations(cfg: SAEConfig, params: Params,
                    x: Float[Array, "... d_in"]) -> Float[Array, "... d_sae"]:
    """Encoder pre-activations ``pi(x) = W_enc^T (x [- b_dec]) + b_enc``."""
    h = encoder_input(cfg, params, x) @ params["W_enc"]  # [..., d_sae]
    return h + lead(params["b_enc"], h.ndim)


def linear_decode(params: Params, f: Float[Array, "... d_sae"]) -> Float[Array, "... d_target"]:
    """``x_hat = f W_dec + b_dec``; every architecture shares this decoder."""
    x_hat = f @ params["W_dec"]  # [..., d_target]
    return x_hat + lead(params["b_dec"], x_hat.ndim)


# ----------------------------------------------------------------------------- losses
def sum_sq_error(x_hat: Float[Array, "batch d"],
                 target: Float[Array, "batch d"]) -> Float[Array, ""]:
    """``E_tokens ||target - x_hat||^2`` (summed over dimensions, as SAELens and the papers)."""
    return jnp.mean(jnp.sum(jnp.square(target - x_hat), axis=-1))


def decoder_row_norms(params: Params) -> Float[Array, " d_sae"]:
    return jnp.linalg.norm(params["W_dec"].astype(jnp.float32), axis=-1)


def decoder_block_norms(cfg: SAEConfig, params: Params) -> Float[Array, " d_sae"]:
    """``sum_b ||W_dec[i, block b]||`` per latent: a crosscoder's penalty weight (Lindsey et al.
    2024: an L1 over blocks of the per-block L2 norms, so a latent pays for every layer or
    model it writes to and drops the blocks it does not need); the row norm for an SAE."""
    if not cfg.is_crosscoder:
        return decoder_row_norms(params)
    w = params["W_dec"].astype(jnp.float32).reshape(cfg.d_sae, cfg.n_blocks, cfg.d_block)
    return jnp.sum(jnp.linalg.norm(w, axis=-1), axis=-1)  # [d_sae]


def skip_out(cfg: SAEConfig, params: Params,
             x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_target"] | None:
    """A skip transcoder's linear path ``x W_skip^T`` (SAELens's ``W_skip [d_out, d_in]``), or
    None without one."""
    if not cfg.skip_connection:
        return None
    return jnp.einsum("...i,oi->...o", x, params["W_skip"])  # [..., d_target]


def aux_k_loss(cfg: SAEConfig, params: Params, pre: Float[Array, "batch d_sae"],
               residual: Float[Array, "batch d_target"],
               dead_mask: Bool[Array, " d_sae"] | None) -> Float[Array, ""]:
    """AuxK loss of Gao et al. (2024), Sec. A.2.

    ``L_aux = ||e - e_hat||^2`` with ``e = x - x_hat`` the main residual (stop-gradient: the
    term should train the dead latents to explain what the live ones miss, not move the live
    reconstruction) and ``e_hat = W_dec z`` where ``z`` keeps the ``k_aux`` largest
    (ReLU'd) pre-activations among dead latents. No b_dec in ``e_hat``: ``e`` already has the
    bias removed. Zero when no latent is dead or no mask is given. SAELens additionally scales
    by ``min(n_dead / k_aux, 1)``; we follow the paper and do not.
    """
    if dead_mask is None:
        return jnp.zeros((), jnp.float32)
    k_aux = cfg.aux_k_effective
    masked = jnp.where(dead_mask[None, :], pre, -jnp.inf)  # [batch, d_sae]
    vals, idx = sharding.top_k(masked, k_aux)  # [batch, k_aux]
    vals = jnp.where(jnp.isfinite(vals), jax.nn.relu(vals), 0.0)
    e_hat = sparse_decode(vals, idx, params["W_dec"])  # [batch, d_target]
    loss = sum_sq_error(e_hat, jax.lax.stop_gradient(residual))
    return jnp.where(jnp.any(dead_mask), loss, 0.0)


def dead_pre_act_loss(pre: Float[Array, "batch d_sae"], threshold: Float[Array, " d_sae"] | float,
                      dead_mask: Bool[Array, " d_sae"] | None) -> Float[Array, ""]:
    """``mean_batch sum_{i dead} ReLU(theta_i - pi_i)``: how far dead latents are below firing.

    Anthropic's pre-activation loss (January 2025 circuits update), restricted to dead
    latents as SAELens does. Decoder rows are unit-norm where it is used, so the paper's
    ``||W_dec,i||`` factor is 1. Zero when no mask is given.
    """
    if dead_mask is None:
        return jnp.zeros((), jnp.float32)
    gap = jax.nn.relu(lead(jnp.asarray(threshold), pre.ndim) - pre)  # [batch, d_sae]
    return jnp.mean(jnp.sum(jnp.where(dead_mask[None, :], gap, 0.0), axis=-1))


def fired(f: Float[Array, "batch d_sae"]) -> Bool[Array, " d_sae"]:
    """Whether each latent was active on any token of the batch (for dead-latent tracking)."""
    return jnp.any(f > 0, axis=0)


def l0(f: Float[Array, "batch d_sae"]) -> Float[Array, ""]:
    return jnp.mean(jnp.sum(f > 0, axis=-1).astype(jnp.float32))


def context(ctx: LossContext | None) -> LossContext:
    return LossContext() if ctx is None else ctx


def resolve_target(cfg: SAEConfig, x: ArrayIn, target: ArrayIn | None) -> Array:
    """Flattened reconstruction target: x for an SAE, the given target for a transcoder."""
    if target is None:
        if cfg.is_transcoder:
            raise ValueError(f"A transcoder (d_out={cfg.d_out}) needs target=[..., {cfg.d_out}] "
                             "activations to reconstruct; pass loss(..., target=...).")
        target = x
    flat = flatten_tokens("target", target, cfg.d_target)
    if flat.shape[0] * cfg.d_in != x.size:
        raise ValueError(f"x {tuple(x.shape)} and target {tuple(target.shape)} must have the same "
                         "leading (token) axes.")
    return flat


def finish_metrics(loss: Array, mse: Array, f: Array, **terms: Any) -> tuple[Array, Metrics]:
    """Assemble the flat metrics dict every architecture returns (all entries arrays)."""
    metrics = {"loss": loss, "mse": mse, "l0": l0(f), "fired": fired(f)}
    metrics.update({name: jnp.asarray(value) for name, value in terms.items()})
    return loss, metrics


# ----------------------------------------------------------------------------- constraints
def remove_parallel_component(w_dec: Float[Array | np.ndarray, "d_sae d"],
                              g: Float[Array | np.ndarray, "d_sae d"]) -> Float[Array, "d_sae d"]:
    """Project each decoder-row gradient onto the tangent space of the unit sphere.

    With unit-norm rows the component of the gradient along the row only changes the norm,
    which the renormalisation after the update undoes; removing it (Gao et al.; Bricken et
    al. 2023) keeps Adam's moment estimates from being polluted by it.
    """
    unit = w_dec / jnp.maximum(jnp.linalg.norm(w_dec, axis=-1, keepdims=True), 1e-12)
    parallel = jnp.sum(g * unit, axis=-1, keepdims=True)  # [d_sae, 1]
    return g - parallel * unit


def normalize_rows(w: Float[Array | np.ndarray, "d_sae d"]) -> Float[Array, "d_sae d"]:
    return w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-12)


def unit_norm_after_grad(cfg: SAEConfig, params: Params, grads: Params) -> Params:
    if not cfg.unit_norm_decoder:
        return grads
    return {**grads, "W_dec": remove_parallel_component(params["W_dec"], grads["W_dec"])}


def unit_norm_after_update(cfg: SAEConfig, params: Params) -> Params:
    if not cfg.unit_norm_decoder:
        return params
    return {**params, "W_dec": normalize_rows(params["W_dec"]).astype(params["W_dec"].dtype)}


def scatter_dense(values: Float[Array, "batch k"], indices: Int[Array, "batch k"],
                  d_sae: int) -> Float[Array, "batch d_sae"]:
    """Dense latents from (values, indices) of a top-k selection."""
    rows = jnp.arange(values.shape[0])[:, None]
    return jnp.zeros((values.shape[0], d_sae), values.dtype).at[rows, indices].set(values)
