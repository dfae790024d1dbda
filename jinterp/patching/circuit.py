"""Circuits as interventions: an edge mask over the node graph, run as one forward pass.

A circuit is a subgraph of the node graph of :mod:`jinterp.patching.attr_graph` (edges from
outputs -- the embedding, heads, MLPs -- to inputs -- each head's query, key and value, each
MLP's input, the final residual). Running it means: the clean prompt flows through the model,
but every edge *outside* the circuit carries the value its upstream node had on the corrupted
prompt (Conmy et al. 2023, ACDC; Wang et al. 2022 call it "path patching" of the complement).
A mask entry ``m`` in ``[0, 1]`` interpolates, so masks can be learned by gradient descent
(:mod:`jinterp.patching.edge_mask`)::

    input_d = sum over upstream u of  m_ud * out_u(circuit run) + (1 - m_ud) * out_u(corrupted)
              (+ the biases, which both runs share)
            = resid_d(corrupted) + sum_u m_ud * (out_u(circuit run) - out_u(corrupted))

where ``resid_d(corrupted)`` is the corrupted run's residual where ``d`` reads it (the second
line is how it is computed: one ``[n_up, n_down]`` matrix product per layer). ``out_u`` is a
head's ``attn.hook_result``, an MLP's ``hook_mlp_out`` and, for the embedding, the residual
entering block 0; the attention output bias belongs to no head and is in both runs.

**One forward per circuit, layer by layer.** The port's own block computes everything, so
LayerNorm / RMSNorm, biases, RoPE, GQA and gated MLPs need no special case: for layer ``l``

1. every q, k and v input slot gets its own residual (``[n_heads + 2 n_kv_heads, batch, pos,
   d_model]``) and the block, vmapped over the slots and traced only up to ``hook_q`` /
   ``hook_k`` / ``hook_v``, turns each into its query, key or value (its own head kept);
2. the block runs with ``hook_q/k/v`` patched to those values and yields every head's output;
3. the MLP reads its own masked residual (``hook_resid_mid`` patched) and yields its output.

The final residual then goes through the unembedding. The whole run is a pure function of the
mask, so a batch of circuits is a ``vmap`` (:mod:`jinterp.patching.acdc` evaluates every
candidate edge removal of a node in one call) and ``jax.grad`` flows into the mask. The cost
is one block for the heads, one for the MLP and ``n_heads + 2 n_kv_heads`` q/k/v projections
per layer (the ports expose no per-head input hook, so each slot projects all heads and keeps
its own: wasteful on wide models, negligible on the toy ones circuits are usually found on).

Post-norm models (Gemma 2 / 3) normalise each layer's summed attention output before it joins
the residual, so a head's contribution is not separable and they are refused.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from jinterp.loop import BlockHook
from jinterp.model import HookedModel
from jinterp.names import block_name
from jinterp.patching.attr_checks import MetricFn, same_shape, scalar_metric
from jinterp.patching.attr_graph import Node, check_node, downstream_nodes, has_mlp, upstream_nodes
from jinterp.patching.eap import edge_index
from jinterp.plan import split_leaves
from jinterp.run import _rebuild, run_with_cache, run_with_hooks


# ------------------------------------------------------------------------------- the pytree
@struct.dataclass
class Circuit:
    """An edge mask over ``edge_index(model)``'s edges: 1 keeps an edge, 0 corrupts it.

    A registered pytree: ``mask`` is its only leaf (so a stack of circuits is a ``vmap``-able
    batch and ``jax.grad`` reaches the mask); the model is static metadata that names the
    edges. Build circuits with :meth:`full`, :meth:`empty` or :meth:`from_edges`.

    Attributes:
        mask: ``[n]`` float32 in ``[0, 1]``, one entry per row of ``edge_index(model)``.
        model: the port whose node graph the mask indexes (static).
    """

    mask: Float[Array, "... n"]
    model: HookedModel = struct.field(pytree_node=False)

    # ----------------------------------------------------------------------- builders
    @classmethod
    def full(cls, model: HookedModel) -> Circuit:
        """Every edge kept: runs as the clean model."""
        return cls(jnp.ones(len(edge_index(model)), jnp.float32), model)

    @classmethod
    def empty(cls, model: HookedModel) -> Circuit:
        """No edge kept: runs as the corrupted model."""
        return cls(jnp.zeros(len(edge_index(model)), jnp.float32), model)

    @classmethod
    def from_edges(cls, model: HookedModel, edges: Iterable[tuple[Node, Node]]) -> Circuit:
        """The circuit that keeps exactly ``edges``: ``[(Node.head(0, 1), Node.k(1, 0)), ...]``."""
        mask = np.zeros(len(edge_index(model)), np.float32)
        mask[[_edge_position(model, up, down) for up, down in edges]] = 1.0
        return cls(jnp.asarray(mask), model)

    @classmethod
    def from_mask(cls, model: HookedModel, mask: Float[ArrayLike, " n"]) -> Circuit:
        """A circuit from an ``[n_edges]`` mask (checked: length and range)."""
        mask = jnp.asarray(mask, jnp.float32)
        n = len(edge_index(model))
        if mask.shape != (n,):
            raise ValueError(f"A mask for this model has shape ({n},) (one entry per edge of "
                             f"edge_index(model)); got shape {mask.shape}.")
        return cls(mask, model)

    # ----------------------------------------------------------------------- reading
    @property
    def n_edges(self) -> int:
        """How many edges are kept (mask > 0.5)."""
        return int(np.sum(np.asarray(self.mask) > 0.5))

    @property
    def n_total(self) -> int:
        """How many edges the model's graph has."""
        return int(np.shape(self.mask)[-1])

    def edges(self) -> list[tuple[Node, Node]]:
        """The kept edges (mask > 0.5) as ``(upstream, downstream)`` nodes, in graph order."""
        up, down, index = (upstream_nodes(self.model), downstream_nodes(self.model),
                           edge_index(self.model))
        keep = np.flatnonzero(np.asarray(self.mask) > 0.5)
        return [(up[index[i, 0]], down[index[i, 1]]) for i in keep]

    def nodes(self) -> list[Node]:
        """The nodes touched by a kept edge: outputs (forward order), then inputs."""
        edges = self.edges()
        ups, downs = {u for u, _ in edges}, {d for _, d in edges}
        return ([n for n in upstream_nodes(self.model) if n in ups] +
                [n for n in downstream_nodes(self.model) if n in downs])

    def weight(self, up: Node, down: Node) -> float:
        """The mask entry of edge ``up -> down``."""
        return float(np.asarray(self.mask)[_edge_position(self.model, up, down)])

    # ----------------------------------------------------------------------- editing
    def with_edges(self, edges: Iterable[tuple[Node, Node]], value: float) -> Circuit:
        """A copy with the mask of ``edges`` set to ``value`` (0 removes, 1 adds)."""
        positions = [_edge_position(self.model, u, d) for u, d in edges]
        return Circuit(jnp.asarray(self.mask).at[jnp.asarray(positions, jnp.int32)].set(value),
                       self.model)

    def binarize(self, cutoff: float = 0.5) -> Circuit:
        """Mask entries above ``cutoff`` become 1, the rest 0."""
        return Circuit((jnp.asarray(self.mask) > cutoff).astype(jnp.float32), self.model)

    def __repr__(self) -> str:
        if np.ndim(self.mask) != 1:
            return f"Circuit(mask shape {np.shape(self.mask)}, {type(self.model).__name__})"
        return f"Circuit({self.n_edges}/{self.n_total} edges of a {type(self.model).__name__})"


