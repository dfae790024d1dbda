"""Evaluating a crosscoder block by block: CE loss with one block's activation reconstructed.

:func:`evaluate_crosscoder` runs held-out tokens clean through every checkpoint the crosscoder
reads, reconstructs all blocks from those clean activations (one encoding, as the crosscoder
sees them in training), and then, for each block ``b`` in turn, runs its model again with block
``b``'s activation replaced by ``x_hat_b`` (:func:`~jinterp.sae.crosscoder.crosscoder_patches`)
and with it zero-ablated. Per block it reports :func:`jinterp.sae.evaluate`'s CE entries
(``ce_loss_clean`` / ``_spliced`` / ``_zero_ablation``, ``ce_loss_recovered``), ``kl_div``,
``fvu`` (centred, that block's variance), ``explained_variance`` and ``mse``; over all blocks
``l0``, ``dead_fraction``, ``fvu`` (summed errors over summed variances) and ``n_tokens``.

With ``exclude_ids`` the excluded positions keep their clean activation and do not count.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.interventions import ZeroAblate
from jinterp.model import HookedModel
from jinterp.names import split_name
from jinterp.run import run_with_cache, run_with_hooks, validate_tokens
from jinterp.sae.config import SAEConfig
from jinterp.sae.crosscoder import crosscoder_forward, crosscoder_patches
from jinterp.sae.evaluate import _act_sum, _masked_mean, _shape, _token_losses
from jinterp.sae.store import token_mask

#: One block of a crosscoder: (checkpoint index, hook name).
Block = tuple[int, str]


def as_blocks(blocks: Sequence[str | Block]) -> tuple[Block, ...]:
    """``("blocks.0.hook_resid_post", ...)`` (one model) or ``((0, name), (1, name))``."""
    out = []
    for b in blocks:
        if isinstance(b, str):
            out.append((0, b))
        elif isinstance(b, (tuple, list)) and len(b) == 2 and isinstance(b[1], str):
            out.append((int(b[0]), b[1]))
        else:
            raise TypeError(f"a crosscoder block is a hook name or a (checkpoint, hook name) "
                            f"pair, got {b!r}.")
    return tuple(out)


def _param_sets(params, blocks: tuple[Block, ...]) -> tuple:
    sets = tuple(params) if isinstance(params, (list, tuple)) else (params,)
    need = max(c for c, _ in blocks) + 1
    if len(sets) < need:
        raise ValueError(f"the crosscoder's blocks read checkpoints 0..{need - 1}; pass params as "
                         f"a sequence of {need} parameter sets (got {len(sets)}).")
    return sets


def evaluate_crosscoder(model: HookedModel, params, cfg: SAEConfig, cc_params: dict,
                        blocks: Sequence[str | Block],
                        tokens: Int[Array | np.ndarray, "batch pos"], *, batch_size: int = 8,
                        exclude_ids: tuple[int, ...] = ()) -> dict:
    """Per-block and overall metrics of the crosscoder ``(cfg, cc_params)`` (module docstring).

    Args:
        model: the port (every checkpoint is this port).
        params: its parameters, or a sequence of parameter sets (checkpoints) for blocks that
            name checkpoints.
        cfg / cc_params: the crosscoder (raw units), ``cfg.n_blocks == len(blocks)``.
        blocks: the hooks it reads, in its block order: names (one model), or
            ``(checkpoint, name)`` pairs.
        tokens: held-out token ids ``[batch, pos]``.
        batch_size: sequences per forward pass.
        exclude_ids: token ids whose positions are neither replaced nor counted.
    """
    blocks = as_blocks(blocks)
    if cfg.n_blocks != len(blocks):
        raise ValueError(f"the crosscoder has n_blocks={cfg.n_blocks}, got {len(blocks)} blocks.")
    sets = _param_sets(params, blocks)
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"evaluate_crosscoder needs tokens [batch, pos >= 2], got shape "
                         f"{tokens.shape}.")
    validate_tokens(model, tokens)
    for b, (_, name) in enumerate(blocks):
        width = int(np.prod(_shape(model, name, tokens.shape)[2:]))
        if width != cfg.d_block:
            raise ValueError(f"block {b} ({name!r}) has rows of width {width}; the crosscoder's "
                             f"blocks are d_block={cfg.d_block} wide.")
    batches = [tokens[i:i + batch_size] for i in range(0, len(tokens), batch_size)]
    masks = [token_mask(t, tuple(exclude_ids), False) for t in batches]
    count = sum(int(k.sum()) for k in masks)
    means = []
    for c, name in blocks:
        layer = split_name(name)[0]
        stop = None if layer is None else layer + 1
        total = functools.reduce(jnp.add, [
            _act_sum(model, name, stop, sets[c], jnp.asarray(t), jnp.asarray(k))
            for t, k in zip(batches, masks)])
        means.append((total / max(count, 1)).reshape(-1))
    sums: dict[str, Array] = {}
    for toks, keep in zip(batches, masks):
        out = _eval_batch(model, blocks, cfg, bool(exclude_ids), sets, dict(cc_params),
                          jnp.asarray(toks), jnp.asarray(keep), tuple(means))
        sums = out if not sums else jax.tree.map(
            lambda a, b: a | b if a.dtype == bool else a + b, sums, out)
    n_ce = sum(int(k[:, :-1].sum()) for k in masks)
    fired = sums.pop("fired")
    host = {k: np.asarray(v, np.float64) for k, v in jax.device_get(sums).items()}
    per_block = []
    for b, (c, name) in enumerate(blocks):
        ce = {k: _masked_mean(host[f"ce_{k}"][b], n_ce) for k in ("clean", "spliced", "zero")}
        fvu = float(host["sq_err"][b] / max(host["var"][b], 1e-30))
        per_block.append({
            "checkpoint": c, "hook": name, "ce_loss_clean": ce["clean"],
            "ce_loss_spliced": ce["spliced"], "ce_loss_zero_ablation": ce["zero"],
            "ce_loss_recovered": (ce["zero"] - ce["spliced"]) / (ce["zero"] - ce["clean"]),
            "kl_div": _masked_mean(host["kl"][b], count), "fvu": fvu,
            "explained_variance": 1.0 - fvu, "mse": _masked_mean(host["sq_err"][b], count)})
    fvu = float(host["sq_err"].sum() / max(host["var"].sum(), 1e-30))
    return {"blocks": per_block, "l0": _masked_mean(float(host["l0"]), count), "fvu": fvu,
            "dead_fraction": float(1.0 - jnp.mean(fired)), "n_tokens": count}


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _eval_batch(model: HookedModel, blocks: tuple[Block, ...], cfg: SAEConfig, masked: bool,
                sets: tuple, cc_params: dict, toks: Int[Array, "batch pos"],
                keep: Bool[Array, "batch pos"], means: tuple[Float[Array, " d_block"], ...]
                ) -> dict[str, Array]:
    """Sums over one batch: clean runs, then per block a reconstructed and an ablated run."""
    clean, acts = {}, {}
    for c in sorted({c for c, _ in blocks}):
        names = [n for cc, n in blocks if cc == c]
        clean[c], cache = run_with_cache(model, sets[c], toks, names)
        acts.update({(c, n): cache[n] for n in names})
    block_acts = [acts[b] for b in blocks]
    patches = crosscoder_patches(cfg, cc_params, block_acts, keep if masked else None)
    x_hats, f = crosscoder_forward(cfg, cc_params, block_acts)
    w = keep.astype(jnp.float32)
    rows: dict[str, list] = {k: [] for k in ("ce_clean", "ce_spliced", "ce_zero", "kl",
                                            "sq_err", "var")}
    for (c, name), patch, x, x_hat, mean in zip(blocks, patches, block_acts, x_hats, means):
        runs = {"clean": clean[c],
                "spliced": run_with_hooks(model, sets[c], toks, {name: patch}),
                "zero": run_with_hooks(model, sets[c], toks, {name: ZeroAblate()})}
        for key, logits in runs.items():
            ce, kl = _token_losses(logits, toks, clean[c])
            rows[f"ce_{key}"].append(jnp.sum(jnp.where(keep[:, :-1], ce, 0.0)))
            if key == "spliced":
                rows["kl"].append(jnp.sum(jnp.where(keep, kl, 0.0)))
        xr = x.reshape(x.shape[:2] + (-1,)).astype(jnp.float32)
        xh = x_hat.reshape(xr.shape)
        rows["sq_err"].append(jnp.sum(jnp.sum(jnp.square(xr - xh), axis=-1) * w))
        rows["var"].append(jnp.sum(jnp.sum(jnp.square(xr - mean[None, None]), axis=-1) * w))
    out = {k: jnp.stack(v) for k, v in rows.items()}  # [n_blocks] each
    out["l0"] = jnp.sum(jnp.sum(f != 0, axis=-1) * w)
    out["fired"] = jnp.any((f != 0) & keep[..., None], axis=(0, 1))
    return out
