"""The grokking transformer: the paper's init, a last-position forward, a careful cross-entropy.

Parameters use the :mod:`jinterp.models.gpt2` pytree layout, so ``models.GPT2(cfg.model_config())``
runs them and every analysis goes through the library's port (``jinterp.run_with_cache``).

Training uses :func:`last_logits`, an exact specialisation of that forward to inputs
``[a, b, =]`` that computes only the last position: the loss reads nothing else, and on two CPU
cores the full forward spends most of its time on the two positions whose outputs are thrown
away (queries, MLP and unembedding there, plus tiny batched 3x3 attention matmuls whose
backward pass is slow on XLA:CPU). The tests check it against ``GPT2`` logits and gradients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .config import GrokConfig

Params = dict


def init_params(cfg: GrokConfig, key: jax.Array) -> Params:
    """The authors' initialisation in the GPT-2 port's layout.

    ``W_E``, ``W_pos``, ``W_Q/K/V``, ``W_O``, ``W_in`` and ``W_out`` are
    ``N(0, 1) / sqrt(d_model)``; ``W_U`` is ``N(0, 1) / sqrt(d_vocab)``; MLP biases start at
    zero. (The port's own ``init`` uses GPT-2's ``N(0, 0.02)``, which changes how fast the model
    memorises.)
    """
    D, H, Dh, M, V = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.d_vocab
    k = iter(jax.random.split(key, 9))
    normal = lambda shape, std: std * jax.random.normal(next(k), shape, jnp.float32)
    s = 1.0 / math.sqrt(D)
    attn = {"W_Q": normal((1, H, D, Dh), s), "W_K": normal((1, H, D, Dh), s),
            "W_V": normal((1, H, D, Dh), s), "W_O": normal((1, H, Dh, D), s)}
    mlp = {"W_in": normal((1, D, M), s), "b_in": jnp.zeros((1, M)),
           "W_out": normal((1, M, D), s), "b_out": jnp.zeros((1, D))}
    return {"embed": {"W_E": normal((V, D), s)}, "pos_embed": {"W_pos": normal((3, D), s)},
            "blocks": {"attn": attn, "mlp": mlp},
            "unembed": {"W_U": normal((D, V), 1.0 / math.sqrt(V))}}


def last_logits(params: Params, tokens: Int[Array, "batch 3"]) -> Float[Array, "batch d_vocab"]:
    """Logits at the last position of the 1-layer, no-LayerNorm GPT-2: ``GPT2(...)[:, -1]``.

    Same maths as :class:`models.GPT2` with ``attn_bias=False``, ``normalization='none'``: causal
    attention from the last position over all three, ReLU MLP, untied unembedding. Queries, keys
    and values depend only on (position, token), so they are computed once per vocabulary entry
    (tables of ``3 x d_vocab`` rows) and gathered, instead of once per example: the batch is
    3,830 examples but the vocabulary has 114 entries.
    """
    attn, mlp = params["blocks"]["attn"], params["blocks"]["mlp"]
    W_Q, W_K, W_V, W_O = (attn[n][0] for n in ("W_Q", "W_K", "W_V", "W_O"))
    n_pos = tokens.shape[1]
    W_E, W_pos = params["embed"]["W_E"], params["pos_embed"]["W_pos"]
    table = W_E[None] + W_pos[:n_pos, None]  # pos d_vocab d_model
    q_table = jnp.einsum("vd,hde->vhe", table[-1], W_Q)  # d_vocab n_heads d_head
    q_table = q_table / math.sqrt(W_Q.shape[-1])
    k_table = jnp.einsum("pvd,hde->pvhe", table, W_K)  # pos d_vocab n_heads d_head
    v_table = jnp.einsum("pvd,hde->pvhe", table, W_V)  # pos d_vocab n_heads d_head
    pos = jnp.arange(n_pos)
    q = q_table[tokens[:, -1]]  # batch n_heads d_head
    scores = jnp.einsum("bhe,bphe->bph", q, k_table[pos, tokens])  # batch pos n_heads
    pattern = jax.nn.softmax(scores, axis=1)  # the last query sees every key: no mask needed
    z = jnp.einsum("bph,bphe->bhe", pattern, v_table[pos, tokens])  # batch n_heads d_head
    resid = table[-1, tokens[:, -1]] + jnp.einsum("bhe,hed->bd", z, W_O)  # batch d_model
    post = jax.nn.relu(resid @ mlp["W_in"][0] + mlp["b_in"][0][None, :])  # batch d_mlp
    resid = resid + post @ mlp["W_out"][0] + mlp["b_out"][0][None, :]  # batch d_model
    return resid @ params["unembed"]["W_U"]  # batch d_vocab


@jax.custom_vjp
def cross_entropy(logits: Float[Array, "batch n_classes"],
                  labels: Int[Array, " batch"]) -> Float[Array, " batch"]:
    """Per-example cross-entropy whose value *and gradient* stay accurate far below 1e-7 in float32.

    Why: once the model is confident, the loss ``-log softmax(l)_c`` is ~1e-7 or smaller. A
    float32 ``log_softmax`` computes it as ``l_c - logsumexp(l)``, a difference of two numbers
    near ``l_c``, so it is quantised to multiples of ~1.2e-7 (or returns exactly 0), and its
    gradient ``softmax - onehot`` rounds the correct-class entry ``softmax_c - 1`` to 0 or to a
    multiple of 6e-8. The authors needed float64 for this and saw loss spikes without it.

    Value: with ``d_j = l_j - l_c`` and ``m = max_j d_j >= 0`` attained at ``k``,
    ``loss = log sum_j exp(d_j) = m + log1p(sum_{j != k} exp(d_j - m))``: the dominant term's
    exact 1 never enters a rounded sum, so a loss of 1e-9 comes out as 1e-9 (relative error
    ~1e-6). Gradient (custom VJP, since autodiff of that expression cancels ``1 - (1 + tiny)``):
    ``exp(d_j - loss)`` for ``j != c`` and ``expm1(-loss)`` for the correct class.
    """
    return _cross_entropy_fwd(logits, labels)[0]


def _cross_entropy_fwd(logits, labels):
    correct = jnp.take_along_axis(logits, labels[:, None], axis=-1)  # batch 1
    d = logits - correct  # batch n_classes
    top = jnp.argmax(d, axis=-1)  # batch
    m = jnp.take_along_axis(d, top[:, None], axis=-1)  # batch 1
    others = jnp.arange(d.shape[-1])[None, :] != top[:, None]  # batch n_classes
    rest = jnp.sum(jnp.where(others, jnp.exp(d - m), 0.0), axis=-1)  # batch
    loss = m[:, 0] + jnp.log1p(rest)
    return loss, (d, loss, labels)


def _cross_entropy_bwd(residuals, g):
    d, loss, labels = residuals
    is_label = jnp.arange(d.shape[-1])[None, :] == labels[:, None]  # batch n_classes
    # softmax - onehot, batch n_classes
    grad = jnp.where(is_label, jnp.expm1(-loss)[:, None], jnp.exp(d - loss[:, None]))
    return g[:, None] * grad, None


cross_entropy.defvjp(_cross_entropy_fwd, _cross_entropy_bwd)


def loss_and_accuracy(params: Params, tokens: Int[Array, "batch 3"], labels: Int[Array, " batch"],
                      n_classes: int) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """Mean cross-entropy and accuracy over the first ``n_classes`` logits.

    ``n_classes`` is ``p`` (the answers only) or ``p + 1`` (the ``=`` logit too, as in the
    authors' training loss); see :attr:`GrokConfig.loss_classes`.
    """
    logits = last_logits(params, tokens)[:, :n_classes]  # batch n_classes
    loss = jnp.mean(cross_entropy(logits, labels))
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, accuracy