@functools.lru_cache(maxsize=64)
def _edge_positions(model: HookedModel) -> dict[tuple[Node, Node], int]:
    up, down = upstream_nodes(model), downstream_nodes(model)
    return {(up[i], down[j]): k for k, (i, j) in enumerate(edge_index(model))}


def _edge_position(model: HookedModel, up: Node, down: Node) -> int:
    check_node(model, up, upstream=True, role="upstream node")
    check_node(model, down, upstream=False, role="downstream node")
    position = _edge_positions(model).get((up, down))
    if position is None:
        raise ValueError(f"{up} -> {down} is not an edge of this model's graph: an output reaches "
                         "attention inputs of later layers only, the MLP input of its own layer "
                         "or later, and the final residual (see attr_graph.is_edge).")
    return position


def check_circuit(model: HookedModel, circuit) -> Circuit:
    """``circuit`` if it is a :class:`Circuit` of ``model``'s graph, else a clear error."""
    if not isinstance(circuit, Circuit):
        raise TypeError(f"Expected a jinterp.patching.Circuit, got {type(circuit).__name__}: "
                        "build one with Circuit.full(model) or Circuit.from_edges(model, edges).")
    n = len(edge_index(model))
    shape = tuple(np.shape(circuit.mask))
    if shape != (n,) or (upstream_nodes(circuit.model), downstream_nodes(circuit.model)) != (
            upstream_nodes(model), downstream_nodes(model)):
        raise ValueError(
            f"This circuit has {shape[-1] if shape else 0} edges (mask shape {shape}, made for a "
            f"{_describe(circuit.model)}), but the model is a {_describe(model)} with {n} edges: "
            "build the circuit for this model (Circuit.full(model), Circuit.from_edges(model, "
            "...)).")
    return circuit


