"""Ablation sweeps: every node of a site zeroed, mean-ablated or resampled, one at a time.

The same sites, programs and result shapes as activation patching
(:mod:`jinterp.patching.activation`); only what a node is replaced with differs:

- ``"zero"``: zeros;
- ``"mean"``: the mean of the site's activation over the examples of ``reference_cache``
  (per position, as in TransformerLens-style mean ablation; default: the run's own batch);
- ``"resample"``: for each example, the activation of a random example of
  ``reference_cache`` (drawn once with ``key``, the same draw for every node; default
  reference: the run itself).

A score is the metric of the ablated run, so a node the behaviour depends on moves it away
from the unablated value.

Padded batches (``attention_mask``, as in :func:`jinterp.patching.sweep.run_sweep`): every run
attends as :func:`jinterp.run_with_cache` with the mask does, the reference run included. A
pad's activation means nothing, so the mean is a *masked* mean (:func:`masked_mean`): at each
position, over the reference examples that are real there. Resampling keeps its draw and copies
the drawn example's activations as they are, pads included: where the drawn prompt is shorter,
a real position may receive a pad's value (pad prompts of equal lengths if that matters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from jinterp.model import HookedModel
from jinterp.names import Axes
from jinterp.patching.activation import check_tokens, site_activations
from jinterp.patching.sites import Site, get_site
from jinterp.patching.sweep import MetricFn, run_sweep
from jinterp.run import run_with_cache, validate_attention_mask

METHODS = ("zero", "mean", "resample")
POSITION_AXES = ("pos", "q_pos", "k_pos")


def masked_mean(acts: Float[Array, "batch_ref ..."], axes: Axes,
                mask: ArrayLike | None) -> Float[Array, "1 ..."]:
    """The mean over the batch (axis 0, kept) of the examples real at each position.

    An entry's weight in an example is the product of ``mask`` ``[batch_ref, pos]`` at each of
    its position axes (``pos``; ``q_pos`` and ``k_pos`` of a pattern: both query and key must
    be real). A position real in no example gets zeros: there is no real value to average (with
    the run as its own reference no real token sits there; a separate, shorter reference
    batch zero-ablates the run's real tokens there). ``mask=None``: the plain mean.
    """
    if mask is None:
        return jnp.mean(acts, axis=0, keepdims=True)
    real = jnp.asarray(mask).astype(jnp.float32)  # batch_ref pos
    weight = jnp.ones((1,) * acts.ndim, jnp.float32)
    for i, axis in enumerate(axes):
        if axis in POSITION_AXES:
            shape = [1] * acts.ndim
            shape[0], shape[i] = real.shape  # batch_ref at 0, pos at the axis
            weight = weight * real.reshape(shape)
    total = jnp.sum(acts.astype(jnp.float32) * weight, axis=0, keepdims=True)  # 1 ...
    count = jnp.sum(weight, axis=0, keepdims=True)  # 1 ... (size 1 off the position axes)
    mean = jnp.where(count > 0, total / jnp.maximum(count, 1.0), 0.0)
    return mean.astype(acts.dtype)


def _check_reference_mask(model: HookedModel, reference_mask, ref: list, site: Site):
    """``reference_mask`` must be ``[batch_ref, pos]`` of the reference activations."""
    axes = site.axes(model)
    shape = np.shape(ref[0])
    want = (shape[0], shape[axes.index(next(a for a in axes if a in POSITION_AXES))])
    if tuple(np.shape(reference_mask)) != want:
        raise ValueError(f"reference_mask must have the reference batch's shape [batch_ref, "
                         f"pos] = {want} (from reference_cache); got "
                         f"{tuple(np.shape(reference_mask))}. Pass the mask reference_cache "
                         "was computed with.")
    return validate_attention_mask(model, reference_mask, np.empty(want, bool))


def _reference(model: HookedModel, params, tokens, site: Site,
               reference_cache: Mapping | None, attention_mask
               ) -> list[Float[Array, "..."]]:
    """The site's activations of the reference batch (any size; its positions the run's)."""
    batch, n_pos = check_tokens(tokens)
    if reference_cache is None:
        _, reference_cache = run_with_cache(model, params, tokens, attention_mask=attention_mask,
                                            names=lambda n: n.endswith("." + site.point))
        return site_activations(model, site, reference_cache, batch, n_pos, "reference_cache")
    return site_activations(model, site, reference_cache, None, n_pos, "reference_cache")


def _check_references(method: str, reference_cache, reference_mask) -> None:
    if method == "zero" and reference_cache is not None:
        raise ValueError("Zero ablation uses no reference; drop reference_cache (or use "
                         "method='mean' / 'resample').")
    if reference_mask is None:
        return
    if method != "mean":
        raise ValueError(f"reference_mask is the reference batch's mask for the masked mean; "
                         f"method={method!r} does not use it (resample copies the drawn "
                         "example's activations as they are): drop it.")
    if reference_cache is None:
        raise ValueError("reference_mask describes reference_cache, which is not given: the "
                         "reference is then the run itself, whose mask is attention_mask. "
                         "Drop reference_mask (or pass reference_cache too).")


def ablation_sweep(model: HookedModel, params, tokens, site: str | Site,
                   metric: MetricFn, *, method: str = "zero",
                   reference_cache: Mapping | None = None, key: jax.Array | None = None,
                   chunk_size: int | None = None, devices: Sequence | None = None,
                   attention_mask: ArrayLike | None = None,
                   reference_mask: ArrayLike | None = None) -> Float[Array, "..."]:
    """Ablates each node of ``site`` in the run on ``tokens``; returns the metric of each run.

    Args:
        model, params: the model.
        tokens: ``[batch, pos]`` token ids.
        site: a name of :data:`~jinterp.patching.sites.SITES`.
        metric: ``logits -> scalar`` (see :mod:`jinterp.metrics`).
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference_cache: activations of a reference batch ``[batch_ref, pos, ...]`` (mean and
            resample; default: the run's own, computed with ``attention_mask``).
        key: the resampling draw (default ``jax.random.key(0)``).
        chunk_size, devices: as in :func:`jinterp.patching.act_patch`.
        attention_mask: ``[batch, pos]`` 1 for real tokens, 0 for padding (left or right):
            every ablated run, and the default reference run, attend as
            :func:`jinterp.run_with_cache` with this mask does (see
            :func:`jinterp.patching.sweep.run_sweep`). The default reference's mean is then
            masked (:func:`masked_mean`: per position, over the examples real there; zeros
            where none is). With right padding let the metric read each row's last real slot.
        reference_mask: ``[batch_ref, pos]``, the mask ``reference_cache`` was computed with,
            for its masked mean (``method="mean"`` only). Default: every reference token real,
            the plain mean. A cache of padded prompts must come from a run with its own mask
            (``run_with_cache(..., attention_mask=reference_mask)``) and be given that mask
            here, or the mean averages pads' activations in; a cache of the padded run itself
            takes ``reference_mask=attention_mask`` (or leave ``reference_cache`` None).

    Returns:
        ``[layer, *node_axes]``, the shape of the matching ``get_act_patch_*``.
    """
    site = get_site(site)
    if method not in METHODS:
        raise ValueError(f"Unknown ablation method {method!r}; choose one of {METHODS}.")
    _check_references(method, reference_cache, reference_mask)
    batch, _ = check_tokens(tokens)
    if method == "zero":
        sources = [jnp.zeros((), jnp.float32)] * model.n_layers
    elif method == "mean":
        ref = _reference(model, params, tokens, site, reference_cache, attention_mask)
        if reference_cache is None:
            reference_mask = attention_mask
        elif reference_mask is not None:
            reference_mask = _check_reference_mask(model, reference_mask, ref, site)
        axes = site.axes(model)
        sources = [masked_mean(a, axes, reference_mask) for a in ref]  # [1, ...] per layer
    else:
        ref = _reference(model, params, tokens, site, reference_cache, attention_mask)
        key = jax.random.key(0) if key is None else key
        index = jax.random.randint(key, (batch,), 0, jnp.shape(ref[0])[0])
        sources = [jnp.take(a, index, axis=0) for a in ref]
    return run_sweep(model, params, tokens, site, sources, metric, chunk_size=chunk_size,
                     devices=devices, attention_mask=attention_mask)
