"""Step 2: localise the circuit with compiled patching sweeps and AtP*.

The metric is 0 on the corrupted run (``r' r``) and 1 on the clean run (``r r``; :mod:`.task`).
Two directions, each ``jinterp.patching`` call one compiled program per start layer, vmapped
over the nodes (no Python loop over patches):

**Denoising** (a node's clean activation into the corrupted run; high = that node alone
restores the behaviour), for *where* the information flows:

- ``resid_pre`` / ``attn_out`` ``[layer, pos]``: at layer 0 each first-copy position restores a
  little (one clean token each); at layer 1 the first-copy positions restore more: after layer 0
  each also carries its previous token (the previous-token head's output), which is what the
  induction heads' keys match, and the second-copy positions restore through nothing;
- ``attn_head_out_by_pos`` ``[layer, pos, head]``: each head's output at each position: the
  induction heads at the second copy, where they write the prediction.

**Noising** (a node's corrupted activation into the clean run; low = the behaviour needs it),
for *how* heads compose (denoising a key alone cannot restore anything: the values it selects are
still the corrupted tokens):

- ``attn_head_all_pos_every`` ``[5, layer, head]``: each head's output, query, key, value and
  pattern. Induction heads need their keys (K-composition), values and pattern; the
  previous-token head its output;
- AtP* (``get_attr_patch_attn_head_all_pos_every(..., method="atp*")``): the same five maps from
  one forward and backward pass (exact softmax for queries and keys), against the exact sweep;
- AtP on every attention weight ``[layer, head, dest, src]``: one backward pass for what the
  exact sweep would need ``layer * head * pos**2`` forwards for.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

import jinterp
from jinterp import patching


def _atp_star(site: str):
    def estimate(*args, **kwargs):
        return patching.attr_patch(*args, site=site, method="atp*", **kwargs)
    return estimate


#: (name, function, direction, core) of every sweep, in the order they run. ``core`` sweeps
#: are what the checks read (run by ``--fast`` too); the rest only make the full study's figures.
SWEEPS = (
    ("resid_pre", patching.get_act_patch_resid_pre, "denoise", True),
    ("attn_out", patching.get_act_patch_attn_out, "denoise", False),
    ("attn_head_out_by_pos", patching.get_act_patch_attn_head_out_by_pos, "denoise", False),
    ("attn_head_all_pos_every", patching.get_act_patch_attn_head_all_pos_every, "noise", False),
    ("atp*_attn_head_all_pos_every",
     lambda *a, **k: patching.get_attr_patch_attn_head_all_pos_every(*a, method="atp*", **k),
     "noise", False),
    ("atp_attn_head_pattern_dest_src_pos",
     lambda *a, **k: patching.get_attr_patch_attn_head_pattern_dest_src_pos(*a, method="atp",
                                                                             **k), "noise", False),
    # the fast mode's stand-ins for the [5, layer, head] stacks: the two rows the checks read
    ("attn_head_out_all_pos", patching.get_act_patch_attn_head_out_all_pos, "noise", "fast"),
    ("attn_head_k_all_pos", patching.get_act_patch_attn_head_k_all_pos, "noise", "fast"),
    ("atp*_attn_head_k_all_pos", _atp_star("attn_head_k_all_pos"), "noise", "fast"),
)
DIRECTION = {name: direction for name, _, direction, _ in SWEEPS}


def sweep_names(full: bool) -> tuple[str, ...]:
    """The sweeps a run makes: the full study's, or the fast mode's smaller set."""
    return tuple(name for name, _, _, core in SWEEPS
                 if (core is True) or (core is False and full) or (core == "fast" and not full))


def run_sweeps(model, params, clean, corrupted, metric, *, full: bool = True,
               chunk_size: int | None = None,
               tick: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """The sweeps of :func:`sweep_names` (module docstring): ``{name: metric values}``.

    Args:
        clean, corrupted: ``[batch, pos]`` prompts (``r r`` and ``r' r``).
        metric: ``logits -> scalar``, 0 on the corrupted run and 1 on the clean one.
        full: every sweep, or the fast mode's set (what the checks read).
        chunk_size: patches vmapped at once in the exact sweeps.
        tick: called with each sweep's name when it is done (a progress bar).
    """
    _, clean_cache = jinterp.run_with_cache(model, params, clean)
    _, corrupted_cache = jinterp.run_with_cache(model, params, corrupted)
    runs = {"denoise": (corrupted, clean_cache), "noise": (clean, corrupted_cache)}
    wanted = set(sweep_names(full))
    results = {}
    for name, sweep, direction, _ in SWEEPS:
        if name not in wanted:
            continue
        tokens, cache = runs[direction]
        extra = {"chunk_size": chunk_size} if "atp" not in name else {}
        results[name] = np.asarray(jax.block_until_ready(
            sweep(model, params, tokens, cache, metric, **extra)))
        if tick is not None:
            tick(name)
    return results


EVERY_ROWS = ("out", "q", "k", "v", "pattern")
_POINT = {"out": "attn.hook_z", "q": "attn.hook_q", "k": "attn.hook_k", "v": "attn.hook_v",
          "pattern": "attn.hook_pattern"}


def direct_patches(model, params, clean, corrupted, metric, sweeps: dict[str, np.ndarray],
                   heads: list[tuple[str, int, int]], resid: tuple[int, int]) -> dict:
    """The slow obvious reference for a few sweep entries: one ``run_with_hooks`` each.

    Args:
        heads: ``(row, layer, head)`` noising entries (corrupted ``row`` of one head in the
            clean run) to recompute.
        resid: ``(layer, pos)`` of one denoising ``resid_pre`` entry to recompute.

    Returns:
        ``{"max_abs_diff": ..., "entries": [[what, sweep value, direct value], ...]}``.
    """
    _, clean_cache = jinterp.run_with_cache(model, params, clean)
    _, corrupted_cache = jinterp.run_with_cache(model, params, corrupted)
    entries = []
    for row, layer, head in heads:
        name = f"blocks.{layer}.{_POINT[row]}"
        hooks = {name: jinterp.Patch(corrupted_cache[name], head=head)}
        direct = float(metric(jinterp.run_with_hooks(model, params, clean, hooks)))
        entries.append([f"noise {row} L{layer}H{head}",
                        float(1.0 - head_cost(sweeps, row)[layer, head]), direct])
    layer, pos = resid
    name = f"blocks.{layer}.hook_resid_pre"
    hooks = {name: jinterp.Patch(clean_cache[name], pos=pos)}
    direct = float(metric(jinterp.run_with_hooks(model, params, corrupted, hooks)))
    entries.append([f"denoise resid_pre L{layer} pos {pos}",
                    float(sweeps["resid_pre"][layer, pos]), direct])
    return {"max_abs_diff": max(abs(a - b) for _, a, b in entries),
            "entries": [[w, round(a, 5), round(b, 5)] for w, a, b in entries]}


def head_cost(sweeps: dict[str, np.ndarray], row: str, atp: bool = False) -> np.ndarray:
    """``1 - metric`` ``[layer, head]`` of noising one head's ``row`` (out, q, k, v, pattern),
    exact or AtP*, from the ``[5, layer, head]`` stack or the fast mode's single sweep."""
    prefix = "atp*_" if atp else ""
    stack = sweeps.get(f"{prefix}attn_head_all_pos_every")
    if stack is not None:
        return 1.0 - stack[EVERY_ROWS.index(row)]
    return 1.0 - sweeps[f"{prefix}attn_head_{row}_all_pos"]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two arrays' entries (ties get their mean rank); None when
    either is constant (e.g. every query costs exactly 0: there is no ranking to compare)."""
    ra, rb = _ranks(np.ravel(a)), _ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 1e-12 else None


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # mean rank for ties
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def top_heads(values: np.ndarray, layer: int, threshold: float) -> list[int]:
    """Heads of ``layer`` whose ``[layer, head]`` value exceeds ``threshold``, largest first."""
    row = np.asarray(values)[layer]
    return [int(h) for h in np.argsort(-row) if row[h] > threshold]
