"""What users pass as ``hooks=``, made uniform: chains of hooks per point and layer, and ``At``.

A hook is a jinterp intervention (a pytree of arrays, :mod:`jinterp.interventions`) or a pure
function of the activation. ``hooks`` maps an activation name to one hook or a list applied in
order; a list of ``(name, hook)`` pairs (TransformerLens's ``fwd_hooks``) works too, and so does
a predicate ``name -> bool`` in place of a name. A function may take TransformerLens's two
arguments ``fn(activation, hook)``: it then receives a :class:`HookInfo` with the ``name`` and
``layer`` of the activation (``hook.layer()`` works as in TransformerLens).

**The layer as data.** ``jinterp.At(layer, intervention)`` under a point name without a layer
(``{"hook_resid_pre": At(l, Patch(values, pos=p))}``) applies at layer ``l``, where ``l`` is an
int, an int array (every listed layer) or a traced value, so a layer x position sweep is
``vmap(vmap(...))`` over integer arrays: one program. Fields of the intervention that may vary
by layer (``Intervention.layered_fields``: Patch values, steering vectors, ...) may carry a
leading ``[layer]`` axis of size ``n_layers``, stacked like ``cache.stack(point)``; the
intervention then uses its slice at the layer it is applied at. A field counts as stacked when
it has one axis more than the activation (and that axis has ``n_layers`` entries), or always
with ``At(..., stacked=True)`` (needed for broadcast fields such as a ``[layer, d_model]``
steering vector).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Union

import jax.numpy as jnp
import numpy as np
from flax import struct
from jaxtyping import Array, Int

from jinterp.checks import is_host_value
from jinterp.interventions import Intervention, apply_intervention
from jinterp.names import Axes, split_name, unknown_name_error

#: What a port's forward calls at each named activation: ``hook(point, x) -> x``.
HookFn = Callable[[str, Array], Array]

Hook = Union[Intervention, Callable[..., Array]]
Hooks = Union[Mapping, Iterable, None]  # {name: hook | [hooks]} or [(name, hook), ...]


class LayerIndex(int):
    """An int that can also be called, so TransformerLens's ``hook.layer()`` keeps working."""

    def __call__(self) -> int:
        return int(self)


@dataclasses.dataclass(frozen=True)
class HookInfo:
    """What a two-argument hook function ``fn(activation, hook)`` receives.

    Attributes:
        name: the full activation name (``blocks.3.attn.hook_z``); under ``At`` with a traced
            layer, the point name (``attn.hook_z``).
        layer: the block index (an int that is also callable, as TransformerLens's
            ``hook.layer()``), a traced scalar under ``At``, or None outside the blocks.
        earlier: this block's activations computed before this one in the same forward, by
            point (``"ln2.hook_normalized"``), after their own hooks; empty outside the
            blocks. A hook that writes one activation from another reads it here, e.g. a
            transcoder's splice on ``hook_mlp_out`` reads the MLP's input.
    """

    name: str
    layer: Any = None
    earlier: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@struct.dataclass
class At:
    """Apply ``intervention`` (one hook or a list, in order) at block ``layer``.

    Args:
        layer: an int, an int array (apply at each listed layer) or a traced scalar.
        intervention: a hook (intervention or function) or a sequence of hooks.
        stacked: whether the intervention's ``layered_fields`` carry a leading ``[layer]``
            axis; ``None`` decides by rank (one axis more than the activation).
    """

    layer: int | Int[Array, ""] | Int[Array, " n"]
    intervention: Any
    stacked: bool | None = struct.field(pytree_node=False, default=None)

    def chain(self) -> tuple[Hook, ...]:
        """The hooks to apply, in order."""
        iv = self.intervention
        return tuple(iv) if isinstance(iv, (list, tuple)) else (iv,)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One normalised hook entry: a chain at one point.

    ``layer`` is the block index of a per-name hook (``blocks.3.attn.hook_z``), ``None`` for a
    top-level point (``hook_embed``) or for an ``At`` entry (``at`` is True; the chain is then
    the single ``At`` object).
    """

    point: str
    layer: int | None
    chain: tuple[Any, ...]
    at: bool = False


def _is_hook(h) -> bool:
    return isinstance(h, (Intervention, At)) or callable(h)


def _as_chain(name, hook) -> tuple[Any, ...]:
    chain = tuple(hook) if isinstance(hook, (list, tuple)) else (hook,)
    for h in chain:
        if not _is_hook(h):
            raise TypeError(
                f"The hook for {name!r} is a {type(h).__name__}; a hook must be a function "
                "activation -> activation (or fn(activation, hook) as in TransformerLens), a "
                "jinterp intervention (Patch, ZeroAblate, Steer, ...) or jinterp.At(layer, ...).")
    return chain


def _pairs(hooks: Hooks) -> list[tuple[Any, Any]]:
    if hooks is None:
        return []
    if isinstance(hooks, Mapping):
        return list(hooks.items())
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise TypeError(f"hooks must be a dict {{name: hook}} or a list of (name, hook) pairs; "
                        f"got {type(hooks).__name__}.")
    pairs = []
    for item in hooks:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(
                f"Each entry of a hooks list must be a (name, hook) pair, got {item!r}. To cache "
                "activations pass names=[...] to run_with_cache; to hook one, pass "
                "hooks={name: fn} or hooks=[(name, fn)].")
        pairs.append(tuple(item))
    return pairs


def normalise_hooks(hooks: Hooks, top_points: Sequence[str], block_points: Sequence[str],
                    names: list[str]) -> list[Entry]:
    """``hooks`` as a list of :class:`Entry`, in the order given, with every name checked.

    Args:
        hooks: ``{name: hook | [hooks]}``, ``[(name, hook), ...]``; a name may be a predicate
            ``name -> bool`` (every matching full name) or a block point without a layer
            (``"attn.hook_z"``), which takes ``At`` hooks only.
        top_points / block_points: the model's points.
        names: every full activation name of the model.
    """
    entries: list[Entry] = []
    block_set, top_set = set(block_points), set(top_points)
    for key, hook in _pairs(hooks):
        chain = _as_chain(key, hook)
        if callable(key) and not isinstance(key, str):
            entries += [_named_entry(n, chain) for n in names if key(n)]
            continue
        if not isinstance(key, str):
            raise TypeError(f"A hook's name must be a string or a predicate, got {key!r}.")
        if key in block_set:
            entries += [_at_entry(key, h) for h in chain]
            continue
        if key not in top_set and split_name(key)[1] not in block_set:
            raise unknown_name_error(key, [*names, *block_points])
        entries.append(_named_entry(key, chain))
    return entries


def _at_entry(point: str, hook) -> Entry:
    if not isinstance(hook, At):
        raise TypeError(
            f"{point!r} names a block point without a layer: wrap the hook as "
            f"jinterp.At(layer, hook) (the layer may be traced), or name one layer, "
            f"e.g. 'blocks.0.{point}'.")
    return Entry(point, None, (hook,), at=True)


def _named_entry(name: str, chain: tuple) -> Entry:
    layer, point = split_name(name)
    if any(isinstance(h, At) for h in chain):
        if layer is None:
            raise TypeError(f"jinterp.At applies to block points; {name!r} is outside the "
                            "blocks: pass its hook directly.")
        raise TypeError(f"jinterp.At goes under a point name without a layer (e.g. "
                        f"{point!r}), not under {name!r}.")
    return Entry(point, layer, chain)


# ------------------------------------------------------------------------------- applying
@functools.lru_cache(maxsize=1024)
def _takes_info(fn) -> bool:
    """Whether a hook function takes TransformerLens's second ``hook`` argument."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    params = list(params)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    named_hook = len(positional) >= 2 and positional[1].name == "hook"
    return len(required) >= 2 or named_hook or any(
        p.name == "hook" and p.kind is p.KEYWORD_ONLY for p in params)


