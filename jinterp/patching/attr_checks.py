"""Input checks of the attribution and path-patching functions, before anything is traced."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jinterp.model import HookedModel
from jinterp.patching.sites import Site

#: ``logits [batch, pos, d_vocab] -> scalar`` (e.g. from :mod:`jinterp.metrics`).
MetricFn = Callable[[Float[Array, "batch pos d_vocab"]], Float[Array, ""]]


def token_shape(tokens, what: str = "tokens") -> tuple[int, int]:
    """``(batch, pos)`` of ``[batch, pos]`` token ids."""
    shape = tuple(np.shape(tokens))
    if len(shape) != 2:
        hint = " For one prompt pass tokens[None]." if len(shape) == 1 else ""
        raise ValueError(f"{what} must have shape [batch, pos]; got shape {shape}.{hint}")
    return shape


def same_shape(clean_tokens, corrupted_tokens) -> tuple[int, int]:
    """Clean and corrupted prompts must pair up one to one."""
    clean = token_shape(clean_tokens, "clean_tokens")
    corrupt = token_shape(corrupted_tokens, "corrupted_tokens")
    if clean != corrupt:
        raise ValueError(f"Clean tokens of shape {clean} and corrupted tokens of shape {corrupt} "
                         "must have the same shape [batch, pos] (pad or truncate the prompts "
                         "to one length).")
    return clean


def scalar_metric(model: HookedModel, metric, batch: int, n_pos: int) -> None:
    """``metric`` maps logits ``[batch, pos, d_vocab]`` to a float scalar."""
    if not callable(metric):
        raise TypeError(f"The metric must be a function logits -> scalar (e.g. "
                        f"jinterp.metrics.logit_diff(answer, wrong)); got {type(metric).__name__}.")
    logits = jax.ShapeDtypeStruct((batch, n_pos, model.d_vocab), jnp.float32)
    out = jax.eval_shape(metric, logits)
    if getattr(out, "shape", None) != ():
        raise ValueError(f"The metric must return a scalar; on logits of shape {logits.shape} it "
                         f"returned {getattr(out, 'shape', out)!r}. Reduce over the batch and "
                         "positions (e.g. .mean()).")


def positive_int(value, what: str, fix: str) -> int:
    """An int >= 1 (``steps``, ``chunk_size``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what}={value!r} must be an int >= 1: {fix}.")
    return int(value)


def clean_stack(model: HookedModel, site: Site, cache: Mapping, batch: int,
                n_pos: int) -> Float[Array, "layer ..."]:
    """The clean cache's activations of ``site`` at every layer, ``[layer, ...]``."""
    names = [site.hook_name(layer) for layer in range(model.n_layers)]
    absent = [n for n in names if n not in cache]
    if absent:
        raise KeyError(f"clean_cache has no {absent[:3]}{' ...' if len(absent) > 3 else ''}: "
                       f"site {site.name!r} reads {site.point!r} at every layer. Cache it with "
                       f"run_with_cache(model, params, clean_tokens, names=lambda n: "
                       f"n.endswith({site.point!r})), or names=None.")
    first = tuple(np.shape(cache[names[0]]))
    axes = site.axes(model)
    if first[0] != batch or first[axes.index("q_pos" if "q_pos" in axes else "pos")] != n_pos:
        raise ValueError(f"clean_cache[{names[0]!r}] has shape {first}, which does not come from "
                         f"prompts of the corrupted tokens' shape {(batch, n_pos)}: clean and "
                         "corrupted prompts must have the same [batch, pos] shape.")
    return jnp.stack([jnp.asarray(cache[n]) for n in names])
