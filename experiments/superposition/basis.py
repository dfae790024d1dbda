"""Superposition in a privileged basis: the ReLU-hidden-layer toy model.

Model (one instance): ``h = ReLU(W x)``, ``x' = ReLU(W^T h + b)`` with the tied ``W`` of shape
``[neuron, feature]``; same data and loss as the ReLU-output model. The hidden ReLU makes the
neuron basis special, so features should align with neurons: monosemantic neurons when
features are dense, polysemantic ones as sparsity grows (Elhage et al. 2022 use n = 10, m = 5,
``I_i = 0.75^i`` and keep the lowest-loss of 1000 fits per sparsity). The control is the same
grid with the linear hidden layer of :mod:`.model`, whose loss is invariant under any rotation of
the hidden space, so nothing pulls its features onto neurons.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from .model import ToyModelConfig, init_params, sample_features
from .neurons import aligned_fraction, neuron_counts
from .training import TrainConfig, train_with


@dataclasses.dataclass(frozen=True)
class BasisStudy:
    """n features, m neurons, ``I_i = importance_decay^i``, densities ``1 - S``, restarts."""

    n_features: int = 10
    n_hidden: int = 5
    importance_decay: float = 0.75
    density: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    n_restarts: int = 32
    n_control_restarts: int = 4
    represented_norm_sq: float = 0.5
    eval_batch: int = 65_536
    train: TrainConfig = TrainConfig(steps=5_000, batch_size=256)

    def __post_init__(self):
        if not self.density or not all(0 < p <= 1 for p in self.density):
            raise ValueError(f"density must be a non-empty tuple in (0, 1], got {self.density}")
        if min(self.n_restarts, self.n_control_restarts, self.n_features, self.n_hidden) < 1:
            raise ValueError("BasisStudy sizes and restart counts must be >= 1")

    @property
    def importance(self) -> np.ndarray:
        return self.importance_decay ** np.arange(self.n_features)


def relu_hidden_forward(W, b, x):
    """``ReLU(W^T ReLU(W x) + b)`` for a batch ``x`` ``[batch, feature]``."""
    return jax.nn.relu(jax.nn.relu(x @ W.T) @ W + b[None, :])


def linear_hidden_forward(W, b, x):
    """The control: ``ReLU(W^T W x + b)``."""
    return jax.nn.relu((x @ W.T) @ W + b[None, :])


def _losses(params, key, data, batch_size, forward):
    importance, probability = data
    keys = jax.random.split(key, importance.shape[0])

    def one(W, b, k, imp, prob):
        x = sample_features(k, prob, batch_size)
        return jnp.mean(imp[None, :] * (x - forward(W, b, x)) ** 2)

    return jax.vmap(one)(params["W"], params["b"], keys, importance, probability)


def relu_hidden_losses(params, key, data, batch_size):
    """Per-instance loss of the ReLU-hidden model (module-level: a static jit argument)."""
    return _losses(params, key, data, batch_size, relu_hidden_forward)


def linear_hidden_losses(params, key, data, batch_size):
    """Per-instance loss of the linear-hidden control."""
    return _losses(params, key, data, batch_size, linear_hidden_forward)


@functools.partial(jax.jit, static_argnames=("batch", "hidden"))
def _common_losses(params, keys, importance, probability, batch, hidden):
    """Instances sharing a key are scored on the same samples."""
    fwd = relu_hidden_forward if hidden == "relu" else linear_hidden_forward

    def one(W, b, k, imp, prob):
        x = sample_features(k, prob, batch)
        return jnp.mean(imp[None, :] * (x - fwd(W, b, x)) ** 2)

    return jax.vmap(one)(params["W"], params["b"], keys, importance, probability)


def _fit(study: BasisStudy, hidden: str, restarts: int, out_dir, progress):
    n, P = study.n_features, len(study.density)
    cfg = ToyModelConfig(n, study.n_hidden, P * restarts)
    importance = np.tile(study.importance[None, :], (P * restarts, 1)).astype(np.float32)
    prob = np.repeat(np.repeat(np.asarray(study.density), restarts)[:, None], n, 1)
    prob = prob.astype(np.float32)
    data = (jnp.asarray(importance), jnp.asarray(prob))
    loss_fn = relu_hidden_losses if hidden == "relu" else linear_hidden_losses
    ckpt = None if out_dir is None else os.path.join(os.fspath(out_dir), "checkpoints",
                                                     f"basis_{hidden}")
    identity = {"hidden": hidden, "restarts": restarts, "n_features": n,
                "n_hidden": study.n_hidden, "importance_decay": study.importance_decay,
                "density": list(study.density), "train": dataclasses.asdict(study.train)}
    state, _ = train_with(lambda k: init_params(cfg, k), loss_fn, data, study.train,
                          checkpoint_dir=ckpt, identity=identity, progress=progress,
                          desc=f"basis: {hidden} hidden")
    params = state["params"]
    losses = np.zeros(P * restarts)
    for r in range(4):
        keys = jax.random.split(jax.random.PRNGKey(30_000 + r), P)
        keys = jnp.repeat(keys, restarts, axis=0)
        losses += np.asarray(_common_losses(params, keys, *data, study.eval_batch // 4, hidden))
    best = losses.reshape(P, restarts).argmin(axis=1)
    pick = np.arange(P) * restarts + best
    return np.asarray(params["W"])[pick], np.asarray(params["b"])[pick], losses.reshape(P, -1)


def _measure(study: BasisStudy, W: np.ndarray) -> dict:
    represented = (W**2).sum(axis=1) > study.represented_norm_sq  # [density feature]
    counts = [neuron_counts(w) for w in W]
    return {
        "represented": represented.sum(axis=1).tolist(),
        "aligned_fraction": [aligned_fraction(w, r) for w, r in zip(W, represented)],
        "monosemantic": [c["monosemantic"] for c in counts],
        "polysemantic": [c["polysemantic"] for c in counts],
        "dead": [c["dead"] for c in counts],
    }


def run_basis(study: BasisStudy, out_dir=None, progress=True) -> dict:
    """Fits the ReLU-hidden model and the linear control; measures alignment per density."""
    W, b, losses = _fit(study, "relu", study.n_restarts, out_dir, progress)
    W_lin, _, _ = _fit(study, "linear", study.n_control_restarts, out_dir, progress)
    return {
        "density": np.asarray(study.density),
        "importance": study.importance,
        "W": W,
        "b": b,
        "restart_losses": losses,
        "relu": _measure(study, W),
        "linear_control": _measure(study, W_lin),
        "W_linear": W_lin,
    }
