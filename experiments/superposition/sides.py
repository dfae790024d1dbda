"""Which sides of ``|x_i|`` the absolute-value model computes, and on which neurons.

``|x| = ReLU(x) + ReLU(-x)``, so the task splits into ``2n`` *sides* ``(i, s)``: feature ``i``
with sign ``s``. A side can only be computed through a neuron that is active on it
(``s W1[k, i] > 0``) and writes to ``y_i`` (``W2[i, k] > 0``). Without superposition a neuron
carries one side of one feature, so ``m`` neurons compute at most ``m`` sides; a neuron that
carries computed sides of two features is computing in superposition, and a model with more
computed sides than neurons must have such neurons (pigeonhole).

Each side is probed on its own, ``x = t s e_i`` for ``t`` on a grid in ``(0, 1]``: the side is
*computed* when the hidden layer removes at least half of the squared error that the output
bias alone (``ReLU(b_i)``) leaves, so a positive bias cannot pass for computation. The probe
reads the circuit, not its interference: the full-distribution errors of
:func:`.computation.per_feature_error` carry that.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float
from numpy.typing import ArrayLike

SIGNS = (1.0, -1.0)


def side_errors(
    W1: Float[ArrayLike, "hidden feature"],
    W2: Float[ArrayLike, "feature hidden"],
    b: Float[ArrayLike, " feature"],
    n_grid: int = 64,
) -> Float[np.ndarray, "feature 2"]:
    """Squared error of each side alone, relative to the bias-only output's error.

    Column 0 is the positive side, column 1 the negative one. 0 means the side is computed
    exactly, 1 means the hidden layer adds nothing to ``ReLU(b_i)`` there.
    """
    W1, W2, b = (np.asarray(a, np.float64) for a in (W1, W2, b))
    if W1.ndim != 2 or W2.shape != W1.shape[::-1] or b.shape != (W1.shape[1],):
        raise ValueError(f"need W1 [hidden feature], W2 [feature hidden], b [feature]; got "
                         f"{W1.shape}, {W2.shape}, {b.shape}")
    t = (np.arange(n_grid) + 0.5) / n_grid  # [t]
    out = np.zeros((W1.shape[1], 2))
    bias_only = np.maximum(b, 0.0)  # [feature]
    for c, s in enumerate(SIGNS):
        h = np.maximum(0.0, s * t[:, None, None] * W1.T[None])  # [t feature hidden]
        y = np.maximum(0.0, (h * W2[None]).sum(-1) + b[None])  # [t feature]
        err = ((t[:, None] - y) ** 2).sum(0)
        base = ((t[:, None] - bias_only[None]) ** 2).sum(0)
        out[:, c] = err / np.maximum(base, 1e-12)
    return out


def side_supports(
    W1: Float[ArrayLike, "hidden feature"],
    W2: Float[ArrayLike, "feature hidden"],
    share: float = 0.25,
) -> np.ndarray:
    """Boolean ``[hidden, feature, 2]``: does neuron ``k`` carry side ``(i, s)``?

    Neuron ``k``'s slope on side ``(i, s)`` is ``W2[i, k] * ReLU(s W1[k, i])``; it carries the
    side when that is at least ``share`` of the side's total positive slope, or is the largest
    one (rescaling a neuron's input and output weights inversely leaves it unchanged). So every
    side with a positive slope has a carrier, and a neuron never carries both sides of one
    feature: more computed sides than neurons implies a neuron carrying two features.
    """
    W1, W2 = np.asarray(W1, np.float64), np.asarray(W2, np.float64)
    slopes = np.stack([W2.T * np.maximum(0.0, s * W1) for s in SIGNS], -1)  # [hidden feat 2]
    pos = np.maximum(slopes, 0.0)
    total = pos.sum(axis=0, keepdims=True)
    largest = pos >= pos.max(axis=0, keepdims=True)
    return (pos > 0) & ((pos >= share * np.maximum(total, 1e-12)) | largest)


def side_counts(W1, W2, b, max_error: float = 0.5, share: float = 0.25) -> dict:
    """Computed sides, features with one or both sides, and neurons carrying several sides.

    Returns ``computed`` ``[feature, 2]`` and the counts ``n_sides``, ``n_features_any``,
    ``n_features_both``, ``superposed_neurons`` (indices of neurons carrying computed sides of
    at least two features) and ``n_superposed``.
    """
    computed = side_errors(W1, W2, b) < max_error  # [feature 2]
    carries = side_supports(W1, W2, share) & computed[None]  # [hidden feature 2]
    per_neuron = carries.any(axis=2).sum(axis=1)  # features whose computed side it carries
    superposed = np.nonzero(per_neuron >= 2)[0]
    return {"computed": computed, "n_sides": int(computed.sum()),
            "n_features_any": int(computed.any(axis=1).sum()),
            "n_features_both": int(computed.all(axis=1).sum()),
            "superposed_neurons": [int(k) for k in superposed],
            "n_superposed": int(superposed.size)}
