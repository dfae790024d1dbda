"""The activation cache: a read-only mapping from activation names to arrays, and a pytree.

It is what ``run_with_cache`` returns (and ``grad_cache``'s gradients). One representation:
activations outside the blocks by name, block activations stacked per point as the layer loop
produced them (``stacked={point: (array [n_captured, ...], layers)}``); ``cache[name]`` is a
view that indexes the stack, and ``cache.stack(point)`` is the stack itself, no copy.

As a pytree its leaves are *per name*, so ``jax.tree.map(lambda a: a.mean(0), cache)`` means
"mean over the batch" for every activation, as a reader expects (a leaf per stacked point would
silently average over layers instead); unflattening restacks them. Inside a jitted function
this is free; outside, ``jax.tree.map`` over a cache copies once per activation, as any
``tree.map`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array

from jinterp import decompose
from jinterp.logit_attrs import logit_attrs
from jinterp.names import block_name, split_name, unknown_name_error


@jax.tree_util.register_pytree_with_keys_class
class ActivationCache(Mapping):
    """Named activations from one forward pass, in forward order.

    Example:
        >>> logits, cache = jinterp.run_with_cache(model, params, tokens)
        >>> cache["blocks.0.attn.hook_pattern"].shape   # (batch, n_heads, q_pos, k_pos)
        >>> resid = cache.stack("hook_resid_post")     # (layer, batch, pos, d_model)
    """

    def __init__(self, activations: Mapping[str, Array] | None = None, *,
                 stacked: Mapping[str, tuple[object, tuple[int, ...]]] | None = None,
                 order: list[str] | None = None):
        top: dict[str, Array] = {}
        loose: dict[str, dict[int, Array]] = {}
        for name, value in (activations or {}).items():
            layer, point = split_name(name)
            if layer is None:
                top[name] = value
            else:
                loose.setdefault(point, {})[layer] = value
        self._top = top
        self._stacked: dict[str, tuple[object, tuple[int, ...]]] = dict(stacked or {})
        for point, by_layer in loose.items():
            if point in self._stacked:
                raise ValueError(f"{point!r} is given both stacked and by name")
            layers = tuple(sorted(by_layer))
            self._stacked[point] = (_restack([by_layer[l] for l in layers]), layers)
        self._where = {block_name(l, p): (p, i) for p, (_, layers) in self._stacked.items()
                       for i, l in enumerate(layers)}
        names = [*self._top, *self._where]
        self._order = list(order) if order is not None else names
        if sorted(self._order) != sorted(names):
            raise ValueError("order must list exactly the cached names")

    def __getitem__(self, name: str) -> Array:
        if name in self._top:
            return self._top[name]
        if name in self._where:
            point, i = self._where[name]
            return self._stacked[point][0][i]
        raise unknown_name_error(name, self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._top or name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {tuple(self[k].shape)}" for k in self._order[:6])
        more = f", ... ({len(self)} in all)" if len(self) > 6 else ""
        return f"ActivationCache({shapes}{more})"

    def layers(self, point: str) -> list[int]:
        """The layers at which block point ``point`` (e.g. ``'attn.hook_z'``) was captured."""
        return list(self._stacked[point][1]) if point in self._stacked else []

    def stack(self, point: str) -> Array:
        """Block point ``point``'s activations over its captured layers: ``[layer, ...]``.

        No copy: this is the array the layer loop produced. :meth:`layers` says which layers.
        """
        if point not in self._stacked:
            raise KeyError(f"No layer of {point!r} was captured; captured: {self._order[:8]}...")
        values = self._stacked[point][0]
        return jnp.stack(values) if isinstance(values, tuple) else values

    # ----------------------------------------------------------------- decompositions
    # TransformerLens 3.x's residual decompositions (:mod:`jinterp.decompose` has the maths
    # and the meaning of every argument). Calls that need the model or its weights take
    # ``model=`` / ``params=``, or read them from a cache bound with :meth:`bind`.
    def bind(self, model, params=None) -> ActivationCache:
        """This cache remembering ``model`` (and ``params``) for the decomposition methods.

        A convenience outside ``jit``: binding is not part of the pytree (``jax.tree.map``
        and a jitted function's outputs return unbound caches).
        """
        bound = ActivationCache(stacked=self._stacked, order=self._order, activations=self._top)
        bound._model, bound._params = model, params
        return bound

    def _bound(self, model, params) -> dict:
        return {"model": model if model is not None else getattr(self, "_model", None),
                "params": params if params is not None else getattr(self, "_params", None)}

    def accumulated_resid(self, layer=None, incl_mid=False, apply_ln=False, pos_slice=None,
                          mlp_input=False, return_labels=False, *, model=None, params=None):
        """The residual entering each layer up to ``layer``: ``[n, batch, (pos), d_model]``
        (``n_layers + 1`` entries for ``layer=None``, the last being the final residual).

        ``apply_ln``: cached ``ln1`` scale at an inner layer; at the final layer, the final norm
        applied to each entry with its own statistics and weights (TL 3.x's logit lens; needs
        ``params``).
        """
        return decompose.accumulated_resid(self, layer, incl_mid, apply_ln, pos_slice, mlp_input,
                                           return_labels, **self._bound(model, params))

    def decompose_resid(self, layer=None, mlp_input=False, mode="all", apply_ln=False,
                        pos_slice=None, incl_embeds=True, return_labels=False, *, model=None,
                        params=None):
        """Embeddings, then every ``attn_out`` / ``mlp_out`` before ``layer``, stacked.

        Needs no weights (``params`` is accepted for symmetry and ignored).
        """
        return decompose.decompose_resid(self, layer, mlp_input, mode, apply_ln, pos_slice,
                                         incl_embeds, return_labels,
                                         model=self._bound(model, None)["model"])

    def stack_head_results(self, layer=-1, return_labels=False, incl_remainder=False,
                           pos_slice=None, apply_ln=False, *, model=None, params=None):
        """Every head's result before ``layer``: ``[layer * n_heads, batch, (pos), d_model]``.

        Reads ``attn.hook_result`` when cached, else ``hook_z @ W_O`` (needs ``params``).
        """
        return decompose.stack_head_results(self, layer, return_labels, incl_remainder,
                                            pos_slice, apply_ln, **self._bound(model, params))

    def stack_neuron_results(self, layer, pos_slice=None, neuron_slice=None,
                             return_labels=False, incl_remainder=False, apply_ln=False, *,
                             model=None, params=None):
        """Every MLP neuron's ``post * W_out`` before ``layer`` (needs ``params``)."""
        return decompose.stack_neuron_results(self, layer, pos_slice, neuron_slice,
                                              return_labels, incl_remainder, apply_ln,
                                              **self._bound(model, params))

    def apply_ln_to_stack(self, residual_stack, layer=None, mlp_input=False, pos_slice=None,
                          batch_slice=None, has_batch_dim=True, recompute_ln=False, *,
                          model=None, params=None):
        """Scales a ``[n, batch, (pos), d_model]`` stack by the cached norm scale at ``layer``."""
        return decompose.apply_ln_to_stack(self, residual_stack, layer, mlp_input, pos_slice,
                                           batch_slice, has_batch_dim, recompute_ln,
                                           **self._bound(model, params))

    def get_full_resid_decomposition(self, layer=None, mlp_input=False, expand_neurons=True,
                                     apply_ln=False, pos_slice=None, return_labels=False, *,
                                     model=None, params=None):
        """Heads, neurons (or MLP layers), embeddings and biases: sums to the residual."""
        return decompose.full_resid_decomposition(self, layer, mlp_input, expand_neurons,
                                                  apply_ln, pos_slice, return_labels,
                                                  **self._bound(model, params))

    def logit_attrs(self, residual_stack, tokens, incorrect_tokens=None, pos_slice=None,
                    batch_slice=None, has_batch_dim=True, *, model=None, params=None):
        """TL's ``cache.logit_attrs``: scale a raw stack by the final norm, dot with ``W_U``."""
        bound = self._bound(model, params)
        if bound["model"] is None or bound["params"] is None:
            raise ValueError("logit_attrs needs model= and params= (W_U), or a cache bound "
                             "with cache.bind(model, params).")
        return logit_attrs(bound["model"], bound["params"], residual_stack, tokens,
                           incorrect_tokens, cache=self, pos_slice=pos_slice,
                           batch_slice=batch_slice, has_batch_dim=has_batch_dim)

    def to_dict(self) -> dict[str, Array]:
        """A plain ``dict`` of every cached activation, in forward order."""
        return {k: self[k] for k in self._order}

    def tree_flatten_with_keys(self):
        keys = tuple(self._order)
        children = [(jax.tree_util.DictKey(k), self[k]) for k in keys]
        return children, keys

    @classmethod
    def tree_unflatten(cls, keys, children) -> ActivationCache:
        return cls(dict(zip(keys, children)), order=list(keys))


def _restack(values: list) -> object:
    """Stack arrays of one shape; anything else (placeholders JAX uses) stays a tuple."""
    if all(isinstance(v, (jax.Array, jax.core.Tracer)) or hasattr(v, "__array__")
           for v in values):
        shapes = {tuple(getattr(v, "shape", ())) for v in values}
        dtypes = {str(getattr(v, "dtype", "")) for v in values}
        if len(shapes) == 1 and len(dtypes) == 1:
            return jnp.stack(values)
    return tuple(values)
