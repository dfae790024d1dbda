"""Reading an SAE's features: top-activating contexts, histograms, logit weights, steering.

What a feature dashboard shows (Bricken et al. 2023, "Towards Monosemanticity"; SAELens's and
Neuronpedia's dashboards), as pure functions over a port, its params and an SAE:

* :func:`top_contexts`: for each feature, the ``k`` token positions of a dataset where it is
  largest, with the window of tokens around each one and the feature's activation on every
  token of the window (what a dashboard highlights). One jitted program per batch of
  sequences: the forward up to the hook's layer (``stop_at_layer``: no later block, no
  unembedding), the encoder, a per-feature top-k of the batch and its merge with the running
  top-k; the running state stays on the device, so batches are dispatched without waiting.
  It also counts how often each feature fires (its density) and sums its activations.
* :func:`histograms`: each feature's histogram of non-zero activations, linear bins from 0 to
  its maximum. The bins need the maximum, which the top-k pass finds, so this is a second pass
  over the data (one more forward to the hook's layer per batch). :func:`analyze` runs both.
* :func:`logit_weights`: ``W_dec @ W_U``, the direct effect of a feature's decoder direction on
  the logits. The final norm is handled as TransformerLens's ``from_pretrained`` processing
  does (the ``W_U`` that SAELens / Neuronpedia dashboards multiply by): the final norm's scale
  is folded into ``W_U`` (Gemma: ``1 + w``), for LayerNorm ``W_U`` is centred over
  ``d_model`` (the norm removes a direction's mean), and ``W_U`` is centred over the
  vocabulary (a constant shift of every logit, which softmax ignores; skipped with Gemma's
  final soft-cap, as TL does). The norm's division by the residual's scale is not in it: a
  logit weight is a direction's effect per unit of normalised residual.
* :func:`steer`: an intervention at the SAE's hook, built on the splice
  (:class:`~jinterp.sae.splice.Splice`), that adds ``alpha * W_dec[f]`` to the SAE's output.
  With ``error_term=True`` the SAE's error is added back, computed from the *unsteered*
  reconstruction, so the model sees ``x + alpha * W_dec[f]`` (SAELens's steering with
  ``use_error_term``); without it, ``x_hat + alpha * W_dec[f]``. ``feature`` and ``alpha`` are
  arrays in the pytree: a sweep over strengths is a ``vmap``, with no recompilation.

Memory: the top-k state is ``n_features * k * window`` floats and ints (6,144 features, k 20,
a window of 25 tokens: 12 MB); a batch's latents ``[batch, pos, d_sae]`` live only inside the
program.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from jinterp import readout, weights
from jinterp.model import HookedModel
from jinterp.names import split_name
from jinterp.run import run_with_cache, validate_tokens
from jinterp.sae.architectures import decode, encode
from jinterp.sae.config import SAEConfig, pytree_dataclass
from jinterp.sae.splice import Splice, _normalizer
from jinterp.sae.store import as_hook_spec, token_mask

#: Points whose activation is a residual-stream vector (a decoder row read as one): logit
#: weights are defined for SAEs on these.
RESIDUAL_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
                   "hook_mlp_out", "hook_embed", "hook_pos_embed")


# ------------------------------------------------------------------------- top contexts
@pytree_dataclass
class TopContexts:
    """The running (then final) top-k contexts of each feature, plus firing counts.

    Slots that never held a firing position have ``value <= 0`` (``-inf`` when no position
    filled them at all); dashboards show only ``value > 0``.

    Attributes:
        value: the feature's activation at the context's centre token, largest first.
        seq / pos: where the centre token is: sequence index in the dataset, position.
        tokens: the window's token ids, ``pos - left .. pos + right`` (-1 outside the sequence).
        acts: the feature's activation on each window token (0 at excluded positions).
        n_fired: kept tokens where the feature is > 0.
        act_sum: sum of the feature's activations over kept tokens.
        n_tokens: kept tokens seen.
    """

    value: Float[Array, "n_feat k"]
    seq: Int[Array, "n_feat k"]
    pos: Int[Array, "n_feat k"]
    tokens: Int[Array, "n_feat k window"]
    acts: Float[Array, "n_feat k window"]
    n_fired: Int[Array, " n_feat"]
    act_sum: Float[Array, " n_feat"]
    n_tokens: Int[Array, ""]


@dataclasses.dataclass(frozen=True)
class _Reader:
    """The static part of a pass: which activation, which SAE, how contexts are cut."""

    model: HookedModel
    name: str
    head: int | None
    cfg: SAEConfig
    normalize: str
    k: int
    left: int
    right: int

    @property
    def stop(self) -> int | None:
        """``stop_at_layer``: after the hook's block; 0 for embeddings; None for ln_final."""
        layer = split_name(self.name)[0]
        if layer is not None:
            return layer + 1
        return None if self.name.startswith("ln_final") else 0

    def latents(self, params, sae_params: dict, tokens: Int[Array, "batch pos"],
                features: Int[Array, " n_feat"]) -> Float[Array, "batch pos n_feat"]:
        """The selected features' activations on a batch (forward to the hook's layer only)."""
        _, cache = run_with_cache(self.model, params, tokens, [self.name],
                                  stop_at_layer=self.stop)
        x = cache[self.name]
        if x.ndim == 4:  # per-head point: flatten the heads or take one
            x = x.reshape(x.shape[:2] + (-1,)) if self.head is None else x[:, :, self.head]
        x_in, _ = _normalizer(self.normalize, x.astype(jnp.float32))
        return encode(self.cfg, sae_params, x_in)[..., features]  # batch pos n_feat


