"""Residual-stream decompositions of a cache, with TransformerLens 3.x's names and meaning.

The residual entering layer ``L`` is a sum: the embeddings, every earlier ``attn_out`` and
``mlp_out``; finer, every head's result, every neuron's ``post * W_out`` row, and the biases.
These functions stack those terms on a new leading ``component`` axis (``[component, batch,
pos, d_model]``) so that direct logit attribution is one ``einsum``. They back the
:class:`~jinterp.cache.ActivationCache` methods of the same names (``cache.decompose_resid``,
...), which are what users call.

Why ``model`` and ``params`` are arguments. A jinterp cache holds activations only (it is a
pytree of arrays, so it can leave a jitted function); the model and its weights live outside.
What needs them: ``apply_ln`` needs the model's norm type (LayerNorm centres, RMSNorm does
not), and TL 3.x's ``accumulated_resid(apply_ln=True)`` at the final layer applies the final
norm *with its weights* (``params``); head results need ``W_O`` unless ``attn.hook_result`` was
cached; neuron results need ``W_out``; the full decomposition needs the biases. So those calls
take ``model=`` / ``params=`` (or a cache bound once with ``cache.bind(model, params)``).

Meaning, as TransformerLens 3.x defines it:

- ``layer`` is the layer whose *input* is decomposed: ``0 .. n_layers``; ``None`` and ``-1``
  mean ``n_layers`` (the input of the unembedding). ``mlp_input`` adds layer ``L``'s attention.
- ``apply_ln`` divides by the *cached* scale of the norm that reads the stack there (``ln1``,
  ``ln2`` with ``mlp_input``, ``ln_final``), after centring for LayerNorm: each component's
  share of the normalised input (without the norm's weight, which processing folds away). The
  one exception is ``accumulated_resid(apply_ln=True)`` at the final layer, which applies the
  final norm to each accumulated residual with its own statistics and weights (a logit lens).
- ``pos_slice``: ``None`` (all), an int (that position, axis dropped), a ``(start, stop[,
  step])`` tuple or slice, or a list / array of positions. Out of range raises.

Models with post-norms (Gemma 2 / 3) normalise each ``attn_out`` / ``mlp_out`` before adding it,
so per-head and per-neuron terms (taken before that norm, as TL does) do not add up to the
residual: :func:`full_resid_decomposition` refuses them; :func:`decompose_resid` (whose
``attn_out`` / ``mlp_out`` are after the post-norms) stays exact.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from jinterp import readout
from jinterp.names import block_name, split_name

Stack = Float[Array, "n *lead d_model"]


# ------------------------------------------------------------------------------- helpers
def _get(cache, name: str, what: str) -> Array:
    if name not in cache:
        raise KeyError(f"{what} needs {name!r}, which is not in the cache; run_with_cache with "
                       "names=None captures it (or add it to names=).")
    return cache[name]


def _layer(model_layers: int, layer: int | None) -> int:
    if layer is None or layer == -1:
        return model_layers
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"layer must be an int in [0, {model_layers}], None or -1, got {layer!r}.")
    if not 0 <= layer <= model_layers:
        raise ValueError(f"layer={layer} is outside [0, {model_layers}] (None or -1 mean "
                         f"{model_layers}, the input of the unembedding).")
    return int(layer)


def _n_layers(cache, model) -> int:
    if model is not None:
        return model.n_layers
    layers = [split_name(name)[0] for name in cache]
    layers = [l for l in layers if l is not None]
    if not layers:
        raise KeyError("The cache has no block activations to count the layers by; pass model=.")
    return max(layers) + 1


def take(x: Array, selector, axis: int, what: str = "pos_slice") -> Array:
    """``x`` indexed along ``axis`` by a TL-style slice (None, int, tuple, slice, indices)."""
    if selector is None:
        return x
    n = x.shape[axis]
    if isinstance(selector, tuple):
        selector = slice(*selector)
    if isinstance(selector, slice):
        return jnp.take(x, jnp.arange(n)[selector], axis=axis)
    if isinstance(selector, bool):
        raise TypeError(f"{what} must be None, an int, a slice or indices, got a bool.")
    values = np.asarray(selector)
    if values.dtype.kind not in "iu" or values.ndim > 1:
        raise TypeError(f"{what} must be None, an int, a (start, stop) tuple, a slice or a 1-d "
                        f"list of ints, got {selector!r}.")
    if values.size and (values.min() < -n or values.max() >= n):
        raise ValueError(f"{what}={selector!r} is out of range for an axis of size {n} "
                         f"(valid: -{n} .. {n - 1}).")
    return jnp.take(x, jnp.asarray(values % n), axis=axis)


def _finish(stack: Array, labels: list[str], return_labels: bool):
    return (stack, labels) if return_labels else stack


def _is_attn_only(cache, model) -> bool:
    if model is not None:
        return "hook_mlp_out" not in model.block_points
    return not cache.layers("hook_mlp_out")


def _norm_type(model, what: str) -> str | None:
    if model is None:
        raise ValueError(f"{what} with apply_ln=True needs the model (LayerNorm centres, RMSNorm "
                         "does not): pass model= or bind the cache with cache.bind(model, params).")
    readout.check_reading_protocol(model, f"{what} with apply_ln=True")
    return model.normalization


def _need_params(params, what: str) -> dict:
    if params is None:
        raise ValueError(f"{what} needs the model's weights: pass params= (and model=) or bind "
                         "the cache with cache.bind(model, params).")
    return params


def _resid_into(cache, layer: int, n_layers: int, what: str) -> Array:
    """The residual entering ``layer`` (the final ``hook_resid_post`` for ``n_layers``)."""
    if layer == n_layers:
        return _get(cache, block_name(n_layers - 1, "hook_resid_post"), what)
    return _get(cache, block_name(layer, "hook_resid_pre"), what)


# ------------------------------------------------------------------------------- LN on a stack
def apply_ln_to_stack(cache, residual_stack: Stack, layer: int | None = None,
                      mlp_input: bool = False, pos_slice=None, batch_slice=None,
                      has_batch_dim: bool = True, recompute_ln: bool = False, *, model=None,
                      params=None) -> Float[Array, "n ... d_model"]:
    """Each component's share of the normalised input of ``layer`` (cached scale), or with
    ``recompute_ln`` at the final layer the final norm applied to each component itself."""
    norm = _norm_type(model, "apply_ln_to_stack")
    if residual_stack.ndim < 2 or residual_stack.shape[-1] != model.d_model:
        raise ValueError(f"residual_stack has shape {tuple(residual_stack.shape)}; it must be "
                         f"[component, ..., d_model] with d_model={model.d_model} last.")
    if norm is None:
        return residual_stack
    layer = _layer(model.n_layers, layer)
    if has_batch_dim:
        residual_stack = take(residual_stack, batch_slice, 1, "batch_slice")
    if recompute_ln and layer == model.n_layers:
        return readout.ln_final(model, _need_params(params, "recompute_ln"), residual_stack)
    if mlp_input and layer == model.n_layers:
        raise ValueError("mlp_input=True needs a layer < n_layers (the unembedding has no MLP).")
    name = ("ln_final.hook_scale" if layer == model.n_layers
            else block_name(layer, "ln2.hook_scale" if mlp_input else "ln1.hook_scale"))
    scale = take(_get(cache, name, "apply_ln"), pos_slice, -2)  # batch (pos) 1
    if has_batch_dim:
        scale = take(scale, batch_slice, 0, "batch_slice")
    if scale.shape[:-1] != residual_stack.shape[1:-1]:
        raise ValueError(f"residual_stack {tuple(residual_stack.shape)} does not match the cached "
                         f"scale {name} {tuple(scale.shape)} after pos_slice: pass the pos_slice "
                         "(and batch_slice) the stack was built with.")
    if norm == "layernorm":
        residual_stack = residual_stack - residual_stack.mean(-1, keepdims=True)
    return residual_stack / scale[None].astype(residual_stack.dtype)


def _maybe_ln(cache, stack, apply_ln, layer, mlp_input, pos_slice, model):
    if not apply_ln:
        return stack
    return apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                             model=model)


# ------------------------------------------------------------------------------- stacks
def accumulated_resid(cache, layer: int | None = None, incl_mid: bool = False,
                      apply_ln: bool = False, pos_slice=None, mlp_input: bool = False,
                      return_labels: bool = False, *, model=None, params=None):
    """The residual entering every layer up to ``layer`` (``[layer + 1, ...]`` for the final)."""
    n = _n_layers(cache, model)
    layer = _layer(n, layer)
    parts, labels = [], []
    for l in range(layer + 1):
        if l == n:
            parts.append(_get(cache, block_name(n - 1, "hook_resid_post"), "accumulated_resid"))
            labels.append("final_post")
            continue
        parts.append(_get(cache, block_name(l, "hook_resid_pre"), "accumulated_resid"))
        labels.append(f"{l}_pre")
        if (incl_mid and l < layer) or (mlp_input and l == layer):
            parts.append(_get(cache, block_name(l, "hook_resid_mid"), "accumulated_resid"))
            labels.append(f"{l}_mid")
    stack = jnp.stack([take(x, pos_slice, -2) for x in parts])  # component batch (pos) d_model
    if apply_ln:
        _norm_type(model, "accumulated_resid")
        stack = apply_ln_to_stack(cache, stack, layer, mlp_input=mlp_input, pos_slice=pos_slice,
                                  recompute_ln=layer == n, model=model, params=params)
    return _finish(stack, labels, return_labels)


def decompose_resid(cache, layer: int | None = None, mlp_input: bool = False, mode: str = "all",
                    apply_ln: bool = False, pos_slice=None, incl_embeds: bool = True,
                    return_labels: bool = False, *, model=None):
    """Embeddings and every ``attn_out`` / ``mlp_out`` that add up to the input of ``layer``."""
    if mode not in ("all", "mlp", "attn"):
        raise ValueError(f"mode={mode!r}; choose 'all', 'mlp' or 'attn'.")
    n = _n_layers(cache, model)
    layer = _layer(n, layer)
    incl_attn, incl_mlp = mode != "mlp", mode != "attn" and not _is_attn_only(cache, model)
    parts, labels = [], []
    if incl_embeds:
        for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
            if name in cache:
                parts.append(cache[name])
                labels.append(label)
    for l in range(layer):
        for on, point, label in ((incl_attn, "hook_attn_out", "attn_out"),
                                 (incl_mlp, "hook_mlp_out", "mlp_out")):
            if on:
                parts.append(_get(cache, block_name(l, point), "decompose_resid"))
                labels.append(f"{l}_{label}")
    if mlp_input and layer == n:
        raise ValueError("mlp_input=True needs a layer < n_layers (the unembedding has no MLP).")
    if mlp_input and incl_attn:
        parts.append(_get(cache, block_name(layer, "hook_attn_out"), "decompose_resid"))
        labels.append(f"{layer}_attn_out")
    if not parts:
        raise ValueError("decompose_resid has no component to stack (layer=0 without embeds?).")
    stack = jnp.stack([take(x, pos_slice, -2) for x in parts])
    return _finish(_maybe_ln(cache, stack, apply_ln, layer, mlp_input, pos_slice, model), labels,
                   return_labels)


def _with_remainder(stack, labels, cache, layer, n, pos_slice, what):
    rest = take(_resid_into(cache, layer, n, what), pos_slice, -2)
    if stack is not None:
        rest = rest - stack.sum(0)
    stack = rest[None] if stack is None else jnp.concatenate([stack, rest[None]])
    return stack, [*labels, "remainder"]


def _empty(cache, pos_slice) -> Array:
    like = take(_resid_into(cache, 0, 1, "an empty stack"), pos_slice, -2)
    return jnp.zeros((0, *like.shape), like.dtype)


def stack_head_results(cache, layer: int | None = -1, return_labels: bool = False,
                       incl_remainder: bool = False, pos_slice=None, apply_ln: bool = False, *,
                       model=None, params=None):
    """Every head's result (``z @ W_O``, before ``b_O``) of the layers before ``layer``.

    Uses ``attn.hook_result`` where cached, else computes it from ``attn.hook_z`` and ``W_O``.
    Components are ``layer x n_heads``, labelled ``L{l}H{h}``.
    """
    n = _n_layers(cache, model)
    layer = _layer(n, layer)
    parts, labels = [], []
    for l in range(layer):
        parts.append(head_results(cache, l, pos_slice, params=params))  # batch (pos) h d_model
        labels += [f"L{l}H{h}" for h in range(parts[-1].shape[-2])]
    return _finish_component_stack(cache, parts, labels, layer, n, pos_slice, incl_remainder,
                                   apply_ln, return_labels, model, "stack_head_results")


def head_results(cache, layer: int, pos_slice=None, *, params=None) -> Array:
    """``[batch, (pos), n_heads, d_model]``: each head's write to the residual at ``layer``."""
    name = block_name(layer, "attn.hook_result")
    if name in cache:
        return take(cache[name], pos_slice, -3)
    z = take(_get(cache, block_name(layer, "attn.hook_z"), "head results"), pos_slice, -3)
    W_O = _need_params(params, "Head results without attn.hook_result cached")[
        "blocks"]["attn"]["W_O"][layer]  # n_heads d_head d_model
    return jnp.einsum("...he,hed->...hd", z, W_O)