def _describe(model: HookedModel) -> str:
    return (f"{model.n_layers}-layer {type(model).__name__} with {model.dims['n_heads']} heads, "
            f"{model.dims['n_kv_heads']} kv heads{'' if has_mlp(model) else ', no MLP'}")


def check_supported(model: HookedModel) -> None:
    """Circuits need a residual stream that is a plain sum of node outputs."""
    post = [p for p in model.block_point_axes if p.startswith(("ln1_post.", "ln2_post."))]
    if post:
        raise ValueError(
            f"{type(model).__name__} normalises each layer's attention / MLP output before it "
            f"joins the residual ({post[0]}), so a head's contribution is not an additive term "
            "and an edge cannot be patched on its own. Circuits support pre-norm models "
            "(GPT-2, Llama, Gemma 1, ...).")


# ------------------------------------------------------------------------------- the runs
@struct.dataclass
class RunInputs:
    """What a circuit run reads from the clean and corrupted runs (computed once per prompt pair).

    Attributes:
        clean_embed: the clean residual entering block 0 (the embedding node's output).
        corrupt_out: every upstream node's corrupted output, ``[n_up, batch, pos, d_model]``,
            in :func:`upstream_nodes` order.
        corrupt_resid: the corrupted residual where each layer's attention reads it
            (``hook_resid_pre``), ``[layer, batch, pos, d_model]``.
        corrupt_mid: the same for each MLP (``hook_resid_mid``); ``[layer, ...]`` of zeros on
            attention-only models (never read).
        corrupt_final: the corrupted final residual (last ``hook_resid_post``).
    """

    clean_embed: Float[Array, "batch pos d_model"]
    corrupt_out: Float[Array, "n batch pos d_model"]
    corrupt_resid: Float[Array, "layer batch pos d_model"]
    corrupt_mid: Float[Array, "layer batch pos d_model"]
    corrupt_final: Float[Array, "batch pos d_model"]


def _input_names(model: HookedModel) -> list[str]:
    n = model.n_layers
    names = [block_name(l, "hook_resid_pre") for l in range(n)]
    names += [block_name(l, "attn.hook_result") for l in range(n)]
    if has_mlp(model):
        names += [block_name(l, p) for l in range(n) for p in ("hook_resid_mid", "hook_mlp_out")]
    return names + [block_name(n - 1, "hook_resid_post")]


@functools.partial(jax.jit, static_argnames=("model",))
def run_inputs(params, clean_tokens, corrupted_tokens, *, model: HookedModel) -> RunInputs:
    """The clean embedding and the corrupted run's node outputs and residuals."""
    names = _input_names(model)
    clean_embed = run_with_hooks(model, params, clean_tokens, {}, stop_at_layer=0)
    _, c = run_with_cache(model, params, corrupted_tokens, names=names)
    rows = [c[block_name(0, "hook_resid_pre")][None]]
    for layer in range(model.n_layers):
        rows.append(jnp.moveaxis(c[block_name(layer, "attn.hook_result")], 2, 0))  # heads b p d
        if has_mlp(model):
            rows.append(c[block_name(layer, "hook_mlp_out")][None])
    resid = c.stack("hook_resid_pre")
    mid = c.stack("hook_resid_mid") if has_mlp(model) else jnp.zeros_like(resid)
    return RunInputs(clean_embed, jnp.concatenate(rows), resid, mid,
                     c[block_name(model.n_layers - 1, "hook_resid_post")])


