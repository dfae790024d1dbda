"""The logit lens (nostalgebraist 2020): decode the residual stream at every layer.

The residual entering block ``l`` is read as if it were the last one: the port's own
``unembed`` (final norm included, Gemma's soft-cap included) maps it to logits. All layers come
from one forward pass (``run_with_cache`` captures the residual point at every layer, stacked)
and one ``vmap`` of ``unembed`` over the stack, so the whole lens is one program.

Memory: the result is ``[layer, batch, pos, d_vocab]``; for a 50k vocabulary that is
``n_layers * batch * pos * 200 kB``. Pass ``layers=`` or reduce it with :func:`lens_metrics`
inside the same jit when that is too much.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jinterp.loop import BlockHook
from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.run import run_with_cache

#: The points a lens reads; each is ``[batch, pos, d_model]`` in every block.
RESID_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")

_NO_HOOK = BlockHook(lambda point, x: x, frozenset())  # applies nothing, records nothing


def unembed_stack(model: HookedModel, params,
                  resid: Float[Array, "layer batch pos d_model"]
                  ) -> Float[Array, "layer batch pos d_vocab"]:
    """The port's ``unembed`` (final norm inside) applied to each slice of a residual stack."""
    if resid.ndim != 4 or resid.shape[-1] != model.d_model:
        raise ValueError(f"A residual stack has shape [layer, batch, pos, d_model="
                         f"{model.d_model}]; got {tuple(resid.shape)}. Pass e.g. "
                         "cache.stack('hook_resid_pre').")
    return jax.vmap(lambda r: model.unembed(params, r, _NO_HOOK))(resid)


def resid_stack(model: HookedModel, params, tokens, *, point: str = "hook_resid_pre",
                layers: Sequence[int] | None = None, hooks=None
                ) -> tuple[Float[Array, "layer batch pos d_model"],
                           Float[Array, "batch pos d_vocab"]]:
    """The residual at ``point`` for ``layers`` (default: all, in that order) and the final
    logits, from one forward pass."""
    if point not in RESID_POINTS:
        raise ValueError(f"A lens reads a residual point, one of {RESID_POINTS}; got {point!r}.")
    if point not in model.block_points:
        raise ValueError(f"This model has no {point!r} (its block points: "
                         f"{model.block_points}).")
    layers = list(range(model.n_layers)) if layers is None else [int(l) for l in layers]
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad or not layers:
        raise ValueError(f"layers={layers} must be a non-empty list of blocks in "
                         f"0..{model.n_layers - 1}.")
    names = [block_name(l, point) for l in layers]
    logits, cache = run_with_cache(model, params, tokens, names=names, hooks=hooks)
    stacked, order = cache.stack(point), cache.layers(point)  # captured in forward order
    if order != layers:
        stacked = stacked[jnp.array([order.index(l) for l in layers])]
    return stacked, logits


def logit_lens(model: HookedModel, params, tokens: Int[Array, "batch pos"] | object, *,
               point: str = "hook_resid_pre", layers: Sequence[int] | None = None,
               hooks=None) -> Float[Array, "layer batch pos d_vocab"]:
    """Logits read off the residual at every layer (or ``layers``), in one forward pass.

    Args:
        model, params: a port and its parameters.
        tokens: token ids ``[batch, pos]``.
        point: which residual to read: ``hook_resid_pre`` (default; layer ``l`` has seen
            blocks ``0..l-1``, so layer 0 is the embedding), ``hook_resid_mid`` or
            ``hook_resid_post`` (the last layer's then equals the model's logits).
        layers: which blocks, in the order wanted (default: every block).
        hooks: optional interventions applied during the run (a steered lens).

    Returns:
        ``[layer, batch, pos, d_vocab]`` logits, one slice per entry of ``layers``.
    """
    resid, _ = resid_stack(model, params, tokens, point=point, layers=layers, hooks=hooks)
    return unembed_stack(model, params, resid)
