"""The activation store: token batches -> a port's activations -> a shuffle buffer on device.

SAE training on a real model reads activations at one (or several) named points. The store
runs the port only as far as it must (``stop_at_layer`` = the deepest hook's layer + 1: no
later blocks, no unembedding), flattens ``[batch, pos, ...]`` to token rows, drops excluded
positions (BOS, padding: by id, and optionally position 0), and appends the rest to a buffer
that stays on the device. Every push reshuffles the buffer's rows, and :meth:`pop` takes rows
from it, so a training batch mixes tokens from many forward passes (consecutive tokens of a
document are strongly correlated; the buffer is what makes SGD see i.i.d.-looking batches).

Everything that changes lives in one pytree, :class:`StoreState` (the buffer, its fill level,
a PRNG key and the index of the next token batch), which the trainer checkpoints with the SAE:
a resumed run sees the same buffer and then the same tokens. :meth:`push` and :meth:`pop` are
jitted pure functions; the host never reads the buffer: it decides when to push from the token
ids alone (the number of kept positions is a function of the ids, computed in numpy), so the
LM forward, the buffer and the SAE step are dispatched asynchronously, without round trips.

Several hooks share one forward and one permutation: row ``i`` of every hook's buffer is the
same token (what a crosscoder or several SAEs on one pass need). Per-head points
(``attn.hook_z``, ``[batch, pos, n_heads, d_head]``) are flattened to ``n_heads * d_head``
(SAELens's ``hook_z`` reshape) or, with ``head=h``, give one head's ``d_head`` columns.

With ``checkpoints=n`` the store runs the same port with ``n`` parameter sets (checkpoints of
one model: base and fine-tuned) on the same tokens, ``params`` is then a sequence of them, and
the buffer keys are ``"{i}/{hook}"``: row ``i`` is still the same token in every buffer (what a
two-model crosscoder for model diffing reads).

With ``mesh=`` (a ``data x model`` mesh, possibly over several processes) the forward is
data-parallel: each process loads only its rows of every token batch
(:func:`jinterp.distributed.local_rows`), the rows form one global ``[batch, pos]`` array split
over ``data``, the port's parameters are replicated, and the buffer's rows are split over
``data`` too. The programs are the same functions; only their inputs' and outputs' shardings
change, so the buffer holds exactly the single-device rows in the same order. The kept-row
count of a push then needs every process's tokens: with excluded ids it is summed across
processes (one tiny host collective per push); without, it is known from the shape alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, Int, UInt32

from jinterp import distributed
from jinterp.model import HookedModel
from jinterp.names import split_name
from jinterp.run import _forward, make_cache, prepare
from jinterp.sae.config import pytree_dataclass
from jinterp.sae.sources import TokenSource


@dataclasses.dataclass(frozen=True)
class HookSpec:
    """One activation the store reads.

    Attributes:
        name: the full activation name, e.g. ``blocks.3.hook_resid_post``.
        head: for per-head points ``[batch, pos, n_heads, d_head]``: None flattens the heads
            (``n_heads * d_head`` columns, SAELens's ``reshape_activations="hook_z"``), an int
            keeps that head's ``d_head`` columns.
    """

    name: str
    head: int | None = None

    @property
    def key(self) -> str:
        """The buffer's key: the name, plus ``:h`` for one head."""
        return self.name if self.head is None else f"{self.name}:{self.head}"


def as_hook_spec(hook: str | HookSpec) -> HookSpec:
    """A :class:`HookSpec` from a spec or a name (``name:h`` selects head ``h``)."""
    if isinstance(hook, HookSpec):
        return hook
    name, _, head = hook.partition(":")
    return HookSpec(name, int(head) if head else None)


def checkpoint_key(i: int, key: str, n_checkpoints: int) -> str:
    """The buffer key of hook ``key`` of checkpoint ``i``: ``key`` itself for one checkpoint,
    ``"{i}/{key}"`` for several."""
    return key if n_checkpoints == 1 else f"{i}/{key}"


def token_mask(tokens: Int[np.ndarray | Array, "batch pos"], exclude_ids: tuple[int, ...],
               exclude_first: bool) -> Bool[np.ndarray | Array, "batch pos"]:
    """Kept positions: not one of ``exclude_ids`` and, with ``exclude_first``, not position 0.

    Works on numpy (the host's bookkeeping) and jax arrays (inside the push) alike.
    """
    xp = jnp if isinstance(tokens, jax.Array) else np
    keep = xp.ones(tokens.shape, bool)
    for token_id in exclude_ids:
        keep = keep & (tokens != token_id)
    if exclude_first:
        keep = keep & (xp.arange(tokens.shape[1]) > 0)[None, :]
    return keep


@pytree_dataclass
class StoreState:
    """Everything that changes in the store (checkpoint it with the training state).

    Attributes:
        rows: per hook key, the buffer ``[capacity, d]``; rows ``[0, fill)`` are live.
        fill: number of live rows.
        key: PRNG key (raw uint32[2]) of the shuffles.
        next_batch: index of the next token batch to read from the source.
    """

    rows: dict[str, Float[Array, "n d"]]
    fill: Int[Array, ""]
    key: UInt32[Array, "2"]
    next_batch: Int[Array, ""]


class ActivationStore:
    """Streams a port's activations at ``hooks`` into a shuffle buffer on the device.

    Args:
        model: a port.
        hooks: activation names or :class:`HookSpec` s (``"blocks.1.attn.hook_z:2"``: head 2).
        source: a :class:`~jinterp.sae.sources.TokenSource` (its batch shape is the forward's).
        batch_size: rows per :meth:`pop` (the SAE's batch).
        buffer_batches: capacity in forward passes: ``capacity = buffer_batches * batch *
            pos`` rows (at least two pushes plus one pop).
        exclude_ids: token ids whose positions are dropped (BOS, EOS, padding).
        exclude_first: also drop position 0 whatever its id (the attention sink).
        seed: seeds the shuffles.
        dtype: the buffer's dtype (activations are cast to it).
        checkpoints: run the model with this many parameter sets (``params`` becomes a
            sequence of them at every push); buffer keys ``"{i}/{hook}"`` (see the module
            docstring).
        mesh: a mesh with a ``data`` axis (see the module docstring): token batches and the
            buffer split over it; None: one device.
    """

    def __init__(self, model: HookedModel, hooks: str | HookSpec | Sequence[str | HookSpec],
                 source: TokenSource, *, batch_size: int, buffer_batches: int = 8,
                 exclude_ids: Sequence[int] = (), exclude_first: bool = False, seed: int = 0,
                 dtype: str = "float32", checkpoints: int = 1,
                 mesh: Mesh | None = None):
        hooks = [hooks] if isinstance(hooks, (str, HookSpec)) else list(hooks)
        if not hooks:
            raise ValueError("the store needs at least one hook name")
        self.model, self.source, self.seed = model, source, seed
        self.hooks = tuple(as_hook_spec(h) for h in hooks)
        self.exclude_ids = tuple(int(i) for i in exclude_ids)
        self.exclude_first = exclude_first
        self.batch_size, self.dtype = batch_size, jnp.dtype(dtype)
        self.forward_shape = (source.batch_size, source.seq_len)
        if not isinstance(checkpoints, int) or checkpoints < 1:
            raise ValueError(f"checkpoints must be a positive int, got {checkpoints!r}.")
        self.checkpoints = checkpoints
        self.widths = {checkpoint_key(i, h.key, checkpoints): self._width(h)
                       for i in range(checkpoints) for h in self.hooks}
        self.push_rows = source.batch_size * source.seq_len
        self.capacity = max(buffer_batches * self.push_rows, 2 * self.push_rows + batch_size)
        layers = [split_name(h.name)[0] for h in self.hooks]
        final = any(h.name.startswith("ln_final") for h in self.hooks)
        #: The store's ``stop_at_layer``: the deepest hook's layer + 1 (None: the final norm).
        self.stop_at_layer = None if final else max((l + 1 for l in layers if l is not None),
                                                    default=0)
        self.mesh = mesh
        if mesh is not None:
            self._check_mesh(mesh, buffer_batches)

    def _check_mesh(self, mesh: Mesh, buffer_batches: int) -> None:
        if "data" not in mesh.axis_names:
            raise ValueError(f"the store splits tokens over a 'data' mesh axis; this mesh has "
                             f"axes {mesh.axis_names}.")
        n = mesh.shape["data"]
        for what, rows, fix in (
                ("the forward batch", self.forward_shape[0], "the sequences per forward"),
                ("the SAE batch", self.batch_size, "batch_size"),
                ("the buffer", self.capacity, "buffer_batches")):
            if rows % n:
                raise ValueError(f"{what} ({rows} rows) does not split over the mesh's data axis "
                                 f"of {n}: make {fix} a multiple of {n}.")

    # ------------------------------------------------------------------ declarations
    def _width(self, hook: HookSpec) -> int:
        names = self.model.hook_names()
        if hook.name not in names:
            close = difflib.get_close_matches(hook.name, names, n=5, cutoff=0.5)
            raise KeyError(f"{hook.name!r} is not an activation of this "
                           f"{type(self.model).__name__}; closest names: {close} (all: "
                           "model.hook_names()).")
        axes = self.model.points[split_name(hook.name)[1]]
        dims = self.model.dims
        if axes[:2] != ("batch", "pos") or len(axes) not in (3, 4):
            raise ValueError(f"{hook.name!r} has axes {axes}; the store reads per-token "
                             "activations [batch, pos, d] or [batch, pos, heads, d_head].")
        if len(axes) == 3:
            if hook.head is not None:
                raise ValueError(f"{hook.name!r} has no head axis (axes {axes}); drop the "
                                 f"head={hook.head}.")
            return 1 if axes[2] == "1" else dims[axes[2]]
        n_heads, d_head = dims[axes[2]], dims[axes[3]]
        if hook.head is None:
            return n_heads * d_head
        if not 0 <= hook.head < n_heads:
            raise ValueError(f"head={hook.head} is outside [0, {n_heads}) for {hook.name!r}.")
        return d_head

    def all_activations(self, params, tokens: Int[Array, "batch pos"]
                        ) -> dict[str, Float[Array, "batch pos d"]]:
        """:meth:`activations` under the buffer keys, for every checkpoint's parameters."""
        if self.checkpoints == 1:
            return self.activations(params, tokens)
        if not isinstance(params, (list, tuple)) or len(params) != self.checkpoints:
            raise ValueError(f"this store reads {self.checkpoints} checkpoints: pass params as a "
                             f"sequence of {self.checkpoints} parameter sets.")
        return {checkpoint_key(i, k, self.checkpoints): v for i, p in enumerate(params)
                for k, v in self.activations(p, tokens).items()}

    def kept(self, tokens: Int[np.ndarray, "batch pos"]) -> int:
        """How many rows a push of ``tokens`` adds (host side, from the ids alone)."""
        return int(token_mask(tokens, self.exclude_ids, self.exclude_first).sum())

    def _kept_global(self, local: Int[np.ndarray, "batch pos"], rows: slice) -> int:
        """:meth:`kept` of the whole batch from this process's rows of it (``rows``).

        Processes whose devices share a ``data`` slice load the same rows: each block of rows
        is counted once.
        """
        if jax.process_count() == 1:
            return self.kept(local)
        if not self.exclude_ids:  # a function of the shape alone: no collective
            per_row = self.forward_shape[1] - (1 if self.exclude_first else 0)
            return self.forward_shape[0] * per_row
        from jax.experimental import multihost_utils

        mine = np.asarray([rows.start, rows.stop, self.kept(local)], np.int64)
        blocks = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 3)
        return int(sum({(a, b): n for a, b, n in blocks.tolist()}.values()))

    def load(self, index: int) -> tuple[Int[Array, "batch pos"], int]:
        """Token batch ``index`` on the device(s) and its kept-row count.

        With a mesh each process reads only its rows (``source.batch_rows(index, rows)`` when
        the source has it, else rows of ``source.batch(index)``) and they are assembled into
        one global array split over ``data``.
        """
        if self.mesh is None:
            tokens = self.source.batch(index)
            return jnp.asarray(tokens), self.kept(tokens)
        n_rows = self.forward_shape[0]
        rows = distributed.local_rows(n_rows, self.mesh, PartitionSpec("data"))
        read = getattr(self.source, "batch_rows", None)
        local = np.asarray(read(index, rows) if read is not None
                           else self.source.batch(index)[rows], np.int32)
        tokens = distributed.global_batch(local, self.mesh, PartitionSpec("data"), n_rows)
        return tokens, self._kept_global(local, rows)

    # ------------------------------------------------------------------ state
    def init(self) -> StoreState:
        """An empty buffer at token batch 0 (with a mesh: rows split over ``data``)."""
        if self.mesh is not None:
            return jax.jit(self._empty, out_shardings=self.state_shardings())()
        return self._empty()

    def state_shardings(self) -> StoreState:
        """A :class:`StoreState` of ``NamedSharding`` s (rows over ``data``, the rest
        replicated); raises without a mesh."""
        if self.mesh is None:
            raise ValueError("a store without a mesh has no shardings")
        rows = NamedSharding(self.mesh, PartitionSpec("data", None))
        rep = NamedSharding(self.mesh, PartitionSpec())
        return StoreState(rows={k: rows for k in self.widths}, fill=rep, key=rep,
                          next_batch=rep)

    def _empty(self) -> StoreState:
        return StoreState(
            rows={k: jnp.zeros((self.capacity, d), self.dtype) for k, d in self.widths.items()},
            fill=jnp.zeros((), jnp.int32), key=jax.random.PRNGKey(self.seed),
            next_batch=jnp.zeros((), jnp.int32))

    @functools.cached_property
    def _prepared(self):
        names = sorted({h.name for h in self.hooks})
        # params only matter to prepare() for a residual input (start_at_layer): not here
        return prepare(self.model, None, np.zeros(self.forward_shape, np.int32), names, None,
                       None, self.stop_at_layer)

    def activations(self, params, tokens: Int[Array, "batch pos"]
                    ) -> dict[str, Float[Array, "batch pos d"]]:
        """Each hook's activation ``[batch, pos, d]`` (heads flattened or selected), traceable.

        Runs blocks ``0 .. stop_at_layer - 1`` only. Token ids are checked on the host by the
        source (and here when ``tokens`` is a host array), never inside the program.
        """
        prep = self._prepared
        _, top, stacked = _forward(params, tokens, prep.leaves, model=self.model,
                                   plan=prep.plan, hook_static=(prep.treedef,
                                                                prep.static_leaves), unroll=1)
        cache = make_cache(self.model, prep.plan, prep.capture, top, stacked)
        out = {}
        for hook in self.hooks:
            act = cache[hook.name]
            if act.ndim == 4:
                act = act.reshape(act.shape[:2] + (-1,)) if hook.head is None else \
                    act[:, :, hook.head]
            out[hook.key] = act
        return out

    # ------------------------------------------------------------------ the two programs
    def push(self, params, state: StoreState, tokens: Int[Array, "batch pos"]) -> StoreState:
        """Adds the kept positions of one token batch and reshuffles the live rows (jitted).

        The caller guarantees ``fill + push_rows <= capacity`` (:meth:`needs_push` does).
        """
        if tokens.shape != self.forward_shape:
            raise ValueError(f"push got tokens of shape {tokens.shape}; this store runs "
                             f"forwards of shape {self.forward_shape}.")
        return _push(self, params, state, tokens)

    def pop(self, state: StoreState) -> tuple[dict[str, Float[Array, "batch d"]], StoreState]:
        """Takes ``batch_size`` rows (jitted); the caller guarantees ``fill >= batch_size``."""
        return _pop(self, state)

    # ------------------------------------------------------------------ host bookkeeping
    def needs_push(self, fill: int) -> bool:
        """Push before the next pop while a whole forward still fits (keeps the buffer full)."""
        return fill + self.push_rows <= self.capacity

    def fill(self, params, state: StoreState, fill: int, next_batch: int
             ) -> tuple[StoreState, int, int]:
        """Pushes until the next pop leaves the buffer well mixed (as full as a forward allows).

        ``fill`` / ``next_batch`` are the host's mirrors of the state's (returned updated):
        the host counts the kept positions of each token batch itself, so nothing is read back
        from the device and the pushes are dispatched asynchronously.
        """
        while self.needs_push(fill) or fill < self.batch_size:
            if not self.needs_push(fill):
                raise ValueError(f"the buffer of {self.capacity} rows cannot hold a batch of "
                                 f"{self.batch_size} rows: raise buffer_batches.")
            tokens, kept = self.load(next_batch)
            state = self.push(params, state, tokens)
            if self.mesh is not None and jax.process_count() > 1:
                jax.block_until_ready(state)  # one program at a time (see train_on_model)
            fill, next_batch = fill + kept, next_batch + 1
        return state, fill, next_batch

    def next_batch(self, params, state: StoreState, fill: int, next_batch: int
                   ) -> tuple[dict[str, Float[Array, "batch d"]], StoreState, int, int]:
        """:meth:`fill`, then :meth:`pop`: ``(batch, state, fill, next_batch)``."""
        state, fill, next_batch = self.fill(params, state, fill, next_batch)
        batch, state = self.pop(state)
        return batch, state, fill - self.batch_size, next_batch

    def _static_key(self) -> tuple:
        """What the jitted push / pop depend on (not the source, nor the seed: data)."""
        return (self.model, self.hooks, self.exclude_ids, self.exclude_first, self.batch_size,
                str(self.dtype), self.forward_shape, self.capacity, self.checkpoints,
                self.mesh)

    def constrain_rows(self, rows: Float[Array, "n d"]) -> Float[Array, "n d"]:
        """Inside a program: keeps buffer rows split over ``data`` (a no-op without a mesh)."""
        if self.mesh is None:
            return rows
        return jax.lax.with_sharding_constraint(
            rows, NamedSharding(self.mesh, PartitionSpec("data", None)))

    def __hash__(self) -> int:  # a static argument of jit: equal stores share programs
        return hash(self._static_key())

    def __eq__(self, other) -> bool:
        return isinstance(other, ActivationStore) and self._static_key() == other._static_key()


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _push(store: ActivationStore, params, state: StoreState,
          tokens: Int[Array, "batch pos"]) -> StoreState:
    acts = store.all_activations(params, tokens)
    keep = token_mask(tokens, store.exclude_ids, store.exclude_first).reshape(-1)
    order = jnp.argsort(~keep, stable=True)  # kept rows first, in token order
    n_new = jnp.sum(keep, dtype=jnp.int32)
    key, shuffle_key = jax.random.split(state.key)
    fill = state.fill + n_new
    live = jnp.arange(store.capacity) < fill
    perm = jnp.argsort(jnp.where(live, jax.random.uniform(shuffle_key, (store.capacity,)), 2.0))
    rows = {}
    for name, buf in state.rows.items():
        new = acts[name].reshape(-1, buf.shape[1]).astype(buf.dtype)[order]
        buf = jax.lax.dynamic_update_slice(buf, new, (state.fill, 0))
        rows[name] = store.constrain_rows(buf[perm])
    return StoreState(rows=rows, fill=fill, key=key, next_batch=state.next_batch + 1)


def pop_rows(store: ActivationStore, state: StoreState
             ) -> tuple[dict[str, Float[Array, "batch d"]], StoreState]:
    """The un-jitted pop: the last ``batch_size`` live rows (live rows are in random order
    after every push, so these are a uniform draw); the trainer fuses it with the SAE step."""
    start = state.fill - store.batch_size
    out = {name: jax.lax.dynamic_slice_in_dim(buf, start, store.batch_size)
           for name, buf in state.rows.items()}
    return out, state.replace(fill=start)


_pop = jax.jit(pop_rows, static_argnums=0, donate_argnums=1)
