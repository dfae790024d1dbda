"""Linear probes at every layer for features the induction circuit must compute.

Two per-token features of sequences from the training distribution (:func:`.data.probe_labels`):

* ``previous_token``: the identity of the token before the current one (``d_vocab`` classes).
  The embeddings know only the current token and position, so a probe on them is at chance;
  a previous-token head in layer 0 writes it into the residual, so it becomes decodable after
  layer 0 -- the planted structure the induction heads' keys read (K-composition).
* ``seen_before``: whether the current token already occurred earlier in the sequence (two
  classes). Nothing in the embeddings says so.

:func:`jinterp.probes.fit_probes` fits every (layer, position) and a control task (labels
permuted over examples: only memorisation can fit it) in one program; selectivity is the test
accuracy minus the control's (Hewitt & Liang 2019). Layers are the residual entering each
block plus the last block's output.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

import jinterp
from jinterp import probes
from jinterp.experiments.reading.data import probe_labels


def residual_layers(model, params, tokens: Int[Array, "batch pos"]
                    ) -> Array:
    """``[layer + 1, batch, pos, d_model]``: every ``hook_resid_pre`` and the final
    ``hook_resid_post`` (one forward pass)."""
    last = model.n_layers - 1
    names = [f"blocks.{l}.hook_resid_pre" for l in range(model.n_layers)]
    _, cache = jinterp.run_with_cache(model, params, tokens,
                                      names=[*names, f"blocks.{last}.hook_resid_post"])
    pre = cache.stack("hook_resid_pre")  # layer batch pos d_model
    return jnp.concatenate([pre, cache[f"blocks.{last}.hook_resid_post"][None]])


def probe_study(model, params, tokens: Int[np.ndarray, "batch pos"], positions: list[int],
                config: probes.ProbeConfig, seed: int = 0) -> dict:
    """Probe scores of both features, ``[layer + 1, len(positions)]`` each, and per-layer means.

    ``positions`` (each >= 1, so every token has a predecessor in the sequence) bounds the cost:
    one probe is fitted per (task, layer, position).
    """
    if not positions or min(positions) < 1 or max(positions) >= tokens.shape[1]:
        raise ValueError(f"positions must be non-empty and lie in [1, {tokens.shape[1]}); got "
                         f"{positions}.")
    acts = residual_layers(model, params, jnp.asarray(tokens))[:, :, np.asarray(positions)]
    labels = probe_labels(jnp.asarray(tokens))
    out = {"layers": [f"resid_pre {l}" for l in range(model.n_layers)] + ["output"],
           "positions": list(positions), "n_examples": int(tokens.shape[0])}
    for name, y in labels.items():
        r = probes.fit_probes(acts, y[:, positions], config, seed=seed)
        test, control = np.asarray(r.test_score), np.asarray(r.control_score)
        out[name] = {
            "test_by_layer": np.round(test.mean(1), 4).tolist(),
            "control_by_layer": np.round(control.mean(1), 4).tolist(),
            "train_by_layer": np.round(np.asarray(r.train_score).mean(1), 4).tolist(),
            "selectivity_by_layer": np.round((test - control).mean(1), 4).tolist(),
            "chance": round(r.chance, 4),
            "test": np.round(test, 4).tolist()}
    return out
