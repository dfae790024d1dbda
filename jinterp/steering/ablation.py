"""Directional ablation: remove one direction from the residual stream everywhere, by hooks or
written into the weights (Arditi et al. 2024, "Refusal is mediated by a single direction").

:func:`ablation_hooks` projects ``direction`` out of ``hook_resid_pre``, ``hook_resid_mid``
and ``hook_resid_post`` at every chosen layer and position (the core's ``ProjectOut`` under
``jinterp.At``), so no component ever reads it and the final residual lacks it.

:func:`orthogonalize_weights` writes the same edit into the parameters: every parameter that
*writes* to the residual stream (embeddings, attention and MLP output matrices and biases)
loses its component along the direction, ``W <- W - (W d) d^T`` on its ``d_model`` axis. Then
every residual is orthogonal to the direction by construction and the edited model's outputs
equal the hooked model's (tested to fp32 precision). The writers are found from the port's
``param_axes()`` (the core never imports the ports): a parameter writes to the residual when
its last axis is ``d_model`` and it is a matrix (``W_E [d_vocab, d_model]``, ``W_pos``,
``W_O [layer, n_heads, d_head, d_model]``, ``W_out [layer, d_mlp, d_model]``) or a bias named
``b_*`` (``b_O``, ``b_out``); norm weights (``ln*.w`` / ``ln*.b``) scale the residual and are
left alone. Pass ``writers=`` to override.

Where the equivalence fails, the function refuses rather than returning a different model:
- a tied unembedding (no ``[d_model, d_vocab]`` parameter: the port unembeds with ``W_E``),
  where orthogonalising ``W_E`` would also change the logits: untie first;
- post-norms (Gemma 2 / 3: parameters under ``*_post``), where a block's output is
  renormalised after ``W_O`` / ``W_out``, so orthogonal weights do not give an orthogonal
  write: use :func:`ablation_hooks`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jinterp.hooks import At
from jinterp.interventions import ProjectOut, Selector
from jinterp.model import HookedModel
from jinterp.steering.apply import Layers, check_vector, layer_array

RESID_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")

Writers = Callable[[str, tuple[str, ...]], bool]


def ablation_hooks(model: HookedModel, direction: Float[Array | np.ndarray, "..."], *,
                   layers: Layers = None, pos: Selector = None) -> dict:
    """Hooks removing ``direction`` from every residual point of ``layers`` at ``pos``.

    Args:
        direction: ``[d_model]``, or ``[n_layers, d_model]`` for one direction per layer.
        layers: an int, a list, or None (every layer: the full directional ablation).
        pos: positions (``None``: all).
    """
    stacked = check_vector(model, direction, "direction")
    chosen = layer_array(model, layers)
    return {p: At(chosen, ProjectOut(direction, pos=pos), stacked=stacked)
            for p in RESID_POINTS if p in model.block_points}


def _default_writer(path: str, axes: tuple[str, ...]) -> bool:
    if not axes or axes[-1] != "d_model":
        return False
    other = [a for a in axes[:-1] if a != "layer"]
    return bool(other) or path.rsplit(".", 1)[-1].startswith("b_")


def resid_writers(model: HookedModel, writers: Writers | None = None) -> list[str]:
    """Dotted paths of the parameters that write to the residual stream (see the docstring)."""
    is_writer = _default_writer if writers is None else writers
    flat = jax.tree_util.tree_flatten_with_path(model.param_axes(),
                                                is_leaf=lambda x: isinstance(x, tuple))[0]
    return [p for p, axes in ((jax.tree_util.keystr(path, simple=True, separator="."), axes)
                              for path, axes in flat) if is_writer(p, tuple(axes))]


def _check_equivalence(model: HookedModel) -> None:
    flat = jax.tree_util.tree_flatten_with_path(model.param_axes(),
                                                is_leaf=lambda x: isinstance(x, tuple))[0]
    paths = {jax.tree_util.keystr(p, simple=True, separator="."): tuple(a) for p, a in flat}
    if not any(a[-2:] == ("d_model", "d_vocab") for a in paths.values()):
        raise ValueError(
            "This model unembeds with its embedding matrix (tied: no [d_model, d_vocab] "
            "parameter), so orthogonalising W_E would also change the logits. Untie it (e.g. "
            "tied_embeddings=False with params['unembed'] = {'W_U': W_E.T}) or use "
            "ablation_hooks.")
    post = sorted({p.split(".")[1] for p in paths if any(k.endswith("_post")
                                                         for k in p.split("."))})
    if post:
        raise ValueError(
            f"This model renormalises block outputs after W_O / W_out ({post}), so "
            "orthogonal weights do not make an orthogonal write to the residual; use "
            "ablation_hooks for this family.")


def orthogonalize_weights(model: HookedModel, params, direction: Float[Array | np.ndarray, "..."],
                          *, writers: Writers | None = None):
    """``params`` with ``direction`` removed from every parameter that writes to the residual.

    The edited model equals the model under :func:`ablation_hooks` (every layer, every
    position). ``writers(path, axes)`` overrides which parameters are edited (dotted paths as
    ``'blocks.attn.W_O'``); the equivalence checks then still run.
    """
    if tuple(np.shape(direction)) != (model.d_model,):
        raise ValueError(f"The direction has shape {tuple(np.shape(direction))}; weight "
                         f"orthogonalisation takes one direction of shape ({model.d_model},).")
    _check_equivalence(model)
    chosen = set(resid_writers(model, writers))
    if not chosen:
        raise ValueError("No parameter of this model writes to the residual by the writers "
                         "rule; pass writers=.")
    d = jnp.asarray(direction, jnp.float32)
    d = d / jnp.linalg.norm(d)

    def edit(path, w):
        if jax.tree_util.keystr(path, simple=True, separator=".") not in chosen:
            return w
        wf = w.astype(jnp.float32)
        d_b = d.reshape((1,) * (w.ndim - 1) + d.shape)  # explicit broadcasting
        return (wf - (wf @ d)[..., None] * d_b).astype(w.dtype)  # same axes as w

    return jax.tree_util.tree_map_with_path(edit, params)
