"""Subnetwork discovery: learn a continuous edge mask by gradient descent with a sparsity penalty.

Every edge of the node graph gets a logit ``theta``; the mask built from it runs as a circuit
(:func:`~jinterp.patching.circuit.circuit_logits`: a soft mask interpolates each edge between
its value in the circuit run and its corrupted value), and optax's Adam minimises

    |1 - faithfulness(mask)|  +  sparsity * E[number of kept edges] / n_edges

with ``faithfulness = (m(mask) - m(corrupted)) / (m(clean) - m(corrupted))``: the metric stays
near its clean value while edges are switched off. The whole optimisation is one compiled
``lax.scan``. The mask is

- ``"hard_concrete"`` (default; Louizos et al. 2018, as in subnetwork probing, Cao et al. 2021,
  and Edge Pruning, Bhaskar et al. 2024): a stretched, clipped binary-concrete sample per step
  (temperature 2/3, stretch ``(-0.1, 1.1)``), so masks are exactly 0 or 1 with non-zero
  probability and the penalty is the expected L0 norm ``sigmoid(theta - beta log(-gamma /
  zeta))``; evaluated without noise at the end;
- ``"sigmoid"``: ``sigmoid(theta)``, deterministic, penalty ``sum sigmoid(theta)``.

The final circuit keeps the edges whose noise-free mask exceeds ``cutoff`` (0.5).

Differences from Edge Pruning: a fixed penalty weight instead of a Lagrangian that reaches a
target sparsity, one mask per edge (no separate node masks), and the loss is the normalised
metric distance (for the default KL metric that is ``KL(clean || circuit) / KL(clean ||
corrupted)``, Edge Pruning's objective up to scale) rather than KL always.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jaxtyping import Array, Float

from jinterp.model import HookedModel
from jinterp.patching.attr_checks import MetricFn, positive_int
from jinterp.patching.circuit import (
    Circuit,
    baselines,
    circuit_logits,
    circuit_metrics,
    prepare,
    split_metric,
)
from jinterp.patching.eap import edge_index
from jinterp.run import _rebuild

BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1  # hard-concrete temperature and stretch
RELAXATIONS = ("hard_concrete", "sigmoid")


@dataclasses.dataclass(frozen=True)
class EdgeMaskLog:
    """What :func:`learn_edge_mask` did.

    Attributes:
        loss / distance / expected_edges: ``[steps]`` per optimisation step: the loss, its
            ``|1 - faithfulness|`` term, the expected number of kept edges.
        logits: ``[n_edges]`` final mask logits ``theta``.
        mask: ``[n_edges]`` final noise-free mask (before the cutoff).
        metric_clean / metric_corrupted: the metric of the full and the empty circuit.
        metric_final / faithfulness: of the thresholded circuit returned.
        seconds: wall time (compile included).
    """

    loss: Float[np.ndarray, " step"]
    distance: Float[np.ndarray, " step"]
    expected_edges: Float[np.ndarray, " step"]
    logits: Float[np.ndarray, " n"]
    mask: Float[np.ndarray, " n"]
    metric_clean: float
    metric_corrupted: float
    metric_final: float
    faithfulness: float
    seconds: float


def sample_mask(theta: Float[Array, " n"], key: jax.Array | None,
                relaxation: str) -> Float[Array, " n"]:
    """A mask from logits: a hard-concrete sample (``key``) or its noise-free value (None)."""
    if relaxation == "sigmoid":
        return jax.nn.sigmoid(theta)
    if key is None:
        s = jax.nn.sigmoid(theta)
    else:
        u = jax.random.uniform(key, theta.shape, minval=1e-6, maxval=1.0 - 1e-6)
        s = jax.nn.sigmoid((jnp.log(u) - jnp.log1p(-u) + theta) / BETA)
    return jnp.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def expected_kept(theta: Float[Array, " n"], relaxation: str) -> Float[Array, " n"]:
    """Per edge, the probability (hard concrete) or weight (sigmoid) of being kept."""
    if relaxation == "sigmoid":
        return jax.nn.sigmoid(theta)
    return jax.nn.sigmoid(theta - BETA * jnp.log(-GAMMA / ZETA))


@functools.partial(jax.jit, static_argnames=("model", "metric_static", "steps", "lr",
                                             "relaxation"))
def _train(params, theta0, key, inputs, metric_leaves, clean, corrupted, sparsity, *, model,
           metric_static, steps, lr, relaxation):
    metric = _rebuild(metric_static, metric_leaves)
    optimizer = optax.adam(lr)

    def loss_fn(theta, k):
        mask = sample_mask(theta, k, relaxation)
        value = metric(circuit_logits(model, params, mask, inputs)).astype(jnp.float32)
        distance = jnp.abs(1.0 - (value - corrupted) / (clean - corrupted))
        kept = expected_kept(theta, relaxation)
        return distance + sparsity * kept.mean(), (distance, kept.sum())

    def step(carry, k):
        theta, opt_state = carry
        (loss, (distance, kept)), grad = jax.value_and_grad(loss_fn, has_aux=True)(theta, k)
        updates, opt_state = optimizer.update(grad, opt_state, theta)
        return (optax.apply_updates(theta, updates), opt_state), jnp.stack([loss, distance, kept])

    (theta, _), history = lax.scan(step, (theta0, optimizer.init(theta0)),
                                   jax.random.split(key, steps))
    return theta, history


def _check(sparsity, steps, lr, key, relaxation, cutoff, init) -> None:
    for name, value in (("sparsity", sparsity), ("lr", lr), ("init", init), ("cutoff", cutoff)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or \
                not np.isfinite(value):
            raise TypeError(f"{name} must be a finite number; got {value!r}.")
    if sparsity < 0:
        raise ValueError(f"sparsity={sparsity} must be >= 0 (the weight of the edge-count "
                         "penalty; e.g. 0.1).")
    if lr <= 0:
        raise ValueError(f"lr={lr} must be > 0 (Adam's learning rate; e.g. 0.1).")
    if not 0 < cutoff < 1:
        raise ValueError(f"cutoff={cutoff} must lie in (0, 1).")
    positive_int(steps, "steps", "the optimisation steps (e.g. 300)")
    if relaxation not in RELAXATIONS:
        raise ValueError(f"relaxation must be one of {RELAXATIONS}; got {relaxation!r}.")
    if not (isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
            and key.shape == ()):
        raise TypeError(f"key must be one PRNG key from jax.random.key(seed); got {key!r}.")


def learn_edge_mask(model: HookedModel, params, clean_tokens, corrupted_tokens,
                    metric: MetricFn | None, *, sparsity: float, steps: int, lr: float,
                    key: jax.Array, relaxation: str = "hard_concrete", init: float = 3.0,
                    cutoff: float = 0.5) -> tuple[Circuit, EdgeMaskLog]:
    """Learns which edges to keep: a relaxed edge mask trained with Adam, then thresholded.

    Args:
        model, params: the model (its parameters stay fixed).
        clean_tokens / corrupted_tokens: ``[batch, pos]`` prompt pairs, as in
            :func:`~jinterp.patching.circuit.run_circuit`.
        metric: ``logits -> scalar``; None for ``KL(clean || circuit)`` at every position.
        sparsity: weight of the expected fraction of kept edges in the loss (e.g. 0.1).
        steps: Adam steps (one ``lax.scan``).
        lr: Adam's learning rate (e.g. 0.1).
        key: ``jax.random.key(seed)`` for the hard-concrete noise.
        relaxation: ``"hard_concrete"`` or ``"sigmoid"`` (see the module docstring).
        init: initial logit of every edge (3: the circuit starts near full).
        cutoff: an edge is kept when its noise-free mask exceeds this.

    Returns:
        ``(circuit, log)``: the binary :class:`Circuit` and an :class:`EdgeMaskLog`.
    """
    _check(sparsity, steps, lr, key, relaxation, cutoff, init)
    start = time.perf_counter()
    inputs, metric = prepare(model, params, clean_tokens, corrupted_tokens, metric)
    base = baselines(model, params, clean_tokens, corrupted_tokens, metric)
    leaves, static = split_metric(metric)
    theta0 = jnp.full(len(edge_index(model)), float(init), jnp.float32)
    theta, history = _train(params, theta0, key, inputs, leaves, jnp.float32(base.clean),
                            jnp.float32(base.corrupted), jnp.float32(sparsity), model=model,
                            metric_static=static, steps=int(steps), lr=float(lr),
                            relaxation=relaxation)
    soft = sample_mask(theta, None, relaxation)
    circuit = Circuit((soft > cutoff).astype(jnp.float32), model)
    final = float(circuit_metrics(params, circuit.mask[None], inputs, leaves, model=model,
                                  metric_static=static, chunk=1)[0])
    history = np.asarray(history)
    log = EdgeMaskLog(history[:, 0], history[:, 1], history[:, 2], np.asarray(theta),
                      np.asarray(soft), base.clean, base.corrupted, final,
                      base.faithfulness(final), time.perf_counter() - start)
    return circuit, log
