"""``run_with_cache`` and ``run_with_hooks``: one jitted program per plan, every array dynamic.

Both check their inputs in Python (shapes, dtypes, names, concrete selector values), compute
one :class:`~jinterp.plan.Plan`, and call one jitted function whose static part is the model,
the plan and the *structure* of the hooks, and whose dynamic part is the params, the tokens (or
residual) and every array inside the hooks. So interventions built from arrays (``Patch``,
``Steer``, ``At``, ...) never recompile when their values change, and the whole call works
under an outer ``jit``, ``vmap`` (a batch of interventions in one program) and ``grad``
(through an intervention's fields).

``start_at_layer`` / ``stop_at_layer`` have TransformerLens's meaning: the call runs blocks
``start .. stop - 1``; with ``start_at_layer`` the input is the residual entering that block
(``blocks.{start}.hook_resid_pre``, ``[batch, pos, d_model]``) and positions are those of a
full run (``0..pos-1``; with ``attention_mask``, counting real tokens only); with
``stop_at_layer`` the output is the residual entering block ``stop`` and neither later blocks
nor the unembedding are computed. Both are static: each value is its
own compiled program.

Plain Python functions used as hooks are part of the static key: a *new* lambda each call
recompiles each call. For sweeps, use interventions and ``vmap``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Shaped

from jinterp.cache import ActivationCache
from jinterp.checks import device_check, is_host_value
from jinterp.hooks import At, Entry, Hooks, check_at_layers, layered, normalise_hooks
from jinterp.interventions import Intervention
from jinterp.loop import BlockHook, run_model
from jinterp.model import AttnContext, HookedModel
from jinterp.names import NameSelector, block_name, resolve_names, shape_of, split_name
from jinterp.plan import Plan, group_entries, split_leaves

#: Token ids ``[batch, pos]`` (a jax or numpy array, or nested lists), or, with
#: ``start_at_layer``, the residual ``[batch, pos, d_model]``. Shapes and dtypes are checked by
#: :func:`validate_tokens` / :func:`validate_resid`, whose errors say what to pass instead.
Inputs = Shaped[ArrayLike, "..."] | list


# ------------------------------------------------------------------------------- inputs
def _layer_range(model: HookedModel, start, stop) -> tuple[int, int]:
    n = model.n_layers
    for label, value in (("start_at_layer", start), ("stop_at_layer", stop)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{label} must be a Python int (it is static: each value compiles "
                            f"its own program), got {type(value).__name__}.")
        if not 0 <= value <= n:
            raise ValueError(f"{label}={value} is outside [0, {n}] for this {n}-layer model.")
    lo, hi = (0 if start is None else int(start)), (n if stop is None else int(stop))
    if lo > hi:
        raise ValueError(f"start_at_layer={lo} is after stop_at_layer={hi}; the call runs blocks "
                         "start .. stop - 1, so start must be <= stop.")
    return lo, hi


def validate_tokens(model: HookedModel, tokens) -> Any:
    """Checks rank, dtype and length; ids on the host now, on a device inside the program.

    Returns:
        The tokens. Host data is checked here (a plain ``ValueError``). A device array (or
        tracer) passes through :func:`checked_token_ids`, a tiny program of its own that
        checks the ids on the device and hands them on: no call copies device-resident tokens
        to the host (a blocking sync on an accelerator; impossible for a multi-host global
        array), and the main program stays free of host callbacks, which JAX's persistent
        compilation cache refuses to store.
    """
    if not hasattr(tokens, "shape"):
        tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        hint = " For one sequence, pass tokens[None]." if tokens.ndim == 1 else ""
        raise ValueError(f"tokens must have shape [batch, pos]; got shape {tokens.shape}.{hint}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must be integer token ids; got dtype {tokens.dtype}. (To start "
                        "from a residual, pass start_at_layer=.)")
    _check_length(model, tokens.shape[1])
    if not is_host_value(tokens):
        return checked_token_ids(tokens, d_vocab=model.d_vocab)
    if tokens.size:
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= model.d_vocab:
            raise ValueError(f"Token ids must lie in [0, {model.d_vocab}); got ids in "
                             f"[{lo}, {hi}].")
    return tokens


@functools.partial(jax.jit, static_argnames=("d_vocab",))
def checked_token_ids(tokens: Int[Array, "batch pos"], *, d_vocab: int
                      ) -> Int[Array, "batch pos"]:
    """``tokens``, after an on-device check that every id lies in ``[0, d_vocab)``.

    A failed check raises when the result is used (the error propagates to every program that
    consumes these tokens), without a blocking copy beforehand.
    """
    lo, hi = jnp.min(tokens), jnp.max(tokens)
    device_check((lo < 0) | (hi >= d_vocab),
                 f"Token ids must lie in [0, {d_vocab}); got ids in [{{}}, {{}}].", lo, hi)
    return tokens


def _check_length(model: HookedModel, n_pos: int) -> None:
    if model.n_ctx is not None and n_pos > model.n_ctx:
        raise ValueError(f"Sequence length {n_pos} exceeds the model's context n_ctx="
                         f"{model.n_ctx}; truncate or split the input.")


@functools.lru_cache(maxsize=256)
def _resid_dtype(model: HookedModel, param_structure) -> jnp.dtype:
    params = jax.tree.unflatten(param_structure[0], [jax.ShapeDtypeStruct(s, d)
                                                     for s, d in param_structure[1]])
    hook = BlockHook(lambda name, x: x, frozenset())  # records nothing, applies nothing
    out = jax.eval_shape(lambda p: model.embed(p, jnp.zeros((1, 1), jnp.int32), hook), params)
    return out.dtype


def validate_resid(model: HookedModel, params, resid, start: int) -> Any:
    """The residual fed to ``start_at_layer``: ``[batch, pos, d_model]`` in the model's dtype."""
    if not hasattr(resid, "shape"):
        resid = np.asarray(resid)
    if resid.ndim != 3 or resid.shape[-1] != model.d_model:
        raise ValueError(
            f"With start_at_layer={start} the input is the residual entering block {start}, "
            f"shape [batch, pos, d_model={model.d_model}]; got shape {tuple(resid.shape)}. "
            f"Pass e.g. cache['blocks.{start}.hook_resid_pre'] (or tokens without start_at_layer).")
    leaves, treedef = jax.tree.flatten(params)
    structure = (treedef, tuple((tuple(x.shape), jnp.dtype(x.dtype)) for x in leaves))
    dtype = _resid_dtype(model, structure)
    if resid.dtype != dtype:
        raise TypeError(f"The residual for start_at_layer={start} has dtype {resid.dtype}; the "
                        f"model computes in {dtype}: cast it with .astype('{dtype}').")
    _check_length(model, resid.shape[1])
    return resid


