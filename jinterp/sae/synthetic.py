"""Planted-dictionary data: activations built from known features in superposition.

The ground-truth test of dictionary learning (Sharkey et al. 2022, "Taking features out of
superposition"; Elhage et al. 2022): choose ``n_features`` random unit directions in
``d`` dimensions (more features than dimensions, so they must share space), draw sparse
non-negative coefficients whose firing frequencies follow a power law, and form
``x = sum_i c_i d_i``. An SAE trained on ``x`` should learn decoder rows aligned with the
true directions; `feature_recovery` measures the fraction it found (max cosine over learned
rows >= 0.9 is the usual criterion).

Frequencies: feature ``i`` fires independently with probability
``p_i = min(1, s * (i + 1)^-alpha)`` where ``s`` is solved so that ``sum_i p_i`` equals the
requested mean number of active features per sample. Magnitudes of active features are
uniform in ``[magnitude_low, magnitude_high]`` (bounded away from zero, so "active" is
unambiguous).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Shape and statistics of the planted dictionary.

    Attributes:
        n_features: Number of true feature directions.
        d: Ambient dimension (``n_features > d`` means superposition).
        mean_active: Expected number of active features per sample.
        power_law_exponent: alpha of the frequency law ``p_i ∝ (i + 1)^-alpha``.
        magnitude_low, magnitude_high: Range of active coefficients (uniform).
        noise_std: Standard deviation of isotropic Gaussian noise added to ``x``.
    """

    n_features: int = 1024
    d: int = 256
    mean_active: float = 8.0
    power_law_exponent: float = 0.5
    magnitude_low: float = 0.5
    magnitude_high: float = 1.5
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if self.n_features <= 0 or self.d <= 0:
            raise ValueError(f"n_features and d must be positive, got {self.n_features}, {self.d}.")
        if not 0 < self.mean_active <= self.n_features:
            raise ValueError(f"mean_active must be in (0, n_features={self.n_features}], got "
                             f"{self.mean_active}.")
        if not 0 <= self.magnitude_low <= self.magnitude_high:
            raise ValueError("need 0 <= magnitude_low <= magnitude_high, got "
                             f"{self.magnitude_low}, {self.magnitude_high}.")
        if self.power_law_exponent < 0 or self.noise_std < 0:
            raise ValueError("power_law_exponent and noise_std must be >= 0.")


def feature_probabilities(cfg: SyntheticConfig) -> Float[Array, " n_features"]:
    """Firing probability of each feature: a capped power law summing to ``mean_active``."""
    base = (np.arange(cfg.n_features) + 1.0) ** -cfg.power_law_exponent
    lo, hi = 0.0, cfg.mean_active / base[-1]  # at `hi` every p_i is capped at 1 >= target
    for _ in range(100):  # bisection on the scale; sum(min(1, s * base)) is monotone in s
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if np.minimum(1.0, mid * base).sum() < cfg.mean_active else (lo, mid)
    return jnp.asarray(np.minimum(1.0, hi * base), jnp.float32)


def make_dictionary(cfg: SyntheticConfig, key: jax.Array) -> Float[Array, "n_features d"]:
    """``n_features`` random unit directions in ``R^d`` (rows)."""
    dirs = jax.random.normal(key, (cfg.n_features, cfg.d), jnp.float32)
    return dirs / jnp.linalg.norm(dirs, axis=-1, keepdims=True)


def sample_coefficients(cfg: SyntheticConfig, key: jax.Array,
                        batch: int) -> Float[Array, "batch n_features"]:
    """Sparse non-negative coefficients: Bernoulli(p_i) support, uniform magnitudes."""
    k_on, k_mag = jax.random.split(key)
    p = feature_probabilities(cfg)[None, :]  # [1, n_features]
    active = jax.random.bernoulli(k_on, p, (batch, cfg.n_features))
    mags = jax.random.uniform(k_mag, (batch, cfg.n_features), jnp.float32,
                              cfg.magnitude_low, cfg.magnitude_high)
    return jnp.where(active, mags, 0.0)


def sample(cfg: SyntheticConfig, dictionary: Float[Array, "n_features d"], key: jax.Array,
           batch: int) -> tuple[Float[Array, "batch d"], Float[Array, "batch n_features"]]:
    """A batch ``(x, coefficients)`` with ``x = coefficients @ dictionary (+ noise)``."""
    k_coef, k_noise = jax.random.split(key)
    coeffs = sample_coefficients(cfg, k_coef, batch)
    x = coeffs @ dictionary  # [batch, d]
    if cfg.noise_std > 0:
        x = x + cfg.noise_std * jax.random.normal(k_noise, x.shape, x.dtype)
    return x, coeffs


def max_cosine(true_dirs: Float[Array | np.ndarray, "n_features d"],
               W_dec: Float[Array | np.ndarray, "d_sae d"]) -> Float[Array, " n_features"]:
    """For each true direction, the largest cosine similarity with any learned decoder row."""
    if true_dirs.ndim != 2 or W_dec.ndim != 2 or true_dirs.shape[1] != W_dec.shape[1]:
        raise ValueError(f"true_dirs {tuple(true_dirs.shape)} and W_dec {tuple(W_dec.shape)} must "
                         "be [n_features, d] and [d_sae, d] with the same d.")
    t = true_dirs / jnp.maximum(jnp.linalg.norm(true_dirs, axis=-1, keepdims=True), 1e-12)
    w = W_dec / jnp.maximum(jnp.linalg.norm(W_dec, axis=-1, keepdims=True), 1e-12)
    return jnp.max(t @ w.T, axis=-1)  # [n_features]


def feature_recovery(true_dirs: Float[Array | np.ndarray, "n_features d"],
                     W_dec: Float[Array | np.ndarray, "d_sae d"],
                     threshold: float = 0.9) -> Float[Array, ""]:
    """Fraction of true features matched by some decoder row at cosine >= ``threshold``."""
    return jnp.mean((max_cosine(true_dirs, W_dec) >= threshold).astype(jnp.float32))