def empty_contexts(n_feat: int, k: int, window: int) -> TopContexts:
    """The state before any batch: every slot empty."""
    return TopContexts(
        value=jnp.full((n_feat, k), -jnp.inf, jnp.float32),
        seq=jnp.full((n_feat, k), -1, jnp.int32), pos=jnp.full((n_feat, k), -1, jnp.int32),
        tokens=jnp.full((n_feat, k, window), -1, jnp.int32),
        acts=jnp.zeros((n_feat, k, window), jnp.float32),
        n_fired=jnp.zeros((n_feat,), jnp.int32), act_sum=jnp.zeros((n_feat,), jnp.float32),
        n_tokens=jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=3)
def _contexts_step(reader: _Reader, params, sae_params: dict, state: TopContexts,
                   tokens: Int[Array, "batch pos"], keep: Bool[Array, "batch pos"],
                   first_seq: Int[Array, ""], features: Int[Array, " n_feat"]) -> TopContexts:
    """One batch: latents, the batch's per-feature top-k, merged into the running top-k."""
    f = reader.latents(params, sae_params, tokens, features)  # batch pos n_feat
    f = jnp.where(keep[..., None], f, 0.0)
    n_pos = tokens.shape[1]
    ranked = jnp.where(keep[..., None], f, -jnp.inf).reshape(-1, f.shape[-1]).T  # n_feat tok
    value, flat = jax.lax.top_k(ranked, reader.k)  # n_feat k
    row, pos = flat // n_pos, flat % n_pos  # n_feat k
    offsets = jnp.arange(-reader.left, reader.right + 1)  # window
    q = pos[..., None] + offsets[None, None]  # n_feat k window
    inside = (q >= 0) & (q < n_pos)
    qc = jnp.clip(q, 0, n_pos - 1)
    feat = jnp.arange(f.shape[-1])[:, None, None]  # n_feat 1 1
    acts = jnp.where(inside, f[row[..., None], qc, feat], 0.0)  # n_feat k window
    toks = jnp.where(inside, tokens[row[..., None], qc], -1)  # n_feat k window
    # merge: running slots first, so an equal value keeps the earlier position (as a sort would)
    value = jnp.concatenate([state.value, value], axis=1)  # n_feat 2k
    best, slot = jax.lax.top_k(value, reader.k)  # n_feat k

    def pick(old, new):
        both = jnp.concatenate([old, new], axis=1)
        index = slot.reshape(slot.shape + (1,) * (both.ndim - 2))
        return jnp.take_along_axis(both, index, axis=1)

    fired = (f > 0) & keep[..., None]
    return TopContexts(
        value=best, seq=pick(state.seq, first_seq + row), pos=pick(state.pos, pos),
        tokens=pick(state.tokens, toks), acts=pick(state.acts, acts),
        n_fired=state.n_fired + jnp.sum(fired, axis=(0, 1), dtype=jnp.int32),
        act_sum=state.act_sum + jnp.sum(f, axis=(0, 1)),
        n_tokens=state.n_tokens + jnp.sum(keep, dtype=jnp.int32))


