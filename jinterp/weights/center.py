"""Centring the weights that write to the residual stream, and the unembedding.

``center_writing_weights`` (LayerNorm models only): every reader of the residual stream is a
LayerNorm, which subtracts the mean over ``d_model`` first, so removing that mean from
everything that writes (``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``) changes no
output, and the residual then has zero mean. RMSNorm does not centre, so it does not apply.

``center_unembed``: softmax ignores a constant added to every logit, so ``W_U`` (and ``b_U``)
lose their mean over the vocabulary; logits change, log-probabilities do not. Not with a
final soft-cap (Gemma 2 / 3): ``cap * tanh(x / cap)`` is not shift-invariant.
"""

from __future__ import annotations

from jinterp.weights._tree import check_port, copy, f32, like, untie


def _centred(x, axis: int):
    y = f32(x)
    return like(y - y.mean(axis, keepdims=True), x)


def center_writing_weights(model, params: dict) -> tuple[object, dict]:
    """Removes the ``d_model`` mean from every weight and bias that writes to the residual."""
    check_port(model, "center_writing_weights")
    if model.normalization != "layernorm":
        raise ValueError(f"center_writing_weights applies to LayerNorm models only (this one "
                         f"has {model.normalization!r}): only LayerNorm removes the mean the "
                         "centring would change.")
    model, params = untie(model, params)  # W_E changes; the unembedding must not
    params = copy(params)
    params["embed"]["W_E"] = _centred(params["embed"]["W_E"], -1)
    if "pos_embed" in params:
        params["pos_embed"]["W_pos"] = _centred(params["pos_embed"]["W_pos"], -1)
    blocks = params["blocks"]
    for group, names in (("attn", ("W_O", "b_O")), ("mlp", ("W_out", "b_out"))):
        for name in names:
            if name in blocks.get(group, {}):
                blocks[group][name] = _centred(blocks[group][name], -1)
    return model, params


def center_unembed(model, params: dict) -> tuple[object, dict]:
    """Removes the vocabulary mean of ``W_U`` and ``b_U`` (log-probabilities unchanged)."""
    check_port(model, "center_unembed")
    if model.final_softcap is not None:
        raise ValueError("center_unembed does not apply to a model with a final soft-cap "
                         f"({model.final_softcap}): the cap is not invariant to shifting the "
                         "logits, so log-probabilities would change.")
    model, params = untie(model, params)
    params = copy(params)
    params["unembed"] = {k: _centred(v, -1) for k, v in params["unembed"].items()}
    return model, params
