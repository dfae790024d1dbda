"""Interchange-intervention accuracy (IIA): how often the intervened model gives the
counterfactual label.

IIA (Geiger et al. 2021, 2023) is the fraction of (base, source) pairs on which the model,
with the source's subspace component swapped into the base at the hook, predicts what the
causal model predicts under the interchange on its variable. 1 means the subspace realises the
variable on this data; the score of an intervention that changes nothing is the fraction of
pairs whose counterfactual label equals the base label (1/2 on balanced data: chance).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.das.rotation import random_orthogonal
from jinterp.das.train import (
    Position,
    check_triples,
    hook_width,
    intervened_logits,
    run_inputs,
    source_activation,
)
from jinterp.model import HookedModel


@functools.partial(jax.jit, static_argnames=("model", "hook", "pos", "head", "label_pos"))
def _correct(params, base: Array, source_act: Array, labels: Int[Array, " batch"],
             basis: Float[Array, "n d"], weights: Float[Array, " n"] | None, *,
             model: HookedModel, hook: str, pos: Position, head: int | None,
             label_pos: int) -> Bool[Array, " batch"]:
    logits = intervened_logits(model, params, base, source_act, basis, weights, hook=hook,
                               pos=pos, head=head)
    return jnp.argmax(logits[:, label_pos], axis=-1) == labels


def iia(model: HookedModel, params, base: Int[Array | np.ndarray, "batch pos"],
        source: Int[Array | np.ndarray, "batch pos"],
        labels: Int[Array | np.ndarray, " batch"], basis: Float[Array | np.ndarray, "n d"], *,
        hook: str, pos: Position = None, head: int | None = None, label_pos: int = -1,
        weights: Float[Array | np.ndarray, " n"] | None = None,
        batch_size: int | None = None) -> float:
    """Interchange-intervention accuracy of the subspace ``basis`` at ``hook``.

    Args:
        basis: ``[n, d]`` orthonormal rows (``DASResult.basis``, :func:`random_basis`).
        labels: counterfactual labels, one per (base, source) pair.
        hook / pos / head / label_pos: as in :class:`~jinterp.das.DASConfig`.
        weights: optional ``[n]`` interchange weights (a soft mask); None swaps every row.
        batch_size: evaluate in chunks of this many pairs (memory); None: all at once.
    """
    check_triples(base, source, labels)
    d = hook_width(model, hook)
    shape = np.shape(basis)
    if len(shape) != 2 or shape[1] != d:
        raise ValueError(f"basis has shape {shape}; {hook!r} has width d={d}, so it needs "
                         f"[n, {d}] (a rotation trained on another hook or model?).")
    if isinstance(pos, list):
        pos = tuple(pos)
    n = np.shape(base)[0]
    chunk = n if batch_size is None else batch_size
    correct = 0
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        base_in = run_inputs(model, params, base[sl], hook)
        source_act = source_activation(model, params, run_inputs(model, params, source[sl], hook),
                                       hook)
        ok = _correct(params, base_in, source_act, jnp.asarray(labels[sl], jnp.int32),
                      jnp.asarray(basis),
                      None if weights is None else jnp.asarray(weights), model=model,
                      hook=hook, pos=pos, head=head, label_pos=label_pos)
        correct += int(jnp.sum(ok))
    return correct / n


def random_basis(key: jax.Array, d: int, n: int) -> Float[Array, "n d"]:
    """``n`` Haar-random orthonormal rows of width ``d``: the untrained baseline of DAS."""
    if not 0 < n <= d:
        raise ValueError(f"random_basis: n={n} must lie in 1..d={d}.")
    return random_orthogonal(key, d)[:n]
