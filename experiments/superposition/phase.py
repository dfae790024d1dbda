r"""Exact expected loss of the n = 2, m = 1 ReLU toy model and its optimal phase.

Setup (the paper's "Phase Change" section): two features with the same density ``p = 1 - S``,
importances ``I_0 = 1`` and ``I_1 = r`` (the "extra" feature's relative importance), one hidden
dimension. Parameters ``w = (w_0, w_1)`` and ``b = (b_0, b_1)``; output
``x'_i = ReLU(w_i (w_0 x_0 + w_1 x_1) + b_i)``. The loss is the training loss,
``L = 1/2 E[sum_i I_i (x_i - x'_i)^2]`` (mean over the two features).

Derivation. Condition on which features are present; each present value is U[0, 1]:

* neither (prob ``(1-p)^2``): ``sum_i I_i ReLU(b_i)^2``;
* only ``x_0 = u`` (prob ``p(1-p)``): ``I_0 F(u; w_0^2, b_0) + I_1 F(0; w_0 w_1, b_1)``;
* only ``x_1 = v``: the mirror image;
* both (prob ``p^2``):
  ``E_v[ I_0 F(u; w_0^2, w_0 w_1 v + b_0) + I_1 F(v; w_0 w_1, w_1^2 v + b_1) ]``,

where ``F(t; a, c) = int_0^1 (t(u) - ReLU(a u + c))^2 du`` for a target ``t`` that is affine in
the integration variable ``u``. ``F`` is exact in closed form: ``a u + c > 0`` on one interval
``[lo, hi]`` of ``[0, 1]`` (found from the root ``-c/a``), the integrand is ``t^2`` off it and
``(t - a u - c)^2`` on it, and both are quadratics with elementary antiderivatives. Only the
outer integral over ``v`` in the both-present case is numeric (Gauss-Legendre; its integrand is
continuously differentiable, so 128 nodes give ~1e-9 accuracy).

Candidate solutions and their optimal losses (``V = Var(x) = p/3 - p^2/4``):

* not learned, ``w = (1, 0)``, ``b = (0, p/2)``: feature 0 is exact, feature 1 is predicted by
  its mean: ``L = r V / 2``;
* dedicated, ``w = (0, 1)``, ``b = (p/2, 0)``: ``L = V / 2``;
* superposition (antipodal, ``w_0 > 0 > w_1``): no closed form; minimised numerically over the
  four parameters from several starting points with Adam on the exact loss.

The analytic phase of a cell is the argmin. Superposition wins only if it is strictly lower (by
a relative ``1e-6``) and the minimiser is still antipodal; otherwise the optimiser slid to the
boundary ``w_1 -> 0``, which *is* the not-learned solution.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float

from .analysis import DEDICATED, NOT_LEARNED, SUPERPOSITION

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(128)
_V_NODES = jnp.asarray(0.5 * (_GL_NODES + 1.0), jnp.float32)  # nodes mapped to [0, 1]
_V_WEIGHTS = jnp.asarray(0.5 * _GL_WEIGHTS, jnp.float32)


def _quad_integral(k0, k1, k2, lo, hi):
    """``int_lo^hi (k0 + k1 u + k2 u^2) du``."""
    return k0 * (hi - lo) + k1 * (hi**2 - lo**2) / 2 + k2 * (hi**3 - lo**3) / 3


def relu_sq_error_integral(t0, t1, a, c):
    """Exact ``int_0^1 (t0 + t1 u - ReLU(a u + c))^2 du`` (broadcasts over all arguments)."""
    safe_a = jnp.where(a == 0, 1.0, a)
    root = jnp.clip(-c / safe_a, 0.0, 1.0)
    lo = jnp.where(a > 0, root, 0.0)
    hi = jnp.where(a > 0, 1.0, jnp.where(a < 0, root, jnp.where(c > 0, 1.0, 0.0)))
    target_sq = t0**2 + t0 * t1 + t1**2 / 3  # int_0^1 (t0 + t1 u)^2
    d0, d1 = t0 - c, t1 - a  # (t - a u - c) = d0 + d1 u on the active interval
    active = _quad_integral(d0**2, 2 * d0 * d1, d1**2, lo, hi)
    inactive_removed = _quad_integral(t0**2, 2 * t0 * t1, t1**2, lo, hi)
    return target_sq + active - inactive_removed


def expected_loss(
    w: Float[ArrayLike, "2"],
    b: Float[ArrayLike, "2"],
    importance: Float[ArrayLike, "2"],
    p: float | Float[ArrayLike, ""],
) -> Float[Array, ""]:
    """Exact expected training loss of the n = 2, m = 1 model (see the module docstring)."""
    w, b, importance = jnp.asarray(w), jnp.asarray(b), jnp.asarray(importance)
    w0, w1 = w[0], w[1]
    i0, i1 = importance[0], importance[1]
    none = i0 * jax.nn.relu(b[0]) ** 2 + i1 * jax.nn.relu(b[1]) ** 2
    only0 = i0 * relu_sq_error_integral(0.0, 1.0, w0 * w0, b[0]) + i1 * relu_sq_error_integral(
        0.0, 0.0, w0 * w1, b[1]
    )
    only1 = i1 * relu_sq_error_integral(0.0, 1.0, w1 * w1, b[1]) + i0 * relu_sq_error_integral(
        0.0, 0.0, w0 * w1, b[0]
    )
    v = _V_NODES  # [node]: x_1 = v, inner integral over x_0 = u
    both_v = i0 * relu_sq_error_integral(0.0, 1.0, w0 * w0, w0 * w1 * v + b[0]) + i1 * (
        relu_sq_error_integral(v, 0.0, w0 * w1, w1 * w1 * v + b[1])
    )  # [node]
    both = jnp.sum(_V_WEIGHTS * both_v)
    total = (1 - p) ** 2 * none + p * (1 - p) * (only0 + only1) + p**2 * both
    return 0.5 * total


def _optimise_superposition(importance, p, steps: int):
    """Minimises the exact loss over antipodal solutions for one cell from several starts."""
    starts_w = jnp.asarray([[1.0, -1.0], [1.1, -0.9], [0.9, -1.1], [1.0, -1.0]], jnp.float32)
    starts_b = jnp.asarray([[0.0, 0.0], [-0.1, -0.1], [-0.1, -0.1], [-0.3, -0.3]], jnp.float32)
    schedule = optax.exponential_decay(2e-2, transition_steps=steps, decay_rate=0.01)
    opt = optax.adam(schedule)

    def loss(theta):
        return expected_loss(theta[:2], theta[2:], importance, p)

    def run(theta):
        def step(carry, _):
            theta, s = carry
            g = jax.grad(loss)(theta)
            u, s = opt.update(g, s, theta)
            return (optax.apply_updates(theta, u), s), None

        (theta, _), _ = jax.lax.scan(step, (theta, opt.init(theta)), None, length=steps)
        return theta, loss(theta)

    thetas, losses = jax.vmap(run)(jnp.concatenate([starts_w, starts_b], axis=1))
    best = jnp.argmin(losses)
    return thetas[best], losses[best]


@functools.partial(jax.jit, static_argnames="steps")
def _optimal_superposition_grid(importance_grid, p_grid, steps):
    return jax.vmap(lambda imp, p: _optimise_superposition(imp, p, steps))(importance_grid, p_grid)


def analytic_phase_diagram(
    relative_importance: np.ndarray, density: np.ndarray, optimiser_steps: int = 3000
) -> dict[str, np.ndarray]:
    """Optimal phase on the grid ``relative_importance x density``.

    Args:
        relative_importance: ``[R]`` importances of the extra feature (feature 0 has 1).
        density: ``[P]`` feature probabilities ``1 - S``.
        optimiser_steps: Adam steps for the superposition candidate (exponentially decayed
            learning rate 2e-2 -> 2e-4).

    Returns:
        ``phase`` ``[R, P]`` (0 not learned, 1 dedicated, 2 superposition) and the three
        candidate losses ``loss_not_learned``, ``loss_dedicated``, ``loss_superposition``
        ``[R, P]`` plus the superposition minimiser ``theta_superposition`` ``[R, P, 4]``
        (w0, w1, b0, b1).
    """
    r = np.asarray(relative_importance, np.float64)
    p = np.asarray(density, np.float64)
    if r.ndim != 1 or p.ndim != 1:
        raise ValueError(f"need 1-D grids, got shapes {r.shape} and {p.shape}")
    if np.any(p <= 0) or np.any(p > 1) or np.any(r <= 0):
        raise ValueError("density must lie in (0, 1] and relative importance must be > 0")
    rr, pp = np.meshgrid(r, p, indexing="ij")  # [R P]
    var = pp / 3 - pp**2 / 4
    loss_nl = 0.5 * rr * var
    loss_ded = 0.5 * var
    imp = np.stack([np.ones_like(rr), rr], axis=-1).reshape(-1, 2)
    theta, loss_sup = _optimal_superposition_grid(
        jnp.asarray(imp, jnp.float32), jnp.asarray(pp.reshape(-1), jnp.float32), optimiser_steps
    )
    theta = np.asarray(theta, np.float64).reshape(*rr.shape, 4)
    loss_sup = np.asarray(loss_sup, np.float64).reshape(rr.shape)
    antipodal = (theta[..., 0] * theta[..., 1] < 0) & (np.abs(theta[..., :2]).min(-1) > 0.1)
    phase = np.where(loss_nl <= loss_ded, NOT_LEARNED, DEDICATED)
    best_other = np.minimum(loss_nl, loss_ded)
    phase = np.where(antipodal & (loss_sup < best_other * (1 - 1e-6)), SUPERPOSITION, phase)
    return {
        "phase": phase,
        "loss_not_learned": loss_nl,
        "loss_dedicated": loss_ded,
        "loss_superposition": loss_sup,
        "theta_superposition": theta,
    }
