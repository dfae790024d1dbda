"""Training loop: ``lax.scan`` over many steps per compiled call, orbax checkpoints, exact resume.

The whole training state is one pytree ``{"params", "opt_state", "key", "step"}``. Each step
splits the carried key, draws a fresh batch per instance and takes one AdamW step on the summed
loss. Nothing outside the state influences a step, so a run restored from a checkpoint continues
bit-for-bit like an uninterrupted run (checked in the tests).

The host loop calls the compiled chunk (``steps_per_call`` scanned steps), updates a tqdm bar,
and saves a checkpoint after every chunk. Rerunning with the same checkpoint directory resumes from
the newest checkpoint; a finished run is simply reloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float
from tqdm.auto import tqdm

from jinterp.checkpoint import Checkpointer

from .model import Params, ToyModelConfig, batch_losses, check_instance_arrays, init_params

TrainState = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the notebook's AdamW, lr 1e-3, wd 0.01, batch 1024, 10k).

    Attributes:
        steps: total optimiser steps.
        batch_size: fresh samples per instance per step.
        learning_rate: constant AdamW learning rate.
        weight_decay: AdamW decoupled weight decay (torch's default 0.01, as in the notebook).
        steps_per_call: steps scanned inside one compiled call; also the checkpoint interval.
        seed: seeds both the init and the data stream.
        lr_schedule: the notebook's multipliers of ``learning_rate`` at step ``t`` of ``T``:
            ``"constant"`` (1, the notebook's default), ``"linear"`` (``1 - t/T``) or
            ``"cosine"`` (``cos(pi/2 * t/(T-1))``, which ends at 0 and lets the weights settle
            on an exact polytope instead of jittering around it).
    """

    steps: int = 10_000
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    steps_per_call: int = 500
    seed: int = 0
    lr_schedule: str = "constant"

    def __post_init__(self):
        for name in ("steps", "batch_size", "steps_per_call"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if self.steps % self.steps_per_call:
            raise ValueError(
                f"TrainConfig.steps ({self.steps}) must be a multiple of steps_per_call "
                f"({self.steps_per_call}) so every compiled call has the same length"
            )
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError("TrainConfig needs learning_rate > 0 and weight_decay >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


LR_SCHEDULES = ("constant", "linear", "cosine")


def learning_rate(cfg: TrainConfig):
    """The learning rate as a float (constant) or an optax schedule of the step count."""
    lr, total = cfg.learning_rate, cfg.steps
    if cfg.lr_schedule == "linear":
        return lambda step: lr * (1.0 - step / total)
    if cfg.lr_schedule == "cosine":
        return lambda step: lr * jnp.cos(0.5 * jnp.pi * step / max(total - 1, 1))
    return lr


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW with torch's defaults (betas 0.9/0.999, eps 1e-8) and ``cfg``'s learning rate."""
    return optax.adamw(learning_rate(cfg), b1=0.9, b2=0.999, eps=1e-8,
                       weight_decay=cfg.weight_decay)


def init_state(model_cfg: ToyModelConfig, train_cfg: TrainConfig) -> TrainState:
    """Fresh state: params from the seed, Adam moments at zero, step 0."""
    return init_state_with(functools.partial(init_params, model_cfg), train_cfg)


def init_state_with(init_fn: Callable[[Array], Params], train_cfg: TrainConfig) -> TrainState:
    """Fresh state for any model: ``init_fn(key)`` gives the params (split off the seed)."""
    init_key, data_key = jax.random.split(jax.random.PRNGKey(train_cfg.seed))
    params = init_fn(init_key)
    return {
        "params": params,
        "opt_state": make_optimizer(train_cfg).init(params),
        "key": data_key,
        "step": jnp.zeros((), jnp.int32),
    }


# loss_fn(params, key, data, batch_size) -> per-instance losses [instance]
InstanceLossFn = Callable[[Params, Array, Any, int], Array]


def relu_output_losses(params: Params, key: Array, data: tuple, batch_size: int) -> Array:
    """Per-instance loss of the ReLU-output model; ``data = (importance, probability)``."""
    importance, feature_probability = data
    return batch_losses(params, key, importance, feature_probability, batch_size)


def train_chunk(
    state: TrainState,
    importance: Float[Array, "instance feature"],
    feature_probability: Float[Array, "instance feature"],
    train_cfg: TrainConfig,
) -> tuple[TrainState, Float[Array, " instance"]]:
    """``train_cfg.steps_per_call`` steps of the ReLU-output model (see :func:`scan_chunk`)."""
    return scan_chunk(state, (importance, feature_probability), relu_output_losses, train_cfg)


@functools.partial(jax.jit, static_argnames=("loss_fn", "train_cfg"))
def scan_chunk(
    state: TrainState, data: Any, loss_fn: InstanceLossFn, train_cfg: TrainConfig
) -> tuple[TrainState, Float[Array, " instance"]]:
    """Runs ``train_cfg.steps_per_call`` optimiser steps as one compiled ``lax.scan``.

    Module-level and jitted with the (hashable) loss function and config static, so every call
    with the same loss, config and shapes reuses one compiled program, across ``train`` calls.

    Args:
        state: the training state.
        data: pytree of per-instance arrays handed to ``loss_fn`` (importances, densities...).
        loss_fn: ``loss_fn(params, key, data, batch_size)`` draws a fresh batch per instance
            and returns each instance's loss ``[instance]``; the step minimises their sum, so
            the instances never interact.
        train_cfg: optimiser settings.

    Returns:
        The new state and each instance's training loss averaged over the chunk.
    """
    optimizer = make_optimizer(train_cfg)

    def total_loss(params: Params, key: Array):
        per_instance = loss_fn(params, key, data, train_cfg.batch_size)
        return per_instance.sum(), per_instance

    def step(state: TrainState, _):
        key, batch_key = jax.random.split(state["key"])
        grads, per_instance = jax.grad(total_loss, has_aux=True)(state["params"], batch_key)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
            "key": key,
            "step": state["step"] + 1,
        }
        return new_state, per_instance

    state, losses = jax.lax.scan(step, state, None, length=train_cfg.steps_per_call)
    return state, losses.mean(axis=0)


def _check_run_identity(directory: str, identity: dict) -> None:
    """Refuses to resume a checkpoint written by a different configuration."""
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as they come back from disk
    path = os.path.join(directory, "run_config.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != identity:
            raise ValueError(
                f"checkpoint directory {directory} belongs to a different run configuration "
                f"(saved {saved}, now {identity}); use a fresh --out directory or delete it"
            )
    else:
        os.makedirs(directory, exist_ok=True)
        with open(path, "w") as f:
            json.dump(identity, f, indent=1, sort_keys=True)


def run_identity(model_cfg, train_cfg, importance, feature_probability) -> dict:
    """A JSON-able fingerprint of everything that determines the trained parameters."""
    return {
        "model": dataclasses.asdict(model_cfg),
        "train": dataclasses.asdict(train_cfg),
        "importance": np.asarray(importance, np.float64).round(9).tolist(),
        "feature_probability": np.asarray(feature_probability, np.float64).round(9).tolist(),
    }


def train(
    model_cfg: ToyModelConfig,
    train_cfg: TrainConfig,
    importance: Float[ArrayLike, "instance feature"],
    feature_probability: Float[ArrayLike, "instance feature"],
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    stop_after_step: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[TrainState, np.ndarray | None]:
    """Trains every instance, resuming from ``checkpoint_dir`` when it holds a checkpoint.

    Args:
        model_cfg: model shape and instance count.
        train_cfg: optimiser settings.
        importance: per-instance feature importances ``[instance, feature]``.
        feature_probability: per-instance ``1 - S`` ``[instance, feature]``.
        checkpoint_dir: where to save after every chunk; ``None`` disables checkpoints.
        stop_after_step: stop early once this step is reached (simulates an interruption in
            tests; must be a multiple of ``steps_per_call``).
        progress: show a tqdm bar.
        desc: bar label.

    Returns:
        The final state and the per-instance loss averaged over the last chunk run in this call
        (``None`` if no chunk ran because the checkpoint was already complete).
    """
    check_instance_arrays(model_cfg, importance, feature_probability)
    identity = run_identity(model_cfg, train_cfg, importance, feature_probability)
    data = (jnp.asarray(importance, jnp.float32), jnp.asarray(feature_probability, jnp.float32))
    return train_with(
        functools.partial(init_params, model_cfg), relu_output_losses, data, train_cfg,
        checkpoint_dir=checkpoint_dir, identity=identity, stop_after_step=stop_after_step,
        progress=progress, desc=desc)


def train_with(
    init_fn: Callable[[Array], Params],
    loss_fn: InstanceLossFn,
    data: Any,
    train_cfg: TrainConfig,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    identity: dict | None = None,
    stop_after_step: int | None = None,
    progress: bool = True,
    desc: str = "train",
) -> tuple[TrainState, np.ndarray | None]:
    """Trains any vmapped toy model (see :func:`train`; ``loss_fn`` as in :func:`scan_chunk`).

    Args:
        init_fn: ``init_fn(key)`` returns the initial params of every instance.
        loss_fn: module-level per-instance loss (static under jit, so it must be hashable).
        data: per-instance arrays passed to ``loss_fn``.
        train_cfg: optimiser settings.
        checkpoint_dir: where to save after every chunk; ``None`` disables checkpoints.
        identity: JSON-able fingerprint of the run; a checkpoint directory written with a
            different one is refused rather than resumed.
        stop_after_step, progress, desc: as in :func:`train`.
    """
    target = train_cfg.steps if stop_after_step is None else min(stop_after_step, train_cfg.steps)
    if target % train_cfg.steps_per_call:
        raise ValueError(f"stop_after_step={target} is not a multiple of steps_per_call")
    state = init_state_with(init_fn, train_cfg)
    ckpt = None
    if checkpoint_dir is not None:
        directory = os.fspath(checkpoint_dir)
        base = {"train": dataclasses.asdict(train_cfg)}
        _check_run_identity(directory, base if identity is None else identity)
        ckpt = Checkpointer(directory)
        state = ckpt.restore_or(state)
    # A constant-lr chunk does not depend on steps or seed; dropping them lets runs of different
    # lengths share one compiled program. A decaying schedule needs the total step count.
    chunk_cfg = dataclasses.replace(train_cfg, seed=0)
    if train_cfg.lr_schedule == "constant":
        chunk_cfg = dataclasses.replace(chunk_cfg, steps=train_cfg.steps_per_call)
    start = int(state["step"])
    losses = None
    bar = tqdm(total=target, initial=min(start, target), desc=desc, disable=not progress,
               unit="step")
    try:
        while int(state["step"]) < target:
            state, losses = scan_chunk(state, data, loss_fn, chunk_cfg)
            step = int(state["step"])
            if ckpt is not None:
                ckpt.save(step, state)
            bar.update(train_cfg.steps_per_call)
            bar.set_postfix(mean_loss=f"{float(losses.mean()):.4g}")
    finally:
        bar.close()
        if ckpt is not None:
            ckpt.close()
    return state, None if losses is None else np.asarray(losses)
