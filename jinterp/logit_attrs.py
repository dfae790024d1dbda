"""Direct logit attribution: how much each residual component writes to a token's logit.

``logit_attrs(model, params, stack, tokens)`` dots every component of a residual stack
(``[component, *lead, d_model]``, e.g. ``cache.decompose_resid(apply_ln=True)``) with the
unembedding direction ``W_U[:, token]`` of each token (``[*lead]``, or one int); with
``incorrect_tokens`` the direction is ``W_U[:, token] - W_U[:, incorrect]`` (a logit
difference, as in the IOI paper). Result ``[component, *lead]``.

Which normalisation. Without ``cache=``, the stack is taken as already normalised (``apply_ln``
done by the decomposition). With ``cache=`` it is TransformerLens's ``cache.logit_attrs``:
the stack is raw and is first scaled by the cached final-norm scale (``ln_final.hook_scale``,
centred for LayerNorm). As in TL, the direction is ``W_U`` alone: the final norm's weight is
not in it, so on unprocessed weights the attributions ignore ``ln_final.w``; run
:func:`jinterp.weights.process` first (TL's ``from_pretrained`` does), which folds it into
``W_U``. With the final norm's bias folded too, the components then sum to the logit minus
``b_U`` (before Gemma's soft-cap, which is not linear).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from jinterp import readout
from jinterp.checks import is_host_value


def tokens_to_residual_directions(model, params, tokens: Int[ArrayLike, "..."] | int
                                  ) -> Float[Array, "*lead d_model"]:
    """``W_U[:, tokens]`` moved to ``[*lead, d_model]`` (TL's ``tokens_to_residual_directions``)."""
    W = readout.W_U(model, params)  # d_model d_vocab
    if is_host_value(tokens):
        host = np.asarray(tokens)
        if host.dtype.kind not in "iu":
            raise TypeError(f"tokens must be integer ids, got {host.dtype}; turn a string into "
                            "an id with jinterp.to_single_token(tokenizer, text).")
        if host.size and (host.min() < 0 or host.max() >= W.shape[1]):
            raise ValueError(f"token ids must be in [0, {W.shape[1]}), got min {host.min()} and "
                             f"max {host.max()}.")
    return jnp.moveaxis(W[:, jnp.asarray(tokens)], 0, -1)


def logit_attrs(model, params, residual_stack: Float[Array, "n *lead d_model"],
                tokens: Int[ArrayLike, "..."] | int, incorrect_tokens: Int[ArrayLike, "..."] | int |
                None = None, *, cache=None, pos_slice=None, batch_slice=None,
                has_batch_dim: bool = True) -> Float[Array, " n *lead"]:
    """Each component's contribution to the logit of ``tokens`` (minus ``incorrect_tokens``).

    Args:
        residual_stack: ``[component, *lead, d_model]``; ``*lead`` is the stack's batch / pos
            axes (e.g. ``[batch]`` after ``pos_slice=-1``).
        tokens: one id, or ids of shape ``*lead`` (one per batch / position).
        incorrect_tokens: same shape as ``tokens``; attributes the logit difference.
        cache: the cache the stack came from, to apply TL's final-norm scaling first (see the
            module docstring); ``pos_slice`` / ``batch_slice`` are the slices the stack used.

    Raises:
        ValueError: a last axis that is not ``d_model``; tokens whose shape does not match the
            stack's leading axes; ``incorrect_tokens`` of another shape.
    """
    if residual_stack.ndim < 2 or residual_stack.shape[-1] != model.d_model:
        raise ValueError(f"residual_stack has shape {tuple(residual_stack.shape)}; it must be "
                         f"[component, ..., d_model] with d_model={model.d_model} last.")
    directions = tokens_to_residual_directions(model, params, tokens)
    if incorrect_tokens is not None:
        if jnp.shape(incorrect_tokens) != jnp.shape(tokens):
            raise ValueError(f"tokens and incorrect_tokens must have the same shape, got "
                             f"{jnp.shape(tokens)} and {jnp.shape(incorrect_tokens)}.")
        directions = directions - tokens_to_residual_directions(model, params, incorrect_tokens)
    lead = residual_stack.shape[1:-1]
    if directions.ndim == 1:
        directions = directions.reshape((1,) * len(lead) + directions.shape)
    if directions.ndim != len(lead) + 1 or any(
            d not in (1, s) for d, s in zip(directions.shape[:-1], lead)):
        raise ValueError(f"tokens of shape {jnp.shape(tokens)} do not match the stack's leading "
                         f"axes {lead} (stack {tuple(residual_stack.shape)}): pass one id per "
                         "batch / position of the stack, or a single id.")
    if cache is not None:
        residual_stack = cache.apply_ln_to_stack(
            residual_stack, -1, pos_slice=pos_slice, batch_slice=batch_slice,
            has_batch_dim=has_batch_dim, model=model, params=params)
    return (residual_stack * directions[None].astype(residual_stack.dtype)).sum(-1)