@functools.partial(jax.jit, static_argnums=(0, 1), donate_argnums=4)
def _histogram_step(reader: _Reader, n_bins: int, params, sae_params: dict,
                    counts: Int[Array, "n_feat n_bins"], tokens: Int[Array, "batch pos"],
                    keep: Bool[Array, "batch pos"], top: Float[Array, " n_feat"],
                    features: Int[Array, " n_feat"]) -> Int[Array, "n_feat n_bins"]:
    """Adds one batch's non-zero activations to per-feature bins ``[0, top]``."""
    f = reader.latents(params, sae_params, tokens, features).reshape(-1, len(features))
    hit = (f > 0) & keep.reshape(-1, 1) & (top > 0)[None]  # tok n_feat
    scale = jnp.where(top > 0, n_bins / jnp.where(top > 0, top, 1.0), 0.0)
    bins = jnp.clip(jnp.floor(f * scale[None]).astype(jnp.int32), 0, n_bins - 1)  # tok n_feat
    index = jnp.arange(len(features))[None] * n_bins + bins  # tok n_feat
    flat = counts.reshape(-1).at[index.reshape(-1)].add(hit.reshape(-1).astype(jnp.int32))
    return flat.reshape(counts.shape)


def _batches(model: HookedModel, tokens, batch_size: int, exclude_ids: Sequence[int]):
    """``(first_seq, tokens, keep)`` per batch; the last is padded (``keep`` False) so every
    batch has one shape and one compiled program."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be [n_seq, pos], got shape {tokens.shape}; cut a flat "
                         "stream into rows first (tokens.reshape(-1, seq_len)).")
    validate_tokens(model, tokens)
    size = min(batch_size, len(tokens))
    for start in range(0, len(tokens), size):
        chunk = tokens[start:start + size]
        keep = token_mask(chunk, tuple(int(i) for i in exclude_ids), False)
        if len(chunk) < size:  # pad: id 0 rows that are never kept
            pad = size - len(chunk)
            chunk = np.concatenate([chunk, np.zeros((pad, chunk.shape[1]), chunk.dtype)])
            keep = np.concatenate([keep, np.zeros((pad, keep.shape[1]), bool)])
        yield start, jnp.asarray(chunk, jnp.int32), jnp.asarray(keep)


def _reader(model, cfg, hook, head, normalize, k, left, right) -> _Reader:
    spec = as_hook_spec(hook)
    name, head = spec.name, spec.head if head is None else head
    if name not in model.hook_names():
        raise KeyError(f"{name!r} is not an activation of this {type(model).__name__} (see "
                       "model.hook_names()).")
    if k < 1 or left < 0 or right < 0:
        raise ValueError(f"k={k} must be >= 1 and left={left}, right={right} >= 0.")
    _normalizer(normalize, jnp.ones((1, 1)))  # a bad mode raises here
    return _Reader(model, name, head, cfg, normalize, k, left, right)


def _features(cfg: SAEConfig, features) -> Int[Array, " n_feat"]:
    ids = np.arange(cfg.d_sae) if features is None else np.asarray(features).reshape(-1)
    if ids.dtype.kind not in "iu" or ids.size == 0 or ids.min() < 0 or ids.max() >= cfg.d_sae:
        raise ValueError(f"features must be integer ids in [0, d_sae={cfg.d_sae}); got "
                         f"{np.asarray(features)!r}.")
    return jnp.asarray(ids, jnp.int32)


def top_contexts(model: HookedModel, params, cfg: SAEConfig, sae_params: dict, hook: str,
                 tokens: Int[ArrayLike, "n_seq pos"], *, features=None, k: int = 10,
                 left: int = 16, right: int = 4, batch_size: int = 8,
                 exclude_ids: Sequence[int] = (), head: int | None = None,
                 normalize: str = "none") -> TopContexts:
    """Each feature's ``k`` largest activations over ``tokens``, with their context windows.

    Args:
        model / params: the port and its parameters.
        cfg / sae_params: the SAE (raw activation units, as files and trainers give it).
        hook: the activation it reads (``name:h``: head ``h`` of a per-head point).
        tokens: the dataset ``[n_seq, pos]`` (host array; read in batches).
        features: feature ids to track (default: all ``d_sae``), in the order given.
        k: contexts per feature (at most ``batch_size * pos``).
        left / right: tokens of context before / after the centre token.
        batch_size: sequences per forward pass.
        exclude_ids: ids whose positions never count (BOS, padding): never a centre, 0 in
            windows, not counted in densities.
        head / normalize: as :func:`jinterp.sae.splice`.
    """
    reader = _reader(model, cfg, hook, head, normalize, k, left, right)
    ids = _features(cfg, features)
    if np.ndim(tokens) != 2:
        raise ValueError(f"tokens must be [n_seq, pos], got shape {np.shape(tokens)}; cut a "
                         "flat stream into rows first (tokens.reshape(-1, seq_len)).")
    n_pos = np.shape(tokens)[1]
    if k > min(batch_size, len(tokens)) * n_pos:
        raise ValueError(f"k={k} exceeds the {min(batch_size, len(tokens)) * n_pos} positions "
                         "of one batch; lower k or raise batch_size.")
    state = empty_contexts(len(ids), k, left + right + 1)
    for first, toks, keep in _batches(model, tokens, batch_size, exclude_ids):
        state = _contexts_step(reader, params, dict(sae_params), state, toks, keep,
                               jnp.int32(first), ids)
    return state


def histograms(model: HookedModel, params, cfg: SAEConfig, sae_params: dict, hook: str,
               tokens: Int[ArrayLike, "n_seq pos"], top: Float[ArrayLike, " n_feat"], *,
               features=None, n_bins: int = 32, batch_size: int = 8,
               exclude_ids: Sequence[int] = (), head: int | None = None,
               normalize: str = "none") -> Int[Array, "n_feat n_bins"]:
    """Counts of each feature's non-zero activations in ``n_bins`` equal bins over
    ``[0, top[f]]`` (``top``: its maximum, ``TopContexts.value[:, 0]``; the last bin includes
    its right edge, as ``numpy.histogram``; a feature with ``top <= 0`` gets no counts)."""
    reader = _reader(model, cfg, hook, head, normalize, 1, 0, 0)
    ids = _features(cfg, features)
    top = jnp.asarray(top, jnp.float32)
    if top.shape != ids.shape or n_bins < 1:
        raise ValueError(f"top has shape {top.shape} for {len(ids)} features (one maximum "
                         f"each) and n_bins={n_bins} must be >= 1.")
    counts = jnp.zeros((len(ids), n_bins), jnp.int32)
    for _, toks, keep in _batches(model, tokens, batch_size, exclude_ids):
        counts = _histogram_step(reader, n_bins, params, dict(sae_params), counts, toks, keep,
                                 top, ids)
    return counts


@dataclasses.dataclass(frozen=True)
class FeatureAnalysis:
    """What a dashboard shows, on the host (numpy), one row per feature of ``features``.

    Attributes:
        features: the feature ids.
        contexts: :class:`TopContexts` (numpy leaves).
        hist_counts / hist_max: histogram of non-zero activations over ``[0, hist_max]``.
        density: fraction of kept tokens where the feature fires.
        mean_act: mean activation where it fires (0 if never).
        top_ids / top_values: the tokens the decoder direction boosts most (logit weights).
        bottom_ids / bottom_values: the tokens it suppresses most (most negative first).
        left / right: context tokens before / after the centre in each window.
    """

    features: np.ndarray
    contexts: TopContexts
    hist_counts: np.ndarray
    hist_max: np.ndarray
    density: np.ndarray
    mean_act: np.ndarray
    top_ids: np.ndarray | None
    top_values: np.ndarray | None
    bottom_ids: np.ndarray | None
    bottom_values: np.ndarray | None
    left: int = 16
    right: int = 4


def analyze(model: HookedModel, params, cfg: SAEConfig, sae_params: dict, hook: str,
            tokens: Int[ArrayLike, "n_seq pos"], *, features=None, k: int = 10,
            left: int = 16, right: int = 4, n_bins: int = 32, n_logits: int = 10,
            batch_size: int = 8, exclude_ids: Sequence[int] = (), head: int | None = None,
            normalize: str = "none") -> FeatureAnalysis:
    """:func:`top_contexts`, :func:`histograms` and :func:`top_logits` for a dashboard.

    Logit weights are computed when the hook is a residual-stream point
    (:data:`RESIDUAL_POINTS`) and the model has the reading protocol; otherwise they are None.
    """
    ids = _features(cfg, features)
    kw = dict(features=ids, batch_size=batch_size, exclude_ids=exclude_ids, head=head,
              normalize=normalize)
    ctx = top_contexts(model, params, cfg, sae_params, hook, tokens, k=k, left=left,
                       right=right, **kw)
    top = jnp.maximum(ctx.value[:, 0], 0.0)
    counts = histograms(model, params, cfg, sae_params, hook, tokens, top, n_bins=n_bins, **kw)
    ctx, counts, top = jax.device_get((ctx, counts, top))
    n_tok = max(int(ctx.n_tokens), 1)
    logits = (None,) * 4
    if _reads_residual(model, cfg, hook):
        w = logit_weights(model, params, cfg, sae_params, ids)
        logits = jax.device_get(top_logits(w, min(n_logits, w.shape[1])))
    return FeatureAnalysis(
        features=np.asarray(ids), contexts=ctx, hist_counts=np.asarray(counts),
        hist_max=np.asarray(top), density=np.asarray(ctx.n_fired) / n_tok,
        mean_act=np.asarray(ctx.act_sum) / np.maximum(np.asarray(ctx.n_fired), 1),
        top_ids=logits[0], top_values=logits[1], bottom_ids=logits[2], bottom_values=logits[3],
        left=left, right=right)


# ------------------------------------------------------------------------- logit weights
def _reads_residual(model: HookedModel, cfg: SAEConfig, hook: str) -> bool:
    name = as_hook_spec(hook).name
    point = split_name(name)[1]
    return (point in RESIDUAL_POINTS and cfg.d_target == model.d_model
            and hasattr(model, "unembed_weights"))


def logit_weights(model: HookedModel, params, cfg: SAEConfig, sae_params: dict,
                  features=None, *, center_unembed: bool = True
                  ) -> Float[Array, "n_feat d_vocab"]:
    """``W_dec[features] @ W_U`` with the final norm folded as TransformerLens does.

    See the module docstring: ``W_U`` is TL's processed unembedding (``fold_ln``, and
    ``center_unembed`` unless ``center_unembed=False`` or the model soft-caps its logits).

    Raises:
        ValueError: when the decoder does not write ``d_model``-wide residual vectors.
    """
    if cfg.d_target != model.d_model:
        raise ValueError(f"logit weights need a decoder that writes the residual stream "
                         f"(d_out = d_model = {model.d_model}); this SAE writes {cfg.d_target} "
                         "columns (an MLP or attention-head activation): map it to the "
                         "residual (e.g. through W_out / W_O) first.")
    ids = _features(cfg, features)
    W_dec = jnp.asarray(sae_params["W_dec"], jnp.float32)[ids]  # n_feat d_model
    return _logit_weights(model, center_unembed, params, W_dec)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _logit_weights(model: HookedModel, center_unembed: bool, params,
                   W_dec: Float[Array, "n_feat d_model"]) -> Float[Array, "n_feat d_vocab"]:
    """One program: TL's fold_ln (+ center_unembed) of the unembedding, then the product."""
    model2, params2 = weights.fold_ln(model, params)
    if center_unembed and model2.final_softcap is None:
        model2, params2 = weights.center_unembed(model2, params2)
    W_U = readout.W_U(model2, params2).astype(jnp.float32)  # d_model d_vocab
    return W_dec @ W_U  # n_feat d_vocab


