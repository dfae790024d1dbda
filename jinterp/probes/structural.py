"""The structural probe (Hewitt & Manning 2019): a metric under which word distance is tree
distance, fitted at every layer at once.

A probe ``B [n, d]`` defines ``d_B(h_i, h_j) = |B (h_i - h_j)|^2``; it is trained so that
``d_B`` matches the parse-tree distance between words, with the paper's loss: per sentence,
``sum_ij |d_B(i, j) - d_T(i, j)| / len^2``, averaged over sentences (an L1 loss, so Adam rather
than L-BFGS). Evaluation follows the paper: the Spearman correlation between predicted and
true distances per sentence (ties get average ranks), averaged, and UUAS: the share of gold
edges in the minimum spanning tree of the predicted distances.

Sentences share one length here (bucket a corpus by length, or pass each bucket separately);
:func:`synthetic_trees` builds data with a planted metric to validate the probe.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from jinterp.probes.fit import split


@dataclasses.dataclass(frozen=True)
class StructuralProbeResult:
    """Per-layer structural probes and their held-out scores.

    Attributes:
        B: ``[layer, n, d]`` probe matrices.
        spearman, uuas: held-out mean per-sentence distance Spearman and UUAS, ``[layer]``.
        train_loss: the final training loss per layer.
        train_index, test_index: the sentence split.
    """

    B: Float[Array, "layer n d"]
    spearman: Float[Array, " layer"]
    uuas: Float[Array, " layer"]
    train_loss: Float[Array, " layer"]
    train_index: np.ndarray
    test_index: np.ndarray


def probe_distances(B: Float[Array, "n d"], h: Float[Array, "batch pos d"]
                    ) -> Float[Array, "batch pos pos"]:
    """``|B (h_i - h_j)|^2`` for every pair of words of every sentence."""
    t = jnp.einsum("bpd,nd->bpn", h, B)  # batch pos n
    diff = t[:, :, None] - t[:, None, :]  # batch pos pos n
    return jnp.sum(diff * diff, axis=-1)


def _loss(B, h, dist):
    n_words = h.shape[1]
    return jnp.mean(jnp.sum(jnp.abs(probe_distances(B, h) - dist), axis=(1, 2))) / n_words ** 2


def _average_ranks(x: Float[Array, " n"]) -> Float[Array, " n"]:
    less = jnp.sum(x[None, :] < x[:, None], axis=1)
    equal = jnp.sum(x[None, :] == x[:, None], axis=1)
    return less + (equal - 1) / 2.0


def spearman(pred: Float[Array, "pos pos"], true: Float[Array, "pos pos"]) -> Array:
    """Spearman correlation over the word pairs ``i < j`` of one sentence (ties averaged)."""
    i, j = np.triu_indices(pred.shape[0], k=1)
    rp, rt = _average_ranks(pred[i, j]), _average_ranks(true[i, j])
    rp, rt = rp - rp.mean(), rt - rt.mean()
    return jnp.sum(rp * rt) / jnp.sqrt(jnp.maximum(jnp.sum(rp * rp) * jnp.sum(rt * rt), 1e-12))


def uuas(pred: Float[Array, "pos pos"], true: Float[Array, "pos pos"]) -> Array:
    """Share of the gold tree's edges (true distance 1) in the predicted distances' MST."""
    n = pred.shape[0]

    def add_node(_, carry):  # Prim's algorithm from word 0
        in_tree, best, parent = carry
        j = jnp.argmin(jnp.where(in_tree, jnp.inf, best))
        in_tree = in_tree.at[j].set(True)
        closer = (pred[j] < best) & ~in_tree
        return in_tree, jnp.where(closer, pred[j], best), jnp.where(closer, j, parent)

    start = (jnp.arange(n) == 0, pred[0], jnp.zeros((n,), jnp.int32))
    _, _, parent = jax.lax.fori_loop(0, n - 1, add_node, start)
    edges = true[jnp.arange(1, n), parent[1:]]
    return jnp.mean(edges == 1)


@functools.partial(jax.jit, static_argnames=("rank", "steps", "lr"))
def _fit(acts, dist, train_idx, test_idx, key, *, rank: int, steps: int, lr: float) -> dict:
    h_train, h_test = acts[:, train_idx], acts[:, test_idx]  # layer batch pos d
    d_train, d_test = dist[train_idx], dist[test_idx]
    opt = optax.adam(lr)

    def one_layer(h_tr, h_te, k):
        B = jax.random.normal(k, (rank, h_tr.shape[-1])) / np.sqrt(h_tr.shape[-1])

        def step(carry, _):
            B, state = carry
            value, grad = jax.value_and_grad(_loss)(B, h_tr, d_train)
            updates, state = opt.update(grad, state, B)
            return (optax.apply_updates(B, updates), state), value

        (B, _), losses = jax.lax.scan(step, (B, opt.init(B)), None, length=steps)
        pred = probe_distances(B, h_te)
        return {"B": B, "spearman": jax.vmap(spearman)(pred, d_test).mean(),
                "uuas": jax.vmap(uuas)(pred, d_test).mean(), "train_loss": losses[-1]}

    keys = jax.random.split(key, acts.shape[0])
    return jax.vmap(one_layer)(h_train, h_test, keys)


def fit_structural_probe(acts: Float[Array | np.ndarray, "..."],
                         distances: Float[Array | np.ndarray, "..."], *, rank: int | None = None,
                         steps: int = 300, lr: float = 1e-2, test_fraction: float = 0.25,
                         seed: int = 0) -> StructuralProbeResult:
    """Fits a structural probe at every layer in one program.

    Args:
        acts: ``[layer, batch, pos, d]``: one sentence per ``batch`` row, its words along
            ``pos`` (all sentences one length).
        distances: ``[batch, pos, pos]`` tree distances between the words of each sentence.
        rank: rows of ``B`` (default ``d``: a full-rank metric).
        steps, lr: Adam steps and step size.
        test_fraction, seed: the sentence split.
    """
    if getattr(acts, "ndim", None) != 4:
        raise ValueError(f"acts must be [layer, batch, pos, d]; got {tuple(np.shape(acts))}.")
    _, batch, n_pos, d = acts.shape
    if tuple(np.shape(distances)) != (batch, n_pos, n_pos):
        raise ValueError(f"distances of shape {tuple(np.shape(distances))} do not match "
                         f"activations {tuple(acts.shape)}: they need [batch, pos, pos] = "
                         f"({batch}, {n_pos}, {n_pos}).")
    train_idx, test_idx = split(batch, test_fraction, seed)
    out = _fit(jnp.asarray(acts, jnp.float32), jnp.asarray(distances, jnp.float32),
               jnp.asarray(train_idx), jnp.asarray(test_idx), jax.random.key(seed),
               rank=d if rank is None else int(rank), steps=steps, lr=lr)
    return StructuralProbeResult(out["B"], out["spearman"], out["uuas"], out["train_loss"],
                                 train_idx, test_idx)


def tree_distances(parents: Int[np.ndarray, " pos"]) -> np.ndarray:
    """Path lengths between all nodes of a tree given each node's parent (root: -1)."""
    n = len(parents)
    adj = np.full((n, n), np.inf)
    np.fill_diagonal(adj, 0)
    for child, parent in enumerate(parents):
        if parent >= 0:
            adj[child, parent] = adj[parent, child] = 1
    for k in range(n):  # Floyd-Warshall: trees here have tens of nodes
        adj = np.minimum(adj, adj[:, k:k + 1] + adj[k:k + 1, :])
    return adj


