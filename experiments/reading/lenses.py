"""Logit lens and tuned lens curves: what each layer's residual already predicts.

* :func:`logit_lens_curves`: :func:`jinterp.lens.logit_lens` at every block's input plus the
  model's own logits, scored separately on repeated (second-copy) and first-occurrence targets
  of the ``r r`` probe. The expected picture for induction: first-occurrence targets stay at
  ``ln(d_vocab)`` at every layer; repeated targets become predictable only after the layer
  with the induction heads.
* :func:`tuned_lens_curves`: :func:`jinterp.lens.train_tuned_lens` on sequences of the
  training distribution, evaluated on held-out ones: per-layer KL to the final logits of the
  logit lens vs the tuned lens (Belrose et al. 2023). The tuned lens can only do better (it
  starts as the logit lens).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp import lens


@functools.partial(jax.jit, static_argnames="model")
def _lens_logits(model, params, tokens: Int[Array, "batch pos"]
                 ) -> Float[Array, "layer_p1 batch pos d_vocab"]:
    per_layer = lens.logit_lens(model, params, tokens)  # layer batch pos d_vocab
    return jnp.concatenate([per_layer, model(params, tokens)[None]])


def logit_lens_curves(model, params, tokens: Int[Array, "batch pos"],
                      repeated: Bool[np.ndarray, " pos_m1"]) -> dict:
    """Per-layer next-token loss and top-1 accuracy on repeated and first-occurrence targets.

    Entry ``l < n_layers`` reads ``blocks.{l}.hook_resid_pre`` (entry 0: the embeddings); the
    last entry is the model's output.
    """
    logits = _lens_logits(model, params, tokens)[:, :, :-1]  # layer batch pos-1 d_vocab
    nxt = jnp.asarray(tokens)[:, 1:]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    loss = -jnp.take_along_axis(logp, nxt[None, ..., None], axis=-1)[..., 0]  # layer b pos-1
    correct = logits.argmax(-1) == nxt[None]  # layer batch pos-1
    loss, correct = np.asarray(loss, np.float64), np.asarray(correct, np.float64)
    out = {}
    for name, mask in (("repeated", repeated), ("first_occurrence", ~repeated)):
        out[f"loss_{name}"] = np.round(loss[:, :, mask].mean(axis=(1, 2)), 4).tolist()
        out[f"accuracy_{name}"] = np.round(correct[:, :, mask].mean(axis=(1, 2)), 4).tolist()
    out["layers"] = [f"resid_pre {l}" for l in range(model.n_layers)] + ["output"]
    return out


def tuned_lens_curves(model, params, train_tokens: Int[np.ndarray, "n pos"],
                      eval_tokens: Int[np.ndarray, "m pos"], config: lens.TunedLensConfig,
                      progress: bool = False) -> dict:
    """Trains a tuned lens and returns the held-out per-layer KL / loss of both lenses."""
    result = lens.train_tuned_lens(model, params, train_tokens, config, eval_tokens=eval_tokens,
                                   progress=progress)
    s = result.summary
    keys = ("logit_kl", "tuned_kl", "logit_ce", "tuned_ce")
    out = {k: np.round(np.asarray(s[k], np.float64), 4).tolist() for k in keys}
    out["final_ce"] = round(float(s["final_ce"]), 4)
    out["steps"] = s["steps"]
    out["kl_history"] = {"step": result.history["step"],
                         "mean_kl": [round(float(np.mean(k)), 4) for k in result.history["kl"]]}
    return out
