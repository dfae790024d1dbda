"""Steering vectors vs per-layer reads of a full cache; steering and ActAdd vs plain function
hooks; directional ablation removes the direction everywhere and the orthogonalised weights
give the hooked model's logits (GPT-2 with every bias, Llama), or refuse where they can't."""

import dataclasses

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
    avg = steering.diff_in_means(model, params, pos_t, neg_t, pos=None)
    want = cp["blocks.1.hook_resid_pre"].mean((0, 1)) - cn["blocks.1.hook_resid_pre"].mean((0, 1))
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
    _, cache = jinterp.run_with_cache(model, params, np.concatenate([plus, minus]),
                                      names=["blocks.1.hook_resid_pre"])
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
    """GPT-2 with an untied, biased unembedding built from the family's weights (no init
    compile), or the Llama family (untied, attention biases)."""
    model, params = family(kind)
    if kind == "llama":
        return model, params
    untied = models.GPT2(dataclasses.replace(model.config, tied_embeddings=False,
                                             unembed_bias=True))
    rng = np.random.default_rng(1)
    W_U = np.asarray(params["embed"]["W_E"]).T + 0.1 * rng.normal(size=(32, 61))
    unembed = {"W_U": W_U.astype(np.float32), "b_U": rng.normal(size=61).astype(np.float32)}
    return untied, {**params, "unembed": unembed}


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_weight_orthogonalisation_equals_the_ablation_hooks(kind):
    model, params = _untied(kind)
    toks = tokens(batch=2, pos=7)
    d = jax.random.normal(jax.random.key(7), (32,))
    hooks = steering.ablation_hooks(model, d)
    resid = lambda name: "hook_resid" in name
    hooked, cache = jinterp.run_with_cache(model, params, toks, resid, hooks=hooks)
    edited = steering.orthogonalize_weights(model, params, d)
    logits, cache_w = jinterp.run_with_cache(model, edited, toks, resid)
    np.testing.assert_allclose(logits, hooked, atol=2e-5, rtol=1e-5)
    plain, cache_p = jinterp.run_with_cache(model, params, toks, resid)  # the same program
    assert not np.allclose(hooked, plain, atol=1e-2)  # the ablation bites
    assert float(jnp.abs(cache_p.stack("hook_resid_post") @ (d / jnp.linalg.norm(d))).max()) > 0.1
    unit = d / jnp.linalg.norm(d)
    for c in (cache, cache_w):
        for p in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post"):
            assert float(jnp.abs(c.stack(p) @ unit).max()) < 1e-4
    writers = set(steering.resid_writers(model))
    expected = {"embed.W_E", "blocks.attn.W_O", "blocks.attn.b_O", "blocks.mlp.W_out"}
    expected |= {"pos_embed.W_pos", "blocks.mlp.b_out"} if kind == "gpt2" else set()
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
