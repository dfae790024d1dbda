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
"""

from __future__ import annotations

import abc
import functools
from typing import Any

import jax
from jaxtyping import Array, Float, Int

from jinterp.names import Axes, block_name


class HookedModel(abc.ABC):
    """Base class of ports. Subclasses are frozen dataclasses and define the members below."""

    n_layers: int
    d_model: int
    d_vocab: int
    n_ctx: int | None  # longest sequence the model accepts; None for no limit

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
                 start_at_layer=None, stop_at_layer=None):
        """Plain logits (or the residual with ``stop_at_layer``): nothing captured, no hooks."""
        from jinterp.run import run_with_hooks

        return run_with_hooks(self, params, tokens, {}, start_at_layer=start_at_layer,
                              stop_at_layer=stop_at_layer)
