"""What a dictionary trained on a model reads from the store: SAE, transcoder or crosscoder.

:func:`jinterp.sae.train_on_model` streams activations through one
:class:`~jinterp.sae.store.ActivationStore` (one forward per push, every hook of it, row ``i``
the same token in every buffer). :class:`Streams` says which buffers make a training batch:

* an SAE: one hook, ``x``;
* a transcoder: ``(x, y)``, the input hook and the output hook (``hook_out``) of the same
  tokens; ``x`` and ``y`` get their own normalisation scales (the train state's
  ``norm_scale`` and ``target_norm_scale``) and ``b_dec`` starts at the targets' median;
* a crosscoder: several blocks (hooks, and/or checkpoints of one model), each scaled to
  ``E||s_b x_b||^2 = d_block`` and concatenated; the train state's ``norm_scale`` is 1 and the
  scales ride in the run state (``"scales"``) until they are folded into the saved weights.

Everything here is a pure function of the popped rows, traced into the trainer's step.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jinterp.sae.config import SAEConfig
from jinterp.sae.store import HookSpec, as_hook_spec, checkpoint_key


class Kind(enum.StrEnum):
    SAE = "sae"
    TRANSCODER = "transcoder"
    CROSSCODER = "crosscoder"


@dataclasses.dataclass(frozen=True)
class Streams:
    """Which store buffers make one training batch (hashable: a static argument of jit).

    Attributes:
        inputs: buffer keys of the input; several = a crosscoder's blocks, in block order.
        target: a transcoder's output buffer key (None otherwise).
        blocks: each input block as (checkpoint index, hook name), for evaluation and files.
    """

    inputs: tuple[str, ...]
    target: str | None
    blocks: tuple[tuple[int, str], ...]

    @property
    def kind(self) -> Kind:
        if self.target is not None:
            return Kind.TRANSCODER
        return Kind.CROSSCODER if len(self.inputs) > 1 else Kind.SAE

    @property
    def n_blocks(self) -> int:
        return len(self.inputs)


def make_streams(hook: str | HookSpec | Sequence[str | HookSpec], hook_out: str | None,
                 n_checkpoints: int) -> tuple[Streams, list[HookSpec]]:
    """The streams and the store's hooks for ``hook`` (one or several), ``hook_out`` and the
    number of checkpoints (parameter sets) of the model."""
    specs = [as_hook_spec(h) for h in ([hook] if isinstance(hook, (str, HookSpec))
                                       else list(hook))]
    if not specs:
        raise ValueError("train_on_model needs at least one hook")
    if hook_out is not None:
        if len(specs) != 1 or n_checkpoints != 1:
            raise ValueError("a transcoder reads one hook of one model and predicts hook_out; "
                             f"got {len(specs)} hooks and {n_checkpoints} checkpoints.")
        out = as_hook_spec(hook_out)
        streams = Streams(inputs=(specs[0].key,), target=out.key, blocks=((0, specs[0].key),))
        return streams, [specs[0], out]
    keys = tuple(checkpoint_key(i, s.key, n_checkpoints) for i in range(n_checkpoints)
                 for s in specs)
    blocks = tuple((i, s.key) for i in range(n_checkpoints) for s in specs)
    return Streams(inputs=keys, target=None, blocks=blocks), specs


def check_configs(streams: Streams, configs: Sequence[SAEConfig],
                  widths: dict[str, int]) -> None:
    """Every config fits what the streams deliver; errors name the field to set."""
    kind, w_in = streams.kind, widths[streams.inputs[0]]
    for c in configs:
        if kind == Kind.TRANSCODER:
            w_out = widths[streams.target]
            if not c.is_transcoder or (c.d_in, c.d_target) != (w_in, w_out):
                raise ValueError(f"a transcoder from {streams.inputs[0]!r} (width {w_in}) to "
                                 f"{streams.target!r} (width {w_out}) needs d_in={w_in}, "
                                 f"d_out={w_out}; got d_in={c.d_in}, d_out={c.d_out}.")
        elif kind == Kind.CROSSCODER:
            block_widths = {widths[k] for k in streams.inputs}
            if len(block_widths) != 1:
                raise ValueError(f"a crosscoder's blocks must have one width; the hooks give "
                                 f"{ {k: widths[k] for k in streams.inputs} }.")
            n = streams.n_blocks
            if (c.n_blocks, c.d_in) != (n, n * w_in):
                raise ValueError(f"a crosscoder over {n} blocks of width {w_in} needs "
                                 f"n_blocks={n}, d_in={n * w_in}; got n_blocks={c.n_blocks}, "
                                 f"d_in={c.d_in}.")
        else:
            if c.is_transcoder:
                raise ValueError(f"a transcoder (d_out={c.d_out}) needs the output hook too: "
                                 "pass hook_out= (--hook-out).")
            if c.is_crosscoder:
                raise ValueError(f"a crosscoder (n_blocks={c.n_blocks}) needs n_blocks hooks "
                                 "(or checkpoints); got one.")
            if c.d_in != w_in:
                raise ValueError(f"an SAE has d_in={c.d_in}, but {streams.inputs[0]!r} gives "
                                 f"rows of width {w_in}: set d_in={w_in}.")


def batch(streams: Streams, rows: dict[str, Array], scales: Float[Array, " n_blocks"] | None):
    """The training batch from popped rows: ``x``, ``(x, y)`` or the scaled concatenation."""
    if streams.kind == Kind.TRANSCODER:
        return (rows[streams.inputs[0]].astype(jnp.float32),
                rows[streams.target].astype(jnp.float32))
    if streams.kind == Kind.CROSSCODER:
        return jnp.concatenate([rows[k].astype(jnp.float32) * scales[b]
                                for b, k in enumerate(streams.inputs)], axis=-1)
    return rows[streams.inputs[0]].astype(jnp.float32)


def raw_metrics(streams: Streams, batch_, metrics: dict, norm_scale: Array,
                target_norm_scale: Array) -> dict:
    """``mse_raw`` (the activations' own units) and the centred ``fvu`` of a step.

    For a crosscoder the blocks have been scaled to one norm each, so there is no single raw
    unit: ``fvu`` is over the scaled concatenation (every block weighted equally) and
    ``mse_raw`` is left out; per-block raw numbers come from the evaluation.
    """
    y = batch_[1] if isinstance(batch_, tuple) else batch_
    var = jnp.mean(jnp.sum(jnp.square(y - jnp.mean(y, axis=0, keepdims=True)), axis=-1))
    if streams.kind == Kind.CROSSCODER:
        return {**metrics, "fvu": metrics["mse"] / jnp.maximum(var, 1e-30)}
    scale = target_norm_scale if streams.kind == Kind.TRANSCODER else norm_scale
    mse_raw = metrics["mse"] / jnp.square(scale)
    return {**metrics, "mse_raw": mse_raw, "fvu": mse_raw / jnp.maximum(var, 1e-30)}


def samples(streams: Streams, rows: dict[str, np.ndarray]
            ) -> tuple[list[np.ndarray], np.ndarray | None]:
    """(input blocks, target or None) as host arrays, from a filled buffer's live rows."""
    xs = [np.asarray(rows[k], np.float32) for k in streams.inputs]
    y = None if streams.target is None else np.asarray(rows[streams.target], np.float32)
    return xs, y


def describe(streams: Streams) -> dict:
    """The streams for ``run.json`` and the files' metadata."""
    return {"kind": streams.kind.value, "inputs": list(streams.inputs),
            "target": streams.target, "blocks": [list(b) for b in streams.blocks]}
