"""The four reproductions, each a grid of toy models trained as one compiled program.

* :func:`run_pentagon` -- n = 5, m = 2, I = 1, 1 - S = 0.05: several seeds, keep the lowest loss
  (the paper: m = 2 "required fitting each model multiple times"); expect a regular pentagon.
* :func:`run_phase_diagram` -- n = 2, m = 1 over relative importance x density, several seeds per
  cell, keep the lowest exact expected loss, classify, compare with :mod:`.phase`'s optimum.
* :func:`run_uniform` -- uniform importance, one instance per sparsity; gives both the
  dimensions-per-feature curve and the feature-dimensionality scatter (the paper's two figures
  come from the same models).

Each returns a dict of plain numpy arrays / floats consumed by :mod:`.plots` and the summary.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from .analysis import (
    DIMENSIONALITY_LINES,
    angular_gaps_deg,
    classify_two_feature_model,
    dims_per_feature,
    feature_dimensionality,
    histogram_peaks,
)
from .model import ToyModelConfig, batch_losses
from .phase import analytic_phase_diagram, expected_loss
from .training import TrainConfig, train


def _positive(obj, *names):
    for name in names:
        value = getattr(obj, name)
        if not value > 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class PentagonStudy:
    """n = 5 features in m = 2 dimensions at one sparsity, best of ``n_seeds``."""

    n_features: int = 5
    n_hidden: int = 2
    feature_probability: float = 0.05
    n_seeds: int = 16
    eval_batch: int = 65_536
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        _positive(self, "n_features", "n_hidden", "n_seeds", "eval_batch")
        if self.n_hidden != 2:
            raise ValueError("the pentagon study measures angles in the plane: n_hidden must be 2")
        if not 0 < self.feature_probability <= 1:
            raise ValueError(
                f"feature_probability must be in (0, 1], got {self.feature_probability}")


@dataclasses.dataclass(frozen=True)
class PhaseStudy:
    """n = 2, m = 1 grid: extra feature importance ``r`` x density ``1 - S``, ``n_seeds`` each.

    ``init_std`` defaults to 0.8 (about per-instance Xavier, sqrt(2/3)) rather than the
    notebook's rule, which divides by the instance count (~0.03 for 2,000 instances); with a
    tiny init the sparse-regime biases turn negative before the weights grow and more seeds end
    in a dead-ReLU local minimum. Gradient descent still gets stuck in some seeds near r = 1
    (hence best of 8).
    """

    n_importance: int = 16
    n_density: int = 16
    importance_range: tuple[float, float] = (0.1, 10.0)
    density_range: tuple[float, float] = (1.0, 0.01)
    n_seeds: int = 8
    init_std: float | None = 0.8
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        _positive(self, "n_importance", "n_density", "n_seeds")

    @property
    def relative_importance(self) -> np.ndarray:
        return np.geomspace(*self.importance_range, self.n_importance)

    @property
    def density(self) -> np.ndarray:
        return np.geomspace(*self.density_range, self.n_density)


@dataclasses.dataclass(frozen=True)
class UniformStudy:
    """``n`` equally important features in ``m`` dimensions, one instance per sparsity.

    Densities are ``1 - S = max_inv_density ** (-k / (n_sparsities - 1))`` (the notebook's
    ``20 ** -linspace(0, 1, 20)`` by default). The D_i histogram peaks are read off the
    *represented* features, ``||W_i||^2 > represented_norm_sq``: in the dense regime equal
    importances make any rotation of a rank-m projection optimal, which spreads small norms
    (~m/n) over all features and gives meaningless D_i ~ m/n.
    """

    n_features: int = 200
    n_hidden: int = 20
    n_sparsities: int = 20
    max_inv_density: float = 20.0
    represented_norm_sq: float = 0.5
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        _positive(self, "n_features", "n_hidden", "n_sparsities")
        if not self.max_inv_density >= 1:
            raise ValueError(
                f"max_inv_density is 1/(1-S) and must be >= 1, got {self.max_inv_density}")

    @property
    def density(self) -> np.ndarray:
        k = np.arange(self.n_sparsities) / max(self.n_sparsities - 1, 1)
        return self.max_inv_density ** (-k)


def _ckpt(out_dir, name):
    return None if out_dir is None else os.path.join(os.fspath(out_dir), "checkpoints", name)


def run_pentagon(study: PentagonStudy, out_dir=None, progress=True, stop_after_step=None) -> dict:
    """Trains the seeds, keeps the lowest-loss one, measures its angles and dimensionalities."""
    n, seeds = study.n_features, study.n_seeds
    cfg = ToyModelConfig(n, study.n_hidden, seeds)
    importance = np.ones((seeds, n), np.float32)
    prob = np.full((seeds, n), study.feature_probability, np.float32)
    state, _ = train(cfg, study.train, importance, prob, checkpoint_dir=_ckpt(out_dir, "pentagon"),
                     stop_after_step=stop_after_step, progress=progress, desc="pentagon")
    params = state["params"]
    eval_key = jax.random.PRNGKey(10_000 + study.train.seed)
    losses = np.asarray(batch_losses(params, eval_key, jnp.asarray(importance), jnp.asarray(prob),
                                     study.eval_batch))
    best = int(np.argmin(losses))
    W = np.asarray(params["W"][best])
    return {
        "W": W,
        "b": np.asarray(params["b"][best]),
        "seed_losses": losses,
        "best_seed": best,
        "angles_deg": angular_gaps_deg(W),
        "dimensionalities": np.asarray(feature_dimensionality(jnp.asarray(W))),
        "norms": np.linalg.norm(W, axis=0),
        "step": int(state["step"]),
    }


def run_phase_diagram(study: PhaseStudy, out_dir=None, progress=True, stop_after_step=None,
                      analytic_steps: int = 3000) -> dict:
    """Trains every (importance, density, seed) instance, classifies the best seed per cell."""
    r, p, seeds = study.relative_importance, study.density, study.n_seeds
    rr, pp = np.meshgrid(r, p, indexing="ij")  # [R P]
    cell_imp = np.stack([np.ones_like(rr), rr], -1).reshape(-1, 2)  # [cell 2]
    cell_prob = np.repeat(pp.reshape(-1, 1), 2, axis=1)  # [cell 2]
    importance = np.repeat(cell_imp, seeds, axis=0).astype(np.float32)  # [cell*seed 2]
    prob = np.repeat(cell_prob, seeds, axis=0).astype(np.float32)
    cfg = ToyModelConfig(2, 1, importance.shape[0], study.init_std)
    state, _ = train(cfg, study.train, importance, prob, checkpoint_dir=_ckpt(out_dir, "phase"),
                     stop_after_step=stop_after_step, progress=progress, desc="phase diagram")
    W = np.asarray(state["params"]["W"])[:, 0, :]  # [instance 2]
    b = np.asarray(state["params"]["b"])  # [instance 2]
    exact = jax.jit(jax.vmap(expected_loss))(
        jnp.asarray(W), jnp.asarray(b), jnp.asarray(importance), jnp.asarray(prob[:, 0])
    )
    exact = np.asarray(exact).reshape(len(r), len(p), seeds)
    best = exact.argmin(-1)  # [R P]
    W_cells = W.reshape(len(r), len(p), seeds, 2)
    W_best = np.take_along_axis(W_cells, best[..., None, None], axis=2)[:, :, 0]  # [R P 2]
    trained = np.vectorize(lambda a, c: classify_two_feature_model(np.array([[a, c]])))(
        W_best[..., 0], W_best[..., 1]
    )
    analytic = analytic_phase_diagram(r, p, analytic_steps)
    return {
        "relative_importance": r,
        "density": p,
        "trained_phase": trained,
        "analytic_phase": analytic["phase"],
        "agreement": float(np.mean(trained == analytic["phase"])),
        "W_best": W_best,
        "best_loss": exact.min(-1),
        "analytic_losses": {k: analytic[k] for k in ("loss_not_learned", "loss_dedicated",
                                                     "loss_superposition")},
        "step": int(state["step"]),
    }


def run_uniform(study: UniformStudy, out_dir=None, progress=True, stop_after_step=None) -> dict:
    """Trains one model per sparsity; returns D* per model and D_i per feature."""
    density = study.density
    k, n = study.n_sparsities, study.n_features
    cfg = ToyModelConfig(n, study.n_hidden, k)
    importance = np.ones((k, n), np.float32)
    prob = np.repeat(density[:, None], n, axis=1).astype(np.float32)
    state, _ = train(cfg, study.train, importance, prob, checkpoint_dir=_ckpt(out_dir, "uniform"),
                     stop_after_step=stop_after_step, progress=progress,
                     desc="uniform superposition")
    W = state["params"]["W"]  # [instance hidden feature]
    dstar = np.asarray(jax.vmap(dims_per_feature)(W))
    d_i = np.asarray(jax.vmap(feature_dimensionality)(W))  # [instance feature]
    norm_sq = np.asarray(jnp.sum(W**2, axis=1))  # [instance feature]
    represented = norm_sq > study.represented_norm_sq  # [instance feature]
    return {
        "inv_density": 1.0 / density,
        "dims_per_feature": dstar,
        "feature_dimensionality": d_i,
        "represented": represented,
        "dimensionality_peaks": histogram_peaks(d_i[represented]),
        "line_fractions": {
            name: float(np.mean(np.abs(d_i[represented] - value) <= 0.01))
            for name, value in DIMENSIONALITY_LINES.items()
        },
        "step": int(state["step"]),
    }
