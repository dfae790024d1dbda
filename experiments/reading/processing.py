"""Weight processing, checked step by step on the LayerNorm model.

TransformerLens's processing (:func:`jinterp.weights.process`) rewrites the weights so the
maths of reading is simpler -- LayerNorm's weight and bias folded into the next linear map,
writing weights centred, ``W_U`` centred, value biases folded into ``b_O``, the QK / OV factors
refactored -- while the log-probabilities stay the same up to float32 rounding (the summary
records the float32 resolution of the largest log-probability for scale). This module applies
the steps one by one in TL's order (each a pure ``(model, params) -> (model, params)``) and
records the largest log-probability change after each, and what processing buys: before it,
the direct logit attributions of the full residual decomposition do not add up to the logit
(``ln_final.w`` is not in ``W_U``); after it they do, to float error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

import jinterp
from jinterp.experiments.reading.attribution import logit_attributions

#: TransformerLens's order (``process``'s, minus its re-centring of ``b_O`` after the fold).
STEPS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases",
         "refactor_factored_attn_matrices")


def _logprobs(model, params, tokens: Int[Array, "batch pos"]) -> np.ndarray:
    return np.asarray(jax.nn.log_softmax(model(params, tokens).astype(jnp.float32), -1),
                      np.float64)


def processing_study(model, params, tokens: Int[Array, "batch pos"]) -> dict:
    """Max ``|log p - log p_original|`` after each cumulative step and after ``process``,
    and the direct-logit-attribution sum error without and with processing.

    ``ln_final_distance_from_identity`` (``max |w - 1|, |b|`` of the final norm) says how much
    there is to fold: at initialisation (``w = 1``, ``b = 0``) the unprocessed attributions
    already add up.
    """
    reference = _logprobs(model, params, tokens)
    m, p, rows = model, params, []
    for name in STEPS:
        m, p = getattr(jinterp.weights, name)(m, p)
        rows.append(float(np.max(np.abs(_logprobs(m, p, tokens) - reference))))
    pm, pp = jinterp.weights.process(model, params, refactor_factored_attn_matrices=True)
    full = float(np.max(np.abs(_logprobs(pm, pp, tokens) - reference)))
    errors = {}
    for label, flag in (("unprocessed", False), ("processed", True)):
        attrs, _, target = logit_attributions(model, params, tokens, process=flag,
                                              expand_neurons=False)
        errors[label] = float(np.max(np.abs(np.asarray(attrs.sum(0), np.float64)
                                            - np.asarray(target, np.float64))))
        errors[f"{label}_target_scale"] = float(np.mean(np.abs(np.asarray(target))))
    w, b = params["ln_final"]["w"], params["ln_final"]["b"]
    spread = float(max(jnp.max(jnp.abs(w - 1)), jnp.max(jnp.abs(b))))
    # float32 resolution of the largest log-probability: reordering the maths moves the
    # outputs by a few of these, whatever the step
    resolution = float(np.finfo(np.float32).eps * np.max(np.abs(reference)))
    return {"steps": list(STEPS), "max_abs_logprob_diff": rows,
            "ln_final_distance_from_identity": spread,
            "float32_resolution_of_max_logprob": resolution,
            "process_max_abs_logprob_diff": full,
            "dla_sum_max_abs_error": {"unprocessed": errors["unprocessed"],
                                      "processed": errors["processed"]},
            "mean_abs_target_logit": {"unprocessed": errors["unprocessed_target_scale"],
                                      "processed": errors["processed_target_scale"]}}
