"""The tuned lens (Belrose et al. 2023): one affine translator per layer before the unembedding.

Layer ``l``'s translator maps the residual entering block ``l`` to
``h + h @ A[l] + b[l]`` and the port's ``unembed`` reads the result. ``A`` and ``b`` start at
zero, so the translator starts as the identity and an untrained tuned lens *is* the logit
lens (tested); training (:mod:`jinterp.lens.train`) moves each translator towards the final
layer's prediction. The residual form ``h + hA`` is the paper's parametrisation: weight decay
pulls it towards the logit lens, not towards zero.

The parameters are a plain dict with a leading ``[layer]`` axis, so every layer's translator
is applied (and trained) at once: ``{"A": [layer, d_model, d_model], "b": [layer, d_model]}``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from jinterp.lens.logit import resid_stack, unembed_stack
from jinterp.model import HookedModel

LensParams = dict  # {"A": [layer, d_model, d_model], "b": [layer, d_model]}


def init_tuned_lens(model: HookedModel, dtype=jnp.float32) -> LensParams:
    """Identity translators (zero ``A`` and ``b``) for every block of ``model``."""
    n, d = model.n_layers, model.d_model
    return {"A": jnp.zeros((n, d, d), dtype), "b": jnp.zeros((n, d), dtype)}


def check_lens(model: HookedModel, lens: LensParams) -> None:
    """Raises when ``lens`` does not fit ``model`` (both shapes named)."""
    n, d = model.n_layers, model.d_model
    want = {"A": (n, d, d), "b": (n, d)}
    got = {k: tuple(getattr(lens.get(k), "shape", ())) for k in want} \
        if isinstance(lens, dict) else {}
    if got != want:
        raise ValueError(f"Tuned-lens params have shapes {got}; this model needs {want} "
                         "(one translator per block). Build them with init_tuned_lens(model).")


def translate(lens: LensParams, resid: Float[Array, "layer batch pos d_model"]
              ) -> Float[Array, "layer batch pos d_model"]:
    """Each layer's residual through its translator: ``h + h @ A[l] + b[l]``."""
    A = lens["A"].astype(resid.dtype)
    b = lens["b"].astype(resid.dtype)
    return resid + jnp.einsum("lbpd,lde->lbpe", resid, A) + b[:, None, None]  # layer b p d


def tuned_lens_logits(model: HookedModel, params, lens: LensParams,
                      resid: Float[Array, "layer batch pos d_model"]
                      ) -> Float[Array, "layer batch pos d_vocab"]:
    """The tuned lens's logits from a stack of the residual entering every block."""
    check_lens(model, lens)
    if resid.shape[0] != model.n_layers:
        raise ValueError(f"The residual stack has {resid.shape[0]} layers; a tuned lens reads "
                         f"all {model.n_layers} (cache.stack('hook_resid_pre')).")
    return unembed_stack(model, params, translate(lens, resid))


def tuned_lens(model: HookedModel, params, lens: LensParams, tokens, hooks=None
               ) -> Float[Array, "layer batch pos d_vocab"]:
    """Tuned-lens logits at every layer from one forward pass (cf. :func:`logit_lens`)."""
    resid, _ = resid_stack(model, params, tokens, point="hook_resid_pre", hooks=hooks)
    return tuned_lens_logits(model, params, lens, resid)
