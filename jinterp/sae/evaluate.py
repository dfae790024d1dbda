"""Evaluating an SAE spliced into its model: CE loss recovered, KL, L0, FVU, dead latents.

:func:`evaluate` runs held-out tokens through the model four ways -- clean, with the SAE
spliced in (:func:`jinterp.sae.splice`), with the activation zero-ablated and mean-ablated --
and reads the SAE's own metrics off the clean activations. Definitions (SAELens's where it has
one, ``sae_lens.evals.get_recons_loss`` / ``get_sparsity_and_variance_metrics``):

* ``ce_loss_*``: mean next-token cross-entropy over every position but the last;
* ``ce_loss_recovered = (ce_zero - ce_spliced) / (ce_zero - ce_clean)`` (SAELens's
  ``ce_loss_score``); ``ce_loss_recovered_mean_ablation`` the same against mean ablation (the
  activation replaced by its mean over the evaluated tokens, a baseline that does not punish
  the SAE for the activation's constant part);
* ``kl_div``: ``KL(clean || spliced)`` of the next-token distributions, mean per position (all
  positions); ``kl_div_zero_ablation`` likewise;
* ``l0`` (active latents per token), ``fvu`` (centred: ``E||x - x_hat||^2 / E||x - E x||^2``),
  ``explained_variance = 1 - fvu``, ``mse`` (raw activation units), ``dead_fraction``
  (latents that never fire on these tokens).

With ``exclude_ids`` (e.g. BOS and padding) the SAE is spliced only at the other positions and
every average skips the excluded ones, as SAELens's ``ignore_tokens``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.interventions import MeanAblate, ZeroAblate
from jinterp.model import HookedModel
from jinterp.names import shape_of, split_name, unknown_name_error
from jinterp.run import run_with_cache, run_with_hooks, validate_tokens
from jinterp.sae.architectures import forward
from jinterp.sae.config import SAEConfig
from jinterp.sae.splice import splice
from jinterp.sae.store import as_hook_spec, token_mask


def _rows(act: Array, head: int | None) -> Float[Array, "batch pos d"]:
    """Per-token SAE inputs of an activation (heads flattened or one head selected)."""
    if act.ndim == 4:
        return act.reshape(act.shape[:2] + (-1,)) if head is None else act[:, :, head]
    return act


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _act_sum(model: HookedModel, name: str, stop: int | None, params,
             toks: Int[Array, "batch pos"], keep: Bool[Array, "batch pos"]) -> Array:
    """The activation summed over the kept positions of one batch (float32)."""
    _, cache = run_with_cache(model, params, toks, [name], stop_at_layer=stop)
    act = cache[name].astype(jnp.float32)
    return jnp.sum(jnp.where(keep.reshape(keep.shape + (1,) * (act.ndim - 2)), act, 0.0),
                   axis=(0, 1))


def _shape(model: HookedModel, name: str, tokens_shape: tuple[int, int]) -> tuple[int, ...]:
    if name not in model.hook_names():
        raise unknown_name_error(name, model.hook_names())
    sizes = {"batch": tokens_shape[0], "pos": tokens_shape[1], "q_pos": tokens_shape[1],
             "k_pos": tokens_shape[1], **model.dims}
    return shape_of(model.points[split_name(name)[1]], sizes)


def _token_losses(logits: Float[Array, "batch pos d_vocab"], tokens: Int[Array, "batch pos"],
                  clean: Float[Array, "batch pos d_vocab"]
                  ) -> tuple[Float[Array, "batch pos_m1"], Float[Array, "batch pos"]]:
    """Next-token CE ``[batch, pos - 1]`` and ``KL(clean || logits)`` per position."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp[:, :-1], tokens[:, 1:, None], axis=-1)[..., 0]
    logq = jax.nn.log_softmax(clean.astype(jnp.float32), axis=-1)
    kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
    return ce, kl


def _masked_mean(total: float, count: int) -> float:
    return float(total) / max(float(count), 1.0)


def evaluate(model: HookedModel, params, cfg: SAEConfig, sae_params: dict, hook_name: str,
             tokens: Int[Array | np.ndarray, "batch pos"], *, batch_size: int = 8,
             head: int | None = None, exclude_ids: tuple[int, ...] = ()) -> dict[str, float]:
    """Metrics of the SAE ``(cfg, sae_params)`` spliced into ``model`` at ``hook_name``.

    Args:
        model / params: the port and its parameters.
        cfg / sae_params: the SAE (raw activation units; a file's or :func:`train`'s).
        hook_name: where it reads and writes (``name:h`` selects head ``h`` of a per-head
            point, as ``head=h``).
        tokens: held-out token ids ``[batch, pos]`` (at least two positions).
        batch_size: sequences per forward pass (one dividing ``len(tokens)`` avoids compiling
            a second program for a shorter last batch).
        head: one head of an ``attn.hook_z``-like point (None: all heads flattened).
        exclude_ids: token ids whose positions neither get the SAE nor count (BOS, padding).

    Returns:
        A dict of floats; see the module docstring for each entry.
    """
    if cfg.is_transcoder or cfg.is_crosscoder:
        kind, fn = (("a transcoder", "evaluate_transcoder(model, params, cfg, p, hook_in, "
                     "hook_out, tokens)") if cfg.is_transcoder else
                    ("a crosscoder", "evaluate_crosscoder(model, params, cfg, p, blocks, tokens)"))
        raise ValueError(f"evaluate() scores an SAE spliced at one hook; this is {kind}: use "
                         f"jinterp.sae.{fn}.")
    spec = as_hook_spec(hook_name)
    name, head = spec.name, spec.head if head is None else head
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"evaluate needs tokens [batch, pos >= 2], got shape {tokens.shape}.")
    validate_tokens(model, tokens)
    splice(cfg, sae_params, head=head).check(_shape(model, name, tokens.shape), model.points[
        split_name(name)[1]], name)
    layer = split_name(name)[0]
    stop = None if layer is None else layer + 1
    batches = [tokens[i:i + batch_size] for i in range(0, len(tokens), batch_size)]
    masks = [token_mask(t, tuple(exclude_ids), False) for t in batches]

    # pass 1: the activation's mean over kept positions (mean ablation, centred FVU)
    sums = [_act_sum(model, name, stop, params, jnp.asarray(t), jnp.asarray(k))
            for t, k in zip(batches, masks)]
    count = sum(int(k.sum()) for k in masks)
    mean_act = functools.reduce(jnp.add, sums) / max(count, 1)
    mean_rows = _rows(mean_act[None, None], head)[0, 0].astype(jnp.float32)

    outs = [_eval_batch(model, name, cfg, head, bool(exclude_ids), params, dict(sae_params),
                        jnp.asarray(toks), jnp.asarray(keep), mean_act[None, None], mean_rows)
            for toks, keep in zip(batches, masks)]
    return summarize(outs, masks)