@functools.partial(jax.jit, static_argnums=1)
def top_logits(w: Float[Array, "n_feat d_vocab"], n: int
               ) -> tuple[Int[Array, "n_feat n"], Float[Array, "n_feat n"],
                          Int[Array, "n_feat n"], Float[Array, "n_feat n"]]:
    """``(boosted ids, their weights, suppressed ids, their weights)``, strongest first."""
    top_v, top_i = jax.lax.top_k(w, n)
    low_v, low_i = jax.lax.top_k(-w, n)
    return top_i, top_v, low_i, -low_v


# ------------------------------------------------------------------------- steering
@struct.dataclass
class FeatureSteer(Splice):
    """The splice, with ``sum_i alpha_i * W_dec[feature_i]`` added to the SAE's output.

    Attributes (beyond :class:`~jinterp.sae.splice.Splice`'s):
        feature: feature id(s), an int or ``[n]`` ints (pytree leaves: traceable).
        alpha: strength(s), a float or ``[n]`` floats, in the SAE's output units.

    With ``error_term=True`` the error ``x - x_hat`` of the unsteered reconstruction is added
    back (gradient stopped), so the output is ``x + alpha * W_dec[feature]``.
    """

    feature: Int[ArrayLike, "..."] = 0
    alpha: Float[ArrayLike, "..."] = 0.0

    def reconstruct(self, x: Float[Array, "*lead d_in"]) -> Float[Array, "*lead d_in"]:
        xf = x.astype(jnp.float32)
        x_in, undo = _normalizer(self.normalize, xf)
        f = encode(self.cfg, self.params, x_in)
        if self.latent_fn is not None:
            f = self.latent_fn(f)
        x_hat = decode(self.cfg, self.params, f)
        rows = jnp.asarray(self.params["W_dec"], jnp.float32)[jnp.atleast_1d(self.feature)]
        delta = jnp.atleast_1d(jnp.asarray(self.alpha, jnp.float32)) @ rows  # d_in
        out = undo(x_hat + delta.reshape((1,) * (x_hat.ndim - 1) + delta.shape))
        if self.error_term:
            out = out + jax.lax.stop_gradient(xf - undo(x_hat))
        return out.astype(x.dtype)


