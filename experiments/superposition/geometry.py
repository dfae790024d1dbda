"""Which polytope each feature sits in: line fractions and tegum-factor decomposition.

A trained ReLU-output model often splits its represented features into *tegum factors*: groups
of features living in mutually orthogonal subspaces (Elhage et al. 2022, "Why these geometric
structures?"). Features of different factors do not interfere, so a feature's dimensionality
``D_i`` only depends on its own factor; a factor of ``k`` features spanning ``r`` dimensions as a
uniform polytope (a tight frame) gives every member ``D_i = r / k``.

:func:`tegum_factors` recovers the factors as connected components of the graph that links two
represented features when their directions are not orthogonal (``|cos| > overlap_tol``), and
measures each factor's size ``k`` and rank ``r``. That is what labels a histogram peak of
``D_i``: the peaks at 1/2, 2/5, 3/8 are digons (k=2, r=1), pentagons (5, 2) and square antiprisms
(8, 3), and a peak off those lines is explained by the factor types that populate it.
"""

from __future__ import annotations

import collections

import numpy as np
from jaxtyping import ArrayLike, Float

# The paper's named lines of the D_i scatter (0 and 1 left out: not learned / dense regime).
POLYTOPE_LINES = {"3/4": 0.75, "2/3": 2 / 3, "1/2": 0.5, "2/5": 0.4, "3/8": 0.375}


def line_fractions(
    d: Float[ArrayLike, " n"], lines: dict[str, float] = POLYTOPE_LINES, tol: float = 0.02
) -> dict[str, float]:
    """Fraction of ``d`` within ``tol`` of each line, each value counted for its nearest line only.

    With ``tol = 0.02`` the windows of 2/5 and 3/8 (0.025 apart) would overlap; assigning a value
    to the nearest line keeps every feature in at most one line, so fractions add up to <= 1.
    """
    d = np.asarray(d, np.float64).ravel()
    if d.size == 0:
        return {name: 0.0 for name in lines}
    values = np.array(list(lines.values()))
    dist = np.abs(d[:, None] - values[None, :])  # [n line]
    nearest = dist.argmin(axis=1)
    hit = dist[np.arange(d.size), nearest] <= tol
    return {name: float(np.mean(hit & (nearest == k))) for k, name in enumerate(lines)}


def lines_held(fractions: dict[str, float], min_fraction: float = 0.03) -> int:
    """How many lines hold at least ``min_fraction`` of the features (the issue's target: >= 4)."""
    return int(sum(v >= min_fraction for v in fractions.values()))


def _components(adjacency: np.ndarray) -> np.ndarray:
    """Connected-component label of every node of a boolean adjacency matrix (BFS)."""
    n = adjacency.shape[0]
    labels = np.full(n, -1)
    current = 0
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start] = current
        frontier = [start]
        while frontier:
            node = frontier.pop()
            for nxt in np.nonzero(adjacency[node] & (labels < 0))[0]:
                labels[nxt] = current
                frontier.append(nxt)
        current += 1
    return labels


def tegum_factors(
    W: Float[ArrayLike, "hidden feature"],
    represented: np.ndarray,
    overlap_tol: float = 0.05,
    rank_tol: float = 0.1,
) -> tuple[np.ndarray, list[dict]]:
    """Splits the represented features of one model into tegum factors.

    Args:
        W: ``[hidden, feature]`` weights of one model.
        represented: ``[feature]`` bool mask; other features belong to no factor.
        overlap_tol: two features are linked when ``|cos(W_i, W_j)| > overlap_tol``.
        rank_tol: a factor's rank counts singular values above ``rank_tol`` times its largest.

    Returns:
        ``labels`` (``[feature]``, factor index or -1) and one dict per factor with its
        ``features`` (indices), ``size`` k, ``rank`` r and ``predicted`` r/k.
    """
    W = np.asarray(W, np.float64)
    represented = np.asarray(represented, bool)
    if W.ndim != 2 or represented.shape != (W.shape[1],):
        raise ValueError(f"need W [hidden, feature] and represented [feature], got {W.shape} "
                         f"and {represented.shape}")
    idx = np.nonzero(represented)[0]
    labels = np.full(W.shape[1], -1)
    if idx.size == 0:
        return labels, []
    unit = W[:, idx] / np.linalg.norm(W[:, idx], axis=0, keepdims=True)
    comp = _components(np.abs(unit.T @ unit) > overlap_tol)
    factors = []
    for c in range(comp.max() + 1):
        members = idx[comp == c]
        s = np.linalg.svd(W[:, members], compute_uv=False)
        rank = int(np.sum(s > rank_tol * s[0]))
        labels[members] = c
        factors.append({"features": members.tolist(), "size": int(members.size),
                        "rank": rank, "predicted": rank / members.size})
    return labels, factors


def explain_peaks(
    peaks: list[float],
    d: np.ndarray,
    factor_type: list[tuple[int, int]],
    window: float = 0.01,
    top: int = 3,
) -> list[dict]:
    """For every histogram peak, the factor types (rank r, size k) of the features under it.

    Args:
        peaks: peak locations of the D_i histogram.
        d: ``[n]`` D_i of the represented features (pooled over models).
        factor_type: ``[n]`` (rank, size) of each of those features' tegum factor.
        window: a feature is under a peak when ``|D_i - peak| <= window``.
        top: how many of the most common factor types to report per peak.

    Returns:
        One dict per peak: ``peak``, ``n_features`` under it, and ``factors``, a list of
        ``{"rank", "size", "share", "mean_D"}`` sorted by share.
    """
    d = np.asarray(d, np.float64)
    out = []
    for peak in peaks:
        under = np.nonzero(np.abs(d - peak) <= window)[0]
        counts = collections.Counter(factor_type[i] for i in under)
        rows = []
        for (rank, size), count in counts.most_common(top):
            sel = [i for i in under if factor_type[i] == (rank, size)]
            rows.append({"rank": rank, "size": size, "share": count / max(len(under), 1),
                         "mean_D": float(np.mean(d[sel]))})
        out.append({"peak": float(peak), "n_features": int(len(under)), "factors": rows})
    return out