def neuron_results(cache, layer: int, neuron_slice=None, pos_slice=None, *,
                   params=None) -> Array:
    """``[batch, (pos), neuron, d_model]``: each MLP neuron's ``post * W_out`` row."""
    post = take(_get(cache, block_name(layer, "mlp.hook_post"), "neuron results"), pos_slice, -2)
    W_out = _need_params(params, "Neuron results")["blocks"]["mlp"]["W_out"][layer]
    post = take(post, neuron_slice, -1, "neuron_slice")
    W_out = take(W_out, neuron_slice, 0, "neuron_slice")  # neuron d_model
    return post[..., None] * W_out.reshape((1,) * (post.ndim - 1) + W_out.shape)


def stack_neuron_results(cache, layer: int | None, pos_slice=None, neuron_slice=None,
                         return_labels: bool = False, incl_remainder: bool = False,
                         apply_ln: bool = False, *, model=None, params=None):
    """Every MLP neuron's result of the layers before ``layer``, labelled ``L{l}N{i}``.

    Memory: ``layer x d_mlp`` copies of the residual; slice positions / neurons on big models.
    """
    n = _n_layers(cache, model)
    layer = _layer(n, layer)
    parts, labels = [], []
    for l in range(layer):
        parts.append(neuron_results(cache, l, neuron_slice, pos_slice, params=params))
        ids = np.arange(params["blocks"]["mlp"]["W_out"].shape[1])
        ids = ids if neuron_slice is None else ids[_np_index(neuron_slice)]
        labels += [f"L{l}N{int(i)}" for i in np.atleast_1d(ids)]
    return _finish_component_stack(cache, parts, labels, layer, n, pos_slice, incl_remainder,
                                   apply_ln, return_labels, model, "stack_neuron_results")


