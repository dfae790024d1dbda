"""Activation names and the axis vocabulary, declared once.

Axis names, used verbatim in jaxtyping annotations, docs, parameter axes and sharding rules::

    batch     examples in a batch                 layer     blocks (leading axis of stacks)
    pos       token positions                     q_pos     query positions (= pos)
    k_pos     key positions (= pos)               d_model   residual stream width
    n_heads   query heads                         n_kv_heads key/value heads (GQA; = n_heads
    d_head    width of one head                             for multi-head attention)
    d_mlp     MLP hidden width                    d_vocab   vocabulary size
    n_ctx     longest context (learned positions) half      d_head // 2 (RoPE frequencies)
    d_sae     dictionary latents (SAEs)           d_in / d_target  SAE input / output width
    n_experts switch-SAE experts                  1         a kept axis of size one (norm scales)
    n_blocks  crosscoder blocks (layers / models) d_block   width of one crosscoder block

Activation names follow TransformerLens, so notebooks and SAELens ``hook_name`` strings port
unchanged. A *full name* is what users write (``blocks.3.attn.hook_z``); its *point* is the
name inside a block (``attn.hook_z``) plus the layer index, or the whole name for points
outside the blocks (``hook_embed``, ``ln_final.hook_scale``).

Every point has an axes tuple. Interventions use it to find the position and head axes of an
activation, so one ``Patch(pos=..., head=...)`` works on residuals, per-head values and
attention patterns alike; sharding uses it to lay captured activations out on a mesh. The
tables below are TransformerLens's standard rows; a port declares the points it has (a subset
of these, in forward order, plus any of its own with their axes) without editing this module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping

Axes = tuple[str, ...]

AXES = (
    "batch pos q_pos k_pos layer d_model n_heads n_kv_heads d_head d_mlp d_vocab n_ctx half "
    "d_sae d_in d_target n_experts n_blocks d_block 1"
).split()

#: Axis names that only one function or study uses, declared here so that every name in a
#: jaxtyping annotation of the project is accounted for (``tests/core/test_vocabulary.py``).
LOCAL_AXES: dict[str, str] = {
    "b": "rows of one shard (sharded top-k)", "d_local": "one shard's share of d_sae",
    "batch_ref": "a reference batch (mean / resample ablation)", "d": "any feature width",
    "heads": "query or key/value heads", "lead": "any leading axes", "k": "top-k slots",
    "k_total": "k times the batch (batch top-k)", "n_features": "planted ground-truth features",
    "n_prefix": "Matryoshka prefixes", "n_steps": "training steps per compiled call",
    "n": "any count", "p": "the grokking modulus", "n_pairs": "(a, b) input pairs",
    "n_train": "training pairs", "n_test": "held-out pairs", "n_classes": "output classes",
    "n_freq": "Fourier frequencies", "n_dirs": "Fourier directions", "n_out": "output logits",
    "feature": "toy-model features", "hidden": "toy-model hidden units",
    "instance": "toy models trained at once", "n_repeats": "repeats of a token subsequence",
    "subseq": "subsequence positions", "pos_m1": "positions but the last", "step": "steps",
    "sweep": "patching-sweep entries",
    "n_feat": "SAE features analysed (sae.features)", "window": "tokens of a context window",
    "n_bins": "histogram bins", "n_seq": "sequences of a token dataset",
    "total": "prompt plus generated positions (generation)", "m": "metric positions read",
    "component": "residual components (decomposition)", "layer_p1": "layers plus the final",
    "b2": "twice the batch (contrast pairs)", "pos2": "positions of a pair",
    "scale": "steering scales",
}

_RESID: Axes = ("batch", "pos", "d_model")
_SCALE: Axes = ("batch", "pos", "1")
_Q: Axes = ("batch", "pos", "n_heads", "d_head")
_KV: Axes = ("batch", "pos", "n_kv_heads", "d_head")
_PATTERN: Axes = ("batch", "n_heads", "q_pos", "k_pos")
_MLP: Axes = ("batch", "pos", "d_mlp")

#: Standard points outside the blocks, in forward order.
TOP_POINTS: dict[str, Axes] = {
    "hook_embed": _RESID,
    "hook_pos_embed": _RESID,
    "ln_final.hook_scale": _SCALE,
    "ln_final.hook_normalized": _RESID,
}

#: Standard points inside a block (prefix ``blocks.{layer}.``), the union over the families.
BLOCK_POINTS: dict[str, Axes] = {
    "hook_resid_pre": _RESID,
    "ln1.hook_scale": _SCALE,
    "ln1.hook_normalized": _RESID,
    "attn.hook_q": _Q,
    "attn.hook_k": _KV,
    "attn.hook_v": _KV,
    "attn.q_norm.hook_scale": ("batch", "pos", "n_heads", "1"),
    "attn.q_norm.hook_normalized": _Q,
    "attn.k_norm.hook_scale": ("batch", "pos", "n_kv_heads", "1"),
    "attn.k_norm.hook_normalized": _KV,
    "attn.hook_rot_q": _Q,
    "attn.hook_rot_k": _KV,
    "attn.hook_attn_scores": _PATTERN,
    "attn.hook_pattern": _PATTERN,
    "attn.hook_z": _Q,
    "attn.hook_result": ("batch", "pos", "n_heads", "d_model"),
    "hook_attn_out": _RESID,
    "ln1_post.hook_scale": _SCALE,
    "ln1_post.hook_normalized": _RESID,
    "hook_resid_mid": _RESID,
    "ln2.hook_scale": _SCALE,
    "ln2.hook_normalized": _RESID,
    "mlp.hook_pre": _MLP,
    "mlp.hook_pre_linear": _MLP,
    "mlp.hook_post": _MLP,
    "hook_mlp_out": _RESID,
    "ln2_post.hook_scale": _SCALE,
    "ln2_post.hook_normalized": _RESID,
    "hook_resid_post": _RESID,
}

_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


def standard(points: Iterable[str], table: Mapping[str, Axes]) -> dict[str, Axes]:
    """``{point: axes}`` for standard point names, in the given (forward) order."""
    return {p: table[p] for p in points}


def split_name(name: str) -> tuple[int | None, str]:
    """``'blocks.3.attn.hook_z'`` -> ``(3, 'attn.hook_z')``; ``'hook_embed'`` -> ``(None, ...)``."""
    match = _BLOCK_RE.match(name)
    if match:
        return int(match.group(1)), match.group(2)
    return None, name


def block_name(layer: int, point: str) -> str:
    """``(3, 'attn.hook_z')`` -> ``'blocks.3.attn.hook_z'``."""
    return f"blocks.{layer}.{point}"


def shape_of(axes: Axes, sizes: Mapping[str, int]) -> tuple[int, ...]:
    """The shape of an array with logical ``axes`` given each axis's size (``1`` is 1)."""
    return tuple(1 if a == "1" else sizes[a] for a in axes)


def unknown_name_error(name: str, valid: Iterable[str]) -> KeyError:
    """A KeyError that names the bad hook name and the closest valid ones."""
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5)
    hint = f" Closest valid names: {close}." if close else ""
    return KeyError(
        f"Unknown activation name {name!r}.{hint} "
        f"The model has {len(valid)} names (e.g. {valid[:3]}); list them with model.hook_names()."
    )


NameSelector = None | str | Iterable[str] | Callable[[str], bool]


def resolve_names(selector: NameSelector, valid: list[str]) -> list[str]:
    """Turns a name, an iterable of names or a predicate into names, in forward order.

    Raises:
        KeyError: for a name the model does not have, listing the closest valid names.
    """
    if callable(selector):
        return [n for n in valid if selector(n)]
    chosen = {selector} if isinstance(selector, str) else set(selector)
    valid_set = set(valid)
    for name in chosen:
        if name not in valid_set:
            raise unknown_name_error(name, valid)
    return [n for n in valid if n in chosen]
