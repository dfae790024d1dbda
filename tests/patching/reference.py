"""Slow references for the patching sweeps: one ``run_with_hooks`` per node, built-in hooks.

The sweeps build each node's patch from a mask (:meth:`Site.node_mask`); the references use the
core's own interventions (``Patch``, ``ZeroAblate``, ``MeanAblate``, ``ResampleAblate``) with
``pos=`` / ``head=`` selectors, and compute the metric on the full logits of a full forward.
"""

import itertools

import numpy as np

import jinterp
from jinterp import At, Patch
from jinterp.patching import get_site


def node_selectors(site, coords) -> dict:
    """``pos=`` / ``head=`` of one node (the pattern's ``pos`` selects its query axis)."""
    names = {"pos": "pos", "q_pos": "pos", "n_heads": "head", "n_kv_heads": "head"}
    return {names[a]: int(c) for a, c in zip(site.node_axes, coords) if a in names}


def loop_sweep(model, params, tokens, site_name, make_hook, metric,
               attention_mask=None) -> np.ndarray:
    """``metric`` of one patched forward per node; ``make_hook(layer, coords)`` builds its hook
    (each forward with ``attention_mask``, when given)."""
    site = get_site(site_name)
    shape = site.node_shape(model, np.shape(tokens)[1])
    out = np.zeros((model.n_layers, *shape), np.float32)
    for layer in range(model.n_layers):
        for coords in itertools.product(*map(range, shape)):
            hooks = {site.point: At(layer, make_hook(layer, coords))}  # one compile per site
            logits = jinterp.run_with_hooks(model, params, tokens, hooks,
                                            attention_mask=attention_mask)
            out[(layer, *coords)] = float(metric(logits))
    return out


def patch_hooks(site_name, clean_cache, corrupted_cache):
    """``make_hook`` that patches clean values into one node with the core's ``Patch``."""
    site = get_site(site_name)

    def make_hook(layer, coords):
        clean = np.asarray(clean_cache[site.hook_name(layer)])
        if "k_pos" not in site.node_axes:
            return Patch(clean, **node_selectors(site, coords))
        head, dest, src = coords  # a single (dest, src) entry: full values, one entry changed
        values = np.array(corrupted_cache[site.hook_name(layer)])
        values[:, head, dest, src] = clean[:, head, dest, src]
        return Patch(values, head=head, pos=dest)

    return make_hook
