"""Folding norm weights and value biases into the neighbouring matrices.

``fold_ln``: a norm's output ``normalised * w + b`` is read only by linear maps (the attention's
``W_Q/W_K/W_V``, the MLP's ``W_in`` / ``W_gate``, the unembedding), so ``w`` scales their rows
and ``b`` becomes part of their biases; the norm keeps only its statistics. The ports keep their
norms with identity weights (``w = 1``, ``b = 0``; Gemma's offset ``w = 0``), which computes
exactly TransformerLens's ``LayerNormPre`` / ``RMSNormPre``, and ``ln*.hook_normalized`` is
unchanged (it is taken before the weight). For LayerNorm the reading weights are also centred
over ``d_model`` (the normalised input has zero mean, so this changes nothing), as TL does.
RMSNorm folds its weight only (no bias, no centring). What is not folded: Gemma 2 / 3's
post-norms (``ln1_post`` / ``ln2_post``: their weight scales an output after its own
statistics) and Gemma 3's q/k norms (before RoPE, which mixes the dimensions they scale).

``fold_value_biases``: every attention row sums to one, so ``b_V`` reaches the output as the
constant ``b_V @ W_O``; it moves into ``b_O`` (per query head ``h``, value head ``h // group``
for grouped-query attention).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jinterp.weights._tree import check_port, copy, f32, like, untie


def _scale(model, w):
    """The effective norm scale ``w`` (Gemma: ``1 + w``) in float32."""
    return 1.0 + f32(w) if model.norm_offset else f32(w)


def _identity(model, w):
    return jnp.zeros_like(w) if model.norm_offset else jnp.ones_like(w)


def _fold_into(readers: dict, names: tuple[str, ...], w, b, centre: bool, where: str) -> None:
    """Folds ``normalised * w + b`` into ``readers[W]`` ``[layer, ..., d_model, out]``."""
    for W_name in names:
        W = f32(readers[W_name])  # layer (heads) d_model out
        shape = (W.shape[0],) + (1,) * (W.ndim - 3) + (W.shape[-2], 1)
        if b is not None:
            b_name = "b_" + W_name[2:]
            bias = jnp.einsum("l...do,ld->l...o", W, f32(b))  # layer (heads) out
            if b_name not in readers:
                if isinstance(b, jax.core.Tracer) or bool(jnp.any(b != 0)):
                    raise ValueError(f"fold_ln: {where} has a bias to fold into {W_name} but the "
                                     f"model has no {b_name}; build it with biases on.")
            else:
                readers[b_name] = like(f32(readers[b_name]) + bias, readers[b_name])
        W = W * w.reshape(shape)
        if centre:
            W = W - W.mean(-2, keepdims=True)
        readers[W_name] = like(W, readers[W_name])


def fold_ln(model, params: dict, center_weights: bool = True) -> tuple[object, dict]:
    """Folds ``ln1`` / ``ln2`` / ``ln_final`` weights (and LayerNorm biases) into their readers.

    Returns ``(model, params)``: a tied unembedding is untied first (and GPT-2 gets an
    unembedding bias for ``ln_final.b``). Models without norms are returned unchanged.
    """
    check_port(model, "fold_ln")
    if model.normalization is None:
        return model, params
    layer_norm = model.normalization == "layernorm"
    centre = center_weights and layer_norm
    model, params = untie(model, params, bias=layer_norm)
    params = copy(params)
    blocks = params["blocks"]
    norms = (("ln1", blocks["attn"], ("W_Q", "W_K", "W_V")),
             ("ln2", blocks.get("mlp"), ("W_gate", "W_in")))
    for norm, readers, names in norms:
        if norm not in blocks:
            continue
        w, b = _scale(model, blocks[norm]["w"]), blocks[norm].get("b")
        _fold_into(readers, tuple(n for n in names if n in readers), w, b, centre, norm)
        blocks[norm] = {k: (_identity(model, v) if k == "w" else jnp.zeros_like(v))
                        for k, v in blocks[norm].items()}
    final = params["ln_final"]
    unembed = {k: v[None] for k, v in params["unembed"].items()}  # as a one-layer reader
    _fold_into(unembed, ("W_U",), _scale(model, final["w"])[None],
               None if final.get("b") is None else final["b"][None], centre, "ln_final")
    params["unembed"] = {k: v[0] for k, v in unembed.items()}
    params["ln_final"] = {k: (_identity(model, v) if k == "w" else jnp.zeros_like(v))
                          for k, v in final.items()}
    return model, params


def fold_value_biases(model, params: dict) -> tuple[object, dict]:
    """Moves ``b_V`` into ``b_O`` (``b_O += sum_h b_V[h // group] @ W_O[h]``; ``b_V = 0``)."""
    attn = params["blocks"]["attn"]
    if "b_V" not in attn:
        return model, params
    params = copy(params)
    attn = params["blocks"]["attn"]
    b_V, W_O = f32(attn["b_V"]), f32(attn["W_O"])  # layer kv d_head; layer heads d_head d_model
    group = W_O.shape[1] // b_V.shape[1]
    b_V_heads = jnp.repeat(b_V, group, axis=1)  # layer n_heads d_head
    attn["b_O"] = like(f32(attn["b_O"]) + jnp.einsum("lhe,lhed->ld", b_V_heads, W_O), attn["b_O"])
    attn["b_V"] = jnp.zeros_like(attn["b_V"])
    return model, params
