"""Gradients of a metric with respect to every cached activation, from one backward pass.

Attribution patching (Nanda 2023; Kramár et al. 2024, AtP), edge attribution patching and
integrated gradients all need ``d metric / d activation`` at many points at once.
TransformerLens gets it with backward hooks; a pure-functional model has no hooks to fire, so
``grad_cache`` adds a zero "delta" input at every requested point (block points ride the layer
scan as per-layer slot data, like the captures) and differentiates the metric with respect to
the deltas: one forward, one backward, and the gradients come back stacked like the cache.
The gradient at a point is the gradient with respect to the activation *as the rest of the
model sees it* (after any hooks at that point), which is TransformerLens's backward-hook
convention: ``blocks.l.hook_resid_post`` and ``blocks.{l+1}.hook_resid_pre`` get equal
gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.cache import ActivationCache
from jinterp.hooks import Hooks
from jinterp.loop import run_model
from jinterp.model import HookedModel
from jinterp.names import NameSelector
from jinterp.plan import split_leaves
from jinterp.run import _rebuild, context_of, make_cache, prepare, validate_attention_mask


@functools.partial(jax.jit, static_argnames=("model", "plan", "hook_static", "metric_static"))
def _execute(params, inputs, leaves, metric_leaves, attention_mask=None, *, model, plan,
             hook_static, metric_static):
    data = _rebuild(hook_static, leaves)
    metric = _rebuild(metric_static, metric_leaves)
    ctx = context_of(attention_mask)

    def forward(deltas):
        return run_model(model, plan, params, inputs, data["top"], data["groups"], deltas,
                         ctx=ctx)

    _, top_shapes, block_shapes = jax.eval_shape(forward, None)
    zeros = {"top": {n: jnp.zeros(s.shape, s.dtype) for n, s in top_shapes.items()},
             "block": {p: jnp.zeros(s.shape, s.dtype) for p, s in block_shapes.items()}}

    def value(deltas):
        out, top, stacked = forward(deltas)
        result = metric(out)
        if not hasattr(result, "shape") or jnp.shape(result) != ():
            raise ValueError(f"The metric must map the logits to a scalar; it returned shape "
                             f"{getattr(result, 'shape', type(result).__name__)} (reduce it, "
                             "e.g. with .mean() or .sum()).")
        if not jnp.issubdtype(jnp.result_type(result), jnp.floating):
            raise TypeError(f"The metric must return a float scalar, got "
                            f"{jnp.result_type(result)}.")
        return result, (top, stacked)

    (result, (top, stacked)), grads = jax.value_and_grad(value, has_aux=True)(zeros)
    return result, top, stacked, grads["top"], grads["block"]


def lower(model: HookedModel, params, tokens, metric: Callable[[Array], Array],
          names: NameSelector = None, hooks: Hooks = None,
          attention_mask=None) -> jax.stages.Lowered:
    """The program :func:`grad_cache` would run, lowered (for compile time, memory, HLO)."""
    prep = prepare(model, params, tokens, names, hooks, None, None)
    mask = validate_attention_mask(model, attention_mask, prep.inputs)
    metric_leaves, metric_static, metric_treedef = split_leaves(metric)
    return _execute.lower(params, prep.inputs, prep.leaves, metric_leaves, mask, model=model,
                          plan=prep.plan, hook_static=(prep.treedef, prep.static_leaves),
                          metric_static=(metric_treedef, metric_static))


def grad_cache(model: HookedModel, params, tokens, metric: Callable[[Array], Array],
               names: NameSelector = None, hooks: Hooks = None, attention_mask=None
               ) -> tuple[Float[Array, ""], ActivationCache, ActivationCache]:
    """The metric, the cache, and ``d metric / d activation`` for every cached name.

    Args:
        model: a port.
        params: its parameters.
        tokens: integer ids ``[batch, pos]``.
        metric: maps the logits ``[batch, pos, d_vocab]`` to a float scalar (e.g. a logit
            difference). A plain function is part of the compile key (a new lambda each call
            recompiles); to pass arrays such as answer tokens without recompiling, wrap it as
            ``jax.tree_util.Partial(fn, answers)`` (called as ``fn(answers, logits)``), whose
            array arguments are dynamic.
        names: as in :func:`jinterp.run_with_cache` (default: every default name).
        hooks: optional hooks applied during the run.
        attention_mask: ``[batch, pos]`` padding mask, as in :func:`jinterp.run_with_cache`.

    Returns:
        ``(value, cache, grads)``; ``grads`` has the same names and shapes as ``cache``.
    """
    if not callable(metric):
        raise TypeError(f"metric must be a function logits -> scalar, got {type(metric).__name__}.")
    prep = prepare(model, params, tokens, names, hooks, None, None)
    mask = validate_attention_mask(model, attention_mask, prep.inputs)
    metric_leaves, metric_static, metric_treedef = split_leaves(metric)
    value, top, stacked, g_top, g_stacked = _execute(
        params, prep.inputs, prep.leaves, metric_leaves, mask, model=model, plan=prep.plan,
        hook_static=(prep.treedef, prep.static_leaves),
        metric_static=(metric_treedef, metric_static))
    cache = make_cache(model, prep.plan, prep.capture, top, stacked)
    grads = make_cache(model, prep.plan, prep.capture, g_top, g_stacked)
    return value, cache, grads
