"""A tiny GPT-2 trained in-process on a synthetic bigram world, then fine-tuned on a shifted one.

Base data: each next token is ``rule[token]`` with probability ``p_rule``, else uniform. The
fine-tuning data keeps the rule for half the vocabulary and rewires the other half (``changed``)
to new successors, so the fine-tuned model differs from the base exactly in how it continues the
``changed`` tokens: the ground truth a model-diffing crosscoder should point at. Used by
``test_diffing.py``.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jinterp import models


@dataclasses.dataclass(frozen=True)
class World:
    """The two bigram rules: ``base`` and ``finetuned`` successor tables ``[d_vocab]``."""

    base: np.ndarray
    finetuned: np.ndarray
    p_rule: float = 0.9

    @property
    def changed(self) -> np.ndarray:
        """Tokens whose successor the fine-tuning rewired."""
        return np.flatnonzero(self.base != self.finetuned)


def make_world(d_vocab: int, seed: int = 0, p_rule: float = 0.9) -> World:
    rng = np.random.default_rng(seed)
    base = rng.permutation(d_vocab)
    ft = base.copy()
    changed = rng.choice(d_vocab, d_vocab // 2, replace=False)
    ft[changed] = base[np.roll(changed, 1)]  # other successors for the changed half
    return World(base=base, finetuned=ft, p_rule=p_rule)


@functools.partial(jax.jit, static_argnums=(3, 4))
def sample(key, table: jax.Array, p_rule: float, batch: int, seq: int) -> jax.Array:
    """``[batch, seq]`` tokens of the bigram rule ``table``."""
    d_vocab = table.shape[0]
    k0, k_rule, k_rand = jax.random.split(key, 3)
    first = jax.random.randint(k0, (batch,), 0, d_vocab)
    follow = jax.random.bernoulli(k_rule, p_rule, (seq - 1, batch))
    rand = jax.random.randint(k_rand, (seq - 1, batch), 0, d_vocab)

    def step(tok, inputs):
        f, r = inputs
        nxt = jnp.where(f, table[tok], r)
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, (follow, rand))
    return jnp.concatenate([first[None], rest], 0).T


def tiny_gpt2(d_vocab: int = 32, seq: int = 16) -> models.GPT2:
    return models.GPT2(models.GPT2Config(n_layers=1, d_model=32, n_heads=2, d_head=16,
                                         d_mlp=64, d_vocab=d_vocab, n_ctx=seq))


@functools.partial(jax.jit, static_argnums=(0, 1, 5, 6, 7))
def _train(model, opt, params, table, key, p_rule, batch, steps):
    opt_state = opt.init(params)

    def loss_fn(p, toks):
        return loss(model, p, toks)

    def body(carry, k):
        p, s = carry
        toks = sample(k, table, p_rule, batch, model.n_ctx)
        loss, g = jax.value_and_grad(loss_fn)(p, toks)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(body, (params, opt_state), jax.random.split(key, steps))
    return params, losses


@functools.lru_cache(maxsize=8)
def _adam(lr: float):
    return optax.adam(lr)  # one object per rate: a static argument, so calls share a program


@functools.partial(jax.jit, static_argnums=0)
def loss(model, params, tokens: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy of ``model`` on ``tokens [batch, seq]``."""
    logp = jax.nn.log_softmax(model(params, tokens)[:, :-1], axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def train(model, params, table: np.ndarray, p_rule: float, *, steps: int, seed: int,
          lr: float = 3e-3, batch: int = 32):
    """``(params, per-step losses)`` after ``steps`` Adam steps on the rule ``table``."""
    return _train(model, _adam(lr), params, jnp.asarray(table), jax.random.key(seed),
                  p_rule, batch, steps)
