"""A hand-built 2-layer attention-only induction model with a known circuit.

The residual stream has four 16-dimensional subspaces: the current token, the position, the
previous token and the output. Head L0H0 is a previous-token head (its query and key read the
position, so position ``i`` attends to ``i - 1``; its value copies the token into the
previous-token subspace). Head L1H0 is an induction head that K-composes with it: its query
reads the current token, its key the previous-token subspace (so it attends to the position
after an earlier occurrence of the current token), and its value copies that position's token
into the output subspace, which the unembedding reads. Head 1 of each layer is a small random
distractor. Prompts are ``[BOS] r r`` for a random ``r`` of 7 distinct tokens.

The circuit is therefore: embed -> L0H0's q, k (positions) and v (tokens); L0H0 -> L1H0's k
(K-composition); embed -> L1H0's q and v (tokens); L1H0 -> final.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jinterp import models

VOCAB, HALF, D = 16, 7, 16  # tokens (0 is BOS), repeated half length, subspace width
TOK, POS, PREV, OUT = 0, D, 2 * D, 3 * D  # subspace offsets
SHARP = 6.0  # q/k scale: attention scores SHARP**2 / sqrt(d_head) = 9 on the matching key


@functools.lru_cache(maxsize=None)
def planted_induction(distractor: float = 0.1):
    """``(model, params)``: the planted model (distractor heads with weights ~ N(0, distractor))."""
    model = models.GPT2(models.GPT2Config(
        n_layers=2, d_model=4 * D, n_heads=2, d_head=D, d_mlp=None, d_vocab=VOCAB, n_ctx=D,
        normalization="none", positional="learned", tied_embeddings=False, attn_bias=False,
        mlp_bias=False, unembed_bias=False))
    rng = np.random.default_rng(0)
    eye = np.eye(D, dtype=np.float32)
    shape = (2, 2, 4 * D, D)  # layer head d_model d_head
    w_q, w_k, w_v = (distractor * rng.standard_normal(shape).astype(np.float32)
                     for _ in range(3))
    w_o = distractor * rng.standard_normal((2, 2, D, 4 * D)).astype(np.float32)
    for w in (w_q, w_k, w_v):
        w[:, 0] = 0.0
    w_o[:, 0] = 0.0
    w_q[0, 0, POS:POS + D] = SHARP * eye  # position i ...
    w_k[0, 0, POS:POS + D] = SHARP * np.eye(D, k=1, dtype=np.float32)  # ... matches key i - 1
    w_v[0, 0, TOK:TOK + D] = eye
    w_o[0, 0, :, PREV:PREV + D] = eye  # previous token
    w_q[1, 0, TOK:TOK + D] = SHARP * eye  # current token ...
    w_k[1, 0, PREV:PREV + D] = SHARP * eye  # ... matches the key's previous token
    w_v[1, 0, TOK:TOK + D] = eye
    w_o[1, 0, :, OUT:OUT + D] = eye
    w_e = np.zeros((VOCAB, 4 * D), np.float32)
    w_e[:, TOK:TOK + VOCAB] = np.eye(VOCAB, dtype=np.float32)
    w_pos = np.zeros((D, 4 * D), np.float32)
    w_pos[:, POS:POS + D] = eye
    w_u = np.zeros((4 * D, VOCAB), np.float32)
    w_u[OUT:OUT + VOCAB] = 10.0 * np.eye(VOCAB, dtype=np.float32)
    params = {"embed": {"W_E": w_e}, "pos_embed": {"W_pos": w_pos}, "unembed": {"W_U": w_u},
              "blocks": {"attn": {"W_Q": w_q, "W_K": w_k, "W_V": w_v, "W_O": w_o}}}
    params = jax.tree.map(jnp.asarray, params)
    assert jax.tree.structure(params) == jax.tree.structure(model.param_shapes())
    return model, params


def prompts(batch: int = 16, seed: int = 0):
    """``(clean, corrupted, positions)``: ``[BOS] r r`` prompts, ``[BOS]`` + random tokens, and
    the positions whose next token the induction head predicts."""
    rng = np.random.default_rng(seed)
    halves = np.stack([rng.permutation(np.arange(1, VOCAB))[:HALF] for _ in range(batch)])
    bos = np.zeros((batch, 1), np.int64)
    clean = np.concatenate([bos, halves, halves], axis=1)  # batch 2*HALF+1
    corrupted = np.concatenate([bos, rng.integers(1, VOCAB, (batch, 2 * HALF))], axis=1)
    positions = np.arange(HALF + 1, 2 * HALF)  # second copy, all but its last token
    return clean, corrupted, positions
