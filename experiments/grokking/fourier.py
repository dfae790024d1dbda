"""Fourier tools of the grokking analysis: the basis, trig directions of a+b, key frequencies, Gini.

Nanda et al. show that the trained model computes ``(a + b) mod p`` with a few "key" frequencies
``w_k = 2 pi k / p``: embeddings are sparse in the Fourier basis over ``a``; MLP neurons are
(mostly) functions of a single frequency; the logits are sums of ``cos(w_k (a + b - c))``.

Conventions (the authors' ``make_fourier_basis``): for odd ``p`` the basis has ``p`` orthonormal
rows ``[1, cos w_1 x, sin w_1 x, ..., cos w_K x, sin w_K x] / norm`` with ``K = (p - 1) / 2``; row
``2k - 1`` is ``cos k`` and row ``2k`` is ``sin k``. Grid tensors are indexed ``a * p + b``
(:mod:`jinterp.experiments.grokking.data`).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float, Int


def fourier_basis(p: int) -> Float[np.ndarray, "p p"]:
    """Orthonormal real Fourier basis of functions on ``Z_p`` (rows are basis vectors)."""
    if p % 2 == 0:
        raise ValueError(
            f"fourier_basis expects an odd modulus (the task uses a prime), got p={p}.")
    x = np.arange(p)
    rows = [np.ones(p)]
    for k in range(1, p // 2 + 1):
        rows += [np.cos(2 * np.pi * k * x / p), np.sin(2 * np.pi * k * x / p)]
    basis = np.stack(rows)
    return basis / np.linalg.norm(basis, axis=1, keepdims=True)


def fourier_2d(grid_values: Float[np.ndarray, "n_pairs ..."],
               p: int) -> Float[np.ndarray, "p p ..."]:
    """Coefficients in the 2-D basis ``F[f] (x) F[g]`` of values on the ``(a, b)`` grid."""
    if grid_values.shape[0] != p * p:
        raise ValueError(
            f"expected p*p = {p * p} grid rows (a * p + b), got shape {grid_values.shape}.")
    F = fourier_basis(p)
    square = grid_values.reshape(p, p, *grid_values.shape[1:])  # a b ...
    return np.einsum("ab...,fa,gb->fg...", square, F, F, optimize=True)  # f g ...


def sum_directions(p: int, freqs) -> Float[np.ndarray, "n_dirs n_pairs"]:
    """Unit vectors over the grid along ``cos(w_k (a + b))`` and ``sin(w_k (a + b))`` for each k.

    These are the authors' ``(F_cos (x) F_cos - F_sin (x) F_sin) / sqrt 2`` and
    ``(F_sin (x) F_cos + F_cos (x) F_sin) / sqrt 2``, written in closed form. For distinct
    ``k in [1, (p - 1) / 2]`` all ``2 |freqs|`` vectors are orthonormal.
    """
    freqs = [int(k) for k in freqs]
    if any(not 1 <= k <= p // 2 for k in freqs) or len(set(freqs)) != len(freqs):
        raise ValueError(f"frequencies must be distinct integers in [1, {p // 2}], got {freqs}.")
    a, b = np.divmod(np.arange(p * p), p)
    dirs = []
    for k in freqs:
        angle = 2 * np.pi * k * (a + b) / p
        dirs += [np.cos(angle), np.sin(angle)]
    dirs = np.asarray(dirs).reshape(-1, p * p)
    return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def project(values: Float[np.ndarray, "n_pairs n_out"],
            dirs: Float[np.ndarray, "n_dirs n_pairs"]) -> Float[np.ndarray, "n_pairs n_out"]:
    """Orthogonal projection of every output column onto the span of orthonormal ``dirs``."""
    return dirs.T @ (dirs @ values)  # n_pairs n_out


def neuron_frequency_fractions(acts: Float[np.ndarray, "n_pairs d_mlp"],
                               p: int) -> Float[np.ndarray, "n_freq d_mlp"]:
    """For each frequency k = 1..K and neuron, the share of the neuron's variance over the grid
    that lies in the 3 x 3 Fourier block ``{1, cos k, sin k} (x) {1, cos k, sin k}``.

    This is the authors' per-neuron frequency test (``calculate_key_freqs``): activations are
    centred (which removes the constant-constant term), then the squared coefficients in the
    block are divided by the neuron's total. Neurons that never vary get 0 everywhere.
    """
    centred = acts - acts.mean(axis=0, keepdims=True)
    coeffs = fourier_2d(centred, p) ** 2  # p p d_mlp
    total = coeffs.sum(axis=(0, 1))  # d_mlp
    out = []
    for k in range(1, p // 2 + 1):
        idx = [0, 2 * k - 1, 2 * k]
        out.append(coeffs[np.ix_(idx, idx)].sum(axis=(0, 1)))
    block = np.asarray(out)  # n_freq d_mlp
    return np.divide(block, total, out=np.zeros_like(block), where=total > 0)


def key_frequencies(fractions: Float[np.ndarray, "n_freq d_mlp"], threshold: float = 0.85,
                    min_share: float = 0.02) -> tuple[list[int], Int[np.ndarray, " d_mlp"]]:
    """Key frequencies from neuron clusters, and each neuron's cluster (0 = none).

    A neuron belongs to frequency k when k's block explains more than ``threshold`` of its
    variance (the paper's 85% rule). A frequency is *key* when at least ``min_share`` of the
    neurons belong to it: the paper's smallest cluster is 44 of 512 neurons, and the rule keeps a
    stray neuron or two from adding a frequency. The paper gives no threshold; this one is ours.
    """
    best = fractions.argmax(axis=0)  # d_mlp, index k - 1
    single = fractions.max(axis=0) > threshold
    cluster = np.where(single, best + 1, 0)
    counts = np.bincount(cluster, minlength=fractions.shape[0] + 1)
    min_count = max(2, int(np.ceil(min_share * fractions.shape[1])))
    keys = [int(k) for k in range(1, fractions.shape[0] + 1) if counts[k] >= min_count]
    return keys, cluster


def gini(values: Float[np.ndarray, " n"]) -> float:
    """Gini coefficient of non-negative values (Hurley & Rickard 2009): 0 = flat, -> 1 = sparse.

    ``G = 1 - 2 sum_i (c_(i) / |c|_1) (N - i + 1/2) / N`` with ``c`` sorted ascending, i = 1..N.
    """
    c = np.sort(np.abs(np.asarray(values, dtype=np.float64)))
    n = c.size
    if n == 0 or c.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(1 - 2 * np.sum((c / c.sum()) * (n - i + 0.5) / n))


def embed_fourier_norms(W_E: Float[np.ndarray, "d_vocab d_model"],
                        p: int) -> Float[np.ndarray, " p"]:
    """Norm of each Fourier component of the embedding over the input axis (``=`` row dropped)."""
    return np.linalg.norm(fourier_basis(p) @ W_E[:p], axis=1)


def neuron_logit_fourier_norms(W_L: Float[np.ndarray, "d_mlp p"],
                               p: int) -> Float[np.ndarray, " p"]:
    """Norm of each Fourier component of ``W_L = W_out W_U`` over the logit axis."""
    return np.linalg.norm(W_L @ fourier_basis(p).T, axis=0)


def frequency_norms(component_norms: Float[np.ndarray, " p"]) -> Float[np.ndarray, " n_freq"]:
    """Per-frequency norms ``sqrt(cos_k^2 + sin_k^2)`` from the ``p`` component norms.

    The constant component (index 0) is left out: it belongs to no frequency.
    """
    return np.sqrt(component_norms[1::2] ** 2 + component_norms[2::2] ** 2)
