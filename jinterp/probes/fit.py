"""Probes at every (layer, position) and for the control task, in one compiled program.

``fit_probes(acts, labels)`` takes a residual stack as the cache gives it
(``cache.stack("hook_resid_post")``: ``[layer, batch, pos, d_model]``) and labels per example
(``[batch]``) or per token (``[batch, pos]``), splits the examples into train and test once
(the same split at every site), and fits one probe per (task, layer, position) with a triple
``vmap`` of :func:`jinterp.probes.linear.fit`: the real task and a *control task*, the same
labels randomly permuted over examples, which no probe can learn from the activations, so its
test score is what a probe of this capacity gets from chance and memorisation. Selectivity
(Hewitt & Liang 2019) is the real test score minus the control's.

Memory: the fit reads ``acts`` once per site; the program holds a per-site copy of the
training rows (``layer * pos * n_train * d`` values), i.e. about the size of ``acts``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from jinterp.probes.config import ProbeConfig, ProbeKind
from jinterp.probes.linear import fit, score, top_k_by_mean_difference


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """Probes at every (layer, position), on raw activations.

    Attributes:
        W, b: ``[layer, pos, d, n_out]`` and ``[layer, pos, n_out]`` (``n_out`` is 1 for two
            classes and for regression); the standardisation is folded in.
        train_score, test_score: accuracy (``logistic``) or R^2, ``[layer, pos]``.
        control_score: the control task's test score (``None`` without ``control``).
        chance: the test accuracy of always answering the training majority class
            (0 for regression).
        features: ``[layer, pos, k]`` features a k-sparse probe uses (else ``None``).
        train_index, test_index: which examples (along ``batch``) each split holds.
        metric: ``"accuracy"`` or ``"r2"``.
    """

    W: Float[Array, "layer pos d n_out"]
    b: Float[Array, "layer pos n_out"]
    train_score: Float[Array, "layer pos"]
    test_score: Float[Array, "layer pos"]
    control_score: Float[Array, "layer pos"] | None
    chance: float
    features: Int[Array, "layer pos k"] | None
    train_index: np.ndarray
    test_index: np.ndarray
    metric: str

    @property
    def selectivity(self) -> Float[Array, "layer pos"]:
        """Test score minus the control task's (Hewitt & Liang 2019)."""
        if self.control_score is None:
            raise ValueError("This fit ran without a control task (control=False).")
        return self.test_score - self.control_score

    def predict(self, acts: Float[Array | np.ndarray, "layer batch pos d"]) -> Array:
        """Predicted classes (or values) ``[layer, batch, pos]`` for new activations."""
        out = jnp.einsum("lbpd,lpdo->lbpo", acts, self.W) + self.b[:, None]  # l b p n_out
        if self.metric == "r2":
            return out[..., 0]
        return (out[..., 0] > 0).astype(jnp.int32) if out.shape[-1] == 1 else out.argmax(-1)


def _check(acts, labels, config: ProbeConfig) -> tuple[np.ndarray, int]:
    if getattr(acts, "ndim", None) != 4:
        raise ValueError(f"acts must be [layer, batch, pos, d] (a cache.stack(point)); got "
                         f"shape {tuple(np.shape(acts))}. For one position add it: "
                         "acts[:, :, None].")
    layers, batch, n_pos, _ = acts.shape
    labels = np.asarray(labels)
    if labels.shape not in ((batch,), (batch, n_pos)):
        raise ValueError(f"labels of shape {labels.shape} do not match activations of shape "
                         f"{tuple(acts.shape)} [layer, batch, pos, d]: give one label per "
                         f"example ({batch},) or per token ({batch}, {n_pos}).")
    if config.kind is not ProbeKind.LOGISTIC:
        return labels.astype(np.float32), 1
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"logistic probes need class ids 0..n_classes-1 (integers); got "
                         f"dtype {labels.dtype}, min {labels.min()}. For real-valued targets "
                         "use kind='linear' or 'ridge'.")
    n_classes = int(labels.max()) + 1
    if n_classes < 2:
        raise ValueError("labels hold a single class; a probe needs at least two.")
    if config.k is not None and n_classes != 2:
        raise ValueError(f"k-sparse probes take two classes; labels hold {n_classes}.")
    return labels.astype(np.int32), 1 if n_classes == 2 else n_classes


