"""Switch SAE (Mudide, Engels, Michaud, Tegmark, Schroeder de Witt 2024, "Efficient Dictionary
Learning with Switch Sparse Autoencoders").

A router sends each token to one of ``N`` expert SAEs, each a TopK SAE over its own block of
``d_sae / N`` latents; experts share the decoder bias (the paper's ``b_pre``):

    p(x)   = softmax(W_router^T (x - b_dec) + b_router)              [N]
    i*     = argmax_i p_i(x)
    z      = TopK_k(W_enc,i*^T (x - b_dec) + b_enc,i*)              (ReLU on the kept values)
    x_hat  = p_i*(x) * W_dec,i*^T z + b_dec
    L      = ||x - x_hat||^2 + alpha * N * sum_i f_i P_i

with ``f_i`` the fraction of the batch routed to expert ``i`` and ``P_i`` the mean router
probability of ``i`` (the Switch-Transformer load-balancing loss; alpha = 3 in the paper
[from memory]). Multiplying by ``p_i*`` is what trains the router through the
reconstruction.

Layout (our choice, documented here and in `jinterp.sae.io`): expert ``e`` owns the
contiguous latents ``[e*m, (e+1)*m)`` of the usual ``W_enc [d_in, d_sae]``, ``b_enc``,
``W_dec [d_sae, d_target]``, so the whole SAE is an ordinary dictionary; the router is
``W_router [d_in, N]`` and ``b_router [N]``. The paper writes ``W_router (x - b_router)``
with ``b_router`` in input space; an output-space bias spans the same functions.
The latent code ``f`` returned by `encode` already includes the factor ``p_i*(x)``, so
`decode` is the shared linear decoder.

Cost: by default (``switch_capacity_factor=None``) the encoder pre-activations of all experts
are computed and the routed block picked (one dense encoder matmul, like a TopK SAE of width
d_sae): exact, but without the Switch SAE's FLOP savings. With a capacity factor ``c`` the
training loss dispatches tokens instead (as in Switch Transformers): each expert takes at most
``C = ceil(c * batch / N)`` tokens, gathered into an ``[N, C, d_in]`` block and encoded with
its own ``[d_in, d_sae / N]`` slice, so the encoder costs ``c / N`` of the dense one. Tokens
beyond an expert's capacity are dropped (zero latents, ``x_hat = b_dec``) for that step;
``metrics['dropped_fraction']`` reports how many. `encode` (inference) is always exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jinterp.sae import topk as fast
from jinterp.sae.architectures import common
from jinterp.sae.config import LossContext, SAEConfig


def init(cfg: SAEConfig, key: jax.Array) -> common.Params:
    k_lin, k_router = jax.random.split(key)
    w_router = jax.random.normal(k_router, (cfg.d_in, cfg.n_experts), jnp.float32)
    w_router = w_router / jnp.sqrt(cfg.d_in)  # [d_in, n_experts]
    return {**common.init_linear(cfg, k_lin), "W_router": w_router.astype(cfg.param_dtype),
            "b_router": jnp.zeros((cfg.n_experts,), cfg.param_dtype)}


def route(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"]
          ) -> tuple[Float[Array, "batch n_experts"], Int[Array, " batch"]]:
    """Router probabilities and the chosen (argmax) expert of each token."""
    logits = common.encoder_input(cfg, params, x) @ params["W_router"]  # [batch, n_experts]
    logits = logits + params["b_router"][None, :]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # [batch, n_experts]
    return probs, jnp.argmax(probs, axis=-1)


def expert_topk(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"]):
    """Top-k of the routed expert: ``(values, global indices, probs, expert)``; values are
    ReLU'd and scaled by the routed probability."""
    probs, expert = route(cfg, params, x)
    pre = common.pre_activations(cfg, params, x)  # [batch, d_sae]
    blocks = pre.reshape(pre.shape[0], cfg.n_experts, cfg.expert_size)  # [batch, n_experts, m]
    mine = jnp.take_along_axis(blocks, expert[:, None, None], axis=1)[:, 0]  # [batch, m]
    values, local = jax.lax.top_k(mine, cfg.k)  # [batch, k]
    p_star = jnp.take_along_axis(probs, expert[:, None], axis=1)  # [batch, 1]
    values = jax.nn.relu(values) * p_star.astype(values.dtype)
    return values, local + expert[:, None] * cfg.expert_size, probs, expert


