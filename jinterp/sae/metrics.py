"""Evaluation metrics of an SAE's reconstruction and sparsity.

All functions take arrays with any number of leading token axes: ``x`` and ``x_hat``
``[..., d]`` (input / target and reconstruction), ``f`` ``[..., d_sae]`` (latents). Every
average is over tokens, with equal weight per token. Definitions follow
SAELens/SAEBench ``get_sparsity_and_variance_metrics`` except where noted:

* ``fvu = E||x - x_hat||^2 / E||x - E[x]||^2`` — the centred fraction of variance unexplained,
  pooling variance over all dimensions (Gemma Scope / SAEBench intent). ``explained_variance
  = 1 - fvu``.
* `explained_variance_saelens` reproduces the formula of SAELens up to at least commit
  91ca16c (2025), ``1 - E||x - x_hat||^2 / (E||x||^2 - (mean_{tokens,dims} x^2)^2)``: it
  squares *before* averaging the per-dimension means, so the "variance" is close to the
  uncentred second moment and the score is inflated when activations have a large mean
  (residual streams do). Use it only to compare with numbers produced by those versions;
  SAELens 6.54 (checked) computes the centred definition, equal to our `explained_variance`.
* `explained_variance_legacy` is SAELens' older per-token ratio, ``mean_t[1 - ||x_t -
  x_hat_t||^2 / ||x_t - mean_batch(x)||^2]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

ArrayIn = Array | np.ndarray  # metrics of host (numpy) activations work too

_EPS = 1e-12


def _tokens(a: ArrayIn) -> Array:
    return jnp.asarray(a).reshape(-1, a.shape[-1]).astype(jnp.float32)


def _check_pair(x: ArrayIn, x_hat: ArrayIn) -> None:
    if x.shape != x_hat.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but x_hat has shape {tuple(x_hat.shape)}; "
                         "they must match.")


# ----------------------------------------------------------------------------- sparsity
def l0(f: Float[ArrayIn, "... d_sae"]) -> Float[Array, ""]:
    """Mean number of non-zero latents per token."""
    return jnp.mean(jnp.sum(_tokens(f) != 0, axis=-1).astype(jnp.float32))


def l1(f: Float[ArrayIn, "... d_sae"]) -> Float[Array, ""]:
    """Mean L1 norm of the latents per token."""
    return jnp.mean(jnp.sum(jnp.abs(_tokens(f)), axis=-1))


def feature_density(f: Float[ArrayIn, "... d_sae"]) -> Float[Array, " d_sae"]:
    """Fraction of tokens on which each latent is non-zero."""
    return jnp.mean((_tokens(f) != 0).astype(jnp.float32), axis=0)


def feature_density_histogram(f: Float[ArrayIn, "... d_sae"], bins: int = 40,
                              log10_range: tuple[float, float] = (-8.0, 0.0)):
    """Histogram of ``log10(feature density)`` over the latents that fired at least once.

    Returns:
        ``(counts [bins], edges [bins + 1], n_dead)``; dead latents (density 0, log undefined)
        are counted separately as ``n_dead``. Densities below the range go in the first bin.
    """
    density = feature_density(f)
    alive = density > 0
    logd = jnp.clip(jnp.log10(jnp.where(alive, density, 1.0)), log10_range[0], log10_range[1])
    edges = jnp.linspace(log10_range[0], log10_range[1], bins + 1)
    counts, _ = jnp.histogram(logd, bins=edges, weights=alive.astype(jnp.float32))
    return counts.astype(jnp.int32), edges, jnp.sum(~alive)


def dead_fraction(f: Float[ArrayIn, "... d_sae"]) -> Float[Array, ""]:
    """Fraction of latents that never fire on these tokens."""
    return jnp.mean((feature_density(f) == 0).astype(jnp.float32))


def dense_fraction(f: Float[ArrayIn, "... d_sae"], threshold: float = 0.1) -> Float[Array, ""]:
    """Fraction of latents firing on more than ``threshold`` of tokens (default 10%)."""
    return jnp.mean((feature_density(f) > threshold).astype(jnp.float32))


# ----------------------------------------------------------------------------- reconstruction
def mse(x: Float[ArrayIn, "... d"], x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """``E_tokens ||x - x_hat||^2`` (summed over dimensions, mean over tokens)."""
    _check_pair(x, x_hat)
    return jnp.mean(jnp.sum(jnp.square(_tokens(x) - _tokens(x_hat)), axis=-1))


def total_variance(x: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """``E||x - E[x]||^2``: variance summed over dimensions."""
    xt = _tokens(x)
    return jnp.mean(jnp.sum(jnp.square(xt - jnp.mean(xt, axis=0, keepdims=True)), axis=-1))


def fvu(x: Float[ArrayIn, "... d"], x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """Fraction of variance unexplained, centred: ``E||x - x_hat||^2 / E||x - E[x]||^2``."""
    return mse(x, x_hat) / jnp.maximum(total_variance(x), _EPS)


def explained_variance(x: Float[ArrayIn, "... d"],
                       x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """``1 - fvu`` (centred; the quantity Gemma Scope and SAEBench report)."""
    return 1.0 - fvu(x, x_hat)


def explained_variance_saelens(x: Float[ArrayIn, "... d"],
                               x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """SAELens' formula up to commit 91ca16c: squares before averaging (see module docstring)."""
    xt = _tokens(x)
    mean_sq_norm = jnp.mean(jnp.sum(jnp.square(xt), axis=-1))  # E||x||^2
    mean_sq_entry = jnp.mean(jnp.square(xt))  # mean over tokens and dims of x^2
    return 1.0 - mse(x, x_hat) / (mean_sq_norm - jnp.square(mean_sq_entry))


