"""Computation in superposition: absolute value through a ReLU hidden layer.

Model (one instance): ``h = ReLU(W1 x)``, ``y' = ReLU(W2 h + b)``, untied ``W1 [neuron,
feature]``, ``W2 [feature, neuron]``, no hidden bias. Data: feature ``i`` is 0 with
probability ``S``, otherwise U[-1, 1]; target ``y = |x|``; importance-weighted squared error
(Elhage et al. 2022, "Computation in Superposition": n = 100, m = 40, ``I_i = 0.8^i``).

``|x| = ReLU(x) + ReLU(-x)`` needs two neurons per feature, so without superposition m = 40
neurons compute at most 20 features. Per feature, the relative error
``rel_i = E[(|x_i| - y'_i)^2] / E[x_i^2]`` is compared with two baselines: the best *single*
neuron with output bias (``ReLU(w ReLU(x_i) + b)``) reaches 0.20 when dense and 0.44-0.50 at
1 - S <= 0.3 (grid-searched), so ``rel_i < 0.1`` (*both signs*) needs two neurons' worth of
weights; the best constant output leaves ``1 - 3p/4``, so ``rel_i < 0.9 (1 - 3p/4)``
(*computed*, at least in part) means the hidden layer carries the feature. More computed
features than neurons, or more both-sign features than m/2, is computation in superposition.
:mod:`.sides` counts the same thing side by side (``|x_i|`` is two sides, one neuron each
without superposition): more computed sides than neurons, and the neurons carrying computed
sides of two features, are the direct test. The weights are read per neuron after fixing the
rescaling freedom (each hidden unit scaled so its largest input weight has magnitude 1, its
output weights inversely).

Init: ``W1`` Xavier-normal; ``W2`` the absolute value of a Xavier-normal draw by default
(``output_init="positive"``). With signed ``W2`` the output pre-activation of side ``(i, s)``
with feature ``i`` alone, ``t * sum_k W2[i, k] ReLU(s W1[k, i])``, has a random sign at init;
where it is negative the output ReLU is off on that side whenever ``i`` is the only active
feature, which at high sparsity is nearly always, so the side gets almost no gradient. Trained
from that init, the sparse models compute one side of most of their top features (feature 0
included) and end with 4-10x the loss (measured at 1 - S = 0.03 and 0.01, 10k steps); the
signed init stays available as ``output_init="normal"``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from .neurons import features_on_neurons, neuron_counts
from .sides import side_counts
from .training import TrainConfig, train_with

OUTPUT_INITS = ("positive", "normal")


@dataclasses.dataclass(frozen=True)
class ComputationStudy:
    """Sizes of the absolute-value study (defaults: the paper's n = 100, m = 40, 0.8^i)."""

    n_features: int = 100
    n_hidden: int = 40
    importance_decay: float = 0.8
    density: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01)
    n_restarts: int = 2
    output_init: str = "positive"
    both_signs_rel_error: float = 0.1
    computed_vs_constant: float = 0.9
    eval_batch: int = 32_768
    # sparse features get gradient only when present: 1 - S = 0.01 needs ~16x the notebook's
    # 10k steps to leave its one-sided solutions (README: computation in superposition)
    train: TrainConfig = TrainConfig(steps=160_000, batch_size=512, steps_per_call=2000)

    def __post_init__(self):
        if not self.density or not all(0 < p <= 1 for p in self.density):
            raise ValueError(f"density must be a non-empty tuple in (0, 1], got {self.density}")
        if min(self.n_restarts, self.n_features, self.n_hidden) < 1:
            raise ValueError("ComputationStudy sizes and n_restarts must be >= 1")
        if self.output_init not in OUTPUT_INITS:
            raise ValueError(f"ComputationStudy.output_init must be one of {OUTPUT_INITS}, got "
                             f"{self.output_init!r}")

    @property
    def importance(self) -> np.ndarray:
        return self.importance_decay ** np.arange(self.n_features)


