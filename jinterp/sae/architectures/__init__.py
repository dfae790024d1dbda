"""Registry of SAE architectures and the public, architecture-agnostic API.

Every architecture is a module with ``init(cfg, key)``, ``encode(cfg, params, x)`` over a
flat ``[batch, d_in]`` token matrix and ``loss(cfg, params, x, target, ctx)``; optional
``after_update(cfg, params, metrics)``. The functions below check shapes, flatten leading
token axes, and dispatch on ``cfg.architecture`` (a static value, so under ``jit`` the
dispatch happens once at trace time). All of them are pure: ``cfg`` is a static argument,
``params`` a plain dict pytree.
"""

from __future__ import annotations

from types import ModuleType

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.sae.architectures import (
    batchtopk,
    common,
    gated,
    jumprelu,
    matryoshka,
    relu,
    switch,
    topk,
)
from jinterp.sae.config import Architecture, LossContext, SAEConfig

Params = common.Params
ArrayIn = common.ArrayIn
Metrics = common.Metrics

REGISTRY: dict[Architecture, ModuleType] = {
    Architecture.RELU: relu,
    Architecture.TOPK: topk,
    Architecture.BATCHTOPK: batchtopk,
    Architecture.JUMPRELU: jumprelu,
    Architecture.GATED: gated,
    Architecture.MATRYOSHKA: matryoshka,
    Architecture.SWITCH: switch,
}


def _module(cfg: SAEConfig) -> ModuleType:
    return REGISTRY[cfg.architecture]


def init(cfg: SAEConfig, key: jax.Array) -> Params:
    """Fresh parameters (a dict with SAELens names) for ``cfg``; a skip transcoder's
    ``W_skip [d_out, d_in]`` starts at zero, as SAELens's."""
    params = _module(cfg).init(cfg, key)
    if cfg.skip_connection:
        params["W_skip"] = jnp.zeros((cfg.d_target, cfg.d_in), cfg.param_dtype)
    return params


def param_shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
    """Expected name -> shape of every parameter, computed without allocating."""
    shapes = jax.eval_shape(lambda: init(cfg, jax.random.key(0)))
    return {name: tuple(s.shape) for name, s in shapes.items()}


def check_params(cfg: SAEConfig, params: Params) -> None:
    """Raise a ValueError naming missing / unexpected / mis-shaped tensors."""
    expected = param_shapes(cfg)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(f"{cfg.architecture.value} SAE params: missing {missing}, unexpected "
                         f"{extra}; expected exactly {sorted(expected)}.")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"param {name!r} has shape {tuple(params[name].shape)}, expected "
                             f"{shape} for {cfg}.")


def encode(cfg: SAEConfig, params: Params,
           x: Float[ArrayIn, "... d_in"]) -> Float[Array, "... d_sae"]:
    """Latents with inference semantics (BatchTopK family: global threshold; Switch: argmax
    expert, latents scaled by the router probability)."""
    flat = common.flatten_tokens("x", x, cfg.d_in)
    return _module(cfg).encode(cfg, params, flat).reshape(*x.shape[:-1], cfg.d_sae)


def decode(cfg: SAEConfig, params: Params,
           f: Float[ArrayIn, "... d_sae"]) -> Float[Array, "... d_target"]:
    """``x_hat = f W_dec + b_dec`` (shared by every architecture)."""
    common.check_last_dim("f", f, cfg.d_sae)
    return common.linear_decode(params, jnp.asarray(f))


def forward(cfg: SAEConfig, params: Params, x: Float[ArrayIn, "... d_in"]):
    """``(x_hat, f)`` with inference semantics (plus the skip path of a skip transcoder)."""
    f = encode(cfg, params, x)
    return reconstruct(cfg, params, x, f), f


def reconstruct(cfg: SAEConfig, params: Params, x: Float[ArrayIn, "... d_in"],
                f: Float[ArrayIn, "... d_sae"]) -> Float[Array, "... d_target"]:
    """The output for latents ``f`` of input ``x``: ``decode(f)``, plus ``x W_skip^T`` for a
    skip transcoder (the one case whose output depends on ``x`` beyond ``f``)."""
    x_hat = decode(cfg, params, f)
    skip = common.skip_out(cfg, params, jnp.asarray(x))
    return x_hat if skip is None else x_hat + skip.astype(x_hat.dtype)


def loss(cfg: SAEConfig, params: Params, x: Float[ArrayIn, "... d_in"], *,
         target: Float[ArrayIn, "... d_target"] | None = None,
         ctx: LossContext | None = None) -> tuple[Array, Metrics]:
    """Training loss and a flat dict of scalar metrics plus ``fired`` (bool ``[d_sae]``).

    ``target`` defaults to ``x`` (an SAE) and is required for a transcoder. All leading axes
    of ``x`` are tokens; BatchTopK selects over all of them together. A skip transcoder's
    architecture reconstructs ``target - x W_skip^T``: the same squared error as ``target -
    (x_hat + x W_skip^T)``, and the gradient reaches ``W_skip`` through that target.
    """
    flat_x = common.flatten_tokens("x", x, cfg.d_in)
    flat_t = common.resolve_target(cfg, x, target)
    skip = common.skip_out(cfg, params, flat_x)
    if skip is not None:
        flat_t = flat_t - skip
    return _module(cfg).loss(cfg, params, flat_x, flat_t, common.context(ctx))


def after_grad(cfg: SAEConfig, params: Params, grads: Params) -> Params:
    """Gradient surgery before the optimizer: unit-norm architectures drop the component of
    each decoder-row gradient parallel to the row; identity for relu."""
    return common.unit_norm_after_grad(cfg, params, grads)


def after_update(cfg: SAEConfig, params: Params, metrics: Metrics) -> Params:
    """Projection after the optimizer: renormalise decoder rows (unit-norm architectures) and
    update the BatchTopK / Matryoshka inference threshold from ``metrics['min_active']``."""
    module = _module(cfg)
    if hasattr(module, "after_update"):
        return module.after_update(cfg, params, metrics)
    return common.unit_norm_after_update(cfg, params)
