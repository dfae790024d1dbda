"""Next-token cross-entropy, TransformerLens's ``return_type="loss"``.

``lm_cross_entropy_loss(logits, tokens)`` scores position ``i``'s logits against token
``i + 1`` (so there are ``pos - 1`` terms per prompt) in float32; ``per_token=True`` returns
``[batch, pos - 1]``, otherwise the mean. ``next_token_loss(model, params, tokens)`` runs the
model first, with optional hooks (a patched or ablated loss in one call).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int

from jinterp.run import run_with_hooks


def lm_cross_entropy_loss(logits: Float[Array, "batch pos d_vocab"],
                          tokens: Int[ArrayLike, "batch pos"], per_token: bool = False
                          ) -> Float[Array, "..."]:
    """``-log p(tokens[:, i + 1] | ...)`` from ``logits[:, i]``: ``[batch, pos - 1]`` or the mean.

    Raises:
        ValueError: tokens whose shape is not the logits' ``[batch, pos]``, or one position.
    """
    tokens = jnp.asarray(tokens)
    if tokens.shape != logits.shape[:2]:
        raise ValueError(f"tokens {tuple(tokens.shape)} must be the logits' [batch, pos] "
                         f"{tuple(logits.shape[:2])}.")
    if tokens.shape[1] < 2:
        raise ValueError("A next-token loss needs at least two positions.")
    log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]  # batch pos-1
    return -picked if per_token else -picked.mean()


def next_token_loss(model, params, tokens: Int[ArrayLike, "batch pos"], *,
                    per_token: bool = False, hooks=None) -> Float[Array, "..."]:
    """The model's next-token loss on ``tokens`` (TL's ``model(tokens, return_type="loss")``)."""
    logits = run_with_hooks(model, params, tokens, hooks or {})
    return lm_cross_entropy_loss(logits, tokens, per_token)
