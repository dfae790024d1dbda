"""Feature dimensionality with restarts: the paper's D_i scatter and its polytope lines.

The grid is ``n_sparsities x n_restarts`` independent ReLU-output models (uniform importance),
vmapped and trained as one program. Per sparsity the restart with the lowest loss on a common
evaluation batch is kept, as the authors did for their cleanest figures ("fitting each model
multiple times and taking the solution with the lowest loss"). Every represented feature of
the kept models gives one ``D_i``; the study reports, per polytope line, the fraction of
represented features within ``line_tol`` of it, and decomposes each kept model into tegum
factors (:mod:`.geometry`) to say which geometry every histogram peak is.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from .analysis import dims_per_feature, feature_dimensionality, histogram_peaks
from .geometry import explain_peaks, line_fractions, lines_held, tegum_factors
from .model import ToyModelConfig, instance_loss, sample_features
from .training import TrainConfig, train


@dataclasses.dataclass(frozen=True)
class DimensionalityStudy:
    """Sizes of the feature-dimensionality run.

    ``1 / (1 - S)`` runs log-uniformly from ``min_inv_density`` to ``max_inv_density`` (the
    notebook's ``1 - S = 20 ** -linspace(0, 1, 20)`` by default). A feature is *represented* when
    ``||W_i||^2 > represented_norm_sq``. ``init_std`` (``None``: the notebook's Xavier rule,
    about 0.02 here) sets the scale of the random init of ``W``.
    """

    n_features: int = 200
    n_hidden: int = 20
    n_sparsities: int = 20
    max_inv_density: float = 20.0
    min_inv_density: float = 1.0
    n_restarts: int = 2
    init_std: float | None = None
    represented_norm_sq: float = 0.5
    line_tol: float = 0.02
    eval_batch: int = 4096
    eval_repeats: int = 4
    train: TrainConfig = TrainConfig(steps=10_000, batch_size=256)

    def __post_init__(self):
        for name in ("n_features", "n_hidden", "n_sparsities", "n_restarts", "eval_batch",
                     "eval_repeats"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DimensionalityStudy.{name} must be > 0")
        if not 1 <= self.min_inv_density <= self.max_inv_density:
            raise ValueError("need 1 <= min_inv_density <= max_inv_density (they are 1/(1-S)), "
                             f"got {self.min_inv_density}, {self.max_inv_density}")

    @property
    def density(self) -> np.ndarray:
        k = np.arange(self.n_sparsities) / max(self.n_sparsities - 1, 1)
        lo, hi = self.min_inv_density, self.max_inv_density
        return 1.0 / (lo * (hi / lo) ** k)

    @classmethod
    def notebook(cls, **kw) -> DimensionalityStudy:
        """The notebook's size: n = 200, m = 20, 20 sparsities."""
        return cls(**kw)

    @classmethod
    def paper(cls, **kw) -> DimensionalityStudy:
        """The paper's size: n = 400, m = 30."""
        return cls(**{"n_features": 400, "n_hidden": 30, **kw})


@jax.jit
def _common_batch_losses(W, b, keys, importance, probability):
    """Per-instance loss where instances sharing a key see the same batch (fair restarts)."""
    def one(W, b, key, imp, prob):
        x = sample_features(key, prob, _EVAL_CHUNK)
        return instance_loss(W, b, x, imp)
    return jax.vmap(one)(W, b, keys, importance, probability)


_EVAL_CHUNK = 1024


def evaluate_restarts(params, importance, probability, n_restarts, batch, repeats, seed=0):
    """Mean loss of every instance over ``batch * repeats`` samples, common per sparsity.

    Instances are laid out sparsity-major (``sparsity * n_restarts + restart``); all restarts of
    one sparsity are scored on identical samples so that the comparison is not decided by noise.
    """
    n_inst = importance.shape[0]
    group = np.arange(n_inst) // n_restarts
    total = np.zeros(n_inst)
    n_chunks = repeats * max(batch // _EVAL_CHUNK, 1)
    for r in range(n_chunks):
        keys = jax.random.split(jax.random.PRNGKey(10_000 + seed * 997 + r), n_inst)[group]
        total += np.asarray(_common_batch_losses(params["W"], params["b"], keys,
                                                 jnp.asarray(importance), jnp.asarray(probability)))
    return total / n_chunks


def run_dimensionality(study: DimensionalityStudy, out_dir=None, progress=True) -> dict:
    """Trains the grid, keeps the best restart per sparsity, measures D_i and tegum factors."""
    n, S, R = study.n_features, study.n_sparsities, study.n_restarts
    density = study.density
    cfg = ToyModelConfig(n, study.n_hidden, S * R, study.init_std)
    importance = np.ones((S * R, n), np.float32)
    prob = np.repeat(np.repeat(density, R)[:, None], n, axis=1).astype(np.float32)
    ckpt = None if out_dir is None else os.path.join(os.fspath(out_dir), "checkpoints",
                                                     "dimensionality")
    state, _ = train(cfg, study.train, importance, prob, checkpoint_dir=ckpt, progress=progress,
                     desc=f"dimensionality n={n} m={study.n_hidden}")
    params = state["params"]
    losses = evaluate_restarts(params, importance, prob, R, study.eval_batch, study.eval_repeats,
                               study.train.seed).reshape(S, R)
    best = losses.argmin(axis=1)  # [S]
    pick = np.arange(S) * R + best
    W = np.asarray(params["W"])[pick]  # [S hidden feature]
    d_i = np.asarray(jax.vmap(feature_dimensionality)(jnp.asarray(W)))  # [S feature]
    norm_sq = (W**2).sum(axis=1)  # [S feature]
    represented = norm_sq > study.represented_norm_sq
    d_rep = d_i[represented]
    peaks = histogram_peaks(d_rep)
    factor_type = []  # (rank, size) per represented feature, in d_rep order
    factor_labels = []
    for s in range(S):
        labels, factors = tegum_factors(W[s], represented[s])
        factor_labels.append(labels)
        for f in np.nonzero(represented[s])[0]:
            fac = factors[labels[f]]
            factor_type.append((fac["rank"], fac["size"]))
    return {
        "inv_density": 1.0 / density,
        "W": W,
        "restart_losses": losses,
        "best_restart": best,
        "dims_per_feature": np.asarray(jax.vmap(dims_per_feature)(jnp.asarray(W))),
        "feature_dimensionality": d_i,
        "represented": represented,
        "factor_labels": np.stack(factor_labels),
        "factor_type": factor_type,
        "dimensionality_peaks": peaks,
        "peak_geometry": explain_peaks(peaks, d_rep, factor_type),
        "line_fractions": line_fractions(d_rep, tol=study.line_tol),
        "lines_held": lines_held(line_fractions(d_rep, tol=study.line_tol)),
        "represented_features": int(represented.sum()),
        "step": int(state["step"]),
    }
