"""Synthetic repeated-subsequence data, generated inside the jitted training step.

Each sequence is uniform random tokens into which one random subsequence of ``subseq_len``
tokens is written ``n_repeats`` times at random, non-overlapping places (the "Repeated
Subsequence Prediction, Infinite Data" task of Olsson et al. 2022, Fig. 24, in the
configuration of Neel Nanda's reference run: vocab 128, context 85, subsequences of 16
repeated 3 times). Two properties matter:

* Fresh data every step from a PRNG key, so there is nothing to memorise: the only way to
  beat ``ln(d_vocab)`` on a token is to have seen its context earlier in the same sequence.
* The gaps between copies are random, so the distance back to the previous copy changes from
  sequence to sequence: a head that attends a fixed offset back (learnable by one layer with
  learned positions) does not solve the task; looking up "the token after an earlier
  occurrence of the current token" (an induction head, which needs two layers) does.

Which next-token targets are *predictable* is returned alongside the tokens: target ``t + 1``
is predictable from position ``t`` when both lie in the same later copy (the current token's
earlier occurrence tells the next token). Everything else is random and costs ``ln(d_vocab)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Shape of the repeated-subsequence task.

    Attributes:
        d_vocab: number of token ids (uniform random).
        n_ctx: sequence length.
        subseq_len: length of the repeated subsequence.
        n_repeats: how many copies of it each sequence holds (the first is unpredictable).
        batch_size: sequences per training step.
    """

    d_vocab: int = 128
    n_ctx: int = 85
    subseq_len: int = 16
    n_repeats: int = 3
    batch_size: int = 64

    def __post_init__(self):
        for field in ("d_vocab", "n_ctx", "subseq_len", "batch_size"):
            if getattr(self, field) <= 0:
                raise ValueError(
                    f"DataConfig.{field} must be positive, got {getattr(self, field)}.")
        if self.n_repeats < 2:
            raise ValueError(f"n_repeats must be >= 2 (one copy to learn from, one to predict); "
                             f"got {self.n_repeats}.")
        if self.subseq_len < 2:
            raise ValueError("subseq_len must be >= 2 so a copy has a predictable token; got "
                             f"{self.subseq_len}.")
        if self.n_repeats * self.subseq_len > self.n_ctx:
            raise ValueError(f"{self.n_repeats} copies of {self.subseq_len} tokens do not fit in "
                             f"n_ctx={self.n_ctx}; lower n_repeats/subseq_len or raise n_ctx.")

    @property
    def n_filler(self) -> int:
        """Random tokens outside the copies; the gaps between copies share them."""
        return self.n_ctx - self.n_repeats * self.subseq_len


def draw(key: jax.Array, cfg: DataConfig, batch_size: int
         ) -> tuple[Int[Array, "batch pos"], Int[Array, "batch subseq"],
                    Int[Array, "batch n_repeats"]]:
    """The random ingredients of a batch: filler tokens, the subsequence, sorted cut points.

    One ``randint`` call with a per-column upper bound draws all three (XLA compiles each
    ``randint`` separately and compilation dominates short runs). Sorting ``n_repeats`` cut
    points in ``[0, n_filler]`` splits the filler into ``n_repeats + 1`` gaps, so copies never
    overlap and every layout is reachable (see :func:`copy_starts`).
    """
    n_tok = cfg.n_ctx + cfg.subseq_len
    upper = jnp.concatenate([jnp.full((n_tok,), cfg.d_vocab),
                             jnp.full((cfg.n_repeats,), cfg.n_filler + 1)])  # n_tok+n_repeats
    # randint broadcasts maxval to the sample's rank itself, but combines it with an unbroadcast
    # copy, which strict rank promotion rejects; a [1, n] bound gives the same bits and values.
    u = jax.random.randint(key, (batch_size, n_tok + cfg.n_repeats), 0,
                           upper[None, :])  # batch n_tok+n_repeats
    return u[:, : cfg.n_ctx], u[:, cfg.n_ctx: n_tok], jnp.sort(u[:, n_tok:], axis=-1)


def copy_starts(cuts: Int[Array, "... n_repeats"], cfg: DataConfig) -> Int[Array, "... n_repeats"]:
    """Start of each copy: after ``i`` earlier copies and the first ``i + 1`` gaps."""
    return cuts + jnp.arange(cfg.n_repeats) * cfg.subseq_len


def layout(starts: Int[Array, " n_repeats"], cfg: DataConfig
           ) -> tuple[Int[Array, " pos"], Bool[Array, " pos"], Bool[Array, " pos_m1"]]:
    """Where the copies lie: ``(offset into the subsequence, in-a-copy, predictable target)``.

    ``predictable[t]`` (length ``n_ctx - 1``, aligned with the logits at position ``t``) says
    that ``t`` and ``t + 1`` lie in the same copy and it is not the first copy.
    """
    pos = jnp.arange(cfg.n_ctx)
    offset = pos[None, :] - starts[:, None]  # n_repeats pos
    inside = (offset >= 0) & (offset < cfg.subseq_len)  # n_repeats pos
    offset_at = jnp.sum(jnp.where(inside, offset, 0), axis=0)  # pos (copies never overlap)
    later = offset[1:, :-1]  # n_repeats-1 pos-1: offsets into the later copies
    same_later_copy = (later >= 0) & (later < cfg.subseq_len - 1)  # n_repeats-1 pos-1
    return offset_at, inside.any(axis=0), same_later_copy.any(axis=0)


def assemble(filler: Int[Array, " pos"], subseq: Int[Array, " subseq"],
             cuts: Int[Array, " n_repeats"],
             cfg: DataConfig) -> tuple[Int[Array, " pos"], Bool[Array, " pos_m1"]]:
    """One sequence (the subsequence written over the filler at each copy) and its mask."""
    offset, in_copy, predictable = layout(copy_starts(cuts, cfg), cfg)
    return jnp.where(in_copy, subseq[offset], filler), predictable


def sample_batch(key: jax.Array, cfg: DataConfig, batch_size: int | None = None
                 ) -> tuple[Int[Array, "batch pos"], Bool[Array, "batch pos_m1"]]:
    """``batch_size`` (default ``cfg.batch_size``) independent sequences and their masks."""
    n = cfg.batch_size if batch_size is None else batch_size
    return jax.vmap(lambda f, s, c: assemble(f, s, c, cfg))(*draw(key, cfg, n))


def repeated_tokens(key: jax.Array, d_vocab: int, half_len: int,
                    batch_size: int) -> Int[Array, "batch pos"]:
    """The standard probe for induction heads: ``r r`` for a random ``r`` of ``half_len`` tokens.

    On the second copy, the token after the current token's earlier occurrence sits exactly
    ``half_len - 1`` positions back, which is what
    :func:`~jinterp.experiments.induction.scores.induction_score` reads off the attention pattern.
    """
    half = jax.random.randint(key, (batch_size, half_len), 0, d_vocab)
    return jnp.concatenate([half, half], axis=1)
