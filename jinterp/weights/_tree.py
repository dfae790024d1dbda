"""Small helpers of the weight transforms: copies of the params dict, float32 maths, checks."""

from __future__ import annotations

import jax.numpy as jnp

from jinterp import readout


def copy(params: dict) -> dict:
    """A copy of the nested params dict (arrays shared), so transforms never mutate the input."""
    return {k: copy(v) if isinstance(v, dict) else v for k, v in params.items()}


def f32(x):
    """Transforms compute in float32 (as TransformerLens does) and cast back at the end."""
    return x.astype(jnp.float32)


def like(x, ref):
    return x.astype(ref.dtype)


def check_port(model, what: str) -> None:
    readout.check_reading_protocol(model, what)
    if not hasattr(model, "untied"):
        raise TypeError(f"{what} needs model.untied(bias=...) to break a tied unembedding; "
                        f"{type(model).__name__} does not define it (see docs/reading.md).")


def is_tied(model) -> bool:
    return "unembed" not in model.param_axes()


def untie(model, params: dict, bias: bool = False) -> tuple[object, dict]:
    """``(model, params)`` with an own ``unembed.W_U = W_E.T`` (and a zero ``b_U``: ``bias``).

    Weight processing changes ``W_E`` and ``W_U`` differently, so a tied pair must split first,
    as TransformerLens always stores ``W_U`` on its own. Untied models pass through (a missing
    bias is added when ``bias``).
    """
    check_port(model, "untie")
    W_U, b_U = model.unembed_weights(params)
    if not is_tied(model) and (b_U is not None or not bias):
        return model, params
    new_model = model.untied(bias=bias)
    params = copy(params)
    params["unembed"] = {"W_U": W_U}
    if "b_U" in new_model.param_axes()["unembed"]:
        params["unembed"]["b_U"] = jnp.zeros(W_U.shape[1], W_U.dtype) if b_U is None else b_U
    return new_model, params
