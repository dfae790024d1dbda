"""Direct logit attribution of every head, embedding and bias to the correct next token.

The residual entering the unembedding is a sum of components (``embed``, ``pos_embed``, each
head's ``z @ W_O`` as ``L{l}H{h}``, each MLP's output, the biases):
``cache.get_full_resid_decomposition``. Dotting each with ``W_U[:, next token]``
(:func:`jinterp.logit_attrs`) says how much it writes to that logit. Weights are processed
first (:func:`jinterp.weights.process`): LayerNorm's weight is folded into ``W_U`` and ``W_U``
is centred, so the components sum *exactly* to the correct token's logit minus ``b_U``, and that
logit is itself the logit minus the mean logit over the vocabulary: a logit difference against
the average token. With a final LayerNorm each component is divided by the cached final scale
(``apply_ln=True``).

On the ``r r`` probe the expected picture: on the second copy the induction heads (layer 1)
write the correct token; on the first copy nothing can.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

import jinterp


def logit_attributions(model, params, tokens: Int[Array, "batch pos"], process: bool = True,
                       expand_neurons: bool = True
                       ) -> tuple[Float[Array, "component batch pos_m1"], list[str],
                                  Float[Array, "batch pos_m1"]]:
    """Each component's direct contribution to the next token's centred logit.

    Returns:
        ``(attrs, labels, target)``: ``attrs[c, b, t]`` is component ``c``'s share of the logit
        of ``tokens[b, t + 1]`` read at ``t``; ``target`` is that logit minus ``b_U`` (after
        processing: minus the mean logit too, as ``W_U`` is centred), which ``attrs.sum(0)``
        equals up to float error when the weights are processed. ``process=False`` skips the
        processing, to show what goes wrong without it (``ln_final.w`` is then not in ``W_U``).
        ``expand_neurons=False`` keeps each MLP as one component (memory: the full stack is
        ``n_components * batch * pos * d_model`` floats).
    """
    if process:
        model, params = jinterp.weights.process(model, params)
    logits, cache = jinterp.run_with_cache(model, params, tokens)
    n = tokens.shape[1]
    stack, labels = cache.bind(model, params).get_full_resid_decomposition(
        apply_ln=model.normalization is not None, pos_slice=(0, n - 1), return_labels=True,
        expand_neurons=expand_neurons)
    nxt = jnp.asarray(tokens)[:, 1:]  # batch pos-1
    attrs = jinterp.logit_attrs(model, params, stack, nxt)  # component batch pos-1
    b_U = jinterp.b_U(model, params)  # d_vocab (zeros without a bias)
    readout = logits[:, :-1] - b_U[None, None]  # batch pos-1 d_vocab
    return attrs, labels, jnp.take_along_axis(readout, nxt[..., None], axis=-1)[..., 0]


def attribution_summary(attrs: Float[Array, "component batch pos_m1"], labels: list[str],
                        target: Float[Array, "batch pos_m1"], repeated: np.ndarray) -> dict:
    """Mean attribution per component on repeated / first-occurrence targets, the top head on
    repeated targets and the decomposition's error (``max |sum - target|``)."""
    a = np.asarray(attrs, np.float64)
    rep, first = a[:, :, repeated].mean(axis=(1, 2)), a[:, :, ~repeated].mean(axis=(1, 2))
    heads = [i for i, name in enumerate(labels) if name.startswith("L") and "H" in name]
    top = heads[int(np.argmax(rep[heads]))]
    error = float(np.max(np.abs(a.sum(0) - np.asarray(target, np.float64))))
    return {"labels": labels,
            "repeated": np.round(rep, 4).tolist(), "first_occurrence": np.round(first, 4).tolist(),
            "top_head_repeated": labels[top],
            "target_logit_repeated": round(float(np.asarray(target)[:, repeated].mean()), 4),
            "target_logit_first_occurrence": round(float(np.asarray(target)[:, ~repeated].mean()),
                                                   4),
            "sum_max_abs_error": error}
