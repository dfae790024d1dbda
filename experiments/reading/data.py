"""Inputs whose answers are known, so each reading method has a ground truth to find.

* :func:`repeated_probe`: the ``r r`` probe (a random ``r`` followed by itself). On the second
  copy the next token is known in context (an induction head predicts it); on the first it is
  uniform noise. Masks say which positions are which.
* :func:`contrast_prompts`: ``r r[:k+1]`` prompts whose in-context answer (the token after the
  earlier occurrence of the last token) is a chosen token ``A`` or ``B``: the contrast sets for
  a difference-in-means direction.
* :func:`previous_tokens`: the per-token feature the probes decode, the previous token's
  identity (written into the residual by a previous-token head).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from jinterp.experiments.induction.data import repeated_tokens


def repeated_probe(key: jax.Array, d_vocab: int, half_len: int, batch: int
                   ) -> tuple[Int[Array, "batch pos"], Bool[np.ndarray, " pos_m1"]]:
    """``r r`` tokens and which next-token targets (``[pos - 1]``, aligned with the logits at
    ``t``) are predictable: ``t`` in the second copy (``half_len <= t < 2 half_len - 1``)."""
    tokens = repeated_tokens(key, d_vocab, half_len, batch)
    t = np.arange(2 * half_len - 1)
    return tokens, (t >= half_len)


def contrast_prompts(seed: int, d_vocab: int, half_len: int, answer_at: int, batch: int,
                     answer: int, avoid: tuple[int, ...]) -> Int[np.ndarray, "batch pos"]:
    """``r + r[:answer_at + 1]`` with ``r[answer_at + 1] = answer``: an induction head at the
    last position (token ``r[answer_at]``) predicts ``answer``.

    ``r`` is drawn without the tokens in ``avoid`` (and without ``answer`` elsewhere), so the
    answer is the only in-context evidence; ``r``'s tokens are distinct, so the last token has
    exactly one earlier occurrence.
    """
    if not 0 <= answer_at < half_len - 1:
        raise ValueError(f"answer_at must lie in [0, half_len - 1 = {half_len - 1}); got "
                         f"{answer_at}.")
    allowed = np.setdiff1d(np.arange(d_vocab), np.array((answer, *avoid)))
    if allowed.size < half_len:
        raise ValueError(f"A vocabulary of {d_vocab} leaves {allowed.size} tokens, fewer than "
                         f"half_len={half_len} distinct ones; shorten the prompts.")
    rng = np.random.default_rng(seed)
    r = np.stack([rng.choice(allowed, half_len, replace=False) for _ in range(batch)])
    r[:, answer_at + 1] = answer
    return np.concatenate([r, r[:, : answer_at + 1]], axis=1).astype(np.int32)


def previous_tokens(tokens: Int[Array, "batch pos"]) -> Int[Array, "batch pos"]:
    """The token before each position (position 0 gets its own token, a label never used)."""
    return jnp.concatenate([tokens[:, :1], tokens[:, :-1]], axis=1)
