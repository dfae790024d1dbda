"""Step 3: path patching from the previous-token head into the induction heads' inputs.

Activation patching says *which* heads matter; path patching (Wang et al. 2022) says *how*
they talk. The clean run ``r r`` is kept, except that one sender head's output is replaced by its
corrupted (``r' r``) value along its direct paths into chosen receivers only: the keys, queries
or values of the induction heads (``Node.k(1, h)``, ``Node.q(1, h)``, ``Node.v(1, h)``). Every
sender head is swept in one compiled program
(:func:`jinterp.patching.get_path_patch_head_to_receivers`).

The effect of a path is ``1 - metric``: the fraction of the clean behaviour lost (the metric is
1 on the clean run and 0 on the corrupted one). The Framework predicts K-composition: the
previous-token head's output at first-copy positions is what the induction heads' *keys* read,
so its path into K should carry most of the effect, and its paths into Q and V little.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jinterp.patching import Node, get_path_patch_head_to_receivers

INPUTS = ("k", "q", "v")


def path_effects(model, params, clean, corrupted, metric, induction_heads: list[int], *,
                 per_head: bool = True, chunk_size: int | None = None,
                 tick: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Effects ``1 - metric`` of every sender head's paths into the induction heads.

    Args:
        induction_heads: the layer-1 heads whose inputs receive.
        per_head: also sweep each induction head's key on its own (one program each).

    Returns:
        ``{"into_k" | "into_q" | "into_v": [layer, head]}`` (all induction heads' inputs of that
        kind as one receiver set) and ``{"into_k_of_h{h}": [layer, head]}`` for each induction
        head ``h`` on its own (the per-edge weights of the circuit graph).
    """
    if not induction_heads:
        raise ValueError("Path patching needs at least one induction head (receiver); none was "
                         "found, so the model has not formed the circuit. Train longer.")
    out = {}
    for kind in INPUTS:
        receivers = [Node(kind, 1, h) for h in induction_heads]
        value = get_path_patch_head_to_receivers(model, params, clean, corrupted, metric,
                                                 receivers, chunk_size=chunk_size)
        out[f"into_{kind}"] = 1.0 - np.asarray(value)
        if tick is not None:
            tick(f"into_{kind}")
    for h in induction_heads if per_head else []:
        value = get_path_patch_head_to_receivers(model, params, clean, corrupted, metric,
                                                 [Node.k(1, h)], chunk_size=chunk_size)
        out[f"into_k_of_h{h}"] = 1.0 - np.asarray(value)
        if tick is not None:
            tick(f"into_k_of_h{h}")
    return out


def n_steps(induction_heads: list[int], per_head: bool = True) -> int:
    """How many programs :func:`path_effects` runs (for a progress bar)."""
    return len(INPUTS) + (len(induction_heads) if per_head else 0)
