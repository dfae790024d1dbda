"""Per-layer agreement of a lens with the model: KL to the final logits, next-token loss.

Both reduce ``[layer, batch, pos, d_vocab]`` to ``[layer]`` and are cheap to run inside the
same jit as the lens, so the full lens logits never need to leave the device.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jinterp.loss import lm_cross_entropy_loss


def kl_to_final(lens_logits: Float[Array, "layer batch pos d_vocab"],
                final_logits: Float[Array, "batch pos d_vocab"]) -> Float[Array, " layer"]:
    """``KL(p_final || p_lens)`` in nats, averaged over batch and positions, per layer.

    The direction of the tuned lens paper (Belrose et al. 2023): how many nats a reader of
    layer ``l`` loses against the model's own prediction.
    """
    if lens_logits.shape[1:] != final_logits.shape:
        raise ValueError(f"lens logits {tuple(lens_logits.shape)} need [layer, *final logits "
                         f"shape {tuple(final_logits.shape)}].")
    log_p = jax.nn.log_softmax(final_logits.astype(jnp.float32), axis=-1)[None]
    log_q = jax.nn.log_softmax(lens_logits.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)  # layer batch pos
    return kl.mean(axis=(1, 2))


def next_token_loss(lens_logits: Float[Array, "layer batch pos d_vocab"],
                    tokens: Int[Array, "batch pos"]) -> Float[Array, " layer"]:
    """Cross-entropy of the next token (positions ``0..pos-2``) per layer, in nats."""
    if lens_logits.shape[1:3] != tokens.shape:
        raise ValueError(f"lens logits {tuple(lens_logits.shape)} and tokens "
                         f"{tuple(tokens.shape)} disagree on [batch, pos].")
    return jax.vmap(lambda logits: lm_cross_entropy_loss(logits, tokens))(lens_logits)
