"""A difference-in-means direction for "the in-context answer is A, not B": ablate it, add it.

Contrast sets (:func:`.data.contrast_prompts`): prompts ``r r[:k+1]`` whose induction answer
(the token after the last token's earlier occurrence) is ``A`` (positive) or ``B``
(negative). :func:`jinterp.steering.diff_in_means` at the last position gives one direction
after every block (``hook_resid_post``). Two held-out tests, each one compiled program:

* directional ablation (:func:`jinterp.steering.ablation_hooks`: projected out of every
  residual, every position; Arditi et al. 2024) of each layer's direction, against random
  unit directions: how much of the held-out logit-difference separation
  ``mean_pos(l_A - l_B) - mean_neg(l_A - l_B)`` survives, and the loss on the repeated
  tokens of the ``r r`` probe (a targeted direction leaves other predictions alone).
  The clean run and all directions are one program (the directions a ``vmap``).
* steering (``jinterp.At`` + ``jinterp.Steer``, the hooks :func:`jinterp.steering.steer`
  builds, at the last position): adding ``scale * v`` to the negative prompts where it was
  read; the share of prompts whose top prediction becomes ``A``, over a sweep of scales (scale
  1 moves the negative mean onto the positive mean), against a random vector of the same norm
  as the output's direction. Vectors, layers and scales are all ``vmap`` axes.

Expected: the answer is written by the induction heads (layer 1), so only the direction read
after layer 1 carries it; after layer 0 the last position knows little about ``A``.
"""

from __future__ import annotations

import dataclasses
import functools

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


def directions(model, params, positive, negative) -> Float[Array, "layer d_model"]:
    """Difference in means at the last position after every block (``hook_resid_post``)."""
    return steering.diff_in_means(model, params, positive, negative, point="hook_resid_post")


def _answer_diff(logits: Float[Array, "batch pos d_vocab"], answers) -> Float[Array, " batch"]:
    return logits[:, -1, answers[0]] - logits[:, -1, answers[1]]


@functools.partial(jax.jit, static_argnames=("model", "n_pos", "half_len", "answers"))
def ablation_sweep(model, params, dirs: Float[Array, "n d_model"],
                   contrast: Int[Array, "batch pos"], probe: Int[Array, "b2 pos2"], *,
                   n_pos: int, half_len: int, answers: tuple[int, int]
                   ) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """``(clean, ablated)`` separation and ``r r`` repeated-token loss, ablated for each
    direction (one program: the directions are a ``vmap``).

    ``contrast`` holds the ``n_pos`` positive prompts, then the negative ones.
    """

    def measure(hooks):
        diff = _answer_diff(jinterp.run_with_hooks(model, params, contrast, hooks), answers)
        loss = repeated_loss(jinterp.run_with_hooks(model, params, probe, hooks), probe,
                             half_len)
        return diff[:n_pos].mean() - diff[n_pos:].mean(), loss

    ablated = jax.vmap(lambda d: measure(steering.ablation_hooks(model, d)))(dirs)
    return measure({}), ablated


@functools.partial(jax.jit, static_argnames=("model", "answers"))
def steering_sweep(model, params, vectors: Float[Array, "n d_model"], layers: Int[Array, " n"],
                   negative: Int[Array, "batch pos"], scales: Float[Array, " scale"], *,
                   answers: tuple[int, int]) -> tuple[Array, Array]:
    """``scale * vectors[i]`` added to ``blocks.{layers[i]}.hook_resid_post`` at the last
    position: the share of prompts answering ``A`` and the mean ``l_A - l_B``, ``[n, scale]``.

    The layer is data (``jinterp.At`` with a traced layer) and both the vectors and the scales
    are ``vmap`` axes, so the whole sweep is one program; :func:`jinterp.steering.steer` builds
    the same hooks for a fixed layer.
    """

    def one(vector, layer, scale):
        hooks = {"hook_resid_post": jinterp.At(layer, jinterp.Steer(vector, scale, pos=-1))}
        logits = jinterp.run_with_hooks(model, params, negative, hooks)
        return (logits[:, -1].argmax(-1) == answers[0]).mean(), _answer_diff(logits,
                                                                             answers).mean()

    over_scales = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(over_scales, in_axes=(0, 0, None))(vectors, layers, scales)


def steering_study(model, params, cfg: SteeringConfig, d_vocab: int,
                   probe: Int[Array, "batch pos"], probe_half_len: int) -> dict:
    """Both tests; JSON-ready numbers (see the module docstring)."""
    A, B = cfg.answers
    make = lambda i, answer, other: contrast_prompts(
        cfg.seed + i, d_vocab, cfg.half_len, cfg.answer_at, cfg.n_prompts, answer, (other,))
    pos_fit, neg_fit = make(0, A, B), make(1, B, A)
    pos_test, neg_test = make(2, A, B), make(3, B, A)
    dirs = directions(model, params, pos_fit, neg_fit)  # layer d_model
    n_dirs = dirs.shape[0]
    random = jax.random.normal(jax.random.key(cfg.seed), (cfg.n_random, model.d_model))
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    contrast = jnp.asarray(np.concatenate([pos_test, neg_test]))
    (clean_sep, clean_loss), (sep, loss) = ablation_sweep(
        model, params, jnp.concatenate([unit(dirs), unit(random)]), contrast, probe,
        n_pos=cfg.n_prompts, half_len=probe_half_len, answers=tuple(cfg.answers))
    clean_sep, clean_loss = float(clean_sep), float(clean_loss)
    sep, loss = np.asarray(sep, np.float64), np.asarray(loss, np.float64)
    last = model.n_layers - 1
    rand_vec = unit(random[0]) * jnp.linalg.norm(dirs[-1])  # as long as the output direction
    vectors = jnp.concatenate([dirs, rand_vec[None]])
    layers = jnp.array([*range(model.n_layers), last], jnp.int32)
    flipped, diff = steering_sweep(model, params, vectors, layers, jnp.asarray(neg_test),
                                   jnp.asarray(cfg.scales, jnp.float32),
                                   answers=tuple(cfg.answers))
    r4 = lambda x: np.round(np.asarray(x, np.float64), 4).tolist()
    return {
        "answers": [A, B], "layers": [f"resid_post {l}" for l in range(model.n_layers)],
        "direction_norms": r4(jnp.linalg.norm(dirs, axis=-1)),
        "clean_separation": round(clean_sep, 4),
        "clean_repeated_loss": round(clean_loss, 4),
        "ablated_separation_fraction": r4(sep[:n_dirs] / clean_sep),
        "random_separation_fraction_mean": round(float(np.mean(sep[n_dirs:]) / clean_sep), 4),
        "random_separation_fraction_std": round(float(np.std(sep[n_dirs:]) / clean_sep), 4),
        "ablated_repeated_loss": r4(loss[:n_dirs]),
        "random_repeated_loss_mean": round(float(np.mean(loss[n_dirs:])), 4),
        "scales": [float(s) for s in cfg.scales],
        "steered_flipped": r4(flipped[:n_dirs]),
        "steered_logit_diff": r4(diff[:n_dirs]),
        "random_steered_flipped": r4(flipped[n_dirs]),
    }