def mask_matrix(model: HookedModel, mask: Float[Array, " n"]) -> Float[Array, "..."]:
    """The ``[n_up, n_down]`` mask (0 where two nodes share no edge)."""
    index = edge_index(model)
    out = jnp.zeros((len(upstream_nodes(model)), len(downstream_nodes(model))), mask.dtype)
    return out.at[index[:, 0], index[:, 1]].set(mask)


class _Reached(Exception):
    """Raised by a hook to stop tracing a block once the activation it needs exists."""


def _head_inputs(model, x_l, x: Float[Array, "n batch pos d_model"], point: str
                 ) -> Float[Array, "batch pos heads d_head"]:
    """``point`` (``attn.hook_q/k/v``) of head ``i`` computed by the block from its own ``x[i]``.

    The block runs once per head (vmapped) and is traced only up to ``point``: the hook raises
    once it has the value, so the rest of the block is never built (cheaper to compile).
    """
    def one(resid):
        got = {}

        def record(name, act):
            if name == point:
                got[name] = act
                raise _Reached
            return act

        try:
            model.block(resid, x_l, BlockHook(record, frozenset()))
        except _Reached:
            pass
        if point not in got:
            raise RuntimeError(f"{type(model).__name__}.block never reported {point!r}.")
        return got[point]  # batch pos heads d_head

    n = x.shape[0]
    out = jax.vmap(one)(x)  # n batch pos heads d_head
    return jnp.moveaxis(out[jnp.arange(n), :, :, jnp.arange(n)], 0, 2)  # batch pos heads d_head


def _attention_and_mlp(model, x_l, resid, qkv: dict, mlp_in
                       ) -> tuple[Float[Array, "batch pos n_heads d_model"], Array | None]:
    """One block with its q/k/v replaced and its MLP reading ``mlp_in(head outputs)``."""
    got = {}

    def hook(name, act):
        if name in qkv:
            return qkv[name].astype(act.dtype)
        if name == "attn.hook_result":
            got[name] = act
        elif name == "hook_resid_mid" and mlp_in is not None:
            return mlp_in(got["attn.hook_result"]).astype(act.dtype)
        elif name == "hook_mlp_out":
            got[name] = act
        return act

    model.block(resid, x_l, BlockHook(hook, frozenset({"attn.hook_result"})))
    return got["attn.hook_result"], got.get("hook_mlp_out")


def circuit_logits(model: HookedModel, params, mask: Float[Array, " n"],
                   inputs: RunInputs) -> Float[Array, "batch pos d_vocab"]:
    """The logits of the circuit run (pure; ``vmap`` over ``mask`` for a batch of circuits).

    The port's parts are called directly, under one ``lax.scan`` over layers (compile time flat
    in depth): per layer, ``block`` vmapped over the q, k and v slots (each slot's own residual
    in, its ``hook_q/k/v`` out; the rest of the block is dead code), then ``block`` once with
    those values patched in and the MLP's input replaced by its masked residual. The carry
    holds ``out_u(circuit run) - out_u(corrupted)`` of every upstream node, zero for nodes not
    computed yet (their mask rows are zero for earlier layers' inputs anyway).
    """
    n_heads, n_kv = model.dims["n_heads"], model.dims["n_kv_heads"]
    mlp = has_mlp(model)
    n_slots, stride = n_heads + 2 * n_kv, n_heads + 2 * n_kv + int(mlp)  # inputs per layer
    up_stride = n_heads + int(mlp)  # outputs per layer
    matrix = mask_matrix(model, mask.astype(inputs.corrupt_out.dtype))  # n_up n_down
    delta0 = jnp.zeros_like(inputs.corrupt_out).at[0].set(
        inputs.clean_embed - inputs.corrupt_out[0])  # n_up b p d

    def layer_step(delta, xs):
        x_l, layer, resid, mid = xs
        cols = lax.dynamic_slice_in_dim(matrix, layer * stride, stride, axis=1)  # n_up stride
        x = resid[None] + jnp.einsum("us,ubpd->sbpd", cols[:, :n_slots], delta)  # slots b p d
        qkv = {"attn.hook_q": _head_inputs(model, x_l, x[:n_heads], "attn.hook_q"),
               "attn.hook_k": _head_inputs(model, x_l, x[n_heads:n_heads + n_kv], "attn.hook_k"),
               "attn.hook_v": _head_inputs(model, x_l, x[n_heads + n_kv:], "attn.hook_v")}
        first = 1 + layer * up_stride  # this layer's first head row

        def with_heads(heads):
            rows = lax.dynamic_slice_in_dim(inputs.corrupt_out, first, n_heads)  # n_heads b p d
            return lax.dynamic_update_slice_in_dim(delta, jnp.moveaxis(heads, 2, 0) - rows,
                                                   first, axis=0)

        def mlp_in(heads):
            return mid + jnp.einsum("u,ubpd->bpd", cols[:, n_slots], with_heads(heads))  # b p d

        heads, mlp_out = _attention_and_mlp(model, x_l, resid, qkv, mlp_in if mlp else None)
        delta = with_heads(heads)
        if mlp:
            row = first + n_heads
            change = mlp_out - lax.dynamic_index_in_dim(inputs.corrupt_out, row, keepdims=False)
            delta = lax.dynamic_update_index_in_dim(delta, change, row, axis=0)
        return delta, None

    xs = (model.layer_inputs(params), jnp.arange(model.n_layers), inputs.corrupt_resid,
          inputs.corrupt_mid)
    delta, _ = lax.scan(layer_step, delta0, xs)
    final = inputs.corrupt_final + jnp.einsum("u,ubpd->bpd", matrix[:, -1], delta)  # b p d
    return model.unembed(params, final, BlockHook(lambda name, act: act, frozenset()))