def init_abs_params(key, n_instances: int, n_features: int, n_hidden: int,
                    output_init: str = "positive") -> dict:
    """Xavier-normal ``W1`` (std ``sqrt(2 / (n + m))``), ``W2`` per ``output_init``, zero bias.

    ``"positive"`` takes ``|W2|`` of the same draw as ``"normal"`` (see the module doc).
    """
    if output_init not in OUTPUT_INITS:
        raise ValueError(f"output_init must be one of {OUTPUT_INITS}, got {output_init!r}")
    k1, k2 = jax.random.split(key)
    std = math.sqrt(2.0 / (n_features + n_hidden))
    W2 = std * jax.random.normal(k2, (n_instances, n_features, n_hidden), jnp.float32)
    return {
        "W1": std * jax.random.normal(k1, (n_instances, n_hidden, n_features), jnp.float32),
        "W2": jnp.abs(W2) if output_init == "positive" else W2,
        "b": jnp.zeros((n_instances, n_features), jnp.float32),
    }


def abs_forward(W1, W2, b, x):
    """``ReLU(W2 ReLU(W1 x) + b)`` for a batch ``x`` ``[batch, feature]``."""
    return jax.nn.relu(jax.nn.relu(x @ W1.T) @ W2.T + b[None, :])


def sample_signed(key, probability, batch: int):
    """Sparse features uniform on [-1, 1] when present (present with ``probability``)."""
    k_on, k_val = jax.random.split(key)
    on = jax.random.uniform(k_on, (batch, probability.shape[0])) < probability[None, :]
    values = jax.random.uniform(k_val, (batch, probability.shape[0]), minval=-1.0, maxval=1.0)
    return jnp.where(on, values, 0.0)


def abs_losses(params, key, data, batch_size):
    """Per-instance importance-weighted MSE against ``|x|`` (module-level: static under jit)."""
    importance, probability = data
    keys = jax.random.split(key, importance.shape[0])

    def one(W1, W2, b, k, imp, prob):
        x = sample_signed(k, prob, batch_size)
        return jnp.mean(imp[None, :] * (jnp.abs(x) - abs_forward(W1, W2, b, x)) ** 2)

    return jax.vmap(one)(params["W1"], params["W2"], params["b"], keys, importance, probability)


@functools.partial(jax.jit, static_argnames="batch")
def per_feature_error(params, keys, probability, batch: int):
    """``[instance, feature]`` mean squared error against ``|x|`` and mean ``x^2``."""
    def one(W1, W2, b, k, prob):
        x = sample_signed(k, prob, batch)
        err = (jnp.abs(x) - abs_forward(W1, W2, b, x)) ** 2
        return err.mean(axis=0), (x**2).mean(axis=0)

    return jax.vmap(one)(params["W1"], params["W2"], params["b"], keys, probability)