def validate_attention_mask(model: HookedModel, attention_mask, inputs) -> Any:
    """An attention mask ``[batch, pos]`` of the inputs' shape: 1 / True where tokens are real.

    Host values are checked here (0 / 1 only); device arrays and tracers pass as they are.
    """
    if attention_mask is None:
        return None
    if not model.accepts_context:
        raise TypeError(f"{type(model).__name__} does not take an attention context "
                        "(accepts_context is False), so it cannot apply attention_mask; run each "
                        "prompt unpadded, or add the ctx argument to its embed and block "
                        "(see jinterp.model).")
    if not hasattr(attention_mask, "shape"):
        attention_mask = np.asarray(attention_mask)
    want = tuple(np.shape(inputs)[:2])
    if tuple(attention_mask.shape) != want:
        raise ValueError(f"attention_mask must have the inputs' shape [batch, pos] = {want}; got "
                         f"{tuple(attention_mask.shape)}. It marks each real token with 1 and "
                         "each pad with 0, as HuggingFace's tokenizers return it.")
    dtype = attention_mask.dtype
    if not (dtype == np.bool_ or jnp.issubdtype(dtype, jnp.number)):
        raise TypeError(f"attention_mask must hold 0 / 1 (or booleans); got dtype {dtype}.")
    host = is_host_value(attention_mask) and not isinstance(attention_mask, jax.ShapeDtypeStruct)
    if host and attention_mask.size:
        values = np.unique(np.asarray(attention_mask))
        if not set(values.tolist()) <= {0, 1}:
            raise ValueError(f"attention_mask must hold only 0 (pad) and 1 (token); got values "
                             f"{values[:5].tolist()}.")
    return attention_mask


def context_of(attention_mask) -> AttnContext | None:
    """The attention context of a mask (None: no padding, the plain program)."""
    return None if attention_mask is None else AttnContext.from_mask(attention_mask)


# ------------------------------------------------------------------------------- planning
@dataclasses.dataclass(frozen=True)
class Prepared:
    """A checked call: the plan, the inputs and the hooks' data split for jit."""

    plan: Plan
    inputs: Any
    leaves: list
    static_leaves: tuple
    treedef: Any
    capture: tuple[str, ...]


@functools.lru_cache(maxsize=256)
def _names_in_run(model: HookedModel, start: int, stop: int, embed: bool,
                  final: bool) -> tuple[str, ...]:
    """The names a call computes, in forward order (cached: this runs on every call)."""
    final_names = {p for p in model.top_points if p.startswith("ln_final")}
    out = []
    for name in model.hook_names():
        layer, point = split_name(name)
        if layer is None:
            if (embed and name not in final_names) or (final and name in final_names):
                out.append(name)
        elif start <= layer < stop:
            out.append(name)
    return tuple(out)


