"""Steering vectors vs per-layer reads of a full cache; steering and ActAdd vs plain function
hooks; directional ablation removes the direction everywhere and the orthogonalised weights
give the hooked model's logits (GPT-2 and Llama with every bias), or refuse where they can't."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens

import jinterp
from jinterp import models, steering


def test_diff_in_means_and_caa_match_a_full_cache_read_layer_by_layer():
    model, params = family("gpt2")
    pos_t, neg_t = tokens(batch=3, pos=6, seed=1), tokens(batch=3, pos=6, seed=2)
    got = steering.diff_in_means(model, params, pos_t, neg_t)
    resid = lambda name: "hook_resid" in name
    _, cp = jinterp.run_with_cache(model, params, pos_t, resid)
    _, cn = jinterp.run_with_cache(model, params, neg_t, resid)
    for layer in range(model.n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        want = cp[name][:, -1].mean(0) - cn[name][:, -1].mean(0)
        np.testing.assert_allclose(got[layer], want, atol=1e-5)
    np.testing.assert_allclose(steering.caa_vectors(model, params, pos_t, neg_t), got)
    avg = steering.diff_in_means(model, params, pos_t, neg_t, point="hook_resid_post", pos=None)
    want = cp["blocks.1.hook_resid_post"].mean((0, 1)) - cn["blocks.1.hook_resid_post"].mean((0, 1))
    np.testing.assert_allclose(avg[1], want, atol=1e-5)


def test_steering_at_chosen_layers_and_positions_equals_function_hooks():
    model, params = family("llama")
    toks = tokens(batch=2, pos=7)
    vecs = jax.random.normal(jax.random.key(0), (model.n_layers, model.d_model))
    got = steering.steer(model, params, toks, vecs, layers=[0, 2], scale=3.0, pos=-1)
    ref = {f"blocks.{l}.hook_resid_pre": (lambda x, l=l: x.at[:, -1].add(3.0 * vecs[l]))
           for l in (0, 2)}
    np.testing.assert_allclose(got, jinterp.run_with_hooks(model, params, toks, ref), atol=1e-5)
    assert not np.allclose(got, model(params, toks), atol=1e-3)
    # one shared vector, every layer, all positions, a traced scale: a scale sweep is one vmap
    sweep = jax.jit(jax.vmap(lambda s: steering.steer(model, params, toks, vecs[1], scale=s)))
    out = sweep(jnp.array([0.0, 2.0]))
    np.testing.assert_allclose(out[0], model(params, toks), atol=1e-5)
    shift = 2.0 * vecs[1][None, None]
    ref = {f"blocks.{l}.hook_resid_pre": (lambda x: x + shift) for l in range(3)}
    np.testing.assert_allclose(out[1], jinterp.run_with_hooks(model, params, toks, ref),
                               atol=1e-5)


def test_actadd_adds_the_pair_difference_at_the_front_of_the_prompt():
    model, params = family("gpt2")
    plus, minus = tokens(batch=1, pos=3, seed=4), tokens(batch=1, pos=3, seed=5)
    v = steering.actadd_vector(model, params, plus, minus, layer=1)
    _, cache = jinterp.run_with_cache(model, params, np.concatenate([plus, minus]))
    np.testing.assert_allclose(v, cache["blocks.1.hook_resid_pre"][0]
                               - cache["blocks.1.hook_resid_pre"][1], atol=1e-6)
    toks = tokens(batch=2, pos=8)
    got = jinterp.run_with_hooks(model, params, toks,
                                 {"blocks.1.hook_resid_pre": steering.ActAdd(v, 4.0, start=1)})
    ref = jinterp.run_with_hooks(model, params, toks,
                                 {"blocks.1.hook_resid_pre": lambda x: x.at[:, 1:4].add(4.0 * v)})
    np.testing.assert_allclose(got, ref, atol=1e-5)
    with pytest.raises(ValueError, match="do not fit the prompt's 8 positions"):
        jinterp.run_with_hooks(model, params, toks,
                               {"blocks.1.hook_resid_pre": steering.ActAdd(v, start=6)})


def _untied(kind):
    if kind == "gpt2":
        model = models.GPT2(models.GPT2Config(n_layers=2, d_model=16, n_heads=2, d_head=8,
                                              d_mlp=24, d_vocab=31, n_ctx=8,
                                              tied_embeddings=False, unembed_bias=True))
    else:
        model = models.Llama(models.LlamaConfig(n_layers=2, d_model=16, n_heads=2, n_kv_heads=1,
                                                d_head=8, d_mlp=24, d_vocab=31, attn_bias=True,
                                                mlp_bias=True))
    leaves, treedef = jax.tree.flatten(model.init(jax.random.key(0)))
    keys = jax.random.split(jax.random.key(1), len(leaves))  # every bias and norm non-trivial
    return model, jax.tree.unflatten(treedef, [x + 0.2 * jax.random.normal(k, x.shape)
                                               for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_weight_orthogonalisation_equals_the_ablation_hooks(kind):
    model, params = _untied(kind)
    toks = np.random.default_rng(0).integers(0, 31, (2, 8))
    d = jax.random.normal(jax.random.key(7), (16,))
    hooks = steering.ablation_hooks(model, d)
    resid = lambda name: "hook_resid" in name
    hooked, cache = jinterp.run_with_cache(model, params, toks, resid, hooks=hooks)
    edited = steering.orthogonalize_weights(model, params, d)
    logits, cache_w = jinterp.run_with_cache(model, edited, toks, resid)
    np.testing.assert_allclose(logits, hooked, atol=2e-5, rtol=1e-5)
    assert not np.allclose(hooked, model(params, toks), atol=1e-2)  # the ablation bites
    unit = d / jnp.linalg.norm(d)
    for c in (cache, cache_w):
        for p in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
            assert float(jnp.abs(c.stack(p) @ unit).max()) < 1e-4
    writers = set(steering.resid_writers(model))
    expected = {"embed.W_E", "blocks.attn.W_O", "blocks.attn.b_O", "blocks.mlp.W_out",
                "blocks.mlp.b_out"} | ({"pos_embed.W_pos"} if kind == "gpt2" else set())
    assert writers == expected


def test_steering_bad_inputs_name_the_fix():
    model, params = family("gpt2")
    with pytest.raises(ValueError, match=r"shape \(31,\).*d_model=32.*\(32,\) or \(3, 32\)"):
        steering.steering_hooks(model, np.zeros(31), layers=1)
    with pytest.raises(ValueError, match="outside 0..2"):
        steering.steering_hooks(model, np.zeros(32), layers=[3])
    with pytest.raises(ValueError, match="tied"):
        steering.orthogonalize_weights(model, params, np.ones(32))
    with pytest.raises(ValueError, match="ablation_hooks"):
        steering.orthogonalize_weights(*family("gemma2"), np.ones(32))
    with pytest.raises(ValueError, match="one shape"):
        steering.caa_vectors(model, params, tokens(batch=2), tokens(batch=3))
    with pytest.raises(ValueError, match="residual points"):
        steering.diff_in_means(model, params, tokens(), tokens(), point="hook_resid")
