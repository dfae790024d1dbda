"""The node graph of path patching and edge attribution patching.

A transformer's residual stream is a sum of node *outputs*: the embedding, every attention
head, every MLP. Every node *input* reads that sum: a head through three input slots (its
query, key and value), an MLP through its input, the unembedding through the final residual.
An **edge** ``u -> d`` joins an output to a later input: ``u``'s output reaches ``d``'s input
directly (through the residual stream, not through another node).

- upstream nodes (outputs): :meth:`Node.embed` (the residual entering block 0: token and
  position embeddings), :meth:`Node.head` ``(layer, head)``, :meth:`Node.mlp` ``(layer)``;
- downstream nodes (inputs): :meth:`Node.q` ``(layer, head)``, :meth:`Node.k` /
  :meth:`Node.v` ``(layer, kv_head)``, :meth:`Node.mlp_in` ``(layer)``, :meth:`Node.final`.

Keys and values live on ``n_kv_heads`` (never expanded): on a grouped- or multi-query model a
k/v input is a kv head's, shared by the query heads of its group. A head at layer ``l`` writes
into the residual that the MLP of layer ``l`` reads, so ``head(l, h) -> mlp_in(l)`` is an
edge; it reaches attention inputs from layer ``l + 1`` on.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools

from jinterp.model import HookedModel

UPSTREAM_KINDS = ("embed", "head", "mlp")
DOWNSTREAM_KINDS = ("q", "k", "v", "mlp_in", "final")


@dataclasses.dataclass(frozen=True)
class Node:
    """One node of the graph: ``kind`` at ``layer`` (and head ``index``); hashable, printable.

    Build nodes with the class methods (``Node.head(3, 1)``, ``Node.q(5, 0)``, ...).
    ``str(node)`` is a short label (``"a3.1"``, ``"m2"``, ``"a5.0<q"``, ``"m2<in"``,
    ``"embed"``, ``"final"``).
    """

    kind: str
    layer: int | None = None
    index: int | None = None  # the head (q, head) or kv head (k, v)

    @classmethod
    def embed(cls) -> Node:
        """The embedding: the residual entering block 0 (an output)."""
        return cls("embed")

    @classmethod
    def head(cls, layer: int, head: int) -> Node:
        """Attention head ``head`` of block ``layer`` (an output)."""
        return cls("head", int(layer), int(head))

    @classmethod
    def mlp(cls, layer: int) -> Node:
        """The MLP of block ``layer`` (an output)."""
        return cls("mlp", int(layer))

    @classmethod
    def q(cls, layer: int, head: int) -> Node:
        """The query input of head ``head`` of block ``layer``."""
        return cls("q", int(layer), int(head))

    @classmethod
    def k(cls, layer: int, kv_head: int) -> Node:
        """The key input of kv head ``kv_head`` (shared by its group's query heads)."""
        return cls("k", int(layer), int(kv_head))

    @classmethod
    def v(cls, layer: int, kv_head: int) -> Node:
        """The value input of kv head ``kv_head`` (shared by its group's query heads)."""
        return cls("v", int(layer), int(kv_head))

    @classmethod
    def mlp_in(cls, layer: int) -> Node:
        """The input of the MLP of block ``layer``."""
        return cls("mlp_in", int(layer))

    @classmethod
    def final(cls) -> Node:
        """The final residual (what the unembedding reads)."""
        return cls("final")

    @property
    def is_upstream(self) -> bool:
        return self.kind in UPSTREAM_KINDS

    def __str__(self) -> str:
        if self.kind in ("embed", "final"):
            return self.kind
        if self.kind == "head":
            return f"a{self.layer}.{self.index}"
        if self.kind == "mlp":
            return f"m{self.layer}"
        if self.kind == "mlp_in":
            return f"m{self.layer}<in"
        return f"a{self.layer}.{self.index}<{self.kind}"


def has_mlp(model: HookedModel) -> bool:
    return "hook_mlp_out" in model.block_point_axes


@functools.lru_cache(maxsize=64)
def upstream_nodes(model: HookedModel) -> tuple[Node, ...]:
    """Every output node in forward order: embed, then per layer its heads and its MLP."""
    out = [Node.embed()]
    for layer in range(model.n_layers):
        out += [Node.head(layer, h) for h in range(model.dims["n_heads"])]
        if has_mlp(model):
            out.append(Node.mlp(layer))
    return tuple(out)


@functools.lru_cache(maxsize=64)
def downstream_nodes(model: HookedModel) -> tuple[Node, ...]:
    """Every input node in forward order: per layer q, k, v of each head and the MLP input,
    then the final residual."""
    out = []
    for layer in range(model.n_layers):
        out += [Node.q(layer, h) for h in range(model.dims["n_heads"])]
        out += [Node.k(layer, g) for g in range(model.dims["n_kv_heads"])]
        out += [Node.v(layer, g) for g in range(model.dims["n_kv_heads"])]
        if has_mlp(model):
            out.append(Node.mlp_in(layer))
    return tuple(out + [Node.final()])


def is_edge(model: HookedModel, up: Node, down: Node) -> bool:
    """Whether ``up``'s output reaches ``down``'s input directly through the residual."""
    if down.kind == "final" or up.kind == "embed":
        return True
    if down.kind == "mlp_in":
        return up.layer < down.layer or (up.kind == "head" and up.layer == down.layer)
    return up.layer < down.layer


def check_node(model: HookedModel, node, upstream: bool, role: str) -> Node:
    """``node`` if it is an upstream (or downstream) node of ``model``, else a clear error."""
    valid = upstream_nodes(model) if upstream else downstream_nodes(model)
    if isinstance(node, Node) and node in set(valid):
        return node
    kinds = UPSTREAM_KINDS if upstream else DOWNSTREAM_KINDS
    close = difflib.get_close_matches(str(node), [str(n) for n in valid], n=4, cutoff=0.3)
    hint = f" Closest: {close}." if close else ""
    what = repr(node) if not isinstance(node, Node) else f"{node!r} ({node})"
    builders = ("Node.embed(), Node.head(layer, head), Node.mlp(layer)" if upstream else
                "Node.q(layer, head), Node.k/v(layer, kv_head), Node.mlp_in(layer), "
                "Node.final()")
    raise ValueError(
        f"{what} is not a {role} of this {type(model).__name__} ({model.n_layers} layers, "
        f"{model.dims['n_heads']} heads, {model.dims['n_kv_heads']} kv heads"
        f"{'' if has_mlp(model) else ', no MLP'}): a {role} is one of the kinds {kinds}, "
        f"built with {builders}.{hint}")