def steer(cfg: SAEConfig, sae_params: dict,
          feature: int | Sequence[int] | Int[ArrayLike, "..."],
          alpha: float | Sequence[float] | Float[ArrayLike, "..."], *, error_term: bool = True,
          head: int | None = None, normalize: str = "none") -> FeatureSteer:
    """An intervention that steers with SAE features at the SAE's hook (see the module docs).

    Example::

        logits = jinterp.run_with_hooks(model, params, tokens,
                                        {hook: sae.features.steer(cfg, p, feature=7, alpha=4.0)})
    """
    if not isinstance(feature, jax.Array):
        feature = np.asarray(feature)
        if feature.dtype.kind not in "iu" or feature.min() < 0 or feature.max() >= cfg.d_sae:
            raise ValueError(f"feature must be integer id(s) in [0, d_sae={cfg.d_sae}); got "
                             f"{feature!r}.")
        feature = feature.astype(np.int32)
    if not isinstance(alpha, jax.Array):
        alpha = np.asarray(alpha, np.float32)
    if alpha.shape not in ((), feature.shape):
        raise ValueError(f"alpha has shape {alpha.shape}; give one strength, or one per "
                         f"feature (shape {feature.shape}).")
    _normalizer(normalize, jnp.ones((1, 1)))
    return FeatureSteer(params=dict(sae_params), cfg=cfg, error_term=error_term, head=head,
                        normalize=normalize, feature=feature, alpha=alpha)
