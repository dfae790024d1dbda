"""A hand-built 2-layer induction model: the fast mode's ground truth.

``--fast`` skips training (which needs minutes before induction heads form) and runs the whole
analysis on weights whose circuit is known, so the smoke run checks that the study *finds* a
circuit, not only that it writes files. The residual stream is four blocks of coordinates:
the current token, the position, the previous token and the output.

- L0H0, a previous-token head: query and key read the position (position ``i`` matches key
  ``i - 1``); its value copies the token into the previous-token block.
- L1H0, an induction head that K-composes with it: its query reads the current token, its key
  the previous-token block, so it attends to the position after an earlier occurrence of the
  current token; its value copies that token into the output block, which the unembedding reads.
- Every other head has small random weights (distractors).

The circuit: embed -> L0H0 (q, k, v); L0H0 -> L1H0's key; embed -> L1H0 (q, v); L1H0 -> logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jinterp import models

SHARP = 6.0  # query/key scale: a matching key scores SHARP**2 / sqrt(d_head)
LOGIT = 10.0  # unembedding scale of the output block


def planted_model(d_vocab: int, n_ctx: int, n_heads: int = 2, distractor: float = 0.1,
                  seed: int = 0) -> tuple[models.GPT2, dict]:
    """``(model, params)`` of the planted circuit (module docstring) for ``d_vocab`` tokens.

    ``d_model = 3 * d_vocab + n_ctx`` (token, position, previous token, output blocks) and
    ``d_head = max(d_vocab, n_ctx)``.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1; got {n_heads}.")
    tok, pos, prev, out = 0, d_vocab, d_vocab + n_ctx, 2 * d_vocab + n_ctx
    d_model, d_head = 3 * d_vocab + n_ctx, max(d_vocab, n_ctx)
    model = models.GPT2(models.GPT2Config(
        n_layers=2, d_model=d_model, n_heads=n_heads, d_head=d_head, d_mlp=None,
        d_vocab=d_vocab, n_ctx=n_ctx, normalization=models.Norm.NONE,
        positional=models.Positional.LEARNED, tied_embeddings=False, attn_bias=False,
        mlp_bias=False, unembed_bias=False))
    rng = np.random.default_rng(seed)
    noise = lambda *shape: (distractor * rng.standard_normal(shape)).astype(np.float32)
    w_q, w_k, w_v = (noise(2, n_heads, d_model, d_head) for _ in range(3))
    w_o = noise(2, n_heads, d_head, d_model)
    for w in (w_q, w_k, w_v, w_o):
        w[:, 0] = 0.0
    eye_v, eye_p = np.eye(d_vocab, dtype=np.float32), np.eye(n_ctx, dtype=np.float32)
    w_q[0, 0, pos:pos + n_ctx, :n_ctx] = SHARP * eye_p  # query at position i ...
    w_k[0, 0, pos:pos + n_ctx, :n_ctx] = SHARP * np.eye(n_ctx, k=1, dtype=np.float32)  # ... i-1
    w_v[0, 0, tok:tok + d_vocab, :d_vocab] = eye_v
    w_o[0, 0, :d_vocab, prev:prev + d_vocab] = eye_v  # writes the previous token
    w_q[1, 0, tok:tok + d_vocab, :d_vocab] = SHARP * eye_v  # current token ...
    w_k[1, 0, prev:prev + d_vocab, :d_vocab] = SHARP * eye_v  # ... matches the previous token
    w_v[1, 0, tok:tok + d_vocab, :d_vocab] = eye_v
    w_o[1, 0, :d_vocab, out:out + d_vocab] = eye_v  # copies it to the output
    w_e = np.zeros((d_vocab, d_model), np.float32)
    w_e[:, tok:tok + d_vocab] = eye_v
    w_pos = np.zeros((n_ctx, d_model), np.float32)
    w_pos[:, pos:pos + n_ctx] = eye_p
    w_u = np.zeros((d_model, d_vocab), np.float32)
    w_u[out:out + d_vocab] = LOGIT * eye_v
    params = {"embed": {"W_E": w_e}, "pos_embed": {"W_pos": w_pos}, "unembed": {"W_U": w_u},
              "blocks": {"attn": {"W_Q": w_q, "W_K": w_k, "W_V": w_v, "W_O": w_o}}}
    params = jax.tree.map(jnp.asarray, params)
    if jax.tree.structure(params) != jax.tree.structure(model.param_shapes()):
        raise RuntimeError("The planted parameters no longer match the GPT-2 port's parameter "
                           "tree; update planted_model.")
    return model, params