def normalise_neurons(W1: np.ndarray, W2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scales hidden unit k by ``1 / max_i |W1[k, i]|`` in W1 and inversely in W2.

    ``ReLU`` is positively homogeneous, so the model is unchanged (the paper's visual
    convention). Dead units (all-zero W1 rows) are left as they are.
    """
    scale = np.abs(W1).max(axis=1)  # [neuron]
    scale = np.where(scale > 1e-8, scale, 1.0)
    return W1 / scale[:, None], W2 * scale[None, :]


def asymmetric_neurons(W1: np.ndarray, W2: np.ndarray, ratio: float = 2.0) -> list[dict]:
    """Neurons showing the asymmetric-superposition motif.

    The motif (paper, "The Asymmetric Superposition Motif"): a neuron stores two features with
    opposite signs and unequal magnitudes (e.g. 2 and -1/2) and reads them out with roughly
    reciprocal output weights, so the weak feature's output weight is the larger one. Takes the
    normalised weights of one model.
    """
    out = []
    on = features_on_neurons(W1)
    for k in range(W1.shape[0]):
        feats = np.nonzero(on[k])[0]
        if feats.size < 2:
            continue
        order = feats[np.argsort(-np.abs(W1[k, feats]))]
        i, j = int(order[0]), int(order[1])
        strong, weak = W1[k, i], W1[k, j]
        if strong * weak < 0 and abs(strong) >= ratio * abs(weak) and \
                abs(W2[j, k]) > abs(W2[i, k]):
            out.append({"neuron": k, "strong": i, "weak": j, "w_in": [float(strong), float(weak)],
                        "w_out": [float(W2[i, k]), float(W2[j, k])]})
    return out


def _training_identity(study: ComputationStudy) -> dict:
    """What determines the trained weights (analysis thresholds may change on a resumed run)."""
    keep = ("n_features", "n_hidden", "importance_decay", "density", "n_restarts", "output_init",
            "train")
    return {k: v for k, v in dataclasses.asdict(study).items() if k in keep}


def run_computation(study: ComputationStudy, out_dir=None, progress=True) -> dict:
    """Trains the density x restart grid, keeps the best restart, counts computed features."""
    n, m, P, R = study.n_features, study.n_hidden, len(study.density), study.n_restarts
    importance = np.tile(study.importance[None, :], (P * R, 1)).astype(np.float32)
    prob = np.repeat(np.repeat(np.asarray(study.density), R)[:, None], n, 1).astype(np.float32)
    data = (jnp.asarray(importance), jnp.asarray(prob))
    ckpt = None if out_dir is None else os.path.join(os.fspath(out_dir), "checkpoints",
                                                     "computation")
    state, _ = train_with(lambda k: init_abs_params(k, P * R, n, m, study.output_init),
                          abs_losses, data, study.train, checkpoint_dir=ckpt,
                          identity=_training_identity(study), progress=progress,
                          desc="computation: abs")
    params = state["params"]
    err = np.zeros((P * R, n))
    sq = np.zeros((P * R, n))
    for r in range(4):  # restarts of one density share samples
        keys = jnp.repeat(jax.random.split(jax.random.PRNGKey(40_000 + r), P), R, axis=0)
        e, q = per_feature_error(params, keys, data[1], study.eval_batch // 4)
        err += np.asarray(e)
        sq += np.asarray(q)
    loss = (err * importance).mean(axis=1).reshape(P, R)
    best = loss.argmin(axis=1)
    pick = np.arange(P) * R + best
    rel = (err / np.maximum(sq, 1e-12))[pick]  # [density feature]
    constant = 1.0 - 0.75 * np.asarray(study.density)  # best constant output, relative
    computed = rel < study.computed_vs_constant * constant[:, None]
    both = rel < study.both_signs_rel_error
    W1, W2 = [], []
    for p in pick:
        a, c = normalise_neurons(np.asarray(params["W1"][p]), np.asarray(params["W2"][p]))
        W1.append(a)
        W2.append(c)
    W1, W2 = np.stack(W1), np.stack(W2)
    counts = [neuron_counts(w) for w in W1]
    b = np.asarray(params["b"])[pick]
    per_side = [side_counts(a, c, bb) for a, c, bb in zip(W1, W2, b)]
    return {
        "density": np.asarray(study.density),
        "W1": W1,
        "W2": W2,
        "b": b,
        "relative_error": rel,
        "computed": computed,
        "n_computed": computed.sum(axis=1).tolist(),
        "n_both_signs": both.sum(axis=1).tolist(),
        "no_superposition_max": m // 2,
        "n_neurons": m,
        "sides_computed": np.stack([c["computed"] for c in per_side]),
        "n_sides": [c["n_sides"] for c in per_side],
        "n_features_both_sides": [c["n_features_both"] for c in per_side],
        "superposed_neurons": [c["superposed_neurons"] for c in per_side],
        "n_superposed_neurons": [c["n_superposed"] for c in per_side],
        "superposition": ((computed.sum(axis=1) > m) | (both.sum(axis=1) > m // 2)
                          | (np.array([c["n_sides"] for c in per_side]) > m)).tolist(),
        "monosemantic": [c["monosemantic"] for c in counts],
        "polysemantic": [c["polysemantic"] for c in counts],
        "dead": [c["dead"] for c in counts],
        "asymmetric": [asymmetric_neurons(a, c) for a, c in zip(W1, W2)],
        "restart_losses": loss,
    }