def apply_hook(hook: Hook, x: Array, axes: Axes, info: HookInfo) -> Array:
    """Applies one hook; checks it kept the activation's shape, keeps its dtype."""
    if isinstance(hook, Intervention):
        out = apply_intervention(hook, x, axes, info.name)
    else:
        try:
            takes_info = _takes_info(hook)
        except TypeError:  # unhashable callables
            takes_info = False
        out = hook(x, info) if takes_info else hook(x)
    if not hasattr(out, "shape") or out.shape != x.shape:
        got = getattr(out, "shape", type(out).__name__)
        raise ValueError(f"The hook on {info.name!r} returned shape {got}; it must keep the "
                         f"activation's shape {x.shape} (return the new activation).")
    return out.astype(x.dtype) if out.dtype != x.dtype else out


def apply_chain(chain: Sequence[Hook], x: Array, axes: Axes, info: HookInfo) -> Array:
    """Applies hooks in order."""
    for hook in chain:
        x = apply_hook(hook, x, axes, info)
    return x


# ----------------------------------------------------------------------------------- At
def layered(at: At, x_ndim: int, n_layers: int) -> tuple[bool, ...]:
    """For each hook of ``at``'s chain, whether its layered fields are stacked over layers."""
    flags = []
    for hook in at.chain():
        fields = getattr(hook, "layered_fields", ())
        arrays = [getattr(hook, f) for f in fields if getattr(hook, f) is not None]
        if at.stacked is None:
            flag = any(np.ndim(a) == x_ndim + 1 for a in arrays)
        else:
            flag = bool(at.stacked) and bool(arrays)
        if flag:
            for f in fields:
                a = getattr(hook, f)
                if a is not None and (np.ndim(a) == 0 or np.shape(a)[0] != n_layers):
                    raise ValueError(
                        f"At(...) {type(hook).__name__}.{f} of shape {np.shape(a)} is used as "
                        f"stacked over layers, so its leading axis must have the model's "
                        f"{n_layers} layers (as cache.stack(point) gives).")
        flags.append(flag)
    return tuple(flags)


def check_at_layers(at: At, n_layers: int, run: range, point: str) -> None:
    """Concrete layers of ``at`` must exist and lie in the layers this call runs."""
    layer = at.layer
    if not is_host_value(layer):
        return
    values = np.atleast_1d(np.asarray(layer))
    if not np.issubdtype(values.dtype, np.integer) or values.ndim != 1:
        raise TypeError(f"At layer must be an int or a 1-D int array, got {layer!r}.")
    bad = [int(v) for v in values if not 0 <= v < n_layers]
    if bad:
        raise ValueError(f"At(layer={bad[0]}) on {point!r} is outside the model's layers "
                         f"0..{n_layers - 1}.")
    outside = [int(v) for v in values if v not in run]
    if outside:
        raise ValueError(f"At(layer={outside[0]}) on {point!r} is outside the layers this call "
                         f"runs ({run.start}..{run.stop - 1}); change start_at_layer / "
                         "stop_at_layer or the layer.")


def at_chain(at: At, flags: tuple[bool, ...], layer: Int[Array, ""] | int) -> tuple[Hook, ...]:
    """``at``'s hooks with stacked layered fields sliced at ``layer``."""
    return tuple(h.at_layer(layer) if flag else h for h, flag in zip(at.chain(), flags))


def at_active(at: At, layer: Int[Array, ""] | int) -> Array:
    """Whether ``at`` applies at (traced) ``layer``."""
    return jnp.any(jnp.asarray(at.layer) == layer)
