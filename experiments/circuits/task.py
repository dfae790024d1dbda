"""The circuit study's task: ``r r`` against ``r' r``, scored on the second copy.

*Clean* prompts are a random sequence ``r`` of ``half_len`` tokens written twice (the induction
probe of :func:`jinterp.experiments.induction.repeated_tokens`); *corrupted* prompts resample
the first copy (``r' r``), so at a second-copy position the current token's earlier occurrence,
and with it the next token, is gone: induction cannot work, and nothing else in the model can
predict those tokens. The second copy itself is identical in both, so the targets are the same.

The metric is the next-token loss on the predictable targets of the second copy (queries
``half_len .. 2 half_len - 2``), normalised so the corrupted run scores 0 and the clean run 1:
``(L_corrupted - L) / (L_corrupted - L_clean)``. It is a :class:`jinterp.metrics.Metric`
(a pytree; ``pos=None`` reads every position's logits), so every sweep, gradient and path
patch of :mod:`jinterp.patching` takes it as it is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct
from jaxtyping import Array, Float, Int

from jinterp.experiments.induction.data import repeated_tokens
from jinterp.metrics import Metric


def second_copy_loss(logits: Float[Array, "batch pos d_vocab"], tokens: Int[Array, "batch pos"],
                     half_len: int) -> Float[Array, ""]:
    """Mean cross-entropy of the predictable targets: query ``q`` predicts ``tokens[q + 1]``."""
    q = jnp.arange(half_len, 2 * half_len - 1)  # queries in the second copy with a known next
    logp = jax.nn.log_softmax(logits[:, q].astype(jnp.float32), axis=-1)  # batch n_q d_vocab
    return -jnp.take_along_axis(logp, tokens[:, q + 1, None], axis=-1).mean()


@struct.dataclass
class SecondCopyLoss(Metric):
    """:func:`second_copy_loss` of ``targets`` (the prompts; their second copies are shared)."""

    targets: Int[Array, "batch pos"]
    half_len: int = struct.field(pytree_node=False)
    pos: None = None

    def at_positions(self, logits):
        return second_copy_loss(logits, self.targets, self.half_len)


@struct.dataclass
class InductionRecovery(Metric):
    """``(L_corrupted - L) / (L_corrupted - L_clean)``: 0 is the corrupted run, 1 the clean."""

    loss: SecondCopyLoss
    clean: Float[Array, ""]
    corrupted: Float[Array, ""]
    pos: None = None

    def at_positions(self, logits):
        return (self.corrupted - self.loss.at_positions(logits)) / (self.corrupted - self.clean)


def make_prompts(key: jax.Array, d_vocab: int, half_len: int, batch: int
                 ) -> tuple[Int[Array, "batch pos"], Int[Array, "batch pos"]]:
    """``(clean, corrupted)``: ``r r`` and ``r' r`` with ``r'`` drawn afresh for every prompt."""
    key_clean, key_corrupt = jax.random.split(key)
    clean = repeated_tokens(key_clean, d_vocab, half_len, batch)
    fresh = jax.random.randint(key_corrupt, (batch, half_len), 0, d_vocab)
    return clean, clean.at[:, :half_len].set(fresh)


def make_metric(model, params, clean: Int[Array, "batch pos"], corrupted: Int[Array, "batch pos"],
                half_len: int) -> InductionRecovery:
    """The normalised metric for these prompts (its two baselines from one run each).

    Raises:
        ValueError: when the clean and corrupted losses are equal (a model without induction:
            there is nothing to recover, and the normalisation would divide by zero).
    """
    loss = SecondCopyLoss(clean, half_len)
    clean_loss, corrupted_loss = loss(model(params, clean)), loss(model(params, corrupted))
    if not float(corrupted_loss) > float(clean_loss):
        raise ValueError(f"The corrupted second-copy loss ({float(corrupted_loss):.3f}) is not "
                         f"above the clean one ({float(clean_loss):.3f}): the model does not use "
                         "the first copy, so there is no induction to localise. Train longer.")
    return InductionRecovery(loss, clean_loss, corrupted_loss)
