"""TransformerLens's ``refactor_factored_attn_matrices``: balanced, canonical head factors.

Only the products ``W_Q W_K^T`` (with the biases as an extra row) and ``W_V W_O`` matter to the
forward, so each head's factors can be replaced by any pair with the same product. This picks
the SVD pair ``U sqrt(S)``, ``sqrt(S) Vh``: both sides get the same singular values and the
factors are orthogonal up to scale, which makes ``W_Q`` / ``W_K`` / ``W_V`` / ``W_O`` of
different heads comparable. ``b_V`` is folded into ``b_O`` first (the OV refactoring has no
bias row). Applies to multi-head attention without RoPE (GPT-2): RoPE rotates queries and keys
between the factors, and with grouped-query attention one value head serves several query
heads, so neither product can be refactored per head.
"""

from __future__ import annotations

import jax.numpy as jnp

from jinterp.factored import FactoredMatrix
from jinterp.weights._tree import copy, f32, like
from jinterp.weights.fold import fold_value_biases


def refactor_factored_attn_matrices(model, params: dict) -> tuple[object, dict]:
    """Replaces each head's ``W_Q/W_K`` (with ``b_Q/b_K``) and ``W_V/W_O`` by balanced factors."""
    if "attn.hook_rot_q" in model.block_points:
        raise ValueError("refactor_factored_attn_matrices does not apply to RoPE models: the "
                         "rotation sits between W_Q and W_K, so their product is not what the "
                         "scores use.")
    attn = params["blocks"]["attn"]
    if attn["W_K"].shape[1] != attn["W_Q"].shape[1]:
        raise ValueError("refactor_factored_attn_matrices needs multi-head attention: with "
                         "grouped-query attention one W_V serves several W_O.")
    model, params = fold_value_biases(model, params)
    params = copy(params)
    attn = params["blocks"]["attn"]
    biased = "b_Q" in attn
    rows = lambda W, b: (jnp.concatenate([f32(W), f32(b)[:, :, None, :]], axis=2) if biased
                         else f32(W))  # layer n_heads d_model(+1) d_head
    qk = FactoredMatrix(rows(attn["W_Q"], attn.get("b_Q")),
                        jnp.swapaxes(rows(attn["W_K"], attn.get("b_K")), -1, -2)).make_even()
    W_Q, W_K = qk.A, jnp.swapaxes(qk.B, -1, -2)
    if biased:
        attn["b_Q"] = like(W_Q[:, :, -1], attn["b_Q"])
        attn["b_K"] = like(W_K[:, :, -1], attn["b_K"])
        W_Q, W_K = W_Q[:, :, :-1], W_K[:, :, :-1]
    attn["W_Q"], attn["W_K"] = like(W_Q, attn["W_Q"]), like(W_K, attn["W_K"])
    ov = FactoredMatrix(f32(attn["W_V"]), f32(attn["W_O"])).make_even()
    attn["W_V"], attn["W_O"] = like(ov.A, attn["W_V"]), like(ov.B, attn["W_O"])
    return model, params
