"""Steering vectors read off contrasting inputs, at every layer from one forward pass each.

- :func:`diff_in_means`: mean residual on "positive" prompts minus the mean on "negative"
  prompts, at one position (default the last) or averaged over positions: the
  difference-in-means direction of the refusal and truthfulness work (Arditi et al. 2024;
  Marks & Tegmark 2023).
- :func:`caa_vectors`: Contrastive Activation Addition (Rimsky et al. 2024): the mean over
  *paired* prompts (same question, the two answer letters) of the residual difference at the
  answer position. For pairs this equals the difference of means; the function checks pairing.
- :func:`actadd_vector`: ActAdd (Turner et al. 2023): the residual of a "plus" prompt minus a
  "minus" prompt at one layer, position by position, to be added at the start of a prompt.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.run import run_with_cache


def _check_point(model: HookedModel, point: str) -> None:
    if point not in model.block_points:
        raise ValueError(f"{point!r} is not a block point of this model; residual points are "
                         f"{[p for p in model.block_points if p.startswith('hook_resid')]}.")
    if model.points[point] != ("batch", "pos", "d_model"):
        raise ValueError(f"Steering reads and writes [batch, pos, d_model] points; {point!r} "
                         f"has axes {model.points[point]}.")


def _shape(tokens) -> tuple[int, ...]:
    return tuple(np.shape(tokens))


def _stack_at(model: HookedModel, params, tokens, point: str, pos: int | None
              ) -> Float[Array, "layer batch d_model"]:
    """The residual at ``point`` for every layer (one call), at ``pos`` or position-averaged."""
    names = [block_name(l, point) for l in range(model.n_layers)]
    _, cache = run_with_cache(model, params, tokens, names=names)
    stacked = cache.stack(point)  # layer batch pos d_model
    if pos is None:
        return stacked.mean(axis=2)
    n_pos = stacked.shape[2]
    if not -n_pos <= pos < n_pos:
        raise ValueError(f"pos={pos} is outside the prompts' {n_pos} positions.")
    return stacked[:, :, pos]


def diff_in_means(model: HookedModel, params, positive, negative, *,
                  point: str = "hook_resid_pre", pos: int | None = -1
                  ) -> Float[Array, "layer d_model"]:
    """``mean(resid | positive) - mean(resid | negative)`` at every layer: ``[layer, d_model]``.

    Args:
        positive, negative: token ids ``[batch, pos]`` (the two sets may differ in size and
            length); one forward pass each, capturing ``point`` at every layer.
        point: a residual point (``hook_resid_pre`` by default).
        pos: the position read (default the last, e.g. the answer or the final instruction
            token), or ``None`` to average over positions.
    """
    _check_point(model, point)
    pos_acts = _stack_at(model, params, positive, point, pos)
    neg_acts = _stack_at(model, params, negative, point, pos)
    return (pos_acts.astype(jnp.float32).mean(1) - neg_acts.astype(jnp.float32).mean(1))


def caa_vectors(model: HookedModel, params, positive, negative, *,
                point: str = "hook_resid_pre", pos: int = -1
                ) -> Float[Array, "layer d_model"]:
    """CAA vectors: the mean paired difference at ``pos`` (the answer letter), every layer.

    ``positive[i]`` and ``negative[i]`` are the same prompt ending in the two answers, so the
    two arrays have one shape.
    """
    if _shape(positive) != _shape(negative):
        raise ValueError(f"CAA pairs prompts: positive {_shape(positive)} and negative "
                         f"{_shape(negative)} must have one shape (pad the pairs to one length).")
    return diff_in_means(model, params, positive, negative, point=point, pos=pos)


def actadd_vector(model: HookedModel, params, plus, minus, layer: int, *,
                  point: str = "hook_resid_pre") -> Float[Array, "pos d_model"]:
    """ActAdd's steering vector: ``resid(plus) - resid(minus)`` at ``layer``, ``[pos, d_model]``.

    ``plus`` and ``minus`` are single prompts ``[1, pos]`` of one length (the paper pads the
    shorter with spaces); add the result with :class:`jinterp.steering.ActAdd`.
    """
    _check_point(model, point)
    if _shape(plus) != _shape(minus) or len(_shape(plus)) != 2 or _shape(plus)[0] != 1:
        raise ValueError(f"ActAdd takes two single prompts of one length, [1, pos] each; got "
                         f"{_shape(plus)} and {_shape(minus)} (pad the shorter one).")
    if not 0 <= layer < model.n_layers:
        raise ValueError(f"layer={layer} is outside 0..{model.n_layers - 1}.")
    name = block_name(layer, point)
    both = jnp.concatenate([jnp.asarray(plus), jnp.asarray(minus)])
    _, cache = run_with_cache(model, params, both, names=[name])
    acts = cache[name].astype(jnp.float32)  # 2 pos d_model
    return acts[0] - acts[1]
