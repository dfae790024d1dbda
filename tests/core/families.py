"""One small random model of every family, with perturbed params so every term matters."""

import functools

import jax
import numpy as np
import pytest

from jinterp import models

CONFIGS = {
    "gpt2": lambda: models.GPT2(models.GPT2Config(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=48, d_vocab=61, n_ctx=16)),
    "llama": lambda: models.Llama(models.LlamaConfig(
        n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=40, d_vocab=61,
        attn_bias=True)),
    "gemma": lambda: models.Gemma(models.GemmaConfig(
        n_layers=3, d_model=32, n_heads=4, n_kv_heads=1, d_head=16, d_mlp=40, d_vocab=61)),
    "gemma2": lambda: models.Gemma2(models.Gemma2Config(
        n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=40, d_vocab=61,
        query_pre_attn_scalar=10, sliding_window=3, attn_softcap=2.0, final_softcap=3.0)),
    "gemma3": lambda: models.Gemma3(models.Gemma3Config(
        n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=40, d_vocab=61,
        query_pre_attn_scalar=10, sliding_window=3, local_layers=(True, False, True))),
}
FAMILIES = tuple(CONFIGS)


def families(*default: str) -> list:
    """Every family as a parametrization, those not in ``default`` marked ``full``.

    Tests rotate their default families (gpt2 and one or two llama-like each) so `make test`
    still runs every family in several tests; `make test-full` runs all five everywhere.
    """
    assert set(default) <= set(FAMILIES), default
    return [n if n in default else pytest.param(n, marks=pytest.mark.full) for n in FAMILIES]


@functools.lru_cache(maxsize=None)
def family(name: str):
    """``(model, params)`` of the named family."""
    model = CONFIGS[name]()
    return model, _perturbed(model, jax.random.key(0))


@functools.partial(jax.jit, static_argnums=0)
def _perturbed(model, key):
    leaves, treedef = jax.tree.flatten(model.init(key))
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [x + 0.1 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, leaves)


def tokens(batch=2, pos=9, seed=0, vocab=61):
    return np.random.default_rng(seed).integers(0, vocab, (batch, pos))
