"""The patching task of one compiled program: clean and corrupted inputs and a linear metric.

Every method is scored on the same task. Clean inputs are every full-length input of the
program's domain; the corrupted batch is the same inputs in a random order (so both share one
length, as patching needs, and every variable that depends on the input differs somewhere).
The metric is the projection of the output logits (every position after BOS) onto the clean
minus corrupted difference, normalised so the corrupted run scores 0 and the clean run 1.
It is linear in the logits, so AtP is exact wherever the model is linear, and it works for
numerical programs (one output logit) as well as categorical ones.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Float, Int

import jinterp
from jinterp.metrics import Metric


@struct.dataclass
class OutputMatch(Metric):
    """``mean_{b, p>0} (logits - corrupted) . (clean - corrupted) / mean ||clean - corrupted||²``.

    Attributes:
        corrupted: ``[batch, pos - 1, n_out]`` the corrupted run's output logits after BOS.
        direction: ``[batch, pos - 1, n_out]`` clean minus corrupted output logits.
        scale: ``mean ||direction||²`` (the clean run's unnormalised score).
        n_out: the program's output logits (the rest of ``d_vocab`` is padding).
    """

    corrupted: Float[Array, "batch n n_out"]
    direction: Float[Array, "batch n n_out"]
    scale: Float[Array, ""]
    n_out: int = struct.field(pytree_node=False, default=1)
    pos: None = struct.field(pytree_node=False, default=None)

    def at_positions(self, logits: Float[Array, "batch pos d_vocab"]) -> Float[Array, ""]:
        out = logits[:, 1:, : self.n_out].astype(jnp.float32)
        return ((out - self.corrupted) * self.direction).sum(-1).mean() / self.scale


@dataclasses.dataclass(frozen=True)
class Task:
    """Clean / corrupted token batches of one program and the metric that compares them."""

    clean_inputs: list[list]
    corrupted_inputs: list[list]
    clean: Int[Array, "batch pos"]
    corrupted: Int[Array, "batch pos"]
    metric: OutputMatch


def make_task(model, params, io, inputs: list[list], *, seed: int = 0) -> Task:
    """The task on the full-length ``inputs`` against a seeded permutation of them.

    Raises:
        ValueError: fewer than two inputs, inputs of different lengths, or a permutation under
            which clean and corrupted outputs never differ (nothing to patch).
    """
    if len(inputs) < 2 or len({len(x) for x in inputs}) != 1:
        raise ValueError(f"make_task needs at least two inputs of one length; got {len(inputs)} "
                         f"inputs of lengths {sorted({len(x) for x in inputs})}.")
    order = np.random.default_rng(seed).permutation(len(inputs))
    corrupted_inputs = [list(inputs[i]) for i in order]
    clean, corrupted = io.encode(inputs), io.encode(corrupted_inputs)
    n_out = len(io.output_values) if io.categorical else 1
    clean_out = jinterp.run_with_hooks(model, params, clean, {})[:, 1:, :n_out]
    corr_out = jinterp.run_with_hooks(model, params, corrupted, {})[:, 1:, :n_out]
    direction = (clean_out - corr_out).astype(jnp.float32)
    scale = (direction ** 2).sum(-1).mean()
    if float(scale) <= 1e-12:
        raise ValueError("The clean and corrupted outputs are identical: nothing to patch; use "
                         "more inputs or another seed.")
    metric = OutputMatch(corr_out.astype(jnp.float32), direction, scale, n_out=n_out)
    return Task([list(x) for x in inputs], corrupted_inputs, clean, corrupted, metric)
