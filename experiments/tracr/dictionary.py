"""Dictionaries and probes scored against the variables a Tracr program is known to hold.

Every residual direction of a compiled program is labelled (``"tokens:3"``, ``"indices:0"``,
``"frac_prevs"``), so what an SAE or a probe should find is known: in the original model each
labelled direction is a basis vector ``e_i``; in a compressed model (:mod:`.compressed`) it is
``w[:, i]``, the image of ``e_i`` under the write ``x -> x @ w.T``. Below the number of
features the images cannot all be orthogonal (superposition), and the question is how much of
the dictionary still lines up with them.

Which rows and directions are scored: the residual at real positions after BOS (the BOS
position is the same vector for every input, an attention sink rather than data), and the
labelled directions whose value varies over those rows. That drops ``one`` (constant),
``tokens:BOS`` (zero after position 0) and the PAD token, and keeps the RASP ``indices`` (a
variable the program reads, which varies with the position).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

import jinterp
from jinterp import probes, sae

THRESHOLD = 0.9  # a direction counts as recovered when some latent has |cos| above this
_VARY_TOL = 1e-4


def direction_recovery(decoder: Float[Array | np.ndarray, "d_sae _"],
                       directions: Float[Array | np.ndarray, "k _"], *,
                       threshold: float = THRESHOLD) -> dict:
    """Per labelled direction the best ``|cosine|`` over the decoder's rows.

    ``decoder`` is ``[n_latents, d]`` and ``directions`` ``[k, d]`` (the widths are checked
    here, so the error names both shapes).

    Returns ``max_cos`` (``[k]``, a list), ``recovered`` (the fraction above ``threshold``),
    ``mean_max_cos`` and ``best_latent`` (the row reaching each maximum).

    Raises:
        ValueError: the two do not share the last axis ``d``.
    """
    dec, dirs = np.asarray(decoder, np.float64), np.asarray(directions, np.float64)
    if dec.ndim != 2 or dirs.ndim != 2 or dec.shape[1] != dirs.shape[1]:
        raise ValueError(f"decoder [n_latents, d] and directions [k, d] must share d; got "
                         f"decoder {dec.shape} and directions {dirs.shape}.")
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    cos = np.abs(unit(dirs) @ unit(dec).T)  # k n_latents
    best = cos.max(axis=1)
    return {"max_cos": best.tolist(), "recovered": float(np.mean(best > threshold)),
            "mean_max_cos": float(best.mean()), "best_latent": cos.argmax(axis=1).tolist()}


def residual_rows(model, params, io, inputs: Sequence[Sequence[Any]],
                  point: str | None = None) -> Float[np.ndarray, "n d_model"]:
    """The residual at ``point`` (default: the final ``hook_resid_post``) at every real
    position after BOS, one row per (input, position)."""
    point = point or f"blocks.{model.n_layers - 1}.hook_resid_post"
    tokens = io.encode(list(inputs))
    mask = np.asarray(io.attention_mask(tokens)).copy()
    _, cache = jinterp.run_with_cache(model, params, tokens, names=[point],
                                      attention_mask=io.attention_mask(tokens))
    mask[:, 0] = False
    return np.asarray(cache[point])[mask]


def varying(resid: Float[np.ndarray, "n d_model"], labels: Sequence[str]) -> list[int]:
    """Indices of the labelled directions whose value varies over the rows of ``resid``."""
    if resid.shape[1] != len(labels):
        raise ValueError(f"resid has {resid.shape[1]} columns but {len(labels)} labels.")
    return [i for i in range(len(labels)) if np.ptp(resid[:, i]) > _VARY_TOL]


def variable_values(resid: Float[np.ndarray, "n d_model"], labels: Sequence[str]
                    ) -> dict[str, np.ndarray]:
    """Each RASP variable's value per row, read from the *original* residual.

    Categorical variables (labels ``"var:value"``) come back as class ids ``0..n-1`` of the
    values that occur (the argmax over the variable's directions); numerical ones (a bare
    ``"var"``, ``one`` excluded) as floats. Variables that take one value only are dropped.
    """
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        if label != "one":
            groups.setdefault(label.split(":", 1)[0] if ":" in label else label, []).append(i)
    out = {}
    for var, cols in groups.items():
        if ":" in labels[cols[0]]:
            _, ids = np.unique(np.argmax(resid[:, cols], axis=1), return_inverse=True)
            if ids.max() > 0:
                out[var] = ids.astype(np.int32)
        elif np.ptp(resid[:, cols[0]]) > _VARY_TOL:
            out[var] = resid[:, cols[0]].astype(np.float32)
    return out


def _ridge(x_train, y_train, l2):
    """Closed-form ridge with an unpenalised bias: ``[d + 1, n_out]``."""
    x1 = np.concatenate([x_train, np.ones((len(x_train), 1))], 1)  # n d+1
    reg = l2 * np.eye(x1.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(x1.T @ x1 + reg, x1.T @ y_train)


def probe_recovery(resid: Float[np.ndarray, "n d"], values: dict[str, np.ndarray], *,
                   seed: int = 0, l2: float = 1e-3, test_fraction: float = 0.25) -> dict:
    """A linear probe per variable from the (compressed) residual, scored on held-out rows.

    Closed-form ridge (``jinterp.probes``' iterative probes cost seconds of compilation each;
    these variables are linearly decodable or not, which least squares answers as well).
    Categorical variables (integer values): ridge onto the one-hot classes, predicted class
    the argmax, scored by test accuracy against ``chance`` (the training majority class);
    numerical ones: ridge onto the value, scored by test R^2. ``mean_accuracy`` averages the
    categorical variables' accuracies.
    """
    x = np.asarray(resid, np.float64)
    train, test = probes.split(len(x), test_fraction, seed)
    x_test1 = np.concatenate([x[test], np.ones((len(test), 1))], 1)
    per = {}
    for var, y in values.items():
        if np.issubdtype(y.dtype, np.integer):
            onehot = np.eye(int(y.max()) + 1)[y]  # n n_classes
            pred = (x_test1 @ _ridge(x[train], onehot[train], l2)).argmax(1)
            majority = np.bincount(y[train]).argmax()
            per[var] = {"kind": "categorical", "accuracy": float(np.mean(pred == y[test])),
                        "chance": float(np.mean(y[test] == majority)),
                        "n_classes": int(y.max()) + 1}
        else:
            pred = x_test1 @ _ridge(x[train], y[train, None].astype(np.float64), l2)
            resid_ss = np.sum(np.square(pred[:, 0] - y[test]))
            total = max(np.sum(np.square(y[test] - y[test].mean())), 1e-12)
            per[var] = {"kind": "numerical", "r2": float(1 - resid_ss / total)}
    accs = [v["accuracy"] for v in per.values() if v["kind"] == "categorical"]
    return {"variables": per, "mean_accuracy": float(np.mean(accs)) if accs else None}


def sae_recovery(resid: Float[np.ndarray, "n d"], directions: Float[np.ndarray, "k d"], *,
                 d_sae: int, steps: int = 2000, seed: int = 0, k: int | None = None,
                 lr: float = 3e-3, decoder_bias: bool = False) -> dict:
    """Trains a TopK SAE on ``resid`` and scores its decoder with :func:`direction_recovery`.

    The SAE is ``jinterp.sae``'s TopK (Gao et al. 2024) trained full-batch with its own loss,
    ``after_grad`` and ``after_update`` (unit-norm decoder rows), in one ``lax.scan``. By
    default the decoder bias is held at zero: a categorical variable's one-hot values sum to
    one, so with a free ``b_dec`` the sparsest dictionary puts one value (or the mean) in the
    bias and learns *differences* ``e_i - e_j`` (``|cos|`` about 0.7-0.87 with ``e_i``), a
    correct but rotated answer. Even without the bias the labelled basis is not the only
    sparsest dictionary (the constant ``one`` can merge into any one-hot group, and
    ``e_t + e_i0``, ``e_i - e_i0`` code a token-index pair as sparsely as ``e_t``, ``e_i``
    do), so measured recovery of one-hot directions stays low while numerical variables
    (one direction with a graded value) are found.

    Args:
        resid: activations, one row per token.
        directions: the labelled directions the dictionary should contain.
        d_sae: latents.
        steps: Adam steps, each on every row.
        seed: seeds the SAE's initialisation.
        k: active latents per row (default ``d_sae // 2``; the study passes the largest
            number of non-zero labelled coordinates a row has).
        lr: Adam's learning rate.
        decoder_bias: train ``b_dec`` too (the usual SAE).

    Returns:
        :func:`direction_recovery`'s dict plus ``fvu`` (fraction of variance unexplained).
    """
    x = jnp.asarray(resid, jnp.float32)
    cfg = sae.SAEConfig("topk", d_in=x.shape[1], d_sae=d_sae, k=min(k or d_sae // 2, d_sae))
    params = sae.init(cfg, jax.random.key(seed))
    if not decoder_bias:
        params["b_dec"] = jnp.zeros_like(params["b_dec"])
    opt = optax.adam(lr)

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, state = carry
            (value, metrics), grads = jax.value_and_grad(sae.loss, argnums=1, has_aux=True)(
                cfg, params, x)
            grads = sae.after_grad(cfg, params, grads)
            if not decoder_bias:
                grads["b_dec"] = jnp.zeros_like(grads["b_dec"])
            updates, state = opt.update(grads, state, params)
            params = sae.after_update(cfg, optax.apply_updates(params, updates), metrics)
            return (params, state), value

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None,
                                           length=steps)
        return params, losses

    params, _ = fit(params)
    x_hat, _ = sae.forward(cfg, params, x)
    x, x_hat = np.asarray(x), np.asarray(x_hat)
    fvu = float(np.sum(np.square(x - x_hat)) / max(np.sum(np.square(x - x.mean(0))), 1e-12))
    return direction_recovery(params["W_dec"], directions) | {"fvu": fvu}