def split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random train/test split of ``n`` examples (sorted indices of each part)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}.")
    n_test = int(round(n * test_fraction))
    if n_test < 1 or n - n_test < 2:
        raise ValueError(f"{n} examples cannot be split with test_fraction={test_fraction}; "
                         "pass more examples.")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def fit_probes(acts: Float[Array | np.ndarray, "..."], labels,
               config: ProbeConfig | None = None,
               *, test_fraction: float = 0.25, seed: int = 0, control: bool = True
               ) -> ProbeResult:
    """Fits a probe at every (layer, position), and the control task's, in one program.

    Args:
        acts: ``[layer, batch, pos, d]`` activations (``cache.stack(point)``).
        labels: ``[batch]`` or ``[batch, pos]``: class ids for ``logistic``, real values for
            ``linear`` / ``ridge``.
        config: the probe (default: L2-regularised logistic regression by L-BFGS).
        test_fraction: share of examples held out for ``test_score``.
        seed: seeds the split and the control task's permutation.
        control: also fit the control task (labels permuted over examples).
    """
    config = ProbeConfig() if config is None else config
    labels, n_out = _check(acts, labels, config)
    batch, n_pos = acts.shape[1], acts.shape[2]
    train_idx, test_idx = split(batch, test_fraction, seed)
    y = np.broadcast_to(labels.reshape(batch, -1), (batch, n_pos))  # batch pos
    tasks = [y] + ([y[np.random.default_rng(seed + 1).permutation(batch)]] if control else [])
    out = _fit_all(jnp.asarray(acts), jnp.asarray(np.stack(tasks)), jnp.asarray(train_idx),
                   jnp.asarray(test_idx), config=config, n_out=n_out)
    chance = 0.0
    if config.kind is ProbeKind.LOGISTIC:  # majority class of the training split, per site
        y_train, y_test = y[train_idx], y[test_idx]
        majority = [np.bincount(y_train[:, p]).argmax() for p in range(n_pos)]
        chance = float(np.mean([np.mean(y_test[:, p] == m) for p, m in enumerate(majority)]))
    return ProbeResult(
        W=out["W"][0], b=out["b"][0], train_score=out["train"][0], test_score=out["test"][0],
        control_score=out["test"][1] if control else None, chance=chance,
        features=out["features"][0] if config.k is not None else None,
        train_index=train_idx, test_index=test_idx,
        metric="accuracy" if config.kind is ProbeKind.LOGISTIC else "r2")


@functools.partial(jax.jit, static_argnames=("config", "n_out"))
def _fit_all(acts: Float[Array, "layer batch pos d"], y: Array, train_idx: Int[Array, " n_train"],
             test_idx: Int[Array, " n_test"], *, config: ProbeConfig, n_out: int) -> dict:
    x = jnp.moveaxis(acts.astype(jnp.float32), 2, 1)  # layer pos batch d
    y = jnp.moveaxis(y, 2, 1)  # task pos batch
    site = functools.partial(_fit_site, config=config, n_out=n_out,
                             train_idx=train_idx, test_idx=test_idx)
    over_pos = jax.vmap(site, in_axes=(0, 0))            # pos
    over_layer = jax.vmap(over_pos, in_axes=(0, None))   # layer, pos
    over_task = jax.vmap(over_layer, in_axes=(None, 0))  # task, layer, pos
    return over_task(x, y)


def _fit_site(x: Float[Array, "batch d"], y: Array, *, config: ProbeConfig, n_out: int,
              train_idx, test_idx) -> dict:
    x_train, x_test, y_train, y_test = x[train_idx], x[test_idx], y[train_idx], y[test_idx]
    d = x.shape[1]
    mean = x_train.mean(0) if config.standardize else jnp.zeros((d,), x.dtype)
    std = jnp.maximum(x_train.std(0), 1e-6) if config.standardize else jnp.ones((d,), x.dtype)
    z_train, z_test = (x_train - mean[None]) / std[None], (x_test - mean[None]) / std[None]
    features = jnp.arange(1)
    if config.k is not None:
        features = top_k_by_mean_difference(z_train, y_train, config.k)
        z_train, z_test = z_train[:, features], z_test[:, features]
    probe = fit(z_train, y_train, config, n_out)
    train, test = (score(probe, z, t, config.kind) for z, t in ((z_train, y_train),
                                                                 (z_test, y_test)))
    W = probe["W"]
    if config.k is not None:  # back to all d features, zero outside the chosen k
        W = jnp.zeros((d, n_out), W.dtype).at[features].set(W)
    W_raw = W / std[:, None]
    b_raw = probe["b"] - mean @ W_raw
    return {"W": W_raw, "b": b_raw, "train": train, "test": test, "features": features}
