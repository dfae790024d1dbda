"""Geometry of trained toy models: feature dimensionality, dimensions per feature, angles.

Definitions (Elhage et al. 2022, "Feature Dimensionality" and "Uniform Superposition"):

* ``D_i = ||W_i||^2 / sum_j (W_hat_i . W_j)^2`` with ``j`` running over all features including
  ``i``. A feature with its own dimension has ``D_i = 1``; ``k`` features sharing ``d``
  dimensions as a regular polytope (tight frame) have ``D_i = d / k``: 1/2 for an antipodal pair,
  2/3 for a triangle, 3/4 for a tetrahedron, 2/5 for a pentagon, 3/8 for a square antiprism.
  A feature that is not represented (``W_i = 0``) gets ``D_i = 0``.
* Dimensions per feature ``D* = m / ||W||_F^2``: 1 when every represented feature has a
  dimension of its own and unit norm, 1/2 for antipodal pairs, and so on.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

# The fractions the paper's D_i scatter shows as horizontal lines (dedicated, tetrahedron,
# triangle, antipodal pair, pentagon, square antiprism).
DIMENSIONALITY_LINES = {"1": 1.0, "3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375}

_NORM_FLOOR = 1e-6  # below this a feature counts as not represented (the notebook's clamp)


def feature_dimensionality(W: Float[Array, "..."]) -> Float[Array, " feature"]:
    """``D_i`` for every column of ``W`` (0 for columns with norm below 1e-6).

    Args:
        W: ``[hidden, feature]``. The annotation accepts any rank so that a wrong one reaches
            the check below, whose ValueError names the layout it expects.
    """
    if W.ndim != 2:
        raise ValueError(f"W must be [hidden, feature], got shape {tuple(W.shape)}")
    norms = jnp.linalg.norm(W, axis=0)  # [feature]
    unit = W / jnp.maximum(norms, _NORM_FLOOR)[None, :]  # [hidden feature]
    overlaps = unit.T @ W  # [feature feature], row i: W_hat_i . W_j
    interference = jnp.sum(overlaps**2, axis=1)  # [feature]
    safe = jnp.where(norms > _NORM_FLOOR, interference, 1.0)
    return jnp.where(norms > _NORM_FLOOR, norms**2 / safe, 0.0)


def dims_per_feature(W: Float[Array, "hidden feature"]) -> Float[Array, ""]:
    """``m / ||W||_F^2``: how many hidden dimensions each (unit-norm) feature gets."""
    if W.ndim != 2:
        raise ValueError(f"W must be [hidden, feature], got shape {tuple(W.shape)}")
    return W.shape[0] / jnp.sum(W**2)


def angular_gaps_deg(W: Float[ArrayLike, "..."]) -> Float[np.ndarray, " feature"]:
    """Gaps in degrees between neighbouring feature directions of a 2-D model, sorted by angle.

    The gaps go once around the circle, so they sum to 360. A regular pentagon gives five 72s.

    Args:
        W: ``[2, feature]``. The annotation accepts any shape so that a wrong one reaches the
            check below, whose ValueError names the layout it expects.
    """
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[0] != 2:
        raise ValueError(f"angular gaps need a [2, feature] matrix, got shape {W.shape}")
    angles = np.sort(np.degrees(np.arctan2(W[1], W[0])) % 360.0)
    return np.diff(np.append(angles, angles[0] + 360.0))


def histogram_peaks(
    values: np.ndarray,
    *,
    lo: float = 0.0,
    hi: float = 1.05,
    bandwidth: float = 0.01,
    min_fraction: float = 0.03,
) -> list[float]:
    """Locations of the modes of a Gaussian kernel density of ``values`` on ``[lo, hi]``.

    A mode counts when it is a strict local maximum of the density and holds at least
    ``min_fraction`` of the points within one bandwidth either side, which drops the ripples that
    a handful of stray points make. Used to read off where feature dimensionalities cluster.

    Returns:
        Peak locations, ascending, rounded to 3 decimals.
    """
    values = np.asarray(values, np.float64).ravel()
    if values.size == 0:
        return []
    grid = np.linspace(lo, hi, 2001)
    z = (grid[:, None] - values[None, :]) / bandwidth  # [grid value]
    density = np.exp(-0.5 * z**2).sum(axis=1)
    is_peak = (density[1:-1] > density[:-2]) & (density[1:-1] >= density[2:])
    peaks = []
    for idx in np.nonzero(is_peak)[0] + 1:
        near = np.abs(values - grid[idx]) <= bandwidth
        if near.mean() >= min_fraction:
            peaks.append(round(float(grid[idx]), 3))
    return peaks


# --- the n = 2, m = 1 phase diagram: classification of a trained model ---------------------

NOT_LEARNED, DEDICATED, SUPERPOSITION, OTHER = 0, 1, 2, 3
PHASE_NAMES = ("not learned", "dedicated", "superposition", "other")


def classify_two_feature_model(W: Float[ArrayLike, "1 2"], threshold: float = 0.5) -> int:
    """Which solution an n = 2, m = 1 model found, for the extra feature (index 1).

    Rule: a feature is *represented* when ``|w_i| > threshold`` (learned solutions have
    ``|w_i|`` near 1, unlearned ones near 0). Then: extra feature not represented -> not
    learned; extra represented and feature 0 not -> dedicated; both represented with opposite
    signs -> superposition (antipodal pair); both with the same sign -> other.
    """
    w = np.asarray(W).reshape(-1)
    if w.shape != (2,):
        raise ValueError(f"expected a [1, 2] weight matrix, got shape {np.asarray(W).shape}")
    first, extra = np.abs(w) > threshold
    if not extra:
        return NOT_LEARNED
    if not first:
        return DEDICATED
    return SUPERPOSITION if w[0] * w[1] < 0 else OTHER
