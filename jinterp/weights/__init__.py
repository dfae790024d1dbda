"""Weight processing as pure parameter transforms: ``model2, params2 = process(model, params)``.

TransformerLens's ``from_pretrained`` flags, with its defaults, each also a function of its
own (``fold_ln``, ``center_writing_weights``, ``center_unembed``, ``fold_value_biases``,
``refactor_factored_attn_matrices``, ``untie``), each ``(model, params) -> (model, params)``.
The model can change: weight processing breaks a tied unembedding (``W_E`` and ``W_U`` are
changed differently), so a tied port comes back untied (``model.untied()``), with an
unembedding bias where folding ``ln_final.b`` needs one (GPT-2). Nothing is mutated; every
transform is straight ``jax.numpy`` on the params, computed in float32 and cast back, and
works under ``jit`` with the model static.

What applies where (``process`` skips what does not apply; the single functions raise):

====================================  =============  =====================================
step                                  GPT-2 (LN)     Llama / Gemma (RMSNorm)
====================================  =============  =====================================
fold_ln                               w and b;       w only (Gemma: 1 + w); not the
                                      readers        post-norms (Gemma 2/3) or q/k norms
                                      centred        (Gemma 3)
center_writing_weights                yes            no (RMSNorm does not centre)
center_unembed                        yes            yes, except with a final soft-cap
fold_value_biases                     yes            with attention biases
refactor_factored_attn_matrices       yes            no (RoPE; GQA)
====================================  =============  =====================================

Each keeps the log-probabilities (float32, within 1e-5) and gives TransformerLens's processed
weights (``tests/reading``).
"""

from __future__ import annotations

import jax.numpy as jnp

from jinterp.weights._tree import check_port, copy, untie
from jinterp.weights.center import center_unembed, center_writing_weights
from jinterp.weights.fold import fold_ln, fold_value_biases
from jinterp.weights.refactor import refactor_factored_attn_matrices


def process(model, params: dict, fold_ln: bool = True, center_writing_weights: bool = True,
            center_unembed: bool = True, fold_value_biases: bool = True,
            refactor_factored_attn_matrices: bool = False) -> tuple[object, dict]:
    """TransformerLens's weight processing, in its order; steps that do not apply are skipped.

    Returns:
        ``(model2, params2)``: run ``params2`` with ``model2`` (untied when the input was tied).
    """
    check_port(model, "process")
    lnorm = model.normalization == "layernorm"
    if fold_ln:
        model, params = _fold_ln(model, params)
    if center_writing_weights and lnorm:
        model, params = _center_writing(model, params)
    if center_unembed and model.final_softcap is None:
        model, params = _center_unembed(model, params)
    if fold_value_biases:
        model, params = _fold_value_biases(model, params)
        if center_writing_weights and lnorm and "b_O" in params["blocks"]["attn"]:
            params = copy(params)  # the folded b_V @ W_O is not centred: TL centres b_O again
            b_O = params["blocks"]["attn"]["b_O"]
            params["blocks"]["attn"]["b_O"] = b_O - jnp.mean(b_O, -1, keepdims=True)
    rotary = "attn.hook_rot_q" in model.block_points
    if refactor_factored_attn_matrices:
        if rotary:
            raise ValueError("refactor_factored_attn_matrices does not apply to RoPE models; "
                             "call process(..., refactor_factored_attn_matrices=False).")
        model, params = _refactor(model, params)
    return model, params


_fold_ln, _center_writing, _center_unembed = fold_ln, center_writing_weights, center_unembed
_fold_value_biases, _refactor = fold_value_biases, refactor_factored_attn_matrices

__all__ = ["center_unembed", "center_writing_weights", "fold_ln", "fold_value_biases",
           "process", "refactor_factored_attn_matrices", "untie"]
