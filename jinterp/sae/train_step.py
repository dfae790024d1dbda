"""The jitted single-step SAE training API: :func:`train_state` and :func:`make_train_step`.

Everything that changes during training lives in one pytree, :class:`TrainState`: the SAE
parameters, Adam's moments, the step counter, a PRNG key, the steps since each latent last
fired, the input normalisation scale and the per-instance hyper-parameters (:class:`HParams`).
A step is a pure function ``(state, batch) -> (state, metrics)``, so

* checkpoint resume is exact (save the pytree, restore it, continue),
* a sweep of SAEs is ``vmap`` over a leading instance axis of the state
  (:mod:`jinterp.sae.sweep`), and
* a sharded run is the same function with sharding constraints (:mod:`jinterp.sae.sharding`).

One step: scale the batch by ``norm_scale`` -> ``loss`` with the penalty warm-up and dead
mask in a :class:`~jinterp.sae.config.LossContext` -> gradient -> ``after_grad`` (drop the
decoder-gradient component parallel to unit-norm rows) -> Adam -> learning-rate schedule ->
``after_update`` (renormalise decoder rows, BatchTopK threshold) -> dead-latent counters.

Axis names: ``batch``, ``d_in``, ``d_sae``, ``d_target``; ``n_steps`` for a scanned chunk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, UInt32

from jinterp.sae import sharding as sharding_lib
from jinterp.sae.architectures import Params, after_grad, after_update, init, loss
from jinterp.sae.config import LossContext, SAEConfig, pytree_dataclass
from jinterp.sae.schedule import (
    DEFAULT_TRAIN,
    TrainConfig,
    dead_window_steps,
    lr_factor,
    penalty_factor,
)

Batch = (Float[Array, "batch d_in"]
         | tuple[Float[Array, "batch d_in"], Float[Array, "batch d_target"]])
#: ``n_steps`` batches stacked for a scanned chunk of steps.
Batches = (Float[Array, "n_steps batch d_in"]
           | tuple[Float[Array, "n_steps batch d_in"], Float[Array, "n_steps batch d_target"]])
Metrics = dict[str, Array]


@pytree_dataclass
class HParams:
    """Hyper-parameters that may differ between instances of one compiled sweep.

    Attributes:
        lr: base learning rate (multiplied by the schedule factor each step).
        penalty_multiplier: multiplies the sparsity penalty on top of the warm-up. A sweep over
            L1 / L0 coefficients trains every instance with the same static config and a
            different multiplier (the penalty is linear in its coefficient).
    """

    lr: Float[Array, ""]
    penalty_multiplier: Float[Array, ""]


@pytree_dataclass
class TrainState:
    """Everything that changes during SAE training; a pytree (checkpoint it whole).

    Attributes:
        step: number of updates done so far.
        params: SAE parameters (``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``, extras).
        opt_state: optax state (Adam moments, clipping state).
        key: PRNG key (raw uint32[2]) for any randomness a step may need.
        steps_since_fired: per latent, consecutive steps without a non-zero activation.
        norm_scale: the batch is multiplied by this before the loss (E||s x||^2 = d_in).
        target_norm_scale: the same for a transcoder's target (equals norm_scale for an SAE).
        hparams: per-instance learning rate and penalty multiplier.
    """

    step: Int[Array, ""]
    params: dict[str, Array]
    opt_state: Any
    key: UInt32[Array, "2"]
    steps_since_fired: Int[Array, " d_sae"]
    norm_scale: Float[Array, ""]
    target_norm_scale: Float[Array, ""]
    hparams: HParams


def make_optimizer(tcfg: TrainConfig) -> optax.GradientTransformation:
    """Adam without its learning rate (applied per instance from ``HParams.lr``), after
    optional global-norm clipping. Equal to ``optax.adam(lr)`` when clipping is off."""
    adam = optax.scale_by_adam(b1=tcfg.adam_b1, b2=tcfg.adam_b2, eps=tcfg.adam_eps)
    if tcfg.grad_clip_norm is None:
        return adam
    return optax.chain(optax.clip_by_global_norm(tcfg.grad_clip_norm), adam)


def train_state(cfg: SAEConfig, key: Array | int, *, lr: float, tcfg: TrainConfig = DEFAULT_TRAIN,
                penalty_multiplier: float = 1.0, norm_scale: float = 1.0,
                target_norm_scale: float | None = None,
                params: Params | None = None) -> TrainState:
    """A fresh training state: initialised SAE, zero Adam moments, step 0.

    Args:
        cfg: the SAE to train.
        key: PRNG key or integer seed; split into the init key and the state's key.
        lr: base learning rate.
        tcfg: training options (the optimizer state depends on gradient clipping).
        penalty_multiplier: extra factor on the sparsity penalty (sweeps; keep 1.0 otherwise).
        norm_scale: input scale (see :func:`jinterp.sae.trainer.estimate_norm_scale`).
        target_norm_scale: transcoder target scale; None = ``norm_scale``.
        params: start from these parameters instead of a fresh ``init``.
    """
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got lr={lr}")
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    target_norm_scale = norm_scale if target_norm_scale is None else target_norm_scale
    if params is not None:  # own copies: donation fails on aliased leaves, frees the caller's
        params = jax.tree.map(lambda p: jnp.array(p, copy=True), params)
    return _fresh_state(cfg, tcfg, key, jnp.float32(lr), jnp.float32(penalty_multiplier),
                        jnp.float32(norm_scale), jnp.float32(target_norm_scale), params)


def _fresh_state(cfg: SAEConfig, tcfg: TrainConfig, key, lr, penalty_multiplier, norm_scale,
                 target_norm_scale, params) -> TrainState:
    """The body of :func:`train_state` (vmapped by a sweep).

    Not jitted: a jitted init compiles the threefry PRNG into a new program for every distinct
    config (each coefficient of a sweep, each test: ~1 s apiece), while eager ops compile once
    per shape. Measured at d_in 768, d_sae 12288: 1.2 s for the first state either way, then
    0.1-0.2 s for each further config eagerly against ~1.0 s jitted.
    """
    init_key, state_key = jax.random.split(key)
    params = init(cfg, init_key) if params is None else params
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=make_optimizer(tcfg).init(params),
        key=state_key,
        steps_since_fired=jnp.zeros((cfg.d_sae,), jnp.int32),
        norm_scale=norm_scale,
        target_norm_scale=target_norm_scale,
        hparams=HParams(lr=lr, penalty_multiplier=penalty_multiplier),
    )


def _split_batch(cfg: SAEConfig, batch: Batch):
    """(x, target) from an SAE batch ``x`` or a transcoder batch ``(x, target)``."""
    x, target = batch if isinstance(batch, (tuple, list)) else (batch, None)
    if x.ndim != 2 or x.shape[1] != cfg.d_in:
        raise ValueError(f"batch must have shape [batch, d_in={cfg.d_in}], got {x.shape}")
    if cfg.is_transcoder and target is None:
        raise ValueError("a transcoder (d_out set) trains on (x, target) batch pairs")
    if target is not None and target.shape != (x.shape[0], cfg.d_target):
        raise ValueError(f"target must have shape {(x.shape[0], cfg.d_target)}, got {target.shape}")
    return x, target


def _loss_and_grad(cfg: SAEConfig, params, x, target, penalty_scale, dead_mask):
    """(metrics, grads) of the architecture's loss.

    For AuxK architectures the dead-latent term costs a second, wide top-k (``k_aux`` = 512
    latents per token) although it is exactly zero while no latent is dead -- most of a
    run. ``lax.cond`` runs the loss without the AuxK term in that case (same value, same
    gradient) and with it otherwise. (Under ``vmap`` the cond becomes a select and both
    branches run.)
    """
    def value_and_grad(mask):
        ctx = LossContext(penalty_scale=penalty_scale, dead_mask=mask)
        fn = lambda p: loss(cfg, p, x, target=target, ctx=ctx)  # noqa: E731
        (_, metrics), grads = jax.value_and_grad(fn, has_aux=True)(params)
        return metrics, grads

    if not cfg.uses_aux_k:
        return value_and_grad(dead_mask)
    return jax.lax.cond(jnp.any(dead_mask), value_and_grad, lambda _: value_and_grad(None),
                        dead_mask)


def train_step(cfg: SAEConfig, tcfg: TrainConfig, state: TrainState, batch: Batch,
               mesh: jax.sharding.Mesh | None = None) -> tuple[TrainState, Metrics]:
    """One un-jitted training step (pure). See the module docstring for the order of work."""
    x, target = _split_batch(cfg, batch)
    x = sharding_lib.constrain_batch(x, mesh).astype(jnp.float32) * state.norm_scale
    if target is not None:
        target = sharding_lib.constrain_batch(target, mesh).astype(jnp.float32)
        target = target * state.target_norm_scale
    window = dead_window_steps(tcfg, cfg.dead_after_tokens, x.shape[0])
    dead_mask = state.steps_since_fired > window
    penalty_scale = penalty_factor(tcfg, state.step) * state.hparams.penalty_multiplier
    with sharding_lib.active_mesh(mesh):  # trace-time: top-k shards over the mesh's model axis
        metrics, grads = _loss_and_grad(cfg, state.params, x, target, penalty_scale, dead_mask)
    grads = after_grad(cfg, state.params, grads)
    updates, opt_state = make_optimizer(tcfg).update(grads, state.opt_state, state.params)
    lr = state.hparams.lr * lr_factor(tcfg, state.step)
    params = jax.tree.map(lambda p, u: p - (lr * u).astype(p.dtype), state.params, updates)
    with sharding_lib.active_mesh(mesh):
        params = after_update(cfg, params, metrics)
    metrics = dict(metrics)
    fired = metrics.pop("fired")
    steps_since_fired = jnp.where(fired, 0, state.steps_since_fired + 1)
    metrics.update(lr=lr, penalty_scale=penalty_scale,
                   dead_fraction=jnp.mean(steps_since_fired > window, dtype=jnp.float32))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              steps_since_fired=steps_since_fired)
    return sharding_lib.constrain_state(new_state, mesh), metrics


@functools.lru_cache(maxsize=64)
def make_train_step(cfg: SAEConfig, tcfg: TrainConfig = DEFAULT_TRAIN, *,
                    mesh: jax.sharding.Mesh | None = None, donate: bool = True
                    ) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """A jitted ``step(state, batch) -> (state, metrics)``.

    Args:
        cfg: the SAE config (static: baked into the compiled program).
        tcfg: training options (static).
        mesh: optional device mesh; place the state with
            :func:`jinterp.sae.sharding.shard_state` first. Same results as one device.
        donate: reuse the input state's buffers for the output (saves one copy of params and
            Adam moments; the passed-in state is invalid afterwards).

    Cached on its (hashable) arguments, so repeated calls -- e.g. a resumed :func:`train` --
    reuse the compiled program.
    """
    fn = functools.partial(train_step, cfg, tcfg, mesh=mesh)
    return jax.jit(fn, donate_argnums=(0,) if donate else ())


def multi_step(cfg: SAEConfig, tcfg: TrainConfig, state: TrainState, batches: Batches,
               mesh: jax.sharding.Mesh | None = None) -> tuple[TrainState, Metrics]:
    """``n_steps`` training steps over ``batches`` ``[n_steps, batch, d_in]`` with ``lax.scan``;
    metrics come back stacked ``[n_steps]``. Equal to calling :func:`train_step` in a loop."""

    def body(carry, batch):
        return train_step(cfg, tcfg, carry, batch, mesh=mesh)

    return jax.lax.scan(body, state, batches)


@functools.lru_cache(maxsize=64)
def make_train_loop(cfg: SAEConfig, tcfg: TrainConfig = DEFAULT_TRAIN, *,
                    mesh: jax.sharding.Mesh | None = None, donate: bool = True
                    ) -> Callable[[TrainState, Batches], tuple[TrainState, Metrics]]:
    """A jitted ``loop(state, batches[n_steps, batch, d_in]) -> (state, metrics[n_steps])``:
    many steps per compiled call, so the host dispatches once per chunk, not once per step."""
    fn = functools.partial(multi_step, cfg, tcfg, mesh=mesh)
    return jax.jit(fn, donate_argnums=(0,) if donate else ())