def _np_index(selector):
    return slice(*selector) if isinstance(selector, tuple) else selector


def accumulated_bias(model, params, layer: int, mlp_input: bool = False,
                     include_mlp_biases: bool = True) -> Float[Array, " d_model"]:
    """Sum of ``b_O`` (and ``b_out``) of the layers before ``layer`` (TL's ``accumulated_bias``).

    Models without biases contribute zeros.
    """
    blocks = params["blocks"]
    total = jnp.zeros(model.d_model, blocks["attn"]["W_O"].dtype)
    b_O, b_out = blocks["attn"].get("b_O"), blocks.get("mlp", {}).get("b_out")
    if b_O is not None:
        total = total + b_O[:layer].sum(0) + (b_O[layer] if mlp_input else 0.0)
    if b_out is not None and include_mlp_biases:
        total = total + b_out[:layer].sum(0)
    return total


def full_resid_decomposition(cache, layer: int | None = None, mlp_input: bool = False,
                             expand_neurons: bool = True, apply_ln: bool = False, pos_slice=None,
                             return_labels: bool = False, *, model=None, params=None):
    """Every head, every neuron (or MLP layer), the embeddings and the biases: the residual
    entering ``layer`` exactly (``stack.sum(0)``), in TL's order and labels."""
    if model is None:
        raise ValueError("get_full_resid_decomposition needs model= and params= (biases, W_O, "
                         "W_out), or a cache bound with cache.bind(model, params).")
    params = _need_params(params, "get_full_resid_decomposition")
    if "ln1_post.hook_scale" in model.block_points:
        raise ValueError("This model normalises each attention / MLP output before adding it "
                         "(post-norms), so per-head and per-neuron terms do not add up to the "
                         "residual; use cache.decompose_resid (attn_out / mlp_out, exact).")
    n = model.n_layers
    layer = _layer(n, layer)
    if mlp_input and layer == n:
        raise ValueError("mlp_input=True needs a layer < n_layers (the unembedding has no MLP).")
    heads, labels = stack_head_results(cache, layer + int(mlp_input), True, pos_slice=pos_slice,
                                       model=model, params=params)
    parts = [heads]
    if not _is_attn_only(cache, model) and layer > 0:
        if expand_neurons:
            more, more_labels = stack_neuron_results(cache, layer, pos_slice, None, True,
                                                     model=model, params=params)
        else:
            more, more_labels = decompose_resid(cache, layer, mode="mlp", pos_slice=pos_slice,
                                                incl_embeds=False, return_labels=True,
                                                model=model)
        parts.append(more)
        labels = [*labels, *more_labels]
    for name, label in (("hook_embed", "embed"), ("hook_pos_embed", "pos_embed")):
        if name in cache:
            parts.append(take(cache[name], pos_slice, -2)[None])
            labels = [*labels, label]
    bias = accumulated_bias(model, params, layer, mlp_input, include_mlp_biases=expand_neurons)
    like = parts[-1]
    parts.append(jnp.broadcast_to(bias.astype(like.dtype), (1, *like.shape[1:])))
    stack = jnp.concatenate(parts)
    return _finish(_maybe_ln(cache, stack, apply_ln, layer, mlp_input, pos_slice, model),
                   [*labels, "bias"], return_labels)


def _finish_component_stack(cache, parts, labels, layer, n, pos_slice, incl_remainder, apply_ln,
                            return_labels, model, caller):
    """Stacks per-layer ``[..., component, d_model]`` parts (component first), adds the
    remainder on request, applies the norm and returns like TransformerLens."""
    stack = jnp.moveaxis(jnp.concatenate(parts, axis=-2), -2, 0) if parts else None
    if incl_remainder:
        stack, labels = _with_remainder(stack, labels, cache, layer, n, pos_slice, caller)
    stack = _empty(cache, pos_slice) if stack is None else stack
    return _finish(_maybe_ln(cache, stack, apply_ln, layer, False, pos_slice, model), labels,
                   return_labels)