def _check_entry(model: HookedModel, entry: Entry, run: range, sizes: dict, in_run: set,
                 from_tokens: bool, to_logits: bool) -> None:
    axes = model.points[entry.point]
    shape = shape_of(axes, sizes)
    if entry.at:
        at: At = entry.chain[0]
        check_at_layers(at, model.n_layers, run, entry.point)
        flags = layered(at, len(axes), model.n_layers)
        for hook, stacked in zip(at.chain(), flags):
            if isinstance(hook, Intervention):
                hook.check(shape, axes, entry.point, layers=model.n_layers if stacked else None)
        return
    name = entry.point if entry.layer is None else block_name(entry.layer, entry.point)
    if name not in in_run:
        where = (f"blocks {run.start}..{run.stop - 1}" if entry.layer is not None else
                 "the embedding" if not from_tokens else "the final norm" if not to_logits else "")
        raise ValueError(f"The hook on {name!r} is outside what this call computes ({where} is "
                         "skipped by start_at_layer / stop_at_layer); move the hook or the range.")
    for hook in entry.chain:
        if isinstance(hook, Intervention):
            hook.check(shape, axes, name)


def prepare(model: HookedModel, params, inputs, names: NameSelector | bool, hooks: Hooks,
            start_at_layer, stop_at_layer) -> Prepared:
    """Checks one call and computes its plan (``names=False``: capture nothing)."""
    start, stop = _layer_range(model, start_at_layer, stop_at_layer)
    from_tokens, to_logits = start_at_layer is None, stop_at_layer is None
    if from_tokens:
        inputs = validate_tokens(model, inputs)
    else:
        inputs = validate_resid(model, params, inputs, start)
    in_run_list = _names_in_run(model, start, stop, from_tokens, to_logits)
    in_run = set(in_run_list)
    if names is False:
        capture: list[str] = []
    elif names is None:
        capture = [n for n in model.default_names() if n in in_run]
    else:
        capture = resolve_names(names, model.hook_names())
        if callable(names) and not isinstance(names, str):
            capture = [n for n in capture if n in in_run]
        outside = [n for n in capture if n not in in_run]
        if outside:
            raise ValueError(f"{outside[:3]} are not computed by this call (it runs blocks "
                             f"{start}..{stop - 1}{'' if from_tokens else ', no embedding'}"
                             f"{'' if to_logits else ', no final norm'}); drop them or widen "
                             "start_at_layer / stop_at_layer.")
    entries = normalise_hooks(hooks, model.top_points, model.block_points, model.hook_names())
    batch, n_pos = inputs.shape[0], inputs.shape[1]
    sizes = {"batch": batch, "pos": n_pos, "q_pos": n_pos, "k_pos": n_pos, **model.dims}
    run = range(start, stop)
    for entry in entries:
        _check_entry(model, entry, run, sizes, in_run, from_tokens, to_logits)
    ndim_of = lambda point: len(model.points[point])
    top_chains, groups, groups_data = group_entries(entries, ndim_of, model.n_layers)
    block_layers: dict[str, list[int]] = {}
    top_capture = []
    for name in capture:
        layer, point = split_name(name)
        if layer is None:
            top_capture.append(name)
        else:
            block_layers.setdefault(point, []).append(layer)
    block_capture = tuple((p, tuple(ls)) for p, ls in block_layers.items())
    wanted = frozenset(block_layers) | {g.point for g in groups}
    plan = Plan(model.n_layers, start, stop, from_tokens, to_logits, tuple(top_capture),
                block_capture, tuple(top_chains), tuple(groups), wanted)
    leaves, static, treedef = split_leaves({"top": top_chains, "groups": groups_data})
    return Prepared(plan, inputs, leaves, static, treedef, tuple(capture))


def _rebuild(prep_static, leaves):
    treedef, static_leaves = prep_static
    return jax.tree.unflatten(treedef, [d if s is None else s
                                        for d, s in zip(leaves, static_leaves)])


@functools.partial(jax.jit, static_argnames=("model", "plan", "hook_static", "unroll"))
def _forward(params, inputs, leaves, attention_mask=None, *, model, plan, hook_static, unroll):
    data = _rebuild(hook_static, leaves)
    return run_model(model, plan, params, inputs, data["top"], data["groups"], unroll=unroll,
                     ctx=context_of(attention_mask))


def make_cache(model: HookedModel, plan: Plan, capture, top, stacked) -> ActivationCache:
    """The cache of one call: top-level captures by name, block captures stacked per point."""
    layers = plan.captured_layers()
    return ActivationCache(top, stacked={p: (a, layers[p]) for p, a in stacked.items()},
                           order=list(capture))


def _unroll(unroll: bool | int | None) -> int | bool:
    return 1 if unroll in (None, False) else unroll


