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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.model import HookedModel
from jinterp.patching.activation import check_tokens, site_activations
from jinterp.patching.sites import Site, get_site
from jinterp.patching.sweep import MetricFn, run_sweep
from jinterp.run import run_with_cache

METHODS = ("zero", "mean", "resample")


def _reference(model: HookedModel, params, tokens, site: Site,
               reference_cache: Mapping | None) -> list[Float[Array, "..."]]:
    """The site's activations of the reference batch (any size; its positions the run's)."""
    batch, n_pos = check_tokens(tokens)
    if reference_cache is None:
        _, reference_cache = run_with_cache(model, params, tokens,
                                            names=lambda n: n.endswith("." + site.point))
        return site_activations(model, site, reference_cache, batch, n_pos, "reference_cache")
    return site_activations(model, site, reference_cache, None, n_pos, "reference_cache")


def ablation_sweep(model: HookedModel, params, tokens, site: str | Site,
                   metric: MetricFn, *, method: str = "zero",
                   reference_cache: Mapping | None = None, key: jax.Array | None = None,
                   chunk_size: int | None = None, devices: Sequence | None = None
                   ) -> Float[Array, "..."]:
    """Ablates each node of ``site`` in the run on ``tokens``; returns the metric of each run.

    Args:
        model, params: the model.
        tokens: ``[batch, pos]`` token ids.
        site: a name of :data:`~jinterp.patching.sites.SITES`.
        metric: ``logits -> scalar`` (see :mod:`jinterp.metrics`).
        method: ``"zero"``, ``"mean"`` or ``"resample"``.
        reference_cache: activations of a reference batch ``[batch_ref, pos, ...]`` (mean and
            resample; default: the run's own).
        key: the resampling draw (default ``jax.random.key(0)``).
        chunk_size, devices: as in :func:`jinterp.patching.act_patch`.

    Returns:
        ``[layer, *node_axes]``, the shape of the matching ``get_act_patch_*``.
    """
    site = get_site(site)
    if method not in METHODS:
        raise ValueError(f"Unknown ablation method {method!r}; choose one of {METHODS}.")
    batch, _ = check_tokens(tokens)
    if method == "zero":
        if reference_cache is not None:
            raise ValueError("Zero ablation uses no reference; drop reference_cache (or use "
                             "method='mean' / 'resample').")
        sources = [jnp.zeros((), jnp.float32)] * model.n_layers
    elif method == "mean":
        ref = _reference(model, params, tokens, site, reference_cache)
        sources = [jnp.mean(a, axis=0, keepdims=True) for a in ref]  # [1, ...] per layer
    else:
        ref = _reference(model, params, tokens, site, reference_cache)
        key = jax.random.key(0) if key is None else key
        index = jax.random.randint(key, (batch,), 0, jnp.shape(ref[0])[0])
        sources = [jnp.take(a, index, axis=0) for a in ref]
    return run_sweep(model, params, tokens, site, sources, metric, chunk_size=chunk_size,
                     devices=devices)
