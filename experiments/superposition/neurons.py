"""Reading a privileged basis: which features each neuron carries.

With a ReLU on the hidden layer the rows of the input weights are neurons and can be read
directly (Elhage et al. 2022, "Superposition in a Privileged Basis"). A feature *is on* a neuron
when its weight there is at least ``rel_tol`` of that neuron's largest weight (in absolute
value) and above ``abs_floor``; a neuron is *monosemantic* with exactly one feature on it,
*polysemantic* with two or more, *dead* with none.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import ArrayLike, Float


def features_on_neurons(
    W: Float[ArrayLike, "hidden feature"], rel_tol: float = 0.2, abs_floor: float = 0.1
) -> np.ndarray:
    """Boolean ``[neuron, feature]``: is the feature on the neuron (see module doc)?"""
    A = np.abs(np.asarray(W, np.float64))
    if A.ndim != 2:
        raise ValueError(f"W must be [neuron, feature], got shape {A.shape}")
    row_max = A.max(axis=1, keepdims=True)
    return (A >= rel_tol * row_max) & (A > abs_floor)


def neuron_counts(W: Float[ArrayLike, "hidden feature"], **kw) -> dict[str, int]:
    """Numbers of monosemantic, polysemantic and dead neurons."""
    per = features_on_neurons(W, **kw).sum(axis=1)
    return {"monosemantic": int((per == 1).sum()), "polysemantic": int((per >= 2).sum()),
            "dead": int((per == 0).sum())}


def aligned_fraction(
    W: Float[ArrayLike, "hidden feature"], represented: np.ndarray, share: float = 0.9
) -> float:
    """Fraction of represented features whose weight lies on one neuron.

    Feature ``i`` is aligned when one neuron holds at least ``share`` of ``||W_i||^2``
    (``share = 0.9``: its largest weight is at least 3x the root-sum-square of the others).
    Returns 0 when no feature is represented.
    """
    W = np.asarray(W, np.float64)
    represented = np.asarray(represented, bool)
    if not represented.any():
        return 0.0
    sq = W[:, represented] ** 2
    return float(np.mean(sq.max(axis=0) / sq.sum(axis=0) >= share))