def explained_variance_legacy(x: Float[ArrayIn, "... d"],
                              x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """SAELens' older per-token ratio ``mean_t[1 - ||x_t - x_hat_t||^2 / ||x_t - mean(x)||^2]``."""
    _check_pair(x, x_hat)
    xt, ht = _tokens(x), _tokens(x_hat)
    resid = jnp.sum(jnp.square(xt - ht), axis=-1)
    spread = jnp.sum(jnp.square(xt - jnp.mean(xt, axis=0, keepdims=True)), axis=-1)
    return jnp.mean(1.0 - resid / spread)


def cosine_similarity(x: Float[ArrayIn, "... d"],
                      x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """Mean over tokens of ``cos(x, x_hat)``."""
    _check_pair(x, x_hat)
    xt, ht = _tokens(x), _tokens(x_hat)
    dots = jnp.sum(xt * ht, axis=-1)
    norms = jnp.linalg.norm(xt, axis=-1) * jnp.linalg.norm(ht, axis=-1)
    return jnp.mean(dots / jnp.maximum(norms, _EPS))


def l2_ratio(x: Float[ArrayIn, "... d"], x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """Mean over tokens of ``||x_hat|| / ||x||`` (below 1: shrinkage). Like SAELens, tokens with
    ``||x|| < 1e-4`` divide by 1 instead."""
    _check_pair(x, x_hat)
    nx = jnp.linalg.norm(_tokens(x), axis=-1)
    nx = jnp.where(nx < 1e-4, 1.0, nx)
    return jnp.mean(jnp.linalg.norm(_tokens(x_hat), axis=-1) / nx)


def relative_reconstruction_bias(x: Float[ArrayIn, "... d"],
                                 x_hat: Float[ArrayIn, "... d"]) -> Float[Array, ""]:
    """``E||x_hat||^2 / E[x . x_hat]`` (Gated SAE paper, eq. 10): the optimal rescaling of
    ``x_hat`` is its inverse; 1 means no systematic shrinkage."""
    _check_pair(x, x_hat)
    xt, ht = _tokens(x), _tokens(x_hat)
    return jnp.mean(jnp.sum(ht * ht, axis=-1)) / jnp.mean(jnp.sum(xt * ht, axis=-1))


def summary(x: Float[ArrayIn, "... d"], x_hat: Float[ArrayIn, "... d"],
            f: Float[ArrayIn, "... d_sae"]) -> dict[str, Array]:
    """All scalar metrics in one dict (the feature-density histogram is left out)."""
    return {
        "l0": l0(f),
        "l1": l1(f),
        "mse": mse(x, x_hat),
        "fvu": fvu(x, x_hat),
        "explained_variance": explained_variance(x, x_hat),
        "explained_variance_saelens": explained_variance_saelens(x, x_hat),
        "explained_variance_legacy": explained_variance_legacy(x, x_hat),
        "cosine_similarity": cosine_similarity(x, x_hat),
        "l2_ratio": l2_ratio(x, x_hat),
        "relative_reconstruction_bias": relative_reconstruction_bias(x, x_hat),
        "dead_fraction": dead_fraction(f),
        "dense_fraction": dense_fraction(f),
    }
