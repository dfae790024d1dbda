"""Evaluating a transcoder spliced into its model: CE loss with the MLP replaced, KL, L0, FVU.

:func:`evaluate_transcoder` is :func:`jinterp.sae.evaluate` for a transcoder: held-out tokens
run clean, with the output activation (``hook_mlp_out``) replaced by the transcoder's prediction
from the input activation of the same forward (:func:`~jinterp.sae.splice_transcoder`: the MLP
replaced), and with the output zero- and mean-ablated (the MLP removed; its mean output). The
entries and their definitions are :func:`~jinterp.sae.evaluate`'s (``ce_loss_recovered`` =
``(ce_zero - ce_spliced) / (ce_zero - ce_clean)``; ``fvu``, ``mse``, ``explained_variance`` of
the *prediction* against the true output; ``l0`` and ``dead_fraction`` of the latents), so an
SAE on ``hook_mlp_out`` and a transcoder for the same MLP compare entry by entry.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.interventions import MeanAblate, ZeroAblate
from jinterp.model import HookedModel
from jinterp.names import split_name
from jinterp.run import run_with_cache, run_with_hooks, validate_tokens
from jinterp.sae.architectures import encode, reconstruct
from jinterp.sae.config import SAEConfig
from jinterp.sae.evaluate import _act_sum, _shape, run_sums, summarize
from jinterp.sae.store import token_mask
from jinterp.sae.transcoder_splice import splice_transcoder


def _check_hooks(model: HookedModel, cfg: SAEConfig, hook_in: str, hook_out: str,
                 tokens_shape: tuple[int, int]) -> None:
    (layer_in, _), (layer_out, _) = split_name(hook_in), split_name(hook_out)
    if layer_in is None or layer_in != layer_out:
        raise ValueError(f"a transcoder reads and writes one block: {hook_in!r} and {hook_out!r} "
                         "must name the same block (e.g. blocks.1.ln2.hook_normalized and "
                         "blocks.1.hook_mlp_out).")
    widths = {}
    for name in (hook_in, hook_out):
        shape = _shape(model, name, tokens_shape)
        widths[name] = int(np.prod(shape[2:]))
    if (widths[hook_in], widths[hook_out]) != (cfg.d_in, cfg.d_target):
        raise ValueError(f"the transcoder maps d_in={cfg.d_in} -> d_out={cfg.d_target}, but "
                         f"{hook_in!r} gives rows of width {widths[hook_in]} and {hook_out!r} of "
                         f"{widths[hook_out]}: it was trained on other hooks or another model.")


def evaluate_transcoder(model: HookedModel, params, cfg: SAEConfig, tc_params: dict,
                        hook_in: str, hook_out: str, tokens: Int[Array | np.ndarray, "batch pos"],
                        *, batch_size: int = 8, exclude_ids: tuple[int, ...] = ()
                        ) -> dict[str, float]:
    """Metrics of the transcoder ``(cfg, tc_params)`` replacing ``hook_out`` from ``hook_in``.

    Args:
        model / params: the port and its parameters.
        cfg / tc_params: the transcoder (raw activation units).
        hook_in / hook_out: what it reads and what it replaces, in one block
            (``blocks.L.ln2.hook_normalized`` -> ``blocks.L.hook_mlp_out``).
        tokens: held-out token ids ``[batch, pos]`` (at least two positions).
        batch_size: sequences per forward pass.
        exclude_ids: token ids whose positions keep the MLP and do not count (BOS, padding).

    Returns:
        :func:`jinterp.sae.evaluate`'s dict (see the module docstring).
    """
    if not cfg.is_transcoder:
        raise ValueError("evaluate_transcoder needs a transcoder (d_out set); evaluate an SAE "
                         "with jinterp.sae.evaluate.")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"evaluate_transcoder needs tokens [batch, pos >= 2], got shape "
                         f"{tokens.shape}.")
    validate_tokens(model, tokens)
    _check_hooks(model, cfg, hook_in, hook_out, tokens.shape)
    stop = split_name(hook_out)[0] + 1
    batches = [tokens[i:i + batch_size] for i in range(0, len(tokens), batch_size)]
    masks = [token_mask(t, tuple(exclude_ids), False) for t in batches]
    sums = [_act_sum(model, hook_out, stop, params, jnp.asarray(t), jnp.asarray(k))
            for t, k in zip(batches, masks)]
    count = sum(int(k.sum()) for k in masks)
    mean_out = functools.reduce(jnp.add, sums) / max(count, 1)  # [d_target]

    outs = [_eval_batch(model, hook_in, hook_out, cfg, bool(exclude_ids), params,
                        dict(tc_params), jnp.asarray(toks), jnp.asarray(keep), mean_out)
            for toks, keep in zip(batches, masks)]
    return summarize(outs, masks)


def _rows(act: Array) -> Float[Array, "batch pos d"]:
    return act.reshape(act.shape[:2] + (-1,)) if act.ndim == 4 else act


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _eval_batch(model: HookedModel, hook_in: str, hook_out: str, cfg: SAEConfig, masked: bool,
                params, tc_params: dict, toks: Int[Array, "batch pos"],
                keep: Bool[Array, "batch pos"], mean_out: Float[Array, " d_target"]
                ) -> dict[str, Array]:
    """Sums over one batch: clean, MLP-replaced, zero- and mean-ablated forwards, one program."""
    tc = splice_transcoder(cfg, tc_params, hook_in)
    tc = tc.replace(keep=keep) if masked else tc
    clean, cache = run_with_cache(model, params, toks, [hook_in, hook_out])
    mean_act = mean_out.astype(cache[hook_out].dtype)[None, None]
    runs = {"clean": clean,
            "spliced": run_with_hooks(model, params, toks, {hook_out: tc}),
            "zero": run_with_hooks(model, params, toks, {hook_out: ZeroAblate()}),
            "mean": run_with_hooks(model, params, toks, {hook_out: MeanAblate(mean=mean_act)})}
    sums = run_sums(runs, toks, keep)
    x = _rows(cache[hook_in]).astype(jnp.float32)
    y = _rows(cache[hook_out]).astype(jnp.float32)
    f = encode(cfg, tc_params, x)
    y_hat = reconstruct(cfg, tc_params, x, f)
    w = keep.astype(jnp.float32)
    return {**sums,
            "l0": jnp.sum(jnp.sum(f != 0, axis=-1) * w),
            "sq_err": jnp.sum(jnp.sum(jnp.square(y - y_hat), axis=-1) * w),
            "var": jnp.sum(jnp.sum(jnp.square(y - mean_out[None, None]), axis=-1) * w),
            "fired": jnp.any((f != 0) & keep[..., None], axis=(0, 1))}
