"""Training the attention-only transformers: many steps per compiled call, exact resume.

The whole training state is one pytree -- parameters, AdamW state, PRNG key, step counter,
the per-step loss history and a stack of parameter snapshots -- so an orbax checkpoint of it
resumes bit-identically (nothing else carries state between steps). One jitted call runs
``steps_per_call`` optimizer steps with ``lax.scan``; each step draws a fresh batch from the
key inside the program, so the host only touches the device between calls (progress bar,
checkpoint). Parameters are snapshotted after every call: the per-head scores "before and
after the phase change" are read from these snapshots once the phase change is located.

Loss: next-token cross-entropy on *all* positions (the plain language-model objective; the
model must discover which tokens are predictable). The history also records the loss on the
predictable targets (later copies; the curve that shows the phase change, from ~ln(d_vocab)
to near zero) and on the unpredictable ones (stays at ~ln(d_vocab)).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int

from jinterp import models
from jinterp.checkpoint import Checkpointer
from jinterp.experiments.induction.data import DataConfig, sample_batch

METRICS = ("loss", "loss_predictable", "loss_random")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Model and optimisation settings.

    The model shape is that of Neel Nanda's reference run (REFERENCES.md 3.4: d_model 48, 4
    heads of 12, vocab 128, no LayerNorm, learned positions). The optimiser is faster than that
    run's (lr 1e-3, weight decay 1, batch 128, context 85): lr 3e-3, weight decay 0.01, a
    larger init and (in :class:`~jinterp.experiments.induction.study.StudyConfig`) batch 32 /
    context 64, chosen so the phase change happens within ~1k steps on two CPU cores.

    Attributes:
        n_layers: 2 for the induction study, 1 for the control that cannot form induction heads.
        init_range: std of the normal initialisation (GPT-2 uses 0.02; larger here, with no
            LayerNorm, so the logits are not negligible at init and the plateau is escaped sooner).
        n_steps: total optimizer steps; a multiple of ``steps_per_call``.
        steps_per_call: optimizer steps per compiled ``lax.scan`` call (= snapshot interval).
        lr / weight_decay: AdamW settings; ``warmup_steps`` linear warm-up from 0.
        prng_impl: JAX PRNG implementation for init and data. ``"rbg"`` (XLA's
            RngBitGenerator) compiles several times faster on CPU than ``"threefry2x32"``,
            which matters because compilation dominates the fast mode; runs are exactly
            reproducible on one backend, but (unlike threefry) bits may differ across backends.
    """

    n_layers: int = 2
    d_model: int = 48
    n_heads: int = 4
    d_head: int = 12
    init_range: float = 0.1
    n_steps: int = 6000
    steps_per_call: int = 100
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    seed: int = 0
    prng_impl: str = "rbg"
    data: DataConfig = DataConfig()

    def __post_init__(self):
        for field in ("n_layers", "d_model", "n_heads", "d_head", "n_steps", "steps_per_call"):
            if getattr(self, field) <= 0:
                raise ValueError(
                    f"TrainConfig.{field} must be positive, got {getattr(self, field)}.")
        if self.n_steps % self.steps_per_call:
            raise ValueError(f"n_steps={self.n_steps} must be a multiple of steps_per_call="
                             f"{self.steps_per_call} (one snapshot per compiled call).")
        if self.prng_impl not in ("rbg", "threefry2x32", "unsafe_rbg"):
            raise ValueError("prng_impl must be 'rbg', 'unsafe_rbg' or 'threefry2x32'; got "
                             f"{self.prng_impl!r}.")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0, weight_decay and warmup_steps >= 0.")

    @property
    def n_calls(self) -> int:
        return self.n_steps // self.steps_per_call

    def model(self) -> models.GPT2:
        """The attention-only, LayerNorm-free GPT-2 variant of the Mathematical Framework."""
        return models.GPT2(models.GPT2Config(
            n_layers=self.n_layers, d_model=self.d_model, n_heads=self.n_heads, d_head=self.d_head,
            d_mlp=None, d_vocab=self.data.d_vocab, n_ctx=self.data.n_ctx,
            normalization=models.Norm.NONE, positional=models.Positional.LEARNED,
            tied_embeddings=False, attn_bias=False, mlp_bias=False, unembed_bias=False,
            init_range=self.init_range))

    def optimizer(self) -> optax.GradientTransformation:
        schedule = optax.linear_schedule(0.0, self.lr, max(self.warmup_steps, 1))
        return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=self.weight_decay)


