"""Reading the residual stream out: ``W_U``, the final norm, the unembedding, single tokens.

TransformerLens users reach for ``model.W_U``, ``model.ln_final(x)``, ``model.unembed(x)`` and
``model.to_single_token(s)``. A jinterp port keeps its weights outside the model, so these are
functions of ``(model, params)``. They read what the port declares for readers (the *reading
protocol*, implemented by ``jinterp.models``' GPT-2 and Llama-like ports; see
``docs/reading.md``)::

    model.normalization              "layernorm", "rmsnorm" or None (what ln1 / ln2 / ln_final do)
    model.norm_offset                True when a norm's scale is 1 + w (Gemma)
    model.final_softcap              cap of cap * tanh(logits / cap), or None (Gemma 2 / 3)
    model.unembed_weights(params)    (W_U [d_model, d_vocab], b_U [d_vocab] or None); tied -> W_E.T
    model.final_norm(params, resid)  ln_final with its weights
    model.untied(bias=False)         the same model with its own unembed.W_U (weight processing)

``unembed(model, params, resid, apply_ln=True)`` is exactly ``model.unembed`` of the port (final
norm, ``x @ W_U + b_U``, soft-cap); with ``apply_ln=False`` it is TransformerLens's
``model.unembed`` (the input is already normalised), soft-cap still applied as the model does.
"""

from __future__ import annotations

import inspect

import jax.numpy as jnp
from jaxtyping import Array, Float

_PROTOCOL = ("normalization", "norm_offset", "final_softcap", "unembed_weights", "final_norm")


def check_reading_protocol(model, what: str = "this reader") -> None:
    """Raises a TypeError naming the members a port lacks for ``what``."""
    missing = [m for m in _PROTOCOL if not hasattr(model, m)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} lacks {missing}, which {what} needs: a port exposes "
            "normalization, norm_offset, final_softcap, unembed_weights(params) and "
            "final_norm(params, resid) for readers (see docs/reading.md and "
            "jinterp.models.GPT2 for an example).")


def W_U(model, params) -> Float[Array, "d_model d_vocab"]:
    """The unembedding matrix ``[d_model, d_vocab]`` (``W_E.T`` for tied models)."""
    check_reading_protocol(model, "W_U")
    return model.unembed_weights(params)[0]


def b_U(model, params) -> Float[Array, " d_vocab"]:
    """The unembedding bias ``[d_vocab]``, zeros when the model has none (as in TL)."""
    check_reading_protocol(model, "b_U")
    W, b = model.unembed_weights(params)
    return jnp.zeros(W.shape[1], W.dtype) if b is None else b


def ln_final(model, params, resid: Float[Array, "*lead d_model"]) -> Float[Array, "*lead d_model"]:
    """The final norm with its weights, on any leading axes (``[batch pos d_model]``, stacks)."""
    check_reading_protocol(model, "ln_final")
    lead = resid.shape[:-1]
    flat = resid.reshape(1, -1, resid.shape[-1])  # 1 (lead...) d_model
    return model.final_norm(params, flat).reshape(*lead, resid.shape[-1])


def soft_cap_logits(model, logits: Float[Array, "*lead d_vocab"]) -> Float[Array, "*lead d_vocab"]:
    """The model's final soft-cap (``cap * tanh(x / cap)`` in float32), or ``logits`` unchanged."""
    cap = model.final_softcap
    if cap is None:
        return logits
    return (cap * jnp.tanh(logits.astype(jnp.float32) / cap)).astype(logits.dtype)


def unembed(model, params, resid: Float[Array, "*lead d_model"], *, apply_ln: bool = True,
            softcap: bool = True) -> Float[Array, "*lead d_vocab"]:
    """Logits from a residual: ``softcap(ln_final(resid) @ W_U + b_U)``.

    Args:
        apply_ln: apply the final norm first (True: the port's own ``unembed``; False:
            TransformerLens's ``model.unembed``, whose input is already normalised).
        softcap: apply Gemma's final soft-cap (the model always does; off gives the linear
            readout that direct logit attribution decomposes).
    """
    check_reading_protocol(model, "unembed")
    x = ln_final(model, params, resid) if apply_ln else resid
    W, b = model.unembed_weights(params)
    logits = jnp.einsum("...d,dv->...v", x, W)  # lead d_vocab
    if b is not None:
        logits = logits + b.reshape((1,) * (logits.ndim - 1) + b.shape)
    return soft_cap_logits(model, logits) if softcap else logits


def to_single_token(tokenizer, text: str) -> int:
    """The id of ``text`` when it is exactly one token (TL's ``model.to_single_token``).

    Raises:
        ValueError: naming the tokens ``text`` splits into, when it is not one token.
    """
    encode = getattr(tokenizer, "encode", None)
    if encode is None:
        raise TypeError(f"to_single_token needs a tokenizer with .encode(text), got "
                        f"{type(tokenizer).__name__}.")
    params = inspect.signature(encode).parameters
    if "prepend_bos" in params:  # jinterp.models.Tokenizer
        ids = _plain_ids(encode(text, prepend_bos=False))
    elif "add_special_tokens" in params or any(
            p.kind is p.VAR_KEYWORD for p in params.values()):  # transformers tokenizers
        ids = _plain_ids(encode(text, add_special_tokens=False))
    else:
        ids = _plain_ids(encode(text))
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens ({ids}), not one; pick a string that is "
                         "a single token (often with a leading space, e.g. ' Paris').")
    return int(ids[0])


def _plain_ids(encoded) -> list[int]:
    """Ids from ``encode``'s output: a list, an array, or an HF ``Encoding`` (``.ids``)."""
    ids = getattr(encoded, "ids", encoded)
    ids = list(getattr(ids, "tolist", lambda: ids)())
    return [i for row in ids for i in row] if ids and isinstance(ids[0], list) else ids
