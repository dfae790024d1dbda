"""Weight-based reading: composition scores and copying (OV / QK circuits).

:func:`jinterp.composition_scores` scores every (earlier head, later head) pair at once from the
factored OV and QK circuits (Elhage et al. 2021): Q-, K- and V-composition. On the induction
model the planted structure is K-composition: the induction heads' keys read what the
previous-token head writes. :func:`jinterp.copying_scores` (the OV circuit's eigenvalue
summary) should be near +1 for the induction heads, which copy the token they attend to.

The study's own K-composition (:func:`jinterp.experiments.induction.scores.layer_k_composition`,
written directly from the formula with ``d_model x d_model`` products) is a slow reference that
the factored library call must equal.
"""

from __future__ import annotations

import jax
import numpy as np

import jinterp
from jinterp.experiments.induction import scores


def composition_study(model, params, probe, half_len: int, seed: int = 0) -> dict:
    """Q/K/V composition from layer 0 to layer 1, copying scores and head attention scores."""
    model, params = jinterp.weights.process(model, params)
    comp = {m: np.asarray(jinterp.composition_scores(model, params, m)) for m in "QKV"}
    l0_to_l1 = {m: c[0, :, 1, :] for m, c in comp.items()}  # writer reader
    reference = np.asarray(scores.layer_k_composition(params))
    attn = scores.attention_scores(model, params, probe, half_len)
    previous, induction = np.asarray(attn["previous_token"]), np.asarray(attn["induction"])
    top_induction = int(np.argmax(induction[1]))
    d_head = params["blocks"]["attn"]["W_Q"].shape[-1]
    baseline = scores.random_composition_baseline(jax.random.key(seed, impl="rbg"),
                                                  model.d_model, d_head)
    r4 = lambda x: np.round(np.asarray(x, np.float64), 4).tolist()
    return {
        "q_composition_l0_to_l1": r4(l0_to_l1["Q"]),
        "k_composition_l0_to_l1": r4(l0_to_l1["K"]),
        "v_composition_l0_to_l1": r4(l0_to_l1["V"]),
        "random_baseline": round(baseline, 4),
        "k_composition_max_abs_diff_vs_reference": float(np.max(np.abs(l0_to_l1["K"]
                                                                        - reference))),
        "copying_scores": r4(jinterp.copying_scores(model, params)),
        "previous_token_scores": r4(previous),
        "induction_scores": r4(induction),
        "top_previous_token_head_l0": int(np.argmax(previous[0])),
        "top_induction_head_l1": top_induction,
        "top_k_composition_writer_for_top_induction_head": int(
            np.argmax(l0_to_l1["K"][:, top_induction])),
    }