def synthetic_trees(n_sentences: int, n_words: int, d: int, n_layers: int, planted_layer: int,
                    *, noise: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Activations with a planted tree metric at one layer, and the true distances.

    Each sentence is a random tree (word ``i``'s parent uniform among words ``0..i-1``). Word
    ``i``'s tree code is the indicator of the edges on its path to the root, so the squared
    distance between codes *is* the tree distance; at ``planted_layer`` the codes live in a
    random ``n_words``-dimensional subspace plus Gaussian noise of scale ``noise`` in the
    other ``d - n_words`` directions; every other layer is noise of the same scale only.

    Returns:
        ``acts [n_layers, n_sentences, n_words, d]`` and ``distances [n_sentences, n_words,
        n_words]``.
    """
    if d <= n_words:
        raise ValueError(f"d={d} must exceed n_words={n_words} (room for the planted metric).")
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    signal, rest = q[:, :n_words].T, q[:, n_words:].T  # n_words d, (d - n_words) d
    codes, dist = [], []
    for _ in range(n_sentences):
        parents = np.array([-1] + [rng.integers(0, i) for i in range(1, n_words)])
        code = np.eye(n_words)  # code[i, e] = 1 if edge e (child e) is on i's path to root
        for i in range(1, n_words):
            code[i] = code[parents[i]] + np.eye(n_words)[i]
        code[:, 0] = 0
        codes.append(code)
        dist.append(tree_distances(parents))
    codes = np.stack(codes)  # sentence word n_words
    acts = noise * rng.normal(size=(n_layers, n_sentences, n_words, d))
    acts[planted_layer] = codes @ signal + noise * rng.normal(
        size=(n_sentences, n_words, d - n_words)) @ rest
    return acts.astype(np.float32), np.stack(dist).astype(np.float32)
