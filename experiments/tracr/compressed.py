"""Tracr's compressed models: a compiled program squeezed into a smaller residual stream.

Tracr gives every value of every RASP variable its own orthogonal residual direction, so a
compiled model is far wider than it needs to be. Lindner et al. (2023, "Tracr", section 5)
ask how much narrower it can get: keep the compiled weights frozen and learn one matrix
``w [d, D]`` that every component writes through (``x -> x @ w.T``) and reads back through
(``h -> h @ w``); below the number of varying directions the model must put features in
superposition. Tracr's own ``CompressedTransformer`` (``tracr/transformer/
compressed_model.py``, ``unembed_at_every_layer=True``) applies ``w`` around every layer.

Because the port has no norms, reading and writing through ``w`` is linear and folds into the
weights: :func:`compressed_port` builds an ordinary ``d_model = d`` GPT-2 port, so every
jinterp tool (caches, SAEs, probes) runs on the compressed model unchanged.

:func:`train_compression` learns ``w`` by full-batch Adam (cosine-decayed learning rate) on a
program's input domain (the domains are small, 10^2 inputs). The loss follows the paper:
squared error between the original and the compressed model's layer outputs read back up
(``attn_out`` / ``mlp_out`` of every block, as Tracr collects them), plus an output term (mean
squared error of a numerical program's value, cross-entropy against the original's prediction
for a categorical one). By default (``residual=True``) it also matches every residual stream
read back up: measured on frac_prevs, the layer-output loss alone often stalls in poor minima
even at ``d = D`` (accuracy 0.35-0.72 over seeds and learning rates), while adding the
residual term reaches 1.0 at ``d = D`` and 0.995 at ``d = 8`` of 12.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int

import jinterp
from jinterp.models.gpt2 import GPT2, GPT2Config, Norm

#: A numerical output counts as reproduced when it is nearer the original's value than any
#: other value the original produces on the domain (Tracr's numerical outputs are a few
#: fractions; frac_prevs up to length 4: 0, 1/4, 1/3, 1/2, 2/3, 3/4, 1).
_ROUND = 6  # decimals under which two numerical outputs are the same value


def compressed_port(model: GPT2, params: dict, w: Float[Array, "d d_model"]
                    ) -> tuple[GPT2, dict]:
    """The port with residual width ``d``: every write multiplied by ``w.T``, every read by ``w``.

    Writes: ``W_E``, ``W_pos``, ``W_O``, ``b_O``, ``W_out``, ``b_out``; reads: ``W_Q``, ``W_K``,
    ``W_V``, ``W_in``, ``W_U``. Traceable (``w`` may be a tracer), so gradients flow into ``w``.

    Raises:
        ValueError: ``w`` is not ``[d, model.d_model]``, or the model has LayerNorm (a norm
            does not commute with ``w``, so folding would change the model).
    """
    D = model.d_model
    if getattr(w, "ndim", None) != 2 or w.shape[1] != D:
        raise ValueError(f"w must be [d, d_model] = [d, {D}] (a write maps x [{D}] -> "
                         f"x @ w.T [d]); got w of shape {tuple(np.shape(w))} for a model with "
                         f"d_model={D}.")
    cfg: GPT2Config = model.config
    if cfg.normalization is not Norm.NONE:
        raise ValueError("compressed_port folds w into the weights, which is exact only "
                         f"without norms; this model has normalization={cfg.normalization}.")
    w = jnp.asarray(w, jnp.float32)
    write = lambda x: x @ w.T  # ... d_model -> ... d
    attn, mlp = params["blocks"]["attn"], params["blocks"]["mlp"]
    read = lambda W: jnp.einsum("dD,lhDk->lhdk", w, W)  # layer n_heads d d_head
    new_attn = {**attn, "W_Q": read(attn["W_Q"]), "W_K": read(attn["W_K"]),
                "W_V": read(attn["W_V"]), "W_O": write(attn["W_O"])}
    if "b_O" in attn:
        new_attn["b_O"] = write(attn["b_O"])
    new_mlp = {**mlp, "W_in": jnp.einsum("dD,lDm->ldm", w, mlp["W_in"]),  # layer d d_mlp
               "W_out": write(mlp["W_out"])}
    if "b_out" in mlp:
        new_mlp["b_out"] = write(mlp["b_out"])
    params_c = {**params, "embed": {**params["embed"], "W_E": write(params["embed"]["W_E"])},
                "pos_embed": {"W_pos": write(params["pos_embed"]["W_pos"])},
                "blocks": {**params["blocks"], "attn": new_attn, "mlp": new_mlp},
                "unembed": {**params["unembed"], "W_U": w @ params["unembed"]["W_U"]}}
    return GPT2(dataclasses.replace(cfg, d_model=int(w.shape[0]))), params_c


@dataclasses.dataclass(frozen=True)
class CompressionResult:
    """A learned compression of one program's residual stream.

    Attributes:
        w: ``[d, d_model]``, the projection (write ``x @ w.T``, read ``h @ w``).
        d: the compressed width.
        losses: the training loss after each step, ``[steps]``.
        accuracy: fraction of (input, position > 0) whose decoded output equals the original
            model's (numerical: nearest original value, see :func:`agreement`).
        seconds: wall time of the training, compile included.
    """

    w: np.ndarray
    d: int
    losses: np.ndarray
    accuracy: float
    seconds: float


def _points(model: GPT2) -> list[str]:
    return [f"blocks.{l}.hook_{p}_out" for l in range(model.n_layers) for p in ("attn", "mlp")]


def _resid_points(model: GPT2) -> list[str]:
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_{p}"
                                          for l in range(model.n_layers) for p in ("mid", "post")]


def agreement(io, logits_c: Float[Array, "batch pos d_vocab"],
              logits: Float[Array, "batch pos d_vocab"], tokens: Int[Array, "batch pos"]
              ) -> float:
    """Fraction of real positions after BOS where the two models' decoded outputs agree.

    Categorical: the same output value. Numerical: the compressed value is nearer the
    original's value than any other value the original produces on these inputs (rounding to
    the program's own output set; for frac_prevs at length 4 a tolerance of 1/24 or more).
    """
    mask = np.asarray(io.attention_mask(tokens)).copy()
    mask[:, 0] = False  # position 0 decodes as BOS in both
    if io.categorical:
        k = len(io.output_values)
        same = np.argmax(np.asarray(logits_c)[..., :k], -1) == np.argmax(
            np.asarray(logits)[..., :k], -1)
        return float(same[mask].mean())
    ref = np.asarray(logits)[..., 0][mask]
    got = np.asarray(logits_c)[..., 0][mask]
    values = np.unique(np.round(ref, _ROUND))  # the program's output set
    nearest = values[np.argmin(np.abs(got[:, None] - values[None, :]), axis=1)]
    return float(np.mean(nearest == np.round(ref, _ROUND)))


def _loss_fn(model, params, io, tokens, mask, targets, *, residual: bool, out_weight: float):
    names = _points(model) + (_resid_points(model) if residual else [])
    m = mask.astype(jnp.float32)[..., None]  # batch pos 1
    n = jnp.sum(m)

    def loss(w):
        model_c, params_c = compressed_port(model, params, w)
        logits, cache = jinterp.run_with_cache(model_c, params_c, tokens, names=names,
                                               attention_mask=mask)
        layer = sum(jnp.sum(m * jnp.square(cache[k] @ w - targets[k])) for k in names) / n
        if io.categorical:
            k = len(io.output_values)
            labels = jnp.argmax(targets["logits"][..., :k], -1)  # batch pos
            ce = optax.softmax_cross_entropy_with_integer_labels(logits[..., :k], labels)
            out = jnp.sum(m[..., 0] * ce) / n
        else:
            out = jnp.sum(m[..., 0] * jnp.square(logits[..., 0] - targets["logits"][..., 0])) / n
        return layer / len(names) + out_weight * out

    return loss, names


def train_compression(model: GPT2, params: dict, io, inputs: Sequence[Sequence[Any]], d: int,
                      *, steps: int = 3000, seed: int = 0, lr: float = 3e-2,
                      residual: bool = True, out_weight: float = 1.0) -> CompressionResult:
    """Learns ``w [d, D]`` with the compiled weights frozen (full-batch Adam, one ``lax.scan``).

    Args:
        model, params, io: a port from ``models.from_tracr``.
        inputs: the inputs to fit and score on (a program's ``spec.domain()``).
        d: the compressed residual width.
        steps: Adam steps, each on every input at once.
        seed: seeds ``w``'s initialisation (Gaussian, std ``1 / sqrt(d)`` so that
            ``w.T w`` starts near the identity in expectation).
        lr: Adam's learning rate.
        residual: also match every residual stream read back up (see the module doc).
        out_weight: weight of the output term relative to the mean layer term.

    Raises:
        ValueError: ``d`` or ``steps`` is not positive.
    """
    if d <= 0 or steps <= 0:
        raise ValueError(f"d and steps must be positive, got d={d}, steps={steps}.")
    start = time.perf_counter()
    tokens = io.encode(list(inputs))
    mask = io.attention_mask(tokens)
    names = _points(model) + (_resid_points(model) if residual else [])
    logits, cache = jinterp.run_with_cache(model, params, tokens, names=names,
                                           attention_mask=mask)
    targets = {k: cache[k] for k in names} | {"logits": logits}
    loss, _ = _loss_fn(model, params, io, tokens, mask, targets, residual=residual,
                       out_weight=out_weight)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.01))
    w0 = jax.random.normal(jax.random.key(seed), (d, model.d_model)) / np.sqrt(d)

    @jax.jit
    def fit(w):
        def step(carry, _):
            w, state = carry
            value, grad = jax.value_and_grad(loss)(w)
            updates, state = opt.update(grad, state, w)
            return (optax.apply_updates(w, updates), state), value

        (w, _), losses = jax.lax.scan(step, (w, opt.init(w)), None, length=steps)
        return w, losses

    w, losses = fit(w0)
    acc = agreement(io, compressed_logits(model, params, w, tokens, mask), logits, tokens)
    return CompressionResult(w=np.asarray(w), d=d, losses=np.asarray(losses), accuracy=acc,
                             seconds=time.perf_counter() - start)


def compressed_logits(model: GPT2, params: dict, w: Float[Array, "d d_model"],
                      tokens: Int[Array, "batch pos"], mask: Bool[Array, "batch pos"] | None
                      ) -> Float[Array, "batch pos d_vocab"]:
    """The compressed model's logits (a convenience for scoring a given ``w``)."""
    model_c, params_c = compressed_port(model, params, w)
    return jinterp.run_with_cache(model_c, params_c, tokens, names=[], attention_mask=mask)[0]


def compression_sweep(name: str, dims: Sequence[int], *, steps: int = 3000, seed: int = 0,
                      lr: float = 3e-2, residual: bool = True) -> list[dict]:
    """Accuracy against ``d`` for one registry program (:mod:`.programs`), on its domain.

    Returns one JSON-able row per ``d``: ``d``, ``d_model``, ``accuracy``, ``final_loss``,
    ``seconds``.
    """
    from jinterp.experiments.tracr.programs import compiled

    c = compiled(name)
    inputs = c.spec.domain()
    rows = []
    for d in dims:
        r = train_compression(c.model, c.params, c.io, inputs, int(d), steps=steps, seed=seed,
                              lr=lr, residual=residual)
        rows.append({"d": int(d), "d_model": c.model.d_model, "accuracy": r.accuracy,
                     "final_loss": float(r.losses[-1]), "seconds": r.seconds})
    return rows
