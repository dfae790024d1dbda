"""The gradient programs behind attribution patching: plain, GradDrop and integrated gradients.

Each is one compiled program over ``jinterp.grad_cache`` (one forward and one backward pass
per gradient), vmapped where it needs several:

- :func:`corrupted_grads`: ``dM/d activation`` on the corrupted run (AtP, AtP*'s QK fix).
- :func:`grad_drop_grads` (AtP*'s GradDrop, Kramár et al. 2024): for each layer ``l``, the same
  gradients with the backward pass cut at layer ``l``'s residual contributions
  (``stop_gradient`` on its ``hook_attn_out`` and ``hook_mlp_out``): every path through layer
  ``l``'s attention or MLP is dropped, the skip connection kept. One program, vmapped over ``l``.
- :func:`integrated_grads` (Sundararajan et al. 2017, per layer as in Marks et al. 2024): the
  site's activation at layer ``l`` is set to ``corrupted + alpha * (clean - corrupted)`` for
  ``steps`` midpoints ``alpha = (k + 1/2) / steps`` and the gradients there are averaged. One
  program vmapped over (layer, step), ``chunk_size`` runs at a time.

Metrics are split into arrays (dynamic) and the rest (static), so a new answer array never
recompiles; a new Python function does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from jinterp.grad import grad_cache
from jinterp.hooks import At
from jinterp.interventions import Patch
from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.plan import split_leaves
from jinterp.run import _rebuild


def _names(model: HookedModel, points: tuple[str, ...]) -> list[str]:
    return [block_name(layer, p) for p in points for layer in range(model.n_layers)]


def _stacks(cache, points: tuple[str, ...]) -> dict[str, Array]:
    return {p: cache.stack(p) for p in points}


@functools.partial(jax.jit, static_argnames=("model", "points", "metric_static"))
def _corrupted(params, tokens, metric_leaves, mask, *, model, points, metric_static):
    metric = _rebuild(metric_static, metric_leaves)
    value, cache, grads = grad_cache(model, params, tokens, metric, names=_names(model, points),
                                     attention_mask=mask)
    return value, _stacks(cache, points), _stacks(grads, points)


@functools.partial(jax.jit, static_argnames=("model", "points", "metric_static"))
def _dropped(params, tokens, metric_leaves, mask, *, model, points, metric_static):
    metric = _rebuild(metric_static, metric_leaves)
    cut = [p for p in ("hook_attn_out", "hook_mlp_out") if p in model.block_point_axes]

    def one(layer):
        hooks = {p: At(layer, lax.stop_gradient) for p in cut}
        _, _, grads = grad_cache(model, params, tokens, metric, names=_names(model, points),
                                 hooks=hooks, attention_mask=mask)
        return _stacks(grads, points)

    return jax.vmap(one)(jnp.arange(model.n_layers))


@functools.partial(jax.jit, static_argnames=("model", "point", "steps", "chunk",
                                             "metric_static"))
def _integrated(params, tokens, clean, corrupt, metric_leaves, mask, *, model, point, steps,
                chunk, metric_static):
    metric = _rebuild(metric_static, metric_leaves)
    names = _names(model, (point,))
    alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps

    def one(i):
        layer, alpha = i // steps, alphas[i % steps]
        base = lax.dynamic_index_in_dim(corrupt, layer, keepdims=False)
        delta = lax.dynamic_index_in_dim(clean, layer, keepdims=False) - base
        values = base + alpha.astype(base.dtype) * delta
        _, _, grads = grad_cache(model, params, tokens, metric, names=names,
                                 hooks={point: At(layer, Patch(values))}, attention_mask=mask)
        return lax.dynamic_index_in_dim(grads.stack(point), layer, keepdims=False)

    n = model.n_layers * steps
    grads = lax.map(one, jnp.arange(n), batch_size=min(chunk or n, n))
    return grads.reshape(model.n_layers, steps, *grads.shape[1:]).mean(1)


def corrupted_grads(model: HookedModel, params, tokens, metric, points: tuple[str, ...],
                    mask=None) -> tuple[Float[Array, ""], dict[str, Array], dict[str, Array]]:
    """``(M(corrupted), {point: activations [layer, ...]}, {point: dM/d activation})``."""
    leaves, static, treedef = split_leaves(metric)
    return _corrupted(params, tokens, leaves, mask, model=model, points=points,
                      metric_static=(treedef, static))


def grad_drop_grads(model: HookedModel, params, tokens, metric, points: tuple[str, ...],
                    mask=None) -> dict[str, Array]:
    """``{point: [dropped layer, layer, ...]}``: gradients with one layer's block dropped."""
    leaves, static, treedef = split_leaves(metric)
    return _dropped(params, tokens, leaves, mask, model=model, points=points,
                    metric_static=(treedef, static))


def integrated_grads(model: HookedModel, params, tokens, metric, point: str,
                     clean: Float[Array, "layer ..."], corrupt: Float[Array, "layer ..."],
                     steps: int, chunk_size: int | None, mask=None) -> Float[Array, "layer ..."]:
    """The gradient at ``point`` averaged along the straight path, layer by layer."""
    leaves, static, treedef = split_leaves(metric)
    return _integrated(params, tokens, clean, corrupt, leaves, mask, model=model, point=point,
                       steps=steps, chunk=chunk_size, metric_static=(treedef, static))
