"""The port protocol: a model provides its parts, the core owns the layer loop.

A port is a frozen (hashable) dataclass that declares its named points and provides four pure
functions over an explicit parameter pytree::

    embed(params, tokens, hook)           -> resid [batch pos d_model]
    layer_inputs(params)                  -> pytree with a leading [layer] axis
    block(resid, layer_inputs_l, hook)    -> resid             (one block, straight-line jnp)
    unembed(params, resid, hook)          -> logits            (final norm inside)

and calls ``hook(point, x)`` at each of its named activations (``hook.wants(point)`` says
whether an optional point is needed this call). :mod:`jinterp.loop` composes the parts: it
embeds or starts from a given residual, scans ``block`` over layers ``start .. stop`` and
unembeds or returns the residual. That is all ``run_with_cache``, ``run_with_hooks``,
``grad_cache``, patching and probing need, so ``jinterp`` never imports ``jinterp.models``.

A port also declares the logical axes of every parameter (``param_axes()``) and the size of
each axis (``dims``), which sharding, shape checks and ``init`` read.

**The attention context (optional).** A port that sets ``accepts_context = True`` also takes an
:class:`AttnContext` as a fourth argument of ``embed`` and ``block``::

    embed(params, tokens, hook, ctx)      -> resid             (learned positions read ctx)
    block(resid, layer_inputs_l, hook, ctx_l) -> resid, or (resid, (k, v)) with ctx.return_kv

The context says where this call's tokens sit among the keys: each key slot's position (RoPE
angle, learned-embedding row), which slots hold real tokens (padding) and, while decoding, the
layer's cached keys and values. The loop passes it only when a caller gives one (an attention
mask, :func:`jinterp.generate`), so every call without one traces exactly as before, and ports
without the argument keep working for everything else.
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from jinterp.names import Axes, block_name


@struct.dataclass
class AttnContext:
    """Where one call's queries and keys sit: positions, padding and (decoding) a KV cache.

    Keys live in ``k_pos`` *slots*: the prompt's positions, then one slot per generated token.
    This call's queries occupy slots ``offset .. offset + q_pos - 1``. Without a cache the keys
    are this call's own tokens (the same slots); with one (``kv``) they are every slot, this
    call's keys written at ``offset`` before attending.

    Attributes:
        positions: each slot's position ``[batch, k_pos]``: what RoPE rotates by and which
            learned positional embedding is added. With padding it counts real tokens only
            (``cumsum(valid) - 1``, pads 0), as HuggingFace's ``generate`` computes it, so a
            padded row computes what the same row computes unpadded.
        valid: which slots hold real tokens ``[batch, k_pos]`` (False: padding; slots not yet
            generated are excluded by causality).
        offset: the slot of this call's first query (a scalar, traced while decoding).
        kv: the layer's cached ``(k, v)``, each ``[batch, k_pos, n_kv_heads, d_head]`` (keys
            after RoPE), or None; the loop holds ``[layer, ...]`` and hands each block its slice.
        return_kv: whether ``block`` also returns this call's ``(k, v)``
            ``[batch, q_pos, n_kv_heads, d_head]`` for the caller to write into its cache.
    """

    positions: Int[Array, "batch k_pos"]
    valid: Bool[Array, "batch k_pos"]
    offset: Int[Array, ""] | int = 0
    kv: Any = None
    return_kv: bool = struct.field(pytree_node=False, default=False)

    @classmethod
    def from_mask(cls, attention_mask: Bool[Array, "batch pos"] | Int[Array, "batch pos"],
                  return_kv: bool = False) -> AttnContext:
        """The context of a padded batch: ``1``/True marks real tokens (HuggingFace's mask).

        Positions count real tokens: ``cumsum(mask) - 1``, pads 0, as HF's ``generate``.
        """
        valid = jnp.asarray(attention_mask).astype(bool)
        positions = jnp.where(valid, jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, 0)
        return cls(positions.astype(jnp.int32), valid, return_kv=return_kv)

    def query_positions(self, n_q: int) -> Int[Array, "batch q_pos"]:
        """The positions of this call's ``n_q`` queries."""
        return lax.dynamic_slice_in_dim(self.positions, self.offset, n_q, axis=1)

    def mask(self, n_q: int, window: Array | int) -> Bool[Array, "batch q_pos k_pos"]:
        """Where each query may attend: a real, earlier key within ``window`` positions; itself.

        Causality is by slot, the window by position (they agree on real tokens, whose
        positions increase with their slots). A query always sees its own slot, so no row is
        empty: a left pad (no real key before it) attends to itself alone, never to NaN.
        """
        q_slot = self.offset + jnp.arange(n_q)  # q_pos
        q_pos = self.query_positions(n_q)  # batch q_pos
        if self.kv is None:  # the keys are this call's own tokens
            k_slot, k_pos = q_slot, q_pos
            k_valid = lax.dynamic_slice_in_dim(self.valid, self.offset, n_q, axis=1)
        else:
            k_slot, k_pos, k_valid = jnp.arange(self.positions.shape[1]), self.positions, self.valid
        causal = k_slot[None, None, :] <= q_slot[None, :, None]  # 1 q_pos k_pos
        near = (q_pos[:, :, None] - k_pos[:, None, :]) < window  # batch q_pos k_pos
        own = k_slot[None, None, :] == q_slot[None, :, None]  # 1 q_pos k_pos
        return (k_valid[:, None, :] & causal & near) | own

    def at_layer(self, kv_l) -> AttnContext:
        """This context with one layer's cache slice (``(k, v)`` without the layer axis)."""
        return self.replace(kv=kv_l)


class HookedModel(abc.ABC):
    """Base class of ports. Subclasses are frozen dataclasses and define the members below."""

    n_layers: int
    d_model: int
    d_vocab: int
    n_ctx: int | None  # longest sequence the model accepts; None for no limit

    #: Whether ``embed`` and ``block`` take an :class:`AttnContext` (attention masks, KV caches).
    accepts_context: bool = False

    @property
    def causal(self) -> bool:
        """Whether a position reads only earlier positions (what suffix recomputation in the
        patching sweeps and KV-cache decoding rely on). A port that attends both ways (Tracr's
        compiled programs) overrides it with False."""
        return True

    #: Points computed only when named explicitly (or by a predicate): ``names=None`` skips them.
    #: ``attn.hook_result`` is ``n_heads`` times the residual stream's memory and changes the
    #: attention output einsum, so "cache everything" leaves it out, as TransformerLens does
    #: unless ``use_attn_result`` is set.
    optional_points: tuple[str, ...] = ("attn.hook_result",)

    # ----------------------------------------------------------------------- declarations
    @property
    @abc.abstractmethod
    def top_point_axes(self) -> dict[str, Axes]:
        """``{name: axes}`` of the points outside the blocks, in forward order."""

    @property
    @abc.abstractmethod
    def block_point_axes(self) -> dict[str, Axes]:
        """``{point: axes}`` of the points inside a block (no ``blocks.{l}.``), forward order."""

    @property
    @abc.abstractmethod
    def dims(self) -> dict[str, int]:
        """Size of every logical axis of the parameters and activations but batch and pos."""

    @abc.abstractmethod
    def param_axes(self) -> Any:
        """The params pytree with each array replaced by its logical axes (a tuple of names)."""

    # ----------------------------------------------------------------------- the four parts
    @abc.abstractmethod
    def embed(self, params, tokens: Int[Array, "batch pos"],
              hook) -> Float[Array, "batch pos d_model"]:
        """Token ids to the residual entering block 0."""

    @abc.abstractmethod
    def layer_inputs(self, params) -> Any:
        """Per-layer inputs of ``block`` (stacked weights, windows, RoPE bases), ``[layer, ...]``.
        """

    @abc.abstractmethod
    def block(self, resid: Float[Array, "batch pos d_model"], layer_inputs,
              hook) -> Float[Array, "batch pos d_model"]:
        """One block; ``layer_inputs`` is one layer's slice of :meth:`layer_inputs`."""

    @abc.abstractmethod
    def unembed(self, params, resid: Float[Array, "batch pos d_model"],
                hook) -> Float[Array, "batch pos d_vocab"]:
        """The residual after the last block to logits (final norm inside)."""

    def init(self, key: jax.Array):
        """Random parameters (subclasses define it)."""
        raise TypeError(f"{type(self).__name__} does not define init().")

    # ----------------------------------------------------------------------- derived
    @property
    def top_points(self) -> tuple[str, ...]:
        """Names of the points outside the blocks, in forward order."""
        return tuple(self.top_point_axes)

    @property
    def block_points(self) -> tuple[str, ...]:
        """Names of the points inside a block, in forward order."""
        return tuple(self.block_point_axes)

    @functools.cached_property
    def points(self) -> dict[str, Axes]:
        """``{point: axes}`` of every point, top-level and block (the core's single lookup)."""
        return {**self.top_point_axes, **self.block_point_axes}

    @functools.cached_property
    def _hook_names(self) -> tuple[str, ...]:
        top = list(self.top_points)
        final = [p for p in top if p.startswith("ln_final")]
        embeds = [p for p in top if p not in final]
        blocks = [block_name(l, p) for l in range(self.n_layers) for p in self.block_points]
        return tuple(embeds + blocks + final)

    def hook_names(self) -> list[str]:
        """Every activation name of this model, in forward order."""
        return list(self._hook_names)

    def default_names(self) -> list[str]:
        """What ``run_with_cache(names=None)`` captures: every name but the optional points."""
        optional = set(self.optional_points)
        return [n for n in self._hook_names if n.split(".", 2)[-1] not in optional]

    def param_shapes(self) -> Any:
        """The params pytree as ``jax.ShapeDtypeStruct`` leaves (nothing allocated)."""
        return jax.eval_shape(self.init, jax.random.key(0))

    def __call__(self, params, tokens, *,
                 start_at_layer=None, stop_at_layer=None, attention_mask=None):
        """Plain logits (or the residual with ``stop_at_layer``): nothing captured, no hooks."""
        from jinterp.run import run_with_hooks

        return run_with_hooks(self, params, tokens, {}, start_at_layer=start_at_layer,
                              stop_at_layer=stop_at_layer, attention_mask=attention_mask)
