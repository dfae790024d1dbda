"""Causal tests of the circuit with jinterp: per-head activation patching and zero-ablation.

Setting (the ``r r`` probe): the *clean* input is ``r r``; the *corrupted* input ``r' r``
resamples the first copy, so the second copy can no longer be predicted in context. The
metric is the loss on the predictable targets (queries ``half_len .. 2 half_len - 2`` of the
second copy). Three per-head sweeps over ``blocks.{l}.attn.hook_z`` (the head's output before
``W_O``):

* zero-ablation on the clean run (``ZeroAblate(head=...)``): how much the loss rises;
* noising (``Patch`` the *corrupted* head output into the clean run): the loss rises when the
  head carries information about the first copy. Both the induction head and the
  previous-token head it reads from show up: the latter's output at first-copy positions is
  what the induction head's keys match against (K-composition);
* denoising (``Patch`` the *clean* head output into the corrupted run): the fraction of the
  clean-vs-corrupted loss gap recovered. The induction head recovers it; the previous-token
  head alone cannot, because restoring where the induction head looks does not restore what it
  copies (the corrupted first-copy tokens).

Each sweep is ONE compiled program: the head to intervene on is data (a one-hot ``[layer,
n_heads]`` mask inside the interventions), and ``jax.vmap`` runs all heads at once. This is the
point of interventions-as-pytrees; :func:`head_sweep_loop` is the obvious one-run-per-head
reference that the tests compare against.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

import jinterp

Z = "attn.hook_z"
MakeHooks = Callable[[Bool[Array, "layer n_heads"], Array | None], dict]


@functools.partial(jax.jit, static_argnums=2)
def repeated_loss(logits: Float[Array, "batch pos d_vocab"], tokens: Int[Array, "batch pos"],
                  half_len: int) -> Float[Array, ""]:
    """Mean cross-entropy on the predictable targets of the second copy of ``r r``."""
    q = jnp.arange(half_len, 2 * half_len - 1)  # queries whose next token is known in context
    logp = jax.nn.log_softmax(logits[:, q].astype(jnp.float32), axis=-1)  # batch n_q d_vocab
    return -jnp.take_along_axis(logp, tokens[:, q + 1, None], axis=-1).mean()


def corrupt_first_copy(key: jax.Array, tokens: Int[Array, "batch pos"], half_len: int, d_vocab: int
                       ) -> Int[Array, "batch pos"]:
    """``r r -> r' r``: the first copy replaced by fresh random tokens."""
    fresh = jax.random.randint(key, (tokens.shape[0], half_len), 0, d_vocab)
    return tokens.at[:, :half_len].set(fresh)


def head_masks(n_layers: int, n_heads: int) -> Bool[Array, "sweep layer n_heads"]:
    """One one-hot ``[layer, n_heads]`` mask per head, in (layer, head) order."""
    return jnp.eye(n_layers * n_heads, dtype=bool).reshape(n_layers * n_heads, n_layers, n_heads)


def ablate_heads(mask: Bool[Array, "layer n_heads"], source=None) -> dict:
    """Hooks that zero the masked heads' ``hook_z`` in every layer (``source`` unused)."""
    return {f"blocks.{l}.{Z}": jinterp.ZeroAblate(head=mask[l]) for l in range(mask.shape[0])}


def patch_heads(mask: Bool[Array, "layer n_heads"],
                source: Float[Array, "layer batch pos n_heads d_head"]) -> dict:
    """Hooks that overwrite the masked heads' ``hook_z`` with ``source`` (another run's)."""
    return {f"blocks.{l}.{Z}": jinterp.Patch(source[l], head=mask[l]) for l in range(mask.shape[0])}


@functools.partial(jax.jit, static_argnames=("model", "half_len", "make_hooks"))
def head_sweep(model, params, tokens: Int[Array, "batch pos"], half_len: int,
               make_hooks: MakeHooks,
               source: Array | None = None) -> Float[Array, "layer n_heads"]:
    """Loss with ``make_hooks(mask, source)`` applied, for every one-hot head mask: one program.

    ``make_hooks`` is static (compare by identity), so noising and denoising sweeps, which only
    differ in ``source``, share one compiled program.
    """
    masks = head_masks(model.n_layers, model.config.n_heads)

    def one(mask):
        logits = jinterp.run_with_hooks(model, params, tokens, make_hooks(mask, source))
        return repeated_loss(logits, tokens, half_len)

    return jax.vmap(one)(masks).reshape(model.n_layers, model.config.n_heads)


def head_sweep_loop(model, params, tokens: Int[Array, "batch pos"], half_len: int,
                    make_hooks: MakeHooks,
                    source: Array | None = None) -> Float[Array, "layer n_heads"]:
    """Reference for :func:`head_sweep`: one separate forward pass per head, in a Python loop."""
    losses = []
    for mask in head_masks(model.n_layers, model.config.n_heads):
        logits = jinterp.run_with_hooks(model, params, tokens, make_hooks(mask, source))
        losses.append(repeated_loss(logits, tokens, half_len))
    return jnp.stack(losses).reshape(model.n_layers, model.config.n_heads)


def head_outputs(model, params, tokens: Int[Array, "batch pos"]
                 ) -> tuple[Float[Array, "batch pos d_vocab"],
                            Float[Array, "layer batch pos n_heads d_head"]]:
    """Logits and every layer's ``attn.hook_z``."""
    logits, cache = jinterp.run_with_cache(model, params, tokens, names=lambda n: n.endswith(Z))
    return logits, cache.stack(Z)


def patching_analysis(model, params, clean: Int[Array, "batch pos"],
                      corrupted: Int[Array, "batch pos"], half_len: int,
                      sweep=head_sweep) -> dict[str, Array]:
    """All three sweeps and their baselines (see module docstring).

    Returns:
        ``clean_loss``, ``corrupted_loss`` (scalars); ``ablation_increase``, ``noising_increase``
        (loss minus clean loss) and ``denoising_recovery`` (fraction of the gap recovered), each
        ``[layer, n_heads]``.
    """
    if clean.shape != corrupted.shape:
        raise ValueError(f"clean {clean.shape} and corrupted {corrupted.shape} inputs must have "
                         "the same shape.")
    clean_logits, clean_z = head_outputs(model, params, clean)
    corrupted_logits, corrupted_z = head_outputs(model, params, corrupted)
    clean_loss = repeated_loss(clean_logits, clean, half_len)
    corrupted_loss = repeated_loss(corrupted_logits, corrupted, half_len)
    ablated = sweep(model, params, clean, half_len, ablate_heads)
    noised = sweep(model, params, clean, half_len, patch_heads, corrupted_z)
    denoised = sweep(model, params, corrupted, half_len, patch_heads, clean_z)
    return {"clean_loss": clean_loss, "corrupted_loss": corrupted_loss,
            "ablation_increase": ablated - clean_loss, "noising_increase": noised - clean_loss,
            "denoising_recovery": (corrupted_loss - denoised) / (corrupted_loss - clean_loss)}
