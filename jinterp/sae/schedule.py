"""Training hyper-parameters and schedules for SAE training.

:class:`TrainConfig` holds everything about *how* an SAE is trained that is the same for every
instance of a sweep and therefore may be baked into the compiled program: Adam's betas,
warm-up lengths, the dead-latent window. What varies between instances of a sweep (the
learning rate, the sparsity coefficient, the seed) lives as arrays in the training state
instead (:class:`jinterp.sae.train_step.HParams`), so one compiled program serves them all.

The schedule shapes follow Anthropic's April 2024 recipe (REFERENCES 5.3): the learning rate
warms up linearly, stays constant, and decays linearly to zero over the last ``lr_decay_steps``
steps; the sparsity penalty warms up linearly from zero over ``penalty_warmup_steps``.
All schedule functions take the (traced) step and return a float32 factor in [0, 1], so they
can be evaluated inside ``jit``/``scan``/``vmap``.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax.numpy as jnp
from jaxtyping import Array, Float, Int


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Static training options shared by every SAE instance trained in one program.

    Args:
        total_steps: the planned run length; needed to place the final learning-rate decay.
            None means no decay (``lr_decay_steps`` must then be 0).
        lr_warmup_steps: linear learning-rate warm-up from 0 over the first steps.
        lr_decay_steps: linear learning-rate decay to 0 over the last steps of ``total_steps``
            (Anthropic: the last 20%).
        penalty_warmup_steps: linear warm-up of the sparsity penalty from 0 (Anthropic: the
            first 5%; SAELens ``l1_warm_up_steps``).
        adam_b1: Adam beta1 (0.9 usually; the JumpReLU paper uses 0).
        adam_b2: Adam beta2.
        adam_eps: Adam epsilon.
        grad_clip_norm: clip the global gradient norm to this value; None disables clipping.
        dead_window: a latent that has not fired for more than this many steps counts as dead
            (feeds the AuxK loss and the ``dead_fraction`` metric). None derives it from the
            SAE config's ``dead_after_tokens`` and the batch size (Gao, Anthropic: 10M tokens).
    """

    total_steps: int | None = None
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0
    penalty_warmup_steps: int = 0
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip_norm: float | None = None
    dead_window: int | None = None

    def __post_init__(self):
        for name in ("lr_warmup_steps", "lr_decay_steps", "penalty_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.lr_decay_steps and self.total_steps is None:
            raise ValueError(
                "TrainConfig.lr_decay_steps > 0 needs total_steps (the decay ends at "
                "total_steps); pass total_steps=<planned number of steps>"
            )
        if self.total_steps is not None and self.total_steps <= 0:
            raise ValueError(f"TrainConfig.total_steps must be positive, got {self.total_steps}")
        if self.total_steps is not None and self.lr_decay_steps > self.total_steps:
            raise ValueError(
                f"TrainConfig.lr_decay_steps={self.lr_decay_steps} exceeds "
                f"total_steps={self.total_steps}"
            )
        if self.dead_window is not None and self.dead_window <= 0:
            raise ValueError(f"TrainConfig.dead_window must be positive or None, got "
                             f"{self.dead_window}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"TrainConfig.grad_clip_norm must be positive or None, got "
                             f"{self.grad_clip_norm}")
        if not (0.0 <= self.adam_b1 < 1.0 and 0.0 <= self.adam_b2 < 1.0):
            raise ValueError(f"Adam betas must lie in [0, 1), got b1={self.adam_b1}, "
                             f"b2={self.adam_b2}")

    @classmethod
    def anthropic(cls, total_steps: int) -> "TrainConfig":
        """Anthropic's April 2024 recipe: penalty warm-up over the first 5%, lr decay to 0
        over the last 20%, gradient clipping at norm 1."""
        return cls(total_steps=total_steps, penalty_warmup_steps=total_steps // 20,
                   lr_decay_steps=total_steps // 5, grad_clip_norm=1.0)


#: The default training options (a shared instance, so jit and lru caches see one key).
DEFAULT_TRAIN = TrainConfig()


def _ramp(step: Int[Array, ""], length: int) -> Float[Array, ""]:
    """(step + 1) / length clipped to 1; exactly 1 when length == 0.

    Starting the ramp at 1/length (not 0) means the very first update already moves the
    parameters, as optax's warm-up schedules do when counted from one.
    """
    if length == 0:
        return jnp.ones((), jnp.float32)
    return jnp.minimum((step.astype(jnp.float32) + 1.0) / length, 1.0)


def lr_factor(tcfg: TrainConfig, step: Int[Array, ""]) -> Float[Array, ""]:
    """Multiplier on the base learning rate at ``step`` (0-based): warm-up, flat, decay."""
    factor = _ramp(step, tcfg.lr_warmup_steps)
    if tcfg.lr_decay_steps:
        remaining = jnp.float32(tcfg.total_steps) - step.astype(jnp.float32)
        decay = jnp.clip(remaining / tcfg.lr_decay_steps, 0.0, 1.0)
        factor = jnp.minimum(factor, decay)
    return factor


def penalty_factor(tcfg: TrainConfig, step: Int[Array, ""]) -> Float[Array, ""]:
    """Multiplier on the sparsity penalty at ``step``: linear warm-up from 0 to 1."""
    if tcfg.penalty_warmup_steps == 0:
        return jnp.ones((), jnp.float32)
    return jnp.minimum(step.astype(jnp.float32) / tcfg.penalty_warmup_steps, 1.0)


def dead_window_steps(tcfg: TrainConfig, dead_after_tokens: int, batch_size: int) -> int:
    """Steps without firing after which a latent counts as dead (at least 1)."""
    if tcfg.dead_window is not None:
        return tcfg.dead_window
    return max(-(-dead_after_tokens // batch_size), 1)


def scaled_dead_window(tcfg: TrainConfig, dead_after_tokens: int, steps: int,
                       batch_size: int) -> TrainConfig:
    """``tcfg`` with a dead-latent window that fits the run when the default cannot.

    The default window, ``dead_after_tokens`` (10M) tokens, is longer than a short run: then no
    latent ever counts as dead, the logged ``dead_fraction`` stays 0 and AuxK never fires. When
    the run (``tcfg.total_steps`` or ``steps``, times ``batch_size``) is shorter and
    ``tcfg.dead_window`` is unset, this warns and sets the window to a tenth of the run.
    """
    total = tcfg.total_steps or steps
    if tcfg.dead_window is not None or total * batch_size >= dead_after_tokens or total < 1:
        return tcfg
    window = max(total // 10, 1)
    warnings.warn(f"the run trains on {total * batch_size:,} tokens, fewer than "
                  f"dead_after_tokens={dead_after_tokens:,}: no latent could ever count as dead "
                  f"(dead_fraction would stay 0, AuxK never fire). Using a dead window of "
                  f"{window} steps (a tenth of the run); set TrainConfig(dead_window=...) or "
                  "SAEConfig(dead_after_tokens=...) to choose.", stacklevel=3)
    return dataclasses.replace(tcfg, dead_window=window)
