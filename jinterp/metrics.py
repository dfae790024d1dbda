"""Patching metrics: scalar functions of the logits that say which logits they read.

A metric is a pytree (``jit`` / ``vmap`` / ``grad``-able) and a callable ``logits -> scalar``
on the full logits ``[batch, pos, d_vocab]``, as TransformerLens's ``patching_metric``. It also
names the positions it reads (``pos``), so a sweep computes the unembedding only there: for
GPT-2 small at 16 tokens the unembedding of every position costs about as much as three blocks,
of one position a sixth of a block. The sweep then calls :meth:`Metric.at_positions` on the
logits of the selected positions ``[batch, n_sel, d_vocab]``. ``pos`` is an int (negative
counts from the end, as in Python), an int array ``[batch]`` (one position per prompt, e.g. the
last token of prompts of different lengths) or None (every position).

Any other JAX function of the full logits works as a ``patching_metric`` too (the sweep then
computes every position's logits). Answers and wrong answers are ints or ``[batch]`` int arrays.
Values are means over the batch.

- :func:`logit_diff` ``(answer, wrong, pos=-1)``: ``logit[answer] - logit[wrong]``;
- :func:`normalised_logit_diff`: the same, rescaled so the corrupted run gives 0 and the clean
  run 1 (the usual denoising metric);
- :func:`prob` ``(token, pos=-1)``: the softmax probability of ``token``;
- :func:`loss` ``(targets, pos=None)``: cross-entropy, next-token over every position by default;
- :func:`kl` ``(reference_logits, pos=-1)``: ``KL(reference || patched)`` of the next-token
  distributions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = ["KL", "LogitDiff", "Loss", "Metric", "NormalisedLogitDiff", "Prob", "kl",
           "logit_diff", "loss", "normalised_logit_diff", "prob", "take_positions"]

Positions = Any  # int | Int[Array, "batch"] | None


def take_positions(x: Float[Array, "batch pos ..."], pos: Positions) -> Float[Array, "batch n ..."]:
    """``x`` at positions ``pos``: ``[batch, 1, ...]`` for an int or ``[batch]`` array, else all.

    Negative positions count from the end (also inside a ``[batch]`` array).
    """
    if pos is None:
        return x
    n_pos = x.shape[1]
    index = jnp.broadcast_to(jnp.asarray(pos, jnp.int32), (x.shape[0],))
    index = jnp.where(index < 0, index + n_pos, index)
    index = index.reshape((x.shape[0], 1) + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _check_pos(pos: Positions, what: str) -> None:
    if pos is None:
        return
    shape = np.shape(pos)
    if len(shape) > 1:
        raise ValueError(f"{what}: pos must be an int, a [batch] int array or None; got shape "
                         f"{shape}.")
    if not jnp.issubdtype(jnp.asarray(pos).dtype, jnp.integer):
        raise TypeError(f"{what}: pos must hold integers; got {pos!r}.")


def _per_example(ids, batch: int) -> Int[Array, " batch"]:
    return jnp.broadcast_to(jnp.asarray(ids, jnp.int32), (batch,))


def _pick(logits: Float[Array, "batch n d_vocab"], ids) -> Float[Array, "batch n"]:
    """``logits[b, :, ids[b]]``."""
    ids = _per_example(ids, logits.shape[0])
    return jnp.take_along_axis(logits, ids[:, None, None], axis=2)[..., 0]


class Metric:
    """Base class: a scalar function of the logits that reads positions ``pos`` only.

    Subclasses are ``flax.struct`` dataclasses with a ``pos`` field and implement
    :meth:`at_positions`.
    """

    pos: Positions

    def at_positions(self, logits: Float[Array, "batch n d_vocab"]) -> Float[Array, ""]:
        """The metric from the logits at ``pos`` only (all positions when ``pos`` is None)."""
        raise NotImplementedError

    def __call__(self, logits: Float[Array, "batch pos d_vocab"]) -> Float[Array, ""]:
        """The metric of the full logits (TransformerLens's ``patching_metric`` signature)."""
        if logits.ndim != 3:
            raise ValueError(f"{type(self).__name__} takes logits [batch, pos, d_vocab]; got "
                             f"shape {tuple(logits.shape)}.")
        return self.at_positions(take_positions(logits, self.pos))


@struct.dataclass
class LogitDiff(Metric):
    """``mean_b(logits[b, pos, answer[b]] - logits[b, pos, wrong[b]])``."""

    answer: Int[ArrayLike, "..."]
    wrong: Int[ArrayLike, "..."]
    pos: Positions = -1

    def at_positions(self, logits):
        diff = _pick(logits, self.answer) - _pick(logits, self.wrong)
        return diff.astype(jnp.float32).mean()


@struct.dataclass
class NormalisedLogitDiff(Metric):
    """``(logit_diff - corrupted) / (clean - corrupted)``: 0 = corrupted run, 1 = clean run."""

    answer: Int[ArrayLike, "..."]
    wrong: Int[ArrayLike, "..."]
    clean: Float[ArrayLike, ""]
    corrupted: Float[ArrayLike, ""]
    pos: Positions = -1

    def at_positions(self, logits):
        value = LogitDiff(self.answer, self.wrong, self.pos).at_positions(logits)
        return (value - self.corrupted) / (self.clean - self.corrupted)


@struct.dataclass
class Prob(Metric):
    """``mean_b softmax(logits[b, pos])[token[b]]``."""

    token: Int[ArrayLike, "..."]
    pos: Positions = -1

    def at_positions(self, logits):
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        return _pick(probs, self.token).mean()


@struct.dataclass
class Loss(Metric):
    """Mean cross-entropy. ``pos=None``: next-token loss of ``targets [batch, pos]`` (logits at
    ``t`` predict ``targets[:, t + 1]``); otherwise ``targets`` (int or ``[batch]``) is the
    token expected at position ``pos``'s prediction."""

    targets: Int[ArrayLike, "..."]
    pos: Positions = None

    def at_positions(self, logits):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if self.pos is None:
            nxt = jnp.asarray(self.targets)[:, 1:, None]
            return -jnp.take_along_axis(logp[:, :-1], nxt, axis=2).mean()
        return -_pick(logp, self.targets).mean()


@struct.dataclass
class KL(Metric):
    """``mean KL(reference || patched)`` at ``pos``; ``reference_logp`` is stored at ``pos``."""

    reference_logp: Float[Array, "batch n d_vocab"]
    pos: Positions = -1

    def at_positions(self, logits):
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        ref = self.reference_logp
        return (jnp.exp(ref) * (ref - logp)).sum(-1).mean()


# ------------------------------------------------------------------------------- constructors
def logit_diff(answer, wrong, pos: Positions = -1) -> LogitDiff:
    """Logit of ``answer`` minus logit of ``wrong`` at ``pos``, mean over the batch."""
    _check_pos(pos, "logit_diff")
    return LogitDiff(answer, wrong, pos)


def normalised_logit_diff(answer, wrong, clean_logits: Float[ArrayLike, "batch pos d_vocab"],
                          corrupted_logits: Float[ArrayLike, "batch pos d_vocab"],
                          pos: Positions = -1) -> NormalisedLogitDiff:
    """:func:`logit_diff` rescaled by the clean and corrupted runs' values: 0 corrupted, 1 clean.

    Raises:
        ValueError: when both runs give the same logit difference (nothing to normalise by).
    """
    base = logit_diff(answer, wrong, pos)
    clean, corrupted = base(jnp.asarray(clean_logits)), base(jnp.asarray(corrupted_logits))
    try:
        equal = float(clean) == float(corrupted)
    except jax.errors.ConcretizationTypeError:  # under jit: no host check
        equal = False
    if equal:
        raise ValueError(f"The clean and corrupted logit differences are equal "
                         f"({float(clean)}); the normalised metric would divide by zero. Check "
                         "the prompts and answer tokens.")
    return NormalisedLogitDiff(answer, wrong, clean, corrupted, pos)


def prob(token, pos: Positions = -1) -> Prob:
    """Softmax probability of ``token`` at ``pos``, mean over the batch."""
    _check_pos(pos, "prob")
    return Prob(token, pos)


def loss(targets, pos: Positions = None) -> Loss:
    """Cross-entropy: next-token over every position (``pos=None``, ``targets`` the tokens), or
    of ``targets`` (int or ``[batch]``) predicted at ``pos``."""
    _check_pos(pos, "loss")
    if pos is None and np.ndim(targets) != 2:
        raise ValueError(f"loss(targets, pos=None) is the next-token loss, so targets are the "
                         f"tokens [batch, pos]; got shape {np.shape(targets)}. For one target per "
                         "prompt pass pos=.")
    return Loss(targets, pos)


def kl(reference_logits: Float[ArrayLike, "batch pos d_vocab"], pos: Positions = -1) -> KL:
    """``KL(reference || patched)`` of the distributions at ``pos``, mean over batch (and
    positions for ``pos=None``). ``reference_logits`` is a full run's logits (e.g. clean)."""
    _check_pos(pos, "kl")
    ref = take_positions(jnp.asarray(reference_logits), pos)
    return KL(jax.nn.log_softmax(ref.astype(jnp.float32), axis=-1), pos)
