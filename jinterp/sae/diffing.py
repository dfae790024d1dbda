"""Model diffing with a two-model crosscoder: which latents are shared, which belong to one model.

A crosscoder trained on the same hook of a base model (block 0) and a fine-tuned one (block 1)
on the same tokens gives each latent a decoder vector in each model, ``d_base`` and ``d_ft``.
Lindsey et al. (2024, "Sparse crosscoders", model diffing section) read the models' difference
off the *relative decoder norm*

    r_i = ||d_base,i|| / (||d_base,i|| + ||d_ft,i||)

a latent the two models share has ``r ~ 0.5``, one only the base model uses ``r ~ 1``, one
only the fine-tuned model uses ``r ~ 0``; the cosine between ``d_base,i`` and ``d_ft,i`` then
says whether a shared latent writes the same direction in both. (Minder et al. 2025,
"Robustly identifying concepts introduced during chat fine-tuning", add that the L1 loss can
make a latent look exclusive when it is not; the planted check below is what guards us.)

:func:`relative_decoder_norms` and :func:`decoder_cosines` compute those per latent (blocks may
be groups, e.g. all layers of each model), :func:`classify` applies the thresholds of a
:class:`DiffThresholds`, :func:`diff_summary` returns a JSON-ready summary (counts, fractions
among live latents, shared-latent cosines, a histogram) and :func:`plot_diff` draws it.
:func:`planted_pair` builds two activation sources with a known set of shared and exclusive
directions, the ground truth the analysis is validated on (``tests/sae/test_diffing.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jinterp.sae.architectures import Params
from jinterp.sae.config import SAEConfig
from jinterp.sae.crosscoder import decoder_blocks

#: Class labels of :func:`classify`, in code order.
CLASSES = ("shared", "base_only", "ft_only", "other")
SHARED, BASE_ONLY, FT_ONLY, OTHER = range(4)


@dataclasses.dataclass(frozen=True)
class DiffThresholds:
    """Where the relative norm ``r`` puts a latent.

    Attributes:
        exclusive: ``r >= 1 - exclusive`` is base-only, ``r <= exclusive`` fine-tuned-only.
        shared: ``|r - 0.5| <= shared`` is shared; anything else is "other" (a latent the two
            models weigh differently but both use).
    """

    exclusive: float = 0.1
    shared: float = 0.2

    def __post_init__(self):
        if not (0 < self.exclusive < 0.5 and 0 < self.shared < 0.5
                and self.shared < 0.5 - self.exclusive):
            raise ValueError(f"need 0 < exclusive, shared and shared < 0.5 - exclusive (the "
                             f"bands must not overlap); got {self}.")


def _groups(cfg: SAEConfig, groups: Sequence[Sequence[int]] | None) -> tuple[tuple[int, ...],
                                                                            tuple[int, ...]]:
    if cfg.n_blocks < 2:
        raise ValueError(f"model diffing needs a crosscoder over two models (n_blocks >= 2); "
                         f"got n_blocks={cfg.n_blocks}.")
    a, b = ((0,), (1,)) if groups is None else (tuple(groups[0]), tuple(groups[1]))
    used = a + b
    if not a or not b or set(a) & set(b) or not all(0 <= i < cfg.n_blocks for i in used):
        raise ValueError(f"groups must be two disjoint, non-empty lists of block indices in "
                         f"[0, {cfg.n_blocks}); got {groups}.")
    return a, b


def relative_decoder_norms(cfg: SAEConfig, params: Params,
                           groups: Sequence[Sequence[int]] | None = None
                           ) -> Float[Array, " d_sae"]:
    """``||d_base|| / (||d_base|| + ||d_ft||)`` per latent.

    Args:
        groups: the base model's and the fine-tuned model's block indices (default ``(0,),
            (1,)``); a group of several blocks (layers) uses the norm over all of them.
    """
    a, b = _groups(cfg, groups)
    w = decoder_blocks(cfg, params).astype(jnp.float32)  # [d_sae, n_blocks, d_block]
    na = jnp.linalg.norm(w[:, list(a)].reshape(cfg.d_sae, -1), axis=-1)
    nb = jnp.linalg.norm(w[:, list(b)].reshape(cfg.d_sae, -1), axis=-1)
    return na / jnp.maximum(na + nb, 1e-12)


def decoder_cosines(cfg: SAEConfig, params: Params,
                    groups: Sequence[Sequence[int]] | None = None) -> Float[Array, " d_sae"]:
    """Cosine between each latent's base and fine-tuned decoder vectors (groups of equal
    size compare block by block, concatenated)."""
    a, b = _groups(cfg, groups)
    if len(a) != len(b):
        raise ValueError(f"decoder cosines compare block for block: groups of sizes {len(a)} "
                         f"and {len(b)}.")
    w = decoder_blocks(cfg, params).astype(jnp.float32)
    da, db = w[:, list(a)].reshape(cfg.d_sae, -1), w[:, list(b)].reshape(cfg.d_sae, -1)
    denom = jnp.linalg.norm(da, axis=-1) * jnp.linalg.norm(db, axis=-1)
    return jnp.sum(da * db, axis=-1) / jnp.maximum(denom, 1e-12)


def classify(rel: Float[Array | np.ndarray, " d_sae"],
             thresholds: DiffThresholds = DiffThresholds()) -> Int[Array, " d_sae"]:
    """Class code per latent (``CLASSES[code]``) from its relative decoder norm."""
    rel = jnp.asarray(rel)
    code = jnp.full(rel.shape, OTHER, jnp.int32)
    code = jnp.where(jnp.abs(rel - 0.5) <= thresholds.shared, SHARED, code)
    code = jnp.where(rel >= 1.0 - thresholds.exclusive, BASE_ONLY, code)
    return jnp.where(rel <= thresholds.exclusive, FT_ONLY, code)


def live_latents(cfg: SAEConfig, params: Params, x: Float[Array | np.ndarray, "n d_in"],
                 batch_size: int = 4096) -> Bool[Array, " d_sae"]:
    """Latents that fire on some row of ``x`` (concatenated blocks): dead latents keep their
    random initial decoders, whose relative norms mean nothing, so the summary leaves them out."""
    from jinterp.sae.architectures import encode

    fired = jnp.zeros((cfg.d_sae,), bool)
    for i in range(0, len(x), batch_size):
        f = encode(cfg, params, jnp.asarray(x[i:i + batch_size], jnp.float32))
        fired = fired | jnp.any(f > 0, axis=0)
    return fired


def diff_summary(cfg: SAEConfig, params: Params, live: Bool[Array | np.ndarray, " d_sae"]
                 | None = None, *, groups: Sequence[Sequence[int]] | None = None,
                 thresholds: DiffThresholds = DiffThresholds(), bins: int = 20) -> dict:
    """The shared / exclusive analysis as a JSON-ready dict.

    Args:
        live: latents to count (e.g. :func:`live_latents`); None counts all.
        groups / thresholds: as :func:`relative_decoder_norms` / :func:`classify`.
        bins: histogram bins over ``[0, 1]`` of the live latents' relative norms.

    Returns:
        ``n_latents``, ``n_live``, per class ``counts`` and ``fractions`` (of live latents),
        ``shared_cosine`` (median, mean, fraction above 0.9 of shared latents' decoder
        cosines; present when the groups have equal sizes), ``histogram`` (``edges`` and
        ``counts``) and the ``thresholds``.
    """
    rel = np.asarray(relative_decoder_norms(cfg, params, groups))
    live = np.ones(cfg.d_sae, bool) if live is None else np.asarray(live, bool)
    code = np.asarray(classify(rel, thresholds))
    n_live = int(live.sum())
    counts = {name: int(np.sum(live & (code == c))) for c, name in enumerate(CLASSES)}
    hist, edges = np.histogram(rel[live], bins=bins, range=(0.0, 1.0))
    out = {"n_latents": cfg.d_sae, "n_live": n_live, "counts": counts,
           "fractions": {k: v / max(n_live, 1) for k, v in counts.items()},
           "histogram": {"edges": edges.tolist(), "counts": hist.tolist()},
           "thresholds": dataclasses.asdict(thresholds)}
    a, b = _groups(cfg, groups)
    if len(a) == len(b):
        cos = np.asarray(decoder_cosines(cfg, params, groups))[live & (code == SHARED)]
        out["shared_cosine"] = {
            "median": float(np.median(cos)) if cos.size else None,
            "mean": float(np.mean(cos)) if cos.size else None,
            "fraction_above_0.9": float(np.mean(cos > 0.9)) if cos.size else None}
    return out


def plot_diff(cfg: SAEConfig, params: Params, path: str,
              live: Bool[Array | np.ndarray, " d_sae"] | None = None, *,
              groups: Sequence[Sequence[int]] | None = None,
              thresholds: DiffThresholds = DiffThresholds(), title: str = "") -> None:
    """Two panels: the live latents' relative decoder norms (coloured by class, thresholds
    marked) and the decoder cosines of the shared ones. Writes a PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rel = np.asarray(relative_decoder_norms(cfg, params, groups))
    live = np.ones(cfg.d_sae, bool) if live is None else np.asarray(live, bool)
    code = np.asarray(classify(rel, thresholds))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.2))
    edges = np.linspace(0.0, 1.0, 41)
    colours = ("tab:green", "tab:blue", "tab:red", "tab:gray")
    ax0.hist([rel[live & (code == c)] for c in range(4)], bins=edges, stacked=True,
             color=colours, label=[f"{n} ({int(np.sum(live & (code == c)))})"
                                   for c, n in enumerate(CLASSES)])
    for t in (thresholds.exclusive, 0.5 - thresholds.shared, 0.5 + thresholds.shared,
              1.0 - thresholds.exclusive):
        ax0.axvline(t, color="k", lw=0.5, ls=":")
    ax0.set_xlabel("relative decoder norm  |d_base| / (|d_base| + |d_ft|)")
    ax0.set_ylabel("live latents")
    ax0.legend(fontsize=7)
    a, b = _groups(cfg, groups)
    if len(a) == len(b):
        cos = np.asarray(decoder_cosines(cfg, params, groups))[live & (code == SHARED)]
        ax1.hist(cos, bins=np.linspace(-1, 1, 41), color="tab:green")
    ax1.set_xlabel("decoder cosine (base, fine-tuned), shared latents")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_diff(cfg: SAEConfig, params: Params, x: Float[Array | np.ndarray, "n d_in"],
               out_dir: str, *, groups: Sequence[Sequence[int]] | None = None,
               thresholds: DiffThresholds = DiffThresholds(), title: str = "") -> dict:
    """:func:`diff_summary` over the latents live on ``x`` (concatenated raw blocks), written
    to ``out_dir/diff.json`` with :func:`plot_diff`'s figure ``out_dir/diff.png``; returns the
    summary. What the trainer writes for a crosscoder over two checkpoints."""
    import json
    import os

    live = live_latents(cfg, params, x)
    summary = diff_summary(cfg, params, live, groups=groups, thresholds=thresholds)
    summary["groups"] = [list(g) for g in _groups(cfg, groups)]
    with open(os.path.join(out_dir, "diff.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    plot_diff(cfg, params, os.path.join(out_dir, "diff.png"), live, groups=groups,
              thresholds=thresholds, title=title)
    return summary


# ----------------------------------------------------------------------------- planted truth
@dataclasses.dataclass(frozen=True)
class PlantedPair:
    """Ground truth of :func:`planted_pair`.

    Attributes:
        dirs_base / dirs_ft: each feature's direction in each model ``[n_features, d]`` (zero
            rows where the model lacks the feature).
        kind: class code per feature (``SHARED``, ``BASE_ONLY``, ``FT_ONLY``).
    """

    dirs_base: np.ndarray
    dirs_ft: np.ndarray
    kind: np.ndarray

    def sample(self, key: jax.Array, n: int, p_fire: float, low: float = 0.5,
               high: float = 1.5) -> Float[Array, "n d_in"]:
        """``n`` rows ``[x_base | x_ft]``: every feature fires independently with ``p_fire``
        and the same magnitude in both models (a shared feature is one event in both)."""
        k_on, k_mag = jax.random.split(key)
        n_feat = len(self.kind)
        on = jax.random.bernoulli(k_on, p_fire, (n, n_feat))
        c = jnp.where(on, jax.random.uniform(k_mag, (n, n_feat), jnp.float32, low, high), 0.0)
        dirs = jnp.concatenate([jnp.asarray(self.dirs_base), jnp.asarray(self.dirs_ft)], -1)
        return c @ dirs  # [n, 2 d]


def planted_pair(seed: int, d: int, n_shared: int, n_base_only: int,
                 n_ft_only: int) -> PlantedPair:
    """Two models' activation spaces (``d`` each) with known shared and exclusive features.

    A shared feature has one random unit direction, the same in both models; a base-only
    feature has a direction in the base model and none in the fine-tuned one, and the reverse.
    """
    rng = np.random.default_rng(seed)
    n = n_shared + n_base_only + n_ft_only
    dirs = rng.normal(size=(n, d))
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    kind = np.array([SHARED] * n_shared + [BASE_ONLY] * n_base_only + [FT_ONLY] * n_ft_only)
    base = np.where((kind != FT_ONLY)[:, None], dirs, 0.0).astype(np.float32)
    ft = np.where((kind != BASE_ONLY)[:, None], dirs, 0.0).astype(np.float32)
    return PlantedPair(dirs_base=base, dirs_ft=ft, kind=kind)


def match_features(cfg: SAEConfig, params: Params, truth: PlantedPair
                   ) -> tuple[np.ndarray, np.ndarray]:
    """For each planted feature, the latent whose concatenated decoder ``[d_base | d_ft]`` has
    the largest cosine with the feature's ``[dir_base | dir_ft]``: ``(latent, cosine)``."""
    w = np.asarray(params["W_dec"], np.float64)
    w = w / np.maximum(np.linalg.norm(w, axis=-1, keepdims=True), 1e-12)
    t = np.concatenate([truth.dirs_base, truth.dirs_ft], -1).astype(np.float64)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    cos = t @ w.T  # [n_features, d_sae]
    if cos.shape[1] != cfg.d_sae:
        raise ValueError(f"W_dec has {cos.shape[1]} rows, the config d_sae={cfg.d_sae}.")
    best = np.argmax(cos, axis=-1)
    return best, cos[np.arange(len(best)), best]
