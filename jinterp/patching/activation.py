"""Activation patching with TransformerLens's names, arguments and result shapes.

``get_act_patch_X(model, params, corrupted_tokens, clean_cache, patching_metric)`` patches each
node of site ``X`` (:mod:`jinterp.patching.sites`) from ``clean_cache`` into the run on
``corrupted_tokens``, one node at a time, and returns ``patching_metric`` of each patched run
in TransformerLens's shape. This is *denoising*: a node whose clean value restores the clean
behaviour scores high. *Noising* (which nodes, corrupted, break the clean behaviour) is the same
call with the arguments swapped: ``get_act_patch_X(model, params, clean_tokens,
corrupted_cache, metric)``. TransformerLens's ``model`` becomes ``model, params``; everything
else ports by search and replace (``transformer_lens.patching`` -> ``jinterp.patching``).

k and v sites patch *kv heads* (``n_kv_heads`` on grouped- or multi-query models): their
results have ``[layer, n_kv_heads]`` / ``[layer, pos, n_kv_heads]``; the ``*_every`` functions
repeat them over each group's query heads so the rows stack (see
:func:`jinterp.patching.sites.stack_every`).

Every sweep is one program per start layer and suffix bucket, vmapped over nodes (see
:mod:`jinterp.patching.sweep` and :mod:`jinterp.patching.suffix`): ``chunk_size`` bounds how
many patched forwards run at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import Array, Float

from jinterp.model import HookedModel
from jinterp.patching.sites import EVERY, SITES, Site, get_site, stack_every
from jinterp.patching.sweep import DEFAULT_BUCKETS, MetricFn, run_sweep


def check_tokens(tokens) -> tuple[int, int]:
    """``[batch, pos]`` integer tokens."""
    shape = np.shape(tokens)
    if len(shape) != 2:
        raise ValueError(f"tokens must have shape [batch, pos]; got shape {shape}."
                         + (" For one prompt pass tokens[None]." if len(shape) == 1 else ""))
    return shape


def site_activations(model: HookedModel, site: Site, cache: Mapping, batch: int | None,
                     n_pos: int, what: str) -> list[Float[Array, "..."]]:
    """``cache``'s activation of ``site`` at every layer, checked against ``[batch, n_pos]``.

    Args:
        batch: the batch the activations must have (None: any).
        what: how the cache is called in errors (``"clean_cache"``).
    """
    names = [site.hook_name(layer) for layer in range(model.n_layers)]
    missing = [n for n in names if n not in cache]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise KeyError(
            f"{what} lacks {missing[:3]}{more}, which site {site.name!r} patches. Cache "
            f"them: jinterp.run_with_cache(model, params, tokens, names=lambda n: "
            f"n.endswith({site.point!r})) (or names=None for every activation).")
    axes = site.axes(model)
    acts = [cache[n] for n in names]
    batch = np.shape(acts[0])[0] if batch is None else batch
    want = tuple(batch if a == "batch" else n_pos if a in ("pos", "q_pos", "k_pos") else
                 model.dims.get(a, 1) for a in axes)
    shape = tuple(np.shape(acts[0]))
    if shape != want:
        got_tokens = (shape[0], shape[axes.index("q_pos" if "q_pos" in axes else "pos")])
        raise ValueError(
            f"{what}[{names[0]!r}] has shape {shape}, from tokens of shape {got_tokens}; the "
            f"tokens patched into have shape {(batch, n_pos)}, which needs {want}. Clean and "
            "corrupted prompts must have the same [batch, pos] shape (pad or truncate them).")
    return acts


def act_patch(model: HookedModel, params, corrupted_tokens, clean_cache: Mapping,
              patching_metric: MetricFn, site: str | Site, *, chunk_size: int | None = None,
              devices: Sequence | None = None,
              suffix_buckets: int | None = DEFAULT_BUCKETS,
              attention_mask=None) -> Float[Array, "..."]:
    """Patches each node of ``site`` from ``clean_cache`` into the corrupted run.

    Args:
        model, params: the model.
        corrupted_tokens: ``[batch, pos]`` token ids of the run patched into.
        clean_cache: activations of the clean run (an :class:`~jinterp.ActivationCache` or a
            dict by name) with the site's point at every layer.
        patching_metric: ``logits -> scalar`` (see :mod:`jinterp.metrics`).
        site: a name of :data:`~jinterp.patching.sites.SITES` (``"resid_pre"``, ...).
        chunk_size: patches vmapped at once (None: one layer's nodes at once).
        devices: devices to shard the patches over (default: all).
        suffix_buckets: suffix lengths compiled per layer: each patch recomputes only the
            positions it can change (:mod:`jinterp.patching.suffix`); None: every position.
        attention_mask: ``[batch, pos]`` padding mask of the corrupted prompts (1 real, 0 pad;
            left or right), for prompts of different lengths in one batch; compute
            ``clean_cache`` with the clean prompts' mask (see
            :func:`jinterp.patching.sweep.run_sweep`).

    Returns:
        ``[layer, *node_axes]`` (TransformerLens's shape for the same sweep), float32.
    """
    site = get_site(site)
    batch, n_pos = check_tokens(corrupted_tokens)
    sources = site_activations(model, site, clean_cache, batch, n_pos, "clean_cache")
    return run_sweep(model, params, corrupted_tokens, site, sources, patching_metric,
                     chunk_size=chunk_size, devices=devices, suffix_buckets=suffix_buckets,
                     attention_mask=attention_mask)


def _define(site_name: str):
    site = SITES[site_name]
    shape = ", ".join(("layer",) + site.node_axes).replace("n_heads", "head").replace(
        "n_kv_heads", "kv_head").replace("q_pos", "dest").replace("k_pos", "src")

    def sweep(model: HookedModel, params, corrupted_tokens, clean_cache: Mapping,
              patching_metric: MetricFn, *, chunk_size: int | None = None,
              devices: Sequence | None = None,
              suffix_buckets: int | None = DEFAULT_BUCKETS,
              attention_mask=None) -> Float[Array, "..."]:
        return act_patch(model, params, corrupted_tokens, clean_cache, patching_metric, site,
                         chunk_size=chunk_size, devices=devices, suffix_buckets=suffix_buckets,
                         attention_mask=attention_mask)

    sweep.__name__ = sweep.__qualname__ = f"get_act_patch_{site_name}"
    sweep.__doc__ = (f"Patches ``{site.point}`` from ``clean_cache`` into the corrupted run, one "
                     f"node at a time; returns ``[{shape}]``.\n\n    Arguments as "
                     ":func:`act_patch` (TransformerLens's, with ``params``).\n")
    return sweep


def _define_every(every: str, shape: str):
    def sweep(model: HookedModel, params, corrupted_tokens, clean_cache: Mapping,
              patching_metric: MetricFn, *, chunk_size: int | None = None,
              devices: Sequence | None = None, attention_mask=None) -> Float[Array, "..."]:
        results = [act_patch(model, params, corrupted_tokens, clean_cache, patching_metric, name,
                             chunk_size=chunk_size, devices=devices,
                             attention_mask=attention_mask) for name in EVERY[every]]
        return stack_every(model, every, results)

    sweep.__name__ = sweep.__qualname__ = f"get_act_patch_{every}"
    sweep.__doc__ = (f"The sweeps of {', '.join(EVERY[every])} stacked: ``{shape}`` (kv-head "
                     "rows repeated over their query heads on GQA models).\n")
    return sweep


get_act_patch_resid_pre = _define("resid_pre")
get_act_patch_resid_mid = _define("resid_mid")
get_act_patch_attn_out = _define("attn_out")
get_act_patch_mlp_out = _define("mlp_out")
get_act_patch_attn_head_out_all_pos = _define("attn_head_out_all_pos")
get_act_patch_attn_head_q_all_pos = _define("attn_head_q_all_pos")
get_act_patch_attn_head_k_all_pos = _define("attn_head_k_all_pos")
get_act_patch_attn_head_v_all_pos = _define("attn_head_v_all_pos")
get_act_patch_attn_head_pattern_all_pos = _define("attn_head_pattern_all_pos")
get_act_patch_attn_head_out_by_pos = _define("attn_head_out_by_pos")
get_act_patch_attn_head_q_by_pos = _define("attn_head_q_by_pos")
get_act_patch_attn_head_k_by_pos = _define("attn_head_k_by_pos")
get_act_patch_attn_head_v_by_pos = _define("attn_head_v_by_pos")
get_act_patch_attn_head_pattern_by_pos = _define("attn_head_pattern_by_pos")
get_act_patch_attn_head_pattern_dest_src_pos = _define("attn_head_pattern_dest_src_pos")
get_act_patch_block_every = _define_every("block_every", "[3, layer, pos]")
get_act_patch_attn_head_all_pos_every = _define_every("attn_head_all_pos_every",
                                                      "[5, layer, head]")
get_act_patch_attn_head_by_pos_every = _define_every("attn_head_by_pos_every",
                                                     "[5, layer, pos, head]")