def run_sums(runs: dict[str, Array], toks: Int[Array, "batch pos"],
             keep: Bool[Array, "batch pos"]) -> dict[str, Array]:
    """Per-batch sums of the next-token CE of each run (``clean``, ``spliced``, ``zero``,
    ``mean``) and the KL from ``clean`` of the spliced and zero-ablated runs, over kept
    positions: what :func:`summarize` turns into means."""
    sums = {}
    for key, logits in runs.items():
        ce, kl = _token_losses(logits, toks, runs["clean"])
        sums[f"ce_{key}"] = jnp.sum(jnp.where(keep[:, :-1], ce, 0.0))
        if key in ("spliced", "zero"):
            sums["kl" if key == "spliced" else "kl_zero"] = jnp.sum(jnp.where(keep, kl, 0.0))
    return sums


def summarize(outs: list[dict[str, Array]], masks: list[np.ndarray]) -> dict:
    """The evaluation dict from per-batch sums (``ce_*``, ``kl``, ``kl_zero``, ``l0``,
    ``sq_err``, ``var`` and the ``fired`` mask), shared by SAEs, transcoders and crosscoders:
    CE over every kept position but the last of each sequence, the rest per kept token."""
    sums = functools.reduce(lambda x, y: jax.tree.map(
        lambda a, b: a | b if a.dtype == bool else a + b, x, y), outs)
    n_ce = sum(int(k[:, :-1].sum()) for k in masks)
    n_tok = sum(int(k.sum()) for k in masks)
    fired = sums.pop("fired")
    host = {k: float(v) for k, v in jax.device_get(sums).items()}
    ce = {k: _masked_mean(host[f"ce_{k}"], n_ce) for k in ("clean", "spliced", "zero", "mean")}
    fvu = host["sq_err"] / max(host["var"], 1e-30)
    return {
        "ce_loss_clean": ce["clean"],
        "ce_loss_spliced": ce["spliced"],
        "ce_loss_zero_ablation": ce["zero"],
        "ce_loss_mean_ablation": ce["mean"],
        "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"]),
        "ce_loss_recovered_mean_ablation": (ce["mean"] - ce["spliced"]) / (ce["mean"]
                                                                           - ce["clean"]),
        "kl_div": _masked_mean(host["kl"], n_tok),
        "kl_div_zero_ablation": _masked_mean(host["kl_zero"], n_tok),
        "l0": _masked_mean(host["l0"], n_tok),
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": _masked_mean(host["sq_err"], n_tok),
        "dead_fraction": float(1.0 - jnp.mean(fired)),
        "n_tokens": n_tok,
    }


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _eval_batch(model: HookedModel, name: str, cfg: SAEConfig, head: int | None, masked: bool,
                params, sae_params: dict, toks: Int[Array, "batch pos"],
                keep: Bool[Array, "batch pos"], mean_act: Array,
                mean_rows: Float[Array, " d_in"]) -> dict[str, Array]:
    """Sums over one batch (one program: clean, spliced, zero- and mean-ablated forwards)."""
    sae_iv = splice(cfg, sae_params, head=head)
    clean, cache = run_with_cache(model, params, toks, [name])
    spliced_iv = sae_iv.replace(keep=keep) if masked else sae_iv
    runs = {"clean": clean,
            "spliced": run_with_hooks(model, params, toks, {name: spliced_iv}),
            "zero": run_with_hooks(model, params, toks, {name: ZeroAblate(head=head)}),
            "mean": run_with_hooks(model, params, toks, {name: MeanAblate(mean=mean_act,
                                                                          head=head)})}
    sums = run_sums(runs, toks, keep)
    x = _rows(cache[name], head).astype(jnp.float32)
    return {**sums, **_sae_stats(cfg, sae_params, x, keep, mean_rows)}


def _sae_stats(cfg: SAEConfig, sae_params: dict, x: Float[Array, "batch pos d_in"],
               keep: Bool[Array, "batch pos"], mean: Float[Array, " d_in"]) -> dict[str, Array]:
    """Sums over kept tokens: active latents, squared error, squared deviation from the mean."""
    x_hat, f = forward(cfg, sae_params, x)
    w = keep.astype(jnp.float32)
    return {
        "l0": jnp.sum(jnp.sum(f != 0, axis=-1) * w),
        "sq_err": jnp.sum(jnp.sum(jnp.square(x - x_hat), axis=-1) * w),
        "var": jnp.sum(jnp.sum(jnp.square(x - mean[None, None]), axis=-1) * w),
        "fired": jnp.any((f != 0) & keep[..., None], axis=(0, 1)),
    }
