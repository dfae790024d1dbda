"""One probe on one site's data: logistic / linear fits with optax, ridge in closed form.

Everything here works on one (layer, position)'s matrix ``x [n, d]``; :mod:`jinterp.probes.fit`
``vmap``s it over layers, positions and tasks. Two classes use one sigmoid logit (the
objective scikit-learn's ``LogisticRegression`` minimises); more use a softmax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int

from jinterp.probes.config import ProbeConfig, ProbeKind
from jinterp.probes.optimize import minimize

Probe = dict  # {"W": [d, n_out], "b": [n_out]}


def logits(probe: Probe, x: Float[Array, "n d"]) -> Float[Array, "n n_out"]:
    """The probe's outputs (one column for two classes or regression)."""
    return x @ probe["W"] + probe["b"][None]  # n n_out


def _data_loss(kind: ProbeKind, out: Float[Array, "n n_out"], y: Array) -> Array:
    if kind is not ProbeKind.LOGISTIC:
        return 0.5 * jnp.mean(jnp.square(out[:, 0] - y))
    if out.shape[1] == 1:
        return jnp.mean(optax.sigmoid_binary_cross_entropy(out[:, 0], y.astype(out.dtype)))
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))


def fit(x: Float[Array, "n d"], y: Array, config: ProbeConfig, n_out: int) -> Probe:
    """The probe minimising ``mean loss + l2 / 2 * |W|^2`` on ``(x, y)``."""
    if config.kind is ProbeKind.RIDGE:
        return ridge(x, y, config.l2)
    init = {"W": jnp.zeros((x.shape[1], n_out), x.dtype), "b": jnp.zeros((n_out,), x.dtype)}
    loss = lambda p: (_data_loss(config.kind, logits(p, x), y)
                      + 0.5 * config.l2 * jnp.sum(jnp.square(p["W"])))
    return minimize(loss, init, steps=config.steps, method=config.method, lr=config.lr)


def ridge(x: Float[Array, "n d"], y: Float[Array, " n"], l2: float) -> Probe:
    """Closed form of ``1/(2n) |y - x w - b|^2 + l2/2 |w|^2``: centre, then normal equations.

    ``(xc^T xc / n + l2 I) w = xc^T yc / n``, solved with a Cholesky factorisation (the matrix
    is symmetric positive definite for ``l2 > 0``).
    """
    n, d = x.shape
    x_mean, y_mean = x.mean(0), y.mean()
    xc, yc = x - x_mean[None], y - y_mean
    gram = xc.T @ xc / n + l2 * jnp.eye(d, dtype=x.dtype)  # d d
    w = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), xc.T @ yc / n)  # d
    return {"W": w[:, None], "b": (y_mean - x_mean @ w)[None]}


def score(probe: Probe, x: Float[Array, "n d"], y: Array, kind: ProbeKind) -> Array:
    """Accuracy (classification) or R^2 (regression) of ``probe`` on ``(x, y)``."""
    out = logits(probe, x)
    if kind is ProbeKind.LOGISTIC:
        pred = (out[:, 0] > 0).astype(y.dtype) if out.shape[1] == 1 else jnp.argmax(out, -1)
        return jnp.mean(pred == y)
    residual = jnp.sum(jnp.square(out[:, 0] - y))
    total = jnp.sum(jnp.square(y - y.mean()))
    return 1.0 - residual / jnp.maximum(total, jnp.finfo(out.dtype).tiny)


def top_k_by_mean_difference(x: Float[Array, "n d"], y: Int[Array, " n"], k: int
                             ) -> Int[Array, " k"]:
    """The ``k`` features whose class means differ most (Gurnee et al. 2023's selection).

    On standardised features this ranks by effect size; ``y`` holds two classes, 0 and 1.
    """
    pos = (y == 1).astype(x.dtype)[:, None]  # n 1
    n_pos = jnp.maximum(pos.sum(), 1.0)
    n_neg = jnp.maximum((1.0 - pos).sum(), 1.0)
    diff = (x * pos).sum(0) / n_pos - (x * (1.0 - pos)).sum(0) / n_neg  # d
    return jax.lax.top_k(jnp.abs(diff), k)[1]
