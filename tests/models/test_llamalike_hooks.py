"""Llama/Gemma activation names and every intervention on them, vs plain-function references."""

import jax
import jax.numpy as jnp
import numpy as np

import jinterp
from jinterp import models

GEMMA3 = models.Gemma3Config(n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_head=16, d_mlp=40,
                             d_vocab=50, sliding_window=3, local_layers=(True, False, True),
                             n_ctx=64)
LLAMA = models.LlamaConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=40,
                           d_vocab=50, attn_bias=True)


def perturbed(model, seed=0):
    """Random params with non-trivial norm weights (init gives identity scales)."""
    params = model.init(jax.random.key(seed))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, leaves)


def test_names_follow_transformer_lens_per_family():
    gemma3, llama = models.Gemma3(GEMMA3), models.Llama(LLAMA)
    g_points, l_points = gemma3.block_points, llama.block_points
    for point in ("attn.q_norm.hook_scale", "attn.k_norm.hook_normalized",
                  "ln1_post.hook_normalized", "ln2_post.hook_scale"):
        assert point in g_points and point not in l_points
    for point in ("attn.hook_rot_q", "attn.hook_rot_k", "mlp.hook_pre_linear", "ln1.hook_scale",
                  "attn.hook_result"):
        assert point in g_points and point in l_points
    # TL order: q/k norms after hook_q/hook_k and before RoPE; post-norms before hook_attn_out
    # and hook_mlp_out.
    order = g_points.index
    assert order("attn.hook_k") < order("attn.q_norm.hook_scale") < order("attn.hook_rot_q")
    assert order("ln1_post.hook_normalized") < order("hook_attn_out") < order("hook_resid_mid")
    assert order("mlp.hook_post") < order("ln2_post.hook_scale") < order("hook_mlp_out")
    params = perturbed(gemma3)
    tokens = np.arange(14).reshape(2, 7) % 50
    _, cache = jinterp.run_with_cache(gemma3, params, tokens)
    assert list(cache) == [n for n in gemma3.hook_names() if not n.endswith("hook_result")]
    assert cache.stack("attn.hook_rot_k").shape == (3, 2, 7, 2, 16)
    assert cache["blocks.0.attn.q_norm.hook_scale"].shape == (2, 7, 4, 1)
    assert cache["blocks.0.attn.k_norm.hook_scale"].shape == (2, 7, 2, 1)
    assert cache["blocks.1.mlp.hook_pre_linear"].shape == (2, 7, 40)


def test_every_intervention_equals_its_plain_function_hook():
    model = models.Gemma3(GEMMA3)
    params = perturbed(model, seed=3)
    tokens = np.arange(16).reshape(2, 8) * 3 % 50
    rng = np.random.default_rng(0)
    patch = jnp.asarray(rng.normal(size=(2, 8, 32)), jnp.float32)
    vector = jnp.asarray(rng.normal(size=32), jnp.float32)
    direction = jnp.asarray(rng.normal(size=40), jnp.float32)
    unit = direction / jnp.linalg.norm(direction)
    mean = jnp.asarray(rng.uniform(size=(8, 8)), jnp.float32)
    source = jnp.asarray(rng.normal(size=(3, 8, 2, 16)), jnp.float32)
    index = jnp.array([2, 0])
    interventions = {
        "blocks.0.attn.hook_rot_k": jinterp.ZeroAblate(head=1),  # a kv head
        "blocks.1.attn.q_norm.hook_normalized": jinterp.ZeroAblate(head=2, pos=3),
        "blocks.2.ln2_post.hook_normalized": jinterp.Patch(patch, pos=jnp.array([1, 2])),
        "blocks.1.hook_resid_mid": jinterp.Steer(vector, scale=2.0, pos=0),
        "blocks.0.mlp.hook_pre_linear": jinterp.ProjectOut(direction),
        "blocks.2.attn.hook_pattern": jinterp.MeanAblate(mean, head=0),
        "blocks.1.attn.hook_v": jinterp.ResampleAblate(source, index, head=0),
    }
    functions = {
        "blocks.0.attn.hook_rot_k": lambda x: x.at[:, :, 1].set(0),
        "blocks.1.attn.q_norm.hook_normalized": lambda x: x.at[:, 3, 2].set(0),
        "blocks.2.ln2_post.hook_normalized": lambda x: x.at[:, 1:3].set(patch[:, 1:3]),
        "blocks.1.hook_resid_mid": lambda x: x.at[:, 0].add(2.0 * vector),
        "blocks.0.mlp.hook_pre_linear": lambda x: x - (x @ unit)[..., None] * unit[None, None],
        "blocks.2.attn.hook_pattern": lambda x: x.at[:, 0].set(mean),
        "blocks.1.attn.hook_v": lambda x: x.at[:, :, 0].set(source[index][:, :, 0]),
    }
    expected = jinterp.run_with_hooks(model, params, tokens, functions)
    got = jinterp.run_with_hooks(model, params, tokens, interventions)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(np.asarray(got) - np.asarray(model(params, tokens))).max() > 1e-2


def test_rms_hook_scale_feeds_the_output_and_optional_result_sums_to_attn_out():
    model = models.Llama(LLAMA)
    params = perturbed(model, seed=5)
    tokens = np.arange(10).reshape(2, 5)
    names = ["blocks.1.ln1.hook_normalized"]
    _, plain = jinterp.run_with_cache(model, params, tokens, names=names)
    _, doubled = jinterp.run_with_cache(model, params, tokens, names=names,
                                        hooks={"blocks.1.ln1.hook_scale": lambda s: 2 * s})
    np.testing.assert_allclose(doubled[names[0]], np.asarray(plain[names[0]]) / 2, rtol=1e-4,
                               atol=1e-6)
    # the optional per-head result sums (with b_O) to hook_attn_out, in a GQA model with biases
    _, cache = jinterp.run_with_cache(model, params, tokens, names=["blocks.1.attn.hook_result",
                                                                    "blocks.1.hook_attn_out"])
    result = np.asarray(cache["blocks.1.attn.hook_result"])
    assert result.shape == (2, 5, 4, 32)
    np.testing.assert_allclose(result.sum(axis=2) + np.asarray(params["blocks"]["attn"]["b_O"][1]),
                               cache["blocks.1.hook_attn_out"], atol=1e-5)
