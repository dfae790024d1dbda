"""Steering during a forward pass: add vectors at chosen layers, positions and scale.

:func:`steering_hooks` builds the hooks (``jinterp.At`` over the chosen layers around the core's
``Steer``), so steering composes with every other hook, runs under ``jit`` / ``vmap`` (a sweep
over scales is one program) and differentiates in the vector and the scale. :class:`ActAdd`
adds a ``[k, d_model]`` vector at positions ``start .. start + k - 1`` of every prompt,
whatever its length, as the ActAdd paper does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Union

import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Real

from jinterp.hooks import At
from jinterp.interventions import Intervention, Selector, Steer
from jinterp.model import HookedModel
from jinterp.names import Axes
from jinterp.run import run_with_hooks
from jinterp.steering.vectors import _check_point

Layers = Union[int, Sequence[int], None]


def layer_array(model: HookedModel, layers: Layers) -> Array:
    """``layers`` (an int, ints, or None for every layer) as a checked int array."""
    chosen = np.arange(model.n_layers) if layers is None else np.atleast_1d(np.asarray(layers))
    if chosen.ndim != 1 or not chosen.size or not np.issubdtype(chosen.dtype, np.integer):
        raise ValueError(f"layers must be an int or a list of ints; got {layers!r}.")
    bad = chosen[(chosen < 0) | (chosen >= model.n_layers)]
    if bad.size:
        raise ValueError(f"layer {int(bad[0])} is outside 0..{model.n_layers - 1}.")
    return jnp.asarray(chosen, jnp.int32)


def check_vector(model: HookedModel, vector, what: str = "steering vector") -> bool:
    """Checks ``vector`` is ``[d_model]`` or ``[n_layers, d_model]``; returns whether stacked."""
    shape = tuple(np.shape(vector))
    if not shape or shape[-1] != model.d_model:
        raise ValueError(f"The {what} has shape {shape}; this model's residual has width "
                         f"d_model={model.d_model}, so it needs shape ({model.d_model},) or "
                         f"({model.n_layers}, {model.d_model}) (one per layer).")
    if len(shape) == 2 and shape[0] == model.n_layers:
        return True
    if len(shape) != 1:
        raise ValueError(f"The {what} has shape {shape}; it needs ({model.d_model},) or "
                         f"({model.n_layers}, {model.d_model}) (one per layer).")
    return False


def steering_hooks(model: HookedModel, vector: Float[Array | np.ndarray, "..."], *,
                   layers: Layers = None, scale: float | Array = 1.0, pos: Selector = None,
                   point: str = "hook_resid_pre") -> dict:
    """Hooks adding ``scale * vector`` at ``point`` of ``layers`` and positions ``pos``.

    Args:
        vector: ``[d_model]`` (the same at each layer) or ``[n_layers, d_model]`` (each chosen
            layer uses its own row, e.g. the output of :func:`diff_in_means`).
        layers: an int, a list, or None for every layer.
        scale: the coefficient (a scalar; may be traced).
        pos: which positions (``None``: all; an int, indices, a slice or a mask).
        point: the ``[batch, pos, d_model]`` point steered.
    """
    _check_point(model, point)
    stacked = check_vector(model, vector)
    return {point: At(layer_array(model, layers), Steer(vector, scale, pos=pos),
                      stacked=stacked)}


def steer(model: HookedModel, params, tokens, vector, *, layers: Layers = None,
          scale: float | Array = 1.0, pos: Selector = None, point: str = "hook_resid_pre",
          hooks=None) -> Float[Array, "batch pos d_vocab"]:
    """Logits of a forward pass steered as :func:`steering_hooks` says (plus ``hooks``)."""
    steering = steering_hooks(model, vector, layers=layers, scale=scale, pos=pos, point=point)
    extra = dict(hooks or {})
    if point in extra:
        raise ValueError(f"hooks already has an entry for {point!r}; combine them in one list.")
    return run_with_hooks(model, params, tokens, {**extra, **steering})


@struct.dataclass
class ActAdd(Intervention):
    """Add ``scale * vector`` (``[k, d_model]``) at positions ``start .. start + k - 1``.

    The ActAdd intervention (Turner et al. 2023): the vector of a prompt pair, position by
    position, added over the front of any prompt at least ``start + k`` tokens long.
    """

    layered_fields: ClassVar[tuple[str, ...]] = ()

    vector: Float[Array | np.ndarray, "pos d_model"]
    scale: Union[float, int, Real[Array, ""]] = 1.0
    start: int = struct.field(pytree_node=False, default=0)

    def check(self, shape, axes, name, *, layers=None):
        super().check(shape, axes, name, layers=layers)
        k, width = np.shape(self.vector)
        if tuple(axes) != ("batch", "pos", "d_model") or width != shape[-1]:
            raise ValueError(f"ActAdd on {name!r}: a [{k}, {width}] vector needs a "
                             f"[batch, pos, d_model={width}] activation; got axes {axes}, shape "
                             f"{tuple(shape)}.")
        n_pos = shape[1]
        if self.start < 0 or self.start + k > n_pos:
            raise ValueError(f"ActAdd on {name!r}: positions {self.start}..{self.start + k - 1} "
                             f"do not fit the prompt's {n_pos} positions; use a longer prompt "
                             "or a smaller start.")

    def apply(self, x: Array, axes: Axes) -> Array:
        self.check(x.shape, axes, "the activation")
        k = np.shape(self.vector)[0]
        delta = jnp.asarray(self.scale, x.dtype) * jnp.asarray(self.vector, x.dtype)  # k d
        return x.at[:, self.start:self.start + k].add(delta[None])
