"""Linear probes at every layer for a feature the induction circuit must compute.

The feature (:func:`.data.previous_tokens`): the identity of the token before the current one
(``d_vocab`` classes), per token of sequences from the training distribution. The embeddings
know only the current token and its position, so a probe on them is at chance; a
previous-token head in layer 0 writes it into the residual, so it becomes decodable after
layer 0 -- the planted structure that the induction heads' keys read (K-composition).

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
from jinterp.experiments.reading.data import previous_tokens


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
    """Previous-token probe scores, ``[layer + 1, len(positions)]``, and per-layer means.

    ``positions`` (each >= 1, so every token has a predecessor in the sequence) bounds the cost:
    one probe is fitted per (task, layer, position).
    """
    if not positions or min(positions) < 1 or max(positions) >= tokens.shape[1]:
        raise ValueError(f"positions must be non-empty and lie in [1, {tokens.shape[1]}); got "
                         f"{positions}.")
    acts = residual_layers(model, params, jnp.asarray(tokens))[:, :, np.asarray(positions)]
    labels = np.asarray(previous_tokens(jnp.asarray(tokens)), np.int32)[:, positions]
    r = probes.fit_probes(acts, labels, config, seed=seed)
    test, control = np.asarray(r.test_score), np.asarray(r.control_score)
    r4 = lambda x: np.round(np.asarray(x, np.float64), 4).tolist()
    return {"layers": [f"resid_pre {l}" for l in range(model.n_layers)] + ["output"],
            "positions": list(positions), "n_examples": int(tokens.shape[0]),
            "n_test": int(len(r.test_index)), "chance": round(r.chance, 4),
            "test_by_layer": r4(test.mean(1)), "control_by_layer": r4(control.mean(1)),
            "train_by_layer": r4(np.asarray(r.train_score).mean(1)),
            "selectivity_by_layer": r4((test - control).mean(1)),
            "test": r4(test), "control": r4(control)}