def token_losses(model: models.GPT2, params,
                 tokens: Int[Array, "batch pos"]) -> Float[Array, "batch pos_m1"]:
    """Per-target cross-entropy: logits at ``t`` scored against token ``t + 1``."""
    logits = model(params, tokens)[:, :-1]  # batch pos-1 d_vocab
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # batch pos-1


def masked_mean(x: Float[Array, "..."], mask: Bool[Array, "..."]) -> Float[Array, ""]:
    """Mean of ``x`` where ``mask``; 0 when the mask is empty."""
    return jnp.sum(jnp.where(mask, x, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def batch_metrics(losses: Float[Array, "batch pos_m1"], predictable: Bool[Array, "batch pos_m1"]
                  ) -> Float[Array, "3"]:
    """``[loss, loss_predictable, loss_random]`` (see :data:`METRICS`)."""
    return jnp.stack([losses.mean(), masked_mean(losses, predictable),
                      masked_mean(losses, ~predictable)])


@functools.partial(jax.jit, static_argnums=0)
def init_state(cfg: TrainConfig) -> dict:
    """Step-0 training state; snapshot 0 holds the initial parameters (one compiled program)."""
    key_init, key_data = jax.random.split(jax.random.key(cfg.seed, impl=cfg.prng_impl))
    params = cfg.model().init(key_init)
    empty = lambda p: jnp.zeros((cfg.n_calls + 1, *p.shape), p.dtype)  # snapshot ...
    snapshots = jax.tree.map(lambda p: empty(p).at[0].set(p), params)
    history = jnp.zeros((cfg.n_steps, len(METRICS)), jnp.float32)  # step metric
    return {"params": params, "opt_state": cfg.optimizer().init(params), "key": key_data,
            "step": jnp.zeros((), jnp.int32), "history": history, "snapshots": snapshots}


@functools.lru_cache(maxsize=8)
def make_train_call(cfg: TrainConfig) -> Callable[[dict], dict]:
    """A jitted ``state -> state`` that runs ``cfg.steps_per_call`` steps with ``lax.scan``.

    Cached per (hashable, frozen) config, so a resumed run in the same process reuses the
    compiled program.
    """
    model, optimizer = cfg.model(), cfg.optimizer()

    def loss_fn(params, tokens, predictable):
        losses = token_losses(model, params, tokens)
        return losses.mean(), batch_metrics(losses, predictable)

    def step(carry, _):
        params, opt_state, key = carry
        key, key_batch = jax.random.split(key)
        tokens, predictable = sample_batch(key_batch, cfg.data)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, tokens, predictable)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), metrics

    @jax.jit
    def call(state: dict) -> dict:
        carry = (state["params"], state["opt_state"], state["key"])
        (params, opt_state, key), metrics = jax.lax.scan(step, carry, None,
                                                         length=cfg.steps_per_call)
        history = jax.lax.dynamic_update_slice(state["history"], metrics, (state["step"], 0))
        step_count = state["step"] + cfg.steps_per_call
        index = step_count // cfg.steps_per_call
        snapshots = jax.tree.map(lambda s, p: s.at[index].set(p), state["snapshots"], params)
        return {"params": params, "opt_state": opt_state, "key": key, "step": step_count,
                "history": history, "snapshots": snapshots}

    return call


def run_training(cfg: TrainConfig, ckpt_dir: str | None = None, checkpoint_every: int = 10,
                 stop_after: int | None = None,
                 progress: Callable[[int, dict], None] | None = None) -> dict:
    """Trains (resuming from ``ckpt_dir`` if it holds a checkpoint) and returns the final state.

    Args:
        ckpt_dir: orbax checkpoint directory; ``None`` trains without checkpoints.
        checkpoint_every: compiled calls between checkpoints (and at the end).
        stop_after: stop once this many steps are done (simulates an interruption in tests).
        progress: called after every compiled call with ``(steps done, state)``.
    """
    state = init_state(cfg)
    ckpt = Checkpointer(ckpt_dir) if ckpt_dir is not None else None
    try:
        if ckpt is not None:
            state = ckpt.restore_or(state)
        call = make_train_call(cfg)
        end = cfg.n_steps if stop_after is None else min(stop_after, cfg.n_steps)
        calls = 0
        while int(state["step"]) < end:
            state = call(state)
            calls += 1
            done = int(state["step"])
            if progress is not None:
                progress(done, state)
            if ckpt is not None and (calls % checkpoint_every == 0 or done >= end):
                ckpt.save(done, state)
    finally:
        if ckpt is not None:
            ckpt.close()
    return state