@functools.partial(jax.jit, static_argnames=("model",))
def _logits(params, mask, inputs, *, model):
    return circuit_logits(model, params, mask, inputs)


@functools.partial(jax.jit, static_argnames=("model", "metric_static", "chunk"))
def circuit_metrics(params, masks: Float[Array, "sweep n"], inputs: RunInputs, metric_leaves, *,
                    model: HookedModel, metric_static, chunk: int) -> Float[Array, " sweep"]:
    """The metric of each circuit of a stack, ``chunk`` circuits vmapped at a time."""
    metric = _rebuild(metric_static, metric_leaves)
    one = lambda mask: metric(circuit_logits(model, params, mask, inputs)).astype(jnp.float32)
    return jax.lax.map(one, masks, batch_size=chunk)


def split_metric(metric) -> tuple[list, tuple]:
    """A metric's array leaves (dynamic) and the rest (the static jit key)."""
    leaves, static, treedef = split_leaves(metric)
    return leaves, (treedef, static)


# ------------------------------------------------------------------------------- metrics
@struct.dataclass
class CircuitKL:
    """``KL(clean || circuit)`` of the next-token distributions, averaged over chosen positions.

    ACDC's default metric (Conmy et al. 2023). Build it with :func:`kl_to_clean`.

    Attributes:
        reference_logp: the clean run's log-probabilities ``[batch, pos, d_vocab]``.
        weight: ``[batch, pos]`` weights of the positions (1 where the task is read).
    """

    reference_logp: Float[Array, "batch pos d_vocab"]
    weight: Float[Array, "batch pos"]

    def __call__(self, logits: Float[Array, "batch pos d_vocab"]) -> Float[Array, ""]:
        logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        ref = self.reference_logp
        kl = (jnp.exp(ref) * (ref - logp)).sum(-1)  # batch pos
        return (kl * self.weight).sum() / jnp.maximum(self.weight.sum(), 1e-9)


def kl_to_clean(clean_logits: Float[ArrayLike, "batch pos d_vocab"],
                positions: ArrayLike | None = None) -> CircuitKL:
    """:class:`CircuitKL` against ``clean_logits``.

    Args:
        clean_logits: the full model's logits on the clean prompts.
        positions: None (every position), a ``[pos]`` or ``[batch, pos]`` bool mask, or int
            positions (negative count from the end).
    """
    logits = jnp.asarray(clean_logits, jnp.float32)
    if logits.ndim != 3:
        raise ValueError(f"clean_logits must be [batch, pos, d_vocab]; got shape {logits.shape}.")
    batch, n_pos = logits.shape[:2]
    if positions is None:
        weight = np.ones((batch, n_pos), np.float32)
    else:
        positions = np.asarray(positions)
        if positions.dtype == bool:
            weight = np.broadcast_to(positions, (batch, n_pos)).astype(np.float32)
        elif np.issubdtype(positions.dtype, np.integer) and positions.ndim <= 1:
            if np.any((positions >= n_pos) | (positions < -n_pos)):
                raise ValueError(f"positions {positions} lie outside [-{n_pos}, {n_pos}).")
            weight = np.zeros((batch, n_pos), np.float32)
            weight[:, positions] = 1.0
        else:
            raise ValueError("positions must be None, a bool mask [pos] / [batch, pos] or int "
                             f"positions [n]; got dtype {positions.dtype}, shape "
                             f"{positions.shape}.")
    return CircuitKL(jax.nn.log_softmax(logits, axis=-1), jnp.asarray(weight))


