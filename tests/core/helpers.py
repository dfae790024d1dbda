"""A small random GPT-2 for core tests (no HF involved)."""

import functools

import jax
import numpy as np

from jinterp import models

SMALL = models.GPT2Config(n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50,
                          n_ctx=16)


@functools.lru_cache(maxsize=None)
def small_model(config: models.GPT2Config = SMALL):
    model = models.GPT2(config)
    return model, _perturbed_init(model, jax.random.key(0))


@functools.partial(jax.jit, static_argnums=0)
def _perturbed_init(model, key):
    """Random params with non-zero biases and norm weights, so every term of the forward matters."""
    leaves, treedef = jax.tree.flatten(model.init(key))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, leaves)


def tokens(batch=2, pos=10, seed=0, vocab=50):
    return np.random.default_rng(seed).integers(0, vocab, (batch, pos))
