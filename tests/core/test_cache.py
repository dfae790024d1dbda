"""run_with_cache: names complete, shapes right, filtering, pytree behaviour, jit-ability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL, small_model, tokens

import jinterp
from jinterp import models

B, P = 2, 10
C = SMALL
EXPECTED_SHAPES = {
    "hook_embed": (B, P, C.d_model), "hook_pos_embed": (B, P, C.d_model),
    "hook_resid_pre": (B, P, C.d_model), "ln1.hook_scale": (B, P, 1),
    "ln1.hook_normalized": (B, P, C.d_model), "attn.hook_q": (B, P, C.n_heads, C.d_head),
    "attn.hook_k": (B, P, C.n_heads, C.d_head), "attn.hook_v": (B, P, C.n_heads, C.d_head),
    "attn.hook_attn_scores": (B, C.n_heads, P, P), "attn.hook_pattern": (B, C.n_heads, P, P),
    "attn.hook_z": (B, P, C.n_heads, C.d_head), "attn.hook_result": (B, P, C.n_heads, C.d_model),
    "hook_attn_out": (B, P, C.d_model), "hook_resid_mid": (B, P, C.d_model),
    "ln2.hook_scale": (B, P, 1), "ln2.hook_normalized": (B, P, C.d_model),
    "mlp.hook_pre": (B, P, C.d_mlp), "mlp.hook_post": (B, P, C.d_mlp),
    "hook_mlp_out": (B, P, C.d_model),
    "hook_resid_post": (B, P, C.d_model), "ln_final.hook_scale": (B, P, 1),
    "ln_final.hook_normalized": (B, P, C.d_model),
}


def test_every_name_present_with_transformerlens_shape():
    model, params = small_model()
    _, cache = jinterp.run_with_cache(model, params, tokens(B, P))
    expected_names = (["hook_embed", "hook_pos_embed"]
                      + [f"blocks.{l}.{p}" for l in range(C.n_layers) for p in model.block_points]
                      + ["ln_final.hook_scale", "ln_final.hook_normalized"])
    assert list(cache) == [n for n in expected_names if not n.endswith("attn.hook_result")]
    assert model.hook_names() == expected_names
    _, results = jinterp.run_with_cache(model, params, tokens(B, P),
                                        names=lambda n: n.endswith("hook_result"))
    assert list(results) == [f"blocks.{l}.attn.hook_result" for l in range(C.n_layers)]
    for name in [*cache, *results]:
        point = name.split(".", 2)[2] if name.startswith("blocks.") else name
        assert {**cache, **results}[name].shape == EXPECTED_SHAPES[point], name


def test_cached_values_are_consistent_with_the_forward_maths():
    model, params = small_model()
    logits, cache = jinterp.run_with_cache(model, params, tokens(B, P), names=lambda n: True)
    np.testing.assert_allclose(logits, model(params, tokens(B, P)), atol=1e-5)
    np.testing.assert_allclose(cache["blocks.0.hook_resid_pre"],
                               cache["hook_embed"] + cache["hook_pos_embed"], atol=1e-6)
    for l in range(C.n_layers - 1):
        np.testing.assert_array_equal(cache[f"blocks.{l}.hook_resid_post"],
                                      cache[f"blocks.{l + 1}.hook_resid_pre"])
    # attn_out = sum over heads of result + b_O; result = z @ W_O per head.
    W_O = params["blocks"]["attn"]["W_O"][1]
    result = jnp.einsum("bphe,hed->bphd", cache["blocks.1.attn.hook_z"], W_O)
    np.testing.assert_allclose(cache["blocks.1.attn.hook_result"], result, atol=1e-5)
    b_O = np.asarray(params["blocks"]["attn"]["b_O"][1])
    np.testing.assert_allclose(cache["blocks.1.hook_attn_out"], np.asarray(result.sum(2)) + b_O,
                               atol=1e-5)
    np.testing.assert_allclose(cache["blocks.2.attn.hook_pattern"].sum(-1), 1.0, atol=1e-6)
    # hook_normalized is TL's (x - mean) / scale: zero mean, unit RMS; scale is sqrt(var + eps).
    x = np.asarray(cache["blocks.1.hook_resid_mid"], np.float64)
    var = x.var(-1, keepdims=True)
    np.testing.assert_allclose(cache["blocks.1.ln2.hook_scale"], np.sqrt(var + SMALL.ln_eps),
                               rtol=1e-5)
    np.testing.assert_allclose(cache["blocks.1.ln2.hook_normalized"],
                               (x - x.mean(-1, keepdims=True)) / np.sqrt(var + SMALL.ln_eps),
                               atol=1e-5)
    final = (np.asarray(cache["ln_final.hook_normalized"]) * np.asarray(params["ln_final"]["w"])
             + np.asarray(params["ln_final"]["b"]))
    unembedded = final @ params["embed"]["W_E"].T
    np.testing.assert_allclose(logits, unembedded, atol=1e-4)


def test_names_filter_list_predicate_and_single_name():
    model, params = small_model()
    toks = tokens(B, P)
    _, full = jinterp.run_with_cache(model, params, toks)
    _, one = jinterp.run_with_cache(model, params, toks, names="blocks.1.mlp.hook_post")
    assert list(one) == ["blocks.1.mlp.hook_post"]
    np.testing.assert_allclose(one["blocks.1.mlp.hook_post"], full["blocks.1.mlp.hook_post"],
                               atol=1e-6)
    _, some = jinterp.run_with_cache(model, params, toks,
                                     names=["blocks.2.hook_resid_pre", "blocks.0.attn.hook_z"])
    assert set(some) == {"blocks.2.hook_resid_pre", "blocks.0.attn.hook_z"}
    np.testing.assert_allclose(some["blocks.0.attn.hook_z"], full["blocks.0.attn.hook_z"],
                               atol=1e-6)
    _, patterns = jinterp.run_with_cache(model, params, toks,
                                         names=lambda n: n.endswith("hook_pattern"))
    assert list(patterns) == [f"blocks.{l}.attn.hook_pattern" for l in range(C.n_layers)]
    assert "blocks.0.hook_resid_pre" not in patterns
    per_layer = [full[f"blocks.{l}.attn.hook_pattern"] for l in range(C.n_layers)]
    np.testing.assert_allclose(patterns.stack("attn.hook_pattern"), np.stack(per_layer),
                               atol=1e-6)


def test_cache_is_a_pytree_and_works_under_jit():
    model, params = small_model()
    toks = tokens(B, P)

    @jax.jit
    def f(params, toks):
        _, cache = jinterp.run_with_cache(model, params, toks, names=lambda n: "resid" in n)
        return cache

    cache = f(params, toks)
    assert isinstance(cache, jinterp.ActivationCache)
    firsts = jax.tree.map(lambda a: a[0], cache)
    assert firsts["blocks.0.hook_resid_mid"].shape == (P, C.d_model)
    np.testing.assert_array_equal(firsts["blocks.2.hook_resid_post"],
                                  cache["blocks.2.hook_resid_post"][0])
    assert len(jax.tree.leaves(cache)) == len(cache) == 3 * C.n_layers


def test_unknown_cache_key_lists_closest_names():
    model, params = small_model()
    _, cache = jinterp.run_with_cache(model, params, tokens(B, P),
                                      names=lambda n: "attn.hook_z" in n)
    with pytest.raises(KeyError, match="blocks.1.attn.hook_z"):
        cache["blocks.1.attn.hook_zz"]


def test_variant_models_have_only_their_points():
    cfg = models.GPT2Config(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=None, d_vocab=20,
                            n_ctx=8, normalization="none", positional="none",
                            tied_embeddings=False, attn_bias=False)
    model = models.GPT2(cfg)
    params = model.init(jax.random.key(0))
    logits, cache = jinterp.run_with_cache(model, params, tokens(1, 8, vocab=20))
    assert logits.shape == (1, 8, 20)
    assert "hook_pos_embed" not in cache and "blocks.0.ln1.hook_scale" not in cache
    assert "blocks.0.hook_resid_mid" not in cache and "blocks.1.mlp.hook_post" not in cache
    np.testing.assert_allclose(cache["blocks.1.hook_resid_post"],
                               cache["blocks.1.hook_resid_pre"] + cache["blocks.1.hook_attn_out"],
                               atol=1e-6)
    np.testing.assert_allclose(logits, cache["blocks.1.hook_resid_post"] @ params["unembed"]["W_U"],
                               atol=1e-5)


def test_unrolled_and_scanned_captures_agree_with_hooks():
    """The two execution strategies of run_with_cache give the same logits, cache and hooks."""
    model, params = small_model()
    toks = tokens(B, P)
    hooks = {"blocks.1.attn.hook_z": jinterp.ZeroAblate(head=2),
             "blocks.0.hook_resid_mid": lambda x: 1.5 * x}
    names = lambda n: "resid" in n or n.endswith("hook_pattern") or n == "blocks.2.mlp.hook_post"
    l_scan, c_scan = jinterp.run_with_cache(model, params, toks, names=names, hooks=hooks,
                                            unroll=False)
    l_unrolled, c_unrolled = jinterp.run_with_cache(model, params, toks, names=names, hooks=hooks,
                                                    unroll=True)
    np.testing.assert_allclose(l_scan, l_unrolled, atol=1e-5)
    assert list(c_scan) == list(c_unrolled)
    for name in c_scan:
        np.testing.assert_allclose(c_scan[name], c_unrolled[name], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(c_scan.stack("hook_resid_post"), c_unrolled.stack("hook_resid_post"),
                               atol=1e-5)
    # Only layer 2 of mlp.hook_post was asked for: the scan keeps it in a one-slot buffer.
    assert c_scan.layers("mlp.hook_post") == c_unrolled.layers("mlp.hook_post") == [2]