# ------------------------------------------------------------------------------- public
def checked_inputs(model: HookedModel, params, clean_tokens, corrupted_tokens) -> RunInputs:
    """Checks the model and the prompts, then runs :func:`run_inputs`."""
    check_supported(model)
    same_shape(clean_tokens, corrupted_tokens)
    return run_inputs(params, jnp.asarray(clean_tokens), jnp.asarray(corrupted_tokens),
                      model=model)


def prepare(model: HookedModel, params, clean_tokens, corrupted_tokens, metric
            ) -> tuple[RunInputs, MetricFn]:
    """Checks a call, runs the clean and corrupted models once, and fills in the default metric.

    ``metric=None`` is :func:`kl_to_clean` of the clean logits at every position.
    """
    inputs = checked_inputs(model, params, clean_tokens, corrupted_tokens)
    batch, n_pos = same_shape(clean_tokens, corrupted_tokens)
    if metric is None:
        metric = kl_to_clean(model(params, jnp.asarray(clean_tokens)))
    scalar_metric(model, metric, batch, n_pos)
    return inputs, metric


def run_circuit(model: HookedModel, params, circuit: Circuit, clean_tokens,
                corrupted_tokens) -> Float[Array, "batch pos d_vocab"]:
    """The logits of the clean prompts with every edge outside ``circuit`` corrupted.

    Args:
        model, params: the model.
        circuit: a :class:`Circuit` of this model (soft masks interpolate, see the module
            docstring).
        clean_tokens: ``[batch, pos]`` ids that flow through the circuit's edges.
        corrupted_tokens: where the other edges' values come from (same shape).

    Returns:
        ``[batch, pos, d_vocab]`` logits: the clean run for :meth:`Circuit.full`, the corrupted
        run for :meth:`Circuit.empty`.
    """
    check_circuit(model, circuit)
    inputs = checked_inputs(model, params, clean_tokens, corrupted_tokens)
    return _logits(params, circuit.mask, inputs, model=model)


@dataclasses.dataclass(frozen=True)
class Baselines:
    """The metric on the clean and on the corrupted run (faithfulness's 1 and 0)."""

    clean: float
    corrupted: float

    def faithfulness(self, value) -> float:
        """``(value - corrupted) / (clean - corrupted)``."""
        return (float(value) - self.corrupted) / (self.clean - self.corrupted)


def baselines(model: HookedModel, params, clean_tokens, corrupted_tokens, metric) -> Baselines:
    """The metric on both full runs; a clear error when they coincide (nothing to normalise)."""
    clean = float(metric(model(params, jnp.asarray(clean_tokens))))
    corrupted = float(metric(model(params, jnp.asarray(corrupted_tokens))))
    if clean == corrupted:
        raise ValueError(f"The metric is {clean} on both the clean and the corrupted prompts, so "
                         "faithfulness (circuit - corrupted) / (clean - corrupted) is undefined: "
                         "choose prompts (or a metric) on which the two runs differ.")
    return Baselines(clean, corrupted)


def faithfulness(model: HookedModel, params, circuit: Circuit, clean_tokens, corrupted_tokens,
                 metric: MetricFn | None) -> float:
    """``(m(circuit) - m(corrupted)) / (m(clean) - m(corrupted))``: 1 = the full model, 0 = none.

    Args:
        metric: ``logits -> scalar`` (e.g. ``jinterp.metrics.logit_diff``); None for
            :func:`kl_to_clean` at every position (then faithfulness is ``1 - KL(circuit) /
            KL(corrupted)``).
    """
    check_circuit(model, circuit)
    inputs, metric = prepare(model, params, clean_tokens, corrupted_tokens, metric)
    base = baselines(model, params, clean_tokens, corrupted_tokens, metric)
    value = metric(_logits(params, circuit.mask, inputs, model=model))
    return base.faithfulness(value)