def dispatch_topk(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"]):
    """Like `expert_topk`, but each expert only encodes the tokens routed to it (up to its
    capacity); returns ``(values, global indices, probs, expert, kept)``."""
    probs, expert = route(cfg, params, x)
    n, n_exp, m = x.shape[0], cfg.n_experts, cfg.expert_size
    cap = min(n, -(-int(cfg.switch_capacity_factor * n) // n_exp))  # ceil(c * batch / N)
    onehot = jax.nn.one_hot(expert, n_exp, dtype=jnp.int32)  # [batch, n_experts]
    position = jnp.take_along_axis(jnp.cumsum(onehot, axis=0) - 1, expert[:, None], 1)[:, 0]
    kept = position < cap  # [batch]
    slot = jnp.where(kept, expert * cap + position, n_exp * cap)  # overflow -> dropped
    token_of_slot = jnp.full((n_exp * cap,), n, jnp.int32).at[slot].set(
        jnp.arange(n, dtype=jnp.int32), mode="drop")  # empty slots point at a zero row
    x_in = common.encoder_input(cfg, params, x)
    padded = jnp.concatenate([x_in, jnp.zeros((1, cfg.d_in), x_in.dtype)])  # [batch + 1, d_in]
    blocks = padded[token_of_slot].reshape(n_exp, cap, cfg.d_in)  # [n_experts, C, d_in]
    w_exp = params["W_enc"].reshape(cfg.d_in, n_exp, m)  # [d_in, n_experts, m]
    pre = jnp.einsum("ecd,dem->ecm", blocks, w_exp) + params["b_enc"].reshape(n_exp, 1, m)
    values, local = jax.lax.top_k(pre.reshape(n_exp * cap, m), cfg.k)  # [N * C, k]
    safe_slot = jnp.minimum(slot, n_exp * cap - 1)
    p_star = jnp.take_along_axis(probs, expert[:, None], axis=1)  # [batch, 1]
    values = jnp.where(kept[:, None], jax.nn.relu(values[safe_slot]), 0.0) * p_star.astype(x.dtype)
    return values, local[safe_slot] + expert[:, None] * m, probs, expert, kept


def encode(cfg: SAEConfig, params: common.Params,
           x: Float[Array, "batch d_in"]) -> Float[Array, "batch d_sae"]:
    values, indices, _, _ = expert_topk(cfg, params, x)
    return common.scatter_dense(values, indices, cfg.d_sae)


def load_balance(probs: Float[Array, "batch n_experts"], expert: Int[Array, " batch"]) -> Array:
    """``N * sum_i f_i P_i``: 1 for a perfectly balanced router, up to N when collapsed."""
    n = probs.shape[-1]
    frac_routed = jnp.mean(jax.nn.one_hot(expert, n, dtype=probs.dtype), axis=0)  # [n_experts]
    return n * jnp.sum(frac_routed * jnp.mean(probs, axis=0))


def loss(cfg: SAEConfig, params: common.Params, x: Float[Array, "batch d_in"],
         target: Float[Array, "batch d_target"], ctx: LossContext):
    if cfg.switch_capacity_factor is None:
        values, indices, probs, expert = expert_topk(cfg, params, x)
        kept = jnp.ones(expert.shape, bool)
    else:
        values, indices, probs, expert, kept = dispatch_topk(cfg, params, x)
    x_hat = fast.sparse_decode(values, indices, params["W_dec"]) + params["b_dec"][None, :]
    mse = common.sum_sq_error(x_hat, target)
    balance = load_balance(probs, expert)
    total = mse + cfg.switch_load_balance_coefficient * balance
    fired = jnp.zeros((cfg.d_sae,), bool).at[indices.reshape(-1)].max(values.reshape(-1) > 0)
    return total, {"loss": total, "mse": mse, "load_balance": balance,
                   "l0": jnp.mean(jnp.sum(values > 0, axis=-1).astype(jnp.float32)),
                   "fired": fired,
                   "dropped_fraction": jnp.mean((~kept).astype(jnp.float32)),
                   "expert_fraction_max": jnp.max(jnp.bincount(expert, length=cfg.n_experts))
                   / expert.shape[0]}
