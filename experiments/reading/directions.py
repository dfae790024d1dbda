"""A difference-in-means direction for "the in-context answer is A, not B": ablate it, add it.

Contrast sets (:func:`.data.contrast_prompts`): prompts ``r r[:k+1]`` whose induction answer
(the token after the last token's earlier occurrence) is ``A`` (positive) or ``B``
(negative). :func:`jinterp.steering.diff_in_means` at the last position gives one direction
per residual (every block's input and the output). Two held-out tests, each one compiled
program:

* directional ablation (:func:`jinterp.steering.ablation_hooks`: projected out of every
  residual, every position; Arditi et al. 2024) of each layer's direction, against random
  unit directions: how much of the held-out logit-difference separation
  ``mean_pos(l_A - l_B) - mean_neg(l_A - l_B)`` survives, and the loss on the repeated
  tokens of the ``r r`` probe (a targeted direction leaves other predictions alone).
  All directions are one ``vmap``.
* steering (:func:`jinterp.steering.steering_hooks`, at the last position): adding
  ``scale * v`` to the negative prompts at the residual it was read from; the share of prompts
  whose top prediction becomes ``A``, over a vmapped sweep of scales (scale 1 moves the
  negative mean onto the positive mean), against a random vector of the same norm.

Expected: the answer is written by the induction heads (layer 1), so only the output's
direction carries it; the embeddings' direction is noise.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

import jinterp
from jinterp import steering
from jinterp.experiments.induction.patching import repeated_loss
from jinterp.experiments.reading.data import contrast_prompts


@dataclasses.dataclass(frozen=True)
class SteeringConfig:
    """Contrast sets and sweeps.

    Attributes:
        answers: the tokens ``(A, B)``.
        half_len / answer_at: prompt shape (``r`` of ``half_len`` tokens, then
            ``r[:answer_at + 1]``).
        n_prompts: prompts per set (fit and held-out sets each).
        n_random: random directions in the ablation baseline.
        scales: steering coefficients.
        seed: seeds the prompts and random directions.
    """

    answers: tuple[int, int] = (0, 1)
    half_len: int = 24
    answer_at: int = 11
    n_prompts: int = 64
    n_random: int = 16
    scales: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    seed: int = 0

    def __post_init__(self):
        if len(set(self.answers)) != 2:
            raise ValueError(f"answers must be two different tokens; got {self.answers}.")
        if self.n_prompts < 2 or self.n_random < 1 or not self.scales:
            raise ValueError("Need n_prompts >= 2, n_random >= 1 and at least one scale.")


def directions(model, params, positive, negative) -> Float[Array, "layer_p1 d_model"]:
    """Difference in means at the last position of every block's input and of the output."""
    pre = steering.diff_in_means(model, params, positive, negative, point="hook_resid_pre")
    post = steering.diff_in_means(model, params, positive, negative, point="hook_resid_post")
    return jnp.concatenate([pre, post[-1:]])  # layer+1 d_model


def _answer_diff(logits: Float[Array, "batch pos d_vocab"], answers) -> Float[Array, " batch"]:
    return logits[:, -1, answers[0]] - logits[:, -1, answers[1]]


def _separation(diff: Float[Array, " batch"], n_pos: int) -> Float[Array, ""]:
    return diff[:n_pos].mean() - diff[n_pos:].mean()


def ablation_sweep(model, params, dirs: Float[Array, "n d_model"],
                   contrast: Int[Array, "batch pos"], n_pos: int, probe: Int[Array, "b2 pos2"],
                   half_len: int, answers: tuple[int, int]) -> dict[str, Array]:
    """Separation and ``r r`` repeated-token loss with each direction ablated (one vmap)."""

    @jax.jit
    def run(params, dirs):
        def one(d):
            hooks = steering.ablation_hooks(model, d)
            sep = _separation(_answer_diff(
                jinterp.run_with_hooks(model, params, contrast, hooks), answers), n_pos)
            loss = repeated_loss(jinterp.run_with_hooks(model, params, probe, hooks), probe,
                                 half_len)
            return sep, loss
        return jax.vmap(one)(dirs)

    sep, loss = run(params, dirs)
    return {"separation": sep, "repeated_loss": loss}


