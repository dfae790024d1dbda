"""Training a tuned lens: every layer's translator in one jitted step, checkpointed, resumable.

The loss is the sum over layers of ``KL(p_final || p_lens_l)`` on a batch of token sequences;
the layers' translators share no parameters, so one summed loss trains each on its own KL
while one step (one forward of the frozen model, one ``vmap`` of the unembedding over layers)
serves them all. Adam with decoupled weight decay (the paper uses SGD with Nesterov momentum
for 250 steps; Adam needs no tuning of the step size here and converges to the same place on
the small models we test).

Exact resume: the training state (translators, optimizer state, step) is one pytree saved
with orbax; each step's batch is a function of ``(seed, step)`` only, so a run stopped and
resumed from a checkpoint replays exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jinterp.checkpoint import Checkpointer
from jinterp.lens.logit import resid_stack, unembed_stack
from jinterp.lens.metrics import kl_to_final, next_token_loss
from jinterp.lens.tuned import LensParams, init_tuned_lens, translate, tuned_lens_logits
from jinterp.model import HookedModel


@dataclasses.dataclass(frozen=True)
class TunedLensConfig:
    """How to train a tuned lens.

    Attributes:
        steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: token sequences per step (drawn without replacement each step).
        lr: Adam's learning rate.
        weight_decay: decoupled weight decay (pulls translators towards the identity).
        seed: seeds the batch order.
        checkpoint_every: save the state every this many steps (needs ``out_dir``).
        log_every: record per-layer KL every this many steps.
    """

    steps: int = 250
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int | None = None
    log_every: int = 10

    def __post_init__(self):
        for field in ("steps", "batch_size", "log_every"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive, got {getattr(self, field)}.")
        if self.checkpoint_every is not None and self.checkpoint_every <= 0:
            raise ValueError("checkpoint_every must be positive or None.")

    @property
    def step_spec(self) -> tuple:
        """What the compiled step depends on (``steps`` does not: no recompile on resume)."""
        return (self.batch_size, self.lr, self.weight_decay, self.seed)


@dataclasses.dataclass(frozen=True)
class TunedLensResult:
    """A trained lens, its training curves and the per-layer evaluation.

    Attributes:
        lens: the translators (``{"A", "b"}`` with a leading ``[layer]`` axis).
        history: ``{"step": [...], "kl": [[per-layer KL] per logged step]}``.
        summary: per-layer KL and next-token loss of the logit and tuned lens on held-out
            sequences (or the training sequences when none are given).
    """

    lens: LensParams
    history: dict
    summary: dict


def _optimizer(spec: tuple) -> optax.GradientTransformation:
    _, lr, weight_decay, _ = spec
    return optax.adamw(lr, weight_decay=weight_decay)


def initial_state(model: HookedModel, config: TunedLensConfig) -> dict:
    """Identity translators, a fresh optimizer state and step 0."""
    lens = init_tuned_lens(model)
    return {"lens": lens, "opt": _optimizer(config.step_spec).init(lens),
            "step": jnp.zeros((), jnp.int32)}


def batch_indices(step: jax.Array, n_seq: int, batch_size: int, seed: int) -> jax.Array:
    """Which sequences step ``step`` trains on: a function of ``(seed, step)`` alone."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.random.choice(key, n_seq, (batch_size,), replace=False)


@functools.partial(jax.jit, static_argnames=("model", "spec"))
def train_step(state: dict, params, tokens: jax.Array, *, model: HookedModel, spec: tuple
               ) -> tuple[dict, jax.Array]:
    """One step for every layer's translator: ``(state, params, all tokens) -> (state, kl)``.

    ``kl`` is the per-layer KL ``[layer]`` on this step's batch, before the update.
    """
    batch_size, _, _, seed = spec
    idx = batch_indices(state["step"], tokens.shape[0], batch_size, seed)
    resid, final = resid_stack(model, params, tokens[idx])
    resid, final = jax.lax.stop_gradient(resid), jax.lax.stop_gradient(final)

    def loss(lens):
        kl = kl_to_final(unembed_stack(model, params, translate(lens, resid)), final)
        return kl.sum(), kl

    (_, kl), grads = jax.value_and_grad(loss, has_aux=True)(state["lens"])
    updates, opt = _optimizer(spec).update(grads, state["opt"], state["lens"])
    lens = optax.apply_updates(state["lens"], updates)
    return {"lens": lens, "opt": opt, "step": state["step"] + 1}, kl


