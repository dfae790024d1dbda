"""Correlated and anticorrelated features (Elhage et al. 2022, "Non-Uniform Superposition").

Data: features come in *sets*. A correlated set is zero or non-zero all together (one draw
with probability ``1 - S`` decides for the whole set; the values are independent U[0, 1]). An
anticorrelated set is entirely zero with probability ``S``; otherwise exactly one of its
features, chosen uniformly, is U[0, 1]. The model is the ReLU-output model in ``m = 2``
dimensions, so every solution is a set of arrows in the plane.

Predictions (the paper's text): correlated features prefer to be orthogonal (separate tegum
factors) and, when there is no room, side by side, collapsing into their principal component
as density grows; anticorrelated features prefer negative interference, ideally antipodal.
Three experiments, each over several densities with the lowest-loss of several restarts:

* ``correlated``: two correlated pairs in 2-D -> each pair orthogonal.
* ``anticorrelated``: two anticorrelated pairs in 2-D -> each pair antipodal.
* ``collapse``: three correlated pairs in 2-D -> a hexagon with partners side by side
  (60 degrees) when sparse, partners merged (same direction) when dense.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from .model import ToyModelConfig, forward, init_params
from .training import TrainConfig, train_with

EXPERIMENTS = {  # name -> (kind of every set, set size); all sets are pairs
    "correlated": ("correlated", 2),
    "anticorrelated": ("anticorrelated", 2),
    "collapse": ("correlated", 3),
}
PREDICTION = {
    "correlated": "orthogonal (90 deg)",
    "anticorrelated": "antipodal (180 deg)",
    "collapse": "side by side (60 deg) when sparse, merged (0 deg) when dense",
}


@dataclasses.dataclass(frozen=True)
class CorrelatedStudy:
    """Densities ``1 - S`` (per set) swept for every experiment; best of ``n_restarts``."""

    density: tuple[float, ...] = (0.3, 0.1, 0.03, 0.01)
    n_restarts: int = 8
    angle_tol_deg: float = 10.0
    eval_batch: int = 65_536
    train: TrainConfig = TrainConfig(steps=5_000, batch_size=512)

    def __post_init__(self):
        if not self.density or not all(0 < p <= 1 for p in self.density):
            raise ValueError(f"density must be a non-empty tuple in (0, 1], got {self.density}")
        if self.n_restarts < 1:
            raise ValueError("n_restarts must be >= 1")


def pair_layout(n_pairs: int) -> np.ndarray:
    """``group[i]``: the set of feature ``i`` when features come in consecutive pairs."""
    return np.repeat(np.arange(n_pairs), 2)


def sample_sets(
    key: jax.Array, density: jax.Array, batch: int, group: jax.Array, anti: bool
) -> jax.Array:
    """One batch ``[batch, feature]`` of set-structured sparse features (see module doc).

    Args:
        key: PRNG key.
        density: scalar ``1 - S``, the probability that a set is active.
        batch: number of samples.
        group: ``[feature]`` set index of each feature; features of a set are consecutive.
        anti: anticorrelated sets (one active feature) instead of correlated ones.
    """
    n = group.shape[0]
    n_sets = n // 2
    k_on, k_pick, k_val = jax.random.split(key, 3)
    set_on = jax.random.uniform(k_on, (batch, n_sets)) < density  # [batch set]
    on = set_on[:, group]  # [batch feature]
    if anti:
        pick = jax.random.bernoulli(k_pick, 0.5, (batch, n_sets))  # which member is active
        position = jnp.arange(n) % 2  # [feature]
        on = on & (pick[:, group] == (position[None, :] == 1))
    values = jax.random.uniform(k_val, (batch, n))
    return jnp.where(on, values, 0.0)


def _losses(params, key, data, batch_size, anti: bool):
    density, group = data
    keys = jax.random.split(key, density.shape[0])

    def one(W, b, k, p):
        x = sample_sets(k, p, batch_size, group, anti)
        return jnp.mean((x - forward(W, b, x)) ** 2)

    return jax.vmap(one)(params["W"], params["b"], keys, density)


def correlated_losses(params, key, data, batch_size):
    """Per-instance loss on correlated sets (module-level: a static jit argument)."""
    return _losses(params, key, data, batch_size, anti=False)


def anticorrelated_losses(params, key, data, batch_size):
    """Per-instance loss on anticorrelated sets."""
    return _losses(params, key, data, batch_size, anti=True)


def pair_angles_deg(W: np.ndarray) -> np.ndarray:
    """Angle in degrees between the two members of every consecutive pair: ``[pairs]``."""
    a, b = W[:, 0::2], W[:, 1::2]
    cos = (a * b).sum(0) / np.maximum(np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0),
                                      1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def matches_prediction(experiment: str, angles: np.ndarray, norm_sq: np.ndarray,
                       dense: bool, tol: float) -> np.ndarray:
    """Per pair: does its geometry match the paper's prediction (both members represented)?

    ``dense`` selects the dense-regime prediction of the ``collapse`` experiment (merged); the
    other experiments have one prediction at every density.

    ``norm_sq``: ``[pairs, 2]`` squared norms; a pair needs both above 0.5 to count as
    represented, except for a merged (collapsed) pair, where the two members share one unit
    of norm and each needs only 0.25.
    """
    both = (norm_sq > 0.5).all(axis=1)
    if experiment == "correlated":
        return both & (np.abs(angles - 90.0) <= tol)
    if experiment == "anticorrelated":
        return both & (angles >= 180.0 - tol)
    if dense:
        return (norm_sq > 0.25).all(axis=1) & (angles <= tol)
    return both & (np.abs(angles - 60.0) <= tol)


def run_correlated(study: CorrelatedStudy, out_dir=None, progress=True) -> dict:
    """Trains the three experiments over the densities, keeps the best restart per density."""
    P, R = len(study.density), study.n_restarts
    results = {}
    for name, (kind, n_pairs) in EXPERIMENTS.items():
        n = 2 * n_pairs
        anti = kind == "anticorrelated"
        cfg = ToyModelConfig(n, 2, P * R, init_std=None)
        density = np.repeat(np.asarray(study.density, np.float32), R)  # [instance]
        group = jnp.asarray(pair_layout(n_pairs))
        loss_fn = anticorrelated_losses if anti else correlated_losses
        ckpt = None if out_dir is None else os.path.join(os.fspath(out_dir), "checkpoints",
                                                         f"correlated_{name}")
        identity = {"experiment": name, "density": list(study.density),
                    "n_restarts": R, "train": dataclasses.asdict(study.train)}
        state, _ = train_with(lambda k, cfg=cfg: init_params(cfg, k), loss_fn,
                              (jnp.asarray(density), group), study.train,
                              checkpoint_dir=ckpt, identity=identity, progress=progress,
                              desc=f"correlated: {name}")
        params = state["params"]
        eval_key = jax.random.PRNGKey(20_000 + study.train.seed)
        losses = np.zeros(P * R)
        for r in range(4):  # common samples for every instance of one density: fair restarts
            keys = jnp.repeat(jax.random.split(jax.random.fold_in(eval_key, r), P), R, axis=0)
            losses += np.asarray(_eval(params["W"], params["b"], keys, jnp.asarray(density),
                                       group, study.eval_batch // 4, anti))
        best = losses.reshape(P, R).argmin(axis=1)
        W = np.asarray(params["W"])[np.arange(P) * R + best]  # [density 2 feature]
        angles = np.stack([pair_angles_deg(w) for w in W])  # [density pair]
        norm_sq = (W**2).sum(axis=1).reshape(P, n_pairs, 2)  # [density pair 2]
        judged = [j for j in range(P) if name != "collapse" or j in (0, P - 1)]
        match = {j: matches_prediction(name, angles[j], norm_sq[j], dense=j == 0,
                                       tol=study.angle_tol_deg) for j in judged}
        fraction = float(np.mean(np.concatenate(list(match.values()))))
        results[name] = {"W": W, "b": np.asarray(params["b"])[np.arange(P) * R + best],
                         "pair_angles_deg": angles, "norm_sq": norm_sq,
                         "matches": {float(study.density[j]): m.tolist() for j, m in match.items()},
                         "match_fraction": fraction,
                         "prediction": PREDICTION[name]}
    results["density"] = np.asarray(study.density)
    return results


@functools.partial(jax.jit, static_argnames=("batch", "anti"))
def _eval(W, b, keys, density, group, batch, anti):
    """Loss of every instance on its own key (instances sharing a key share their samples)."""
    def one(W, b, k, p):
        x = sample_sets(k, p, batch, group, anti)
        return jnp.mean((x - forward(W, b, x)) ** 2)

    return jax.vmap(one)(W, b, keys, density)