def steering_sweep(model, params, vector: Float[Array, " d_model"], layer: int, point: str,
                   negative: Int[Array, "batch pos"], scales: Float[Array, " scale"],
                   answers: tuple[int, int]) -> dict[str, Array]:
    """Share of negative prompts answering ``A`` and the mean ``l_A - l_B`` per scale."""

    @jax.jit
    def run(params, vector, scales):
        def one(s):
            logits = steering.steer(model, params, negative, vector, layers=[layer], scale=s,
                                    pos=-1, point=point)
            return (logits[:, -1].argmax(-1) == answers[0]).mean(), _answer_diff(
                logits, answers).mean()
        return jax.vmap(one)(scales)

    flipped, diff = run(params, vector, scales)
    return {"flipped": flipped, "logit_diff": diff}


def steering_study(model, params, cfg: SteeringConfig, d_vocab: int,
                   probe: Int[Array, "batch pos"], probe_half_len: int) -> dict:
    """Both tests; JSON-ready numbers (see the module docstring)."""
    A, B = cfg.answers
    make = lambda i, answer, other: contrast_prompts(
        cfg.seed + i, d_vocab, cfg.half_len, cfg.answer_at, cfg.n_prompts, answer, (other,))
    pos_fit, neg_fit = make(0, A, B), make(1, B, A)
    pos_test, neg_test = make(2, A, B), make(3, B, A)
    dirs = directions(model, params, pos_fit, neg_fit)  # layer+1 d_model
    n_dirs = dirs.shape[0]
    key = jax.random.key(cfg.seed)
    random = jax.random.normal(key, (cfg.n_random, model.d_model))
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    contrast = jnp.asarray(np.concatenate([pos_test, neg_test]))
    ablated = ablation_sweep(model, params, jnp.concatenate([unit(dirs), unit(random)]), contrast,
                             cfg.n_prompts, probe, probe_half_len, cfg.answers)
    clean_logits = model(params, contrast)
    clean_sep = float(_separation(_answer_diff(clean_logits, cfg.answers), cfg.n_prompts))
    clean_loss = float(repeated_loss(model(params, probe), probe, probe_half_len))
    sep = np.asarray(ablated["separation"], np.float64)
    loss = np.asarray(ablated["repeated_loss"], np.float64)
    scales = jnp.asarray(cfg.scales, jnp.float32)
    negative = jnp.asarray(neg_test)
    last = model.n_layers - 1
    sites = [(l, "hook_resid_pre") for l in range(model.n_layers)] + [(last, "hook_resid_post")]
    steered = [steering_sweep(model, params, dirs[i], l, point, negative, scales, cfg.answers)
               for i, (l, point) in enumerate(sites)]
    rand_vec = unit(random[0]) * jnp.linalg.norm(dirs[-1])
    steered_random = steering_sweep(model, params, rand_vec, last, "hook_resid_post", negative,
                                    scales, cfg.answers)
    r4 = lambda x: np.round(np.asarray(x, np.float64), 4).tolist()
    return {
        "answers": [A, B], "layers": [f"resid_pre {l}" for l in range(model.n_layers)] + ["output"],
        "direction_norms": r4(jnp.linalg.norm(dirs, axis=-1)),
        "clean_separation": round(clean_sep, 4),
        "clean_repeated_loss": round(clean_loss, 4),
        "ablated_separation_fraction": r4(sep[:n_dirs] / clean_sep),
        "random_separation_fraction_mean": round(float(np.mean(sep[n_dirs:]) / clean_sep), 4),
        "random_separation_fraction_std": round(float(np.std(sep[n_dirs:]) / clean_sep), 4),
        "ablated_repeated_loss": r4(loss[:n_dirs]),
        "random_repeated_loss_mean": round(float(np.mean(loss[n_dirs:])), 4),
        "scales": [float(s) for s in cfg.scales],
        "steered_flipped": [r4(s["flipped"]) for s in steered],
        "steered_logit_diff": [r4(s["logit_diff"]) for s in steered],
        "random_steered_flipped": r4(steered_random["flipped"]),
    }