@functools.partial(jax.jit, static_argnames=("model",))
def evaluate(model: HookedModel, params, lens: LensParams, tokens: jax.Array) -> dict:
    """Per-layer KL to the final logits and next-token loss, logit lens vs tuned lens."""
    resid, final = resid_stack(model, params, tokens)
    logit = unembed_stack(model, params, resid)
    tuned = tuned_lens_logits(model, params, lens, resid)
    final_ce = next_token_loss(final[None], tokens)[0]
    return {"logit_kl": kl_to_final(logit, final), "tuned_kl": kl_to_final(tuned, final),
            "logit_ce": next_token_loss(logit, tokens),
            "tuned_ce": next_token_loss(tuned, tokens), "final_ce": final_ce}


def _check_tokens(model: HookedModel, tokens, batch_size: int, what: str) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{what} must be integer token ids [n_sequences, pos]; got shape "
                         f"{tokens.shape}, dtype {tokens.dtype}.")
    if tokens.shape[0] < batch_size:
        raise ValueError(f"{what} holds {tokens.shape[0]} sequences, fewer than batch_size="
                         f"{batch_size}; pass more sequences or a smaller batch_size.")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= model.d_vocab):
        raise ValueError(f"{what}: token ids must lie in [0, {model.d_vocab}).")
    return tokens


def train_tuned_lens(model: HookedModel, params, tokens, config: TunedLensConfig | None = None,
                     *, eval_tokens=None, out_dir: str | os.PathLike | None = None,
                     progress: bool = True) -> TunedLensResult:
    """Trains one translator per block to match the model's final logits.

    Args:
        model, params: the (frozen) model.
        tokens: training sequences ``[n_sequences, pos]`` (kept on the device; each step draws
            ``batch_size`` of them).
        config: steps, batch size, optimizer, checkpointing (default ``TunedLensConfig()``).
        eval_tokens: held-out sequences for the summary (default: the training sequences).
        out_dir: where checkpoints, ``history.json``, ``summary.json`` and
            ``tuned_lens.png`` go; a rerun with the same ``out_dir`` resumes exactly.
        progress: show a tqdm progress bar.
    """
    config = TunedLensConfig() if config is None else config
    tokens = _check_tokens(model, tokens, config.batch_size, "tokens")
    if config.checkpoint_every and out_dir is None:
        raise ValueError("checkpoint_every needs out_dir= (where the checkpoints go).")
    state = initial_state(model, config)
    ckpt = Checkpointer(os.path.join(out_dir, "checkpoints")) if config.checkpoint_every else None
    history: dict[str, list[Any]] = {"step": [], "kl": []}
    if ckpt is not None and ckpt.latest_step() is not None:
        state = ckpt.restore(state)
        history = _read_json(os.path.join(out_dir, "history.json"), history)
    start = int(state["step"])
    device_tokens = jnp.asarray(tokens)
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc="tuned lens")
    for step in range(start, config.steps):
        state, kl = train_step(state, params, device_tokens, model=model, spec=config.step_spec)
        if step % config.log_every == 0:
            history["step"].append(step)
            history["kl"].append([float(x) for x in kl])
            bar.set_postfix(kl=f"{float(kl.mean()):.3f}")
        bar.update(1)
        if ckpt is not None and (step + 1) % config.checkpoint_every == 0:
            ckpt.save(step + 1, state)
            _write_json(os.path.join(out_dir, "history.json"), history)
    bar.close()
    if ckpt is not None:
        ckpt.close()
    held_out = tokens if eval_tokens is None else _check_tokens(model, eval_tokens, 1,
                                                                "eval_tokens")
    summary = {k: np.asarray(v).tolist()
               for k, v in evaluate(model, params, state["lens"], jnp.asarray(held_out)).items()}
    summary["steps"] = int(state["step"])
    if out_dir is not None:
        from jinterp.lens.plot import plot_tuned_lens

        _write_json(os.path.join(out_dir, "history.json"), history)
        _write_json(os.path.join(out_dir, "summary.json"), summary)
        plot_tuned_lens(history, summary, os.path.join(out_dir, "tuned_lens.png"))
    return TunedLensResult(state["lens"], history, summary)


def _write_json(path: str, value: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=1)


def _read_json(path: str, default: dict) -> dict:
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)