def run_with_cache(model: HookedModel, params, tokens: Inputs,
                   names: NameSelector = None, hooks: Hooks = None, *,
                   start_at_layer=None, stop_at_layer=None,
                   unroll: bool | int | None = None, attention_mask=None
                   ) -> tuple[Float[Array, "batch pos _"], ActivationCache]:
    """Logits (or a residual) and the requested activations.

    Args:
        model: a port (``jinterp.models.GPT2(...)`` etc.).
        params: its parameter pytree.
        tokens: integer ids ``[batch, pos]``; with ``start_at_layer``, the residual entering
            that block ``[batch, pos, d_model]`` instead.
        names: ``None`` for every activation the call computes (except the optional per-head
            ``attn.hook_result``, which must be named), a name, an iterable of names, or a
            predicate ``name -> bool``. Only what is requested is materialised.
        hooks: optional hooks applied during this run (the cache then holds hooked values).
        start_at_layer: run from this block on (static); see the module docstring.
        stop_at_layer: stop before this block and return the residual entering it (static).
        unroll: ``lax.scan``'s unroll factor for the blocks (``True``: fully unrolled, compile
            time grows with depth); default 1, a rolled loop with compile time flat in depth.
        attention_mask: ``[batch, pos]``, 1 for real tokens and 0 for padding (left, right or
            anywhere), as HuggingFace takes it. Real tokens attend only to real tokens and
            their positions count real tokens only, so each row computes what it computes
            unpadded. A pad attends to itself alone; its activations are defined (no NaN) but
            mean nothing. None: every token is real (the plain program).

    Returns:
        ``(logits, cache)``, or ``(resid, cache)`` with ``stop_at_layer``: ``cache[name]`` is
        the activation called ``name``.
    """
    prep = prepare(model, params, tokens, names, hooks, start_at_layer, stop_at_layer)
    mask = validate_attention_mask(model, attention_mask, prep.inputs)
    out, top, stacked = _forward(params, prep.inputs, prep.leaves, mask, model=model,
                                 plan=prep.plan, hook_static=(prep.treedef, prep.static_leaves),
                                 unroll=_unroll(unroll))
    return out, make_cache(model, prep.plan, prep.capture, top, stacked)


def run_with_hooks(model: HookedModel, params, tokens: Inputs, hooks: Hooks,
                   *, start_at_layer=None, stop_at_layer=None, attention_mask=None
                   ) -> Float[Array, "batch pos _"]:
    """Logits (or a residual) of a forward pass with ``hooks`` applied.

    Args:
        hooks: maps an activation name to a hook or a list of hooks applied in order. A hook is
            a pure function ``activation -> activation`` (or ``fn(activation, hook)`` as in
            TransformerLens) or a :mod:`jinterp.interventions` object (``Patch``,
            ``ZeroAblate``, ``Steer``, ...). A block point without a layer takes
            ``jinterp.At(layer, hook)``. A list of ``(name, hook)`` pairs works too.
        start_at_layer / stop_at_layer: as in :func:`run_with_cache` (static).
        attention_mask: ``[batch, pos]`` padding mask, as in :func:`run_with_cache`.
    """
    prep = prepare(model, params, tokens, False, hooks, start_at_layer, stop_at_layer)
    mask = validate_attention_mask(model, attention_mask, prep.inputs)
    out, _, _ = _forward(params, prep.inputs, prep.leaves, mask, model=model, plan=prep.plan,
                         hook_static=(prep.treedef, prep.static_leaves),
                         unroll=1)
    return out


def lower(model: HookedModel, params, tokens: Inputs, names: NameSelector | bool = False,
          hooks: Hooks = None, *, start_at_layer=None, stop_at_layer=None,
          unroll: bool | int | None = None, attention_mask=None) -> jax.stages.Lowered:
    """The program ``run_with_cache`` (or, with ``names=False``, ``run_with_hooks``) would run.

    For inspection: ``.compile()`` (compile time, ``memory_analysis()``, ``cost_analysis()``),
    ``.as_text()`` (the HLO). ``params`` and ``tokens`` may be ``jax.ShapeDtypeStruct``s.
    """
    concrete = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype)
                            if isinstance(x, jax.ShapeDtypeStruct) else x, tokens)
    prep = prepare(model, params, concrete, names, hooks, start_at_layer, stop_at_layer)
    mask = validate_attention_mask(model, attention_mask, concrete)
    return _forward.lower(params, tokens, prep.leaves, mask, model=model, plan=prep.plan,
                          hook_static=(prep.treedef, prep.static_leaves),
                          unroll=_unroll(unroll))


def hook_names_where(model: HookedModel, predicate: Callable[[str], bool]) -> list[str]:
    """The model's activation names that satisfy ``predicate``, in forward order."""
    return [n for n in model.hook_names() if predicate(n)]
