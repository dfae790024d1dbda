"""Hooks and built-in interventions: against hand-computed expectations, vmap and grad."""

import jax
import jax.numpy as jnp
import numpy as np
from helpers import SMALL, small_model, tokens

import jinterp
from jinterp import MeanAblate, Patch, ProjectOut, ResampleAblate, Steer, ZeroAblate

B, P, H = 2, 10, SMALL.n_heads
RESID = ("batch", "pos", "d_model")
PER_HEAD = ("batch", "pos", "n_heads", "d_head")
PATTERN = ("batch", "n_heads", "q_pos", "k_pos")


def rand(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# ------------------------------------------------------------------ each intervention, by hand
def test_patch_positions_and_heads_by_hand():
    x, v = rand((B, P, H, 3)), rand((B, P, H, 3), 1)
    out = np.asarray(Patch(v, pos=[2, 5], head=1).apply(x, PER_HEAD))
    expected = np.asarray(x).copy()
    expected[:, [2, 5], 1] = np.asarray(v)[:, [2, 5], 1]
    np.testing.assert_array_equal(out, expected)
    # A boolean mask means the same as indices; None means everywhere.
    mask = np.zeros(P, bool)
    mask[[2, 5]] = True
    np.testing.assert_array_equal(Patch(v, pos=jnp.asarray(mask), head=1).apply(x, PER_HEAD), out)
    np.testing.assert_array_equal(Patch(v).apply(x, PER_HEAD), v)


def test_patch_on_attention_pattern_uses_query_axis():
    x, v = rand((B, H, P, P)), rand((B, H, P, P), 1)
    out = np.asarray(Patch(v, pos=3, head=2).apply(x, PATTERN))
    expected = np.asarray(x).copy()
    expected[:, 2, 3, :] = np.asarray(v)[:, 2, 3, :]
    np.testing.assert_array_equal(out, expected)


def test_zero_mean_resample_ablation_by_hand():
    x, ref = rand((B, P, 4)), rand((5, P, 4), 2)
    out = np.asarray(ZeroAblate(pos=0).apply(x, RESID))
    expected = np.asarray(x).copy()
    expected[:, 0] = 0
    np.testing.assert_array_equal(out, expected)

    out = np.asarray(MeanAblate.from_activations(ref, pos=[1, 2]).apply(x, RESID))
    expected = np.asarray(x).copy()
    expected[:, [1, 2]] = np.asarray(ref).mean(0)[[1, 2]]
    np.testing.assert_allclose(out, expected, atol=1e-6)

    index = jnp.array([4, 0])
    out = np.asarray(ResampleAblate(ref, index).apply(x, RESID))
    np.testing.assert_array_equal(out, np.asarray(ref)[[4, 0]])
    drawn = ResampleAblate.random(jax.random.key(0), ref, batch=B)
    assert drawn.index.shape == (B,) and int(drawn.index.max()) < 5


def test_steer_and_project_out_by_hand():
    x, d = rand((B, P, 4)), rand((4,), 3)
    out = np.asarray(Steer(d, scale=2.5, pos=[7]).apply(x, RESID))
    expected = np.asarray(x).copy()
    expected[:, 7] += 2.5 * np.asarray(d)
    np.testing.assert_allclose(out, expected, atol=1e-6)

    out = np.asarray(ProjectOut(d).apply(x, RESID))
    unit = np.asarray(d) / np.linalg.norm(d)
    expected = np.asarray(x) - (np.asarray(x) @ unit)[..., None] * unit
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(out @ unit, 0, atol=1e-5)


# ------------------------------------------------------------------ hooks inside the model
def test_hooks_change_the_forward_and_compose_in_order():
    model, params = small_model()
    toks = tokens(B, P)
    name = "blocks.1.hook_resid_mid"
    _, clean = jinterp.run_with_cache(model, params, toks)
    # A list of hooks applies in order: (x * 2) + 1, not (x + 1) * 2.
    logits, cache = jinterp.run_with_cache(model, params, toks,
                                           names=[name, "blocks.1.hook_resid_post"],
                                           hooks={name: [lambda x: x * 2, lambda x: x + 1]})
    np.testing.assert_allclose(cache[name], np.asarray(clean[name]) * 2 + 1, atol=1e-5)
    # Downstream sees the edit; upstream does not.
    assert not np.allclose(cache["blocks.1.hook_resid_post"], clean["blocks.1.hook_resid_post"])
    # Hooking only layer 1 leaves layers 0 and 2 of the same point untouched in the forward.
    _, c0 = jinterp.run_with_cache(model, params, toks, names=["blocks.0.hook_resid_mid"],
                                   hooks={name: lambda x: x * 0})
    np.testing.assert_allclose(c0["blocks.0.hook_resid_mid"], clean["blocks.0.hook_resid_mid"],
                               atol=1e-6)


def test_zero_ablating_a_head_equals_removing_its_output_by_hand():
    model, params = small_model()
    toks = tokens(B, P)
    _, clean = jinterp.run_with_cache(model, params, toks)
    _, ablated = jinterp.run_with_cache(model, params, toks,
                                        hooks={"blocks.2.attn.hook_z": ZeroAblate(head=1)},
                                        names=["blocks.2.hook_attn_out"])
    W_O = params["blocks"]["attn"]["W_O"][2]
    head_out = jnp.einsum("bpe,ed->bpd", clean["blocks.2.attn.hook_z"][:, :, 1], W_O[1])
    np.testing.assert_allclose(ablated["blocks.2.hook_attn_out"],
                               clean["blocks.2.hook_attn_out"] - head_out, atol=1e-5)


def test_patching_everything_from_another_run_reproduces_it():
    model, params = small_model()
    clean, corrupt = tokens(B, P, seed=1), tokens(B, P, seed=2)
    clean_logits, clean_cache = jinterp.run_with_cache(model, params, clean)
    # Patch the full residual entering layer 0 from the clean run into the corrupted run.
    name = "blocks.0.hook_resid_pre"
    patched = jinterp.run_with_hooks(model, params, corrupt, {name: Patch(clean_cache[name])})
    np.testing.assert_allclose(patched, clean_logits, atol=1e-4)


def test_vmapped_single_position_patches_equal_a_python_loop():
    model, params = small_model()
    clean, corrupt = tokens(B, P, seed=1), tokens(B, P, seed=2)
    name = "blocks.1.hook_resid_pre"
    _, clean_cache = jinterp.run_with_cache(model, params, clean, names=name)
    values = clean_cache[name]

    def patched_logits(pos):
        return jinterp.run_with_hooks(model, params, corrupt, {name: Patch(values, pos=pos)})

    swept = jax.jit(jax.vmap(patched_logits))(jnp.arange(P))  # one compiled program
    looped = np.stack([np.asarray(patched_logits(p)) for p in range(P)])
    assert swept.shape == (P, B, P, SMALL.d_vocab)
    np.testing.assert_allclose(swept, looped, atol=1e-5)
    # And patching position p only changes logits at positions >= p (causality).
    base = jinterp.run_with_hooks(model, params, corrupt, {})
    np.testing.assert_allclose(swept[5][:, :5], base[:, :5], atol=1e-5)


def test_vmapped_head_by_position_patching_grid():
    model, params = small_model()
    clean, corrupt = tokens(B, P, seed=1), tokens(B, P, seed=2)
    name = "blocks.0.attn.hook_z"
    _, cc = jinterp.run_with_cache(model, params, clean, names=name)

    def metric(head, pos):
        logits = jinterp.run_with_hooks(model, params, corrupt,
                                        {name: Patch(cc[name], pos=pos, head=head)})
        return logits[:, -1].mean()

    heads, positions = jnp.meshgrid(jnp.arange(H), jnp.arange(P), indexing="ij")
    grid = jax.vmap(jax.vmap(metric))(heads, positions)
    assert grid.shape == (H, P)
    np.testing.assert_allclose(grid[2, 4], metric(2, 4), atol=1e-5)
    np.testing.assert_allclose(grid[3, 9], metric(3, 9), atol=1e-5)


def test_grad_flows_into_a_steering_vector():
    model, params = small_model()
    toks = tokens(B, P)
    name = "blocks.1.hook_resid_mid"

    def metric(vector):
        logits = jinterp.run_with_hooks(model, params, toks,
                                        {name: Steer(vector, scale=1.0, pos=P - 1)})
        return logits[:, -1, 7].mean()

    v0 = jnp.zeros(SMALL.d_model)
    grad = jax.grad(metric)(v0)
    eps = 1e-2
    for i in (0, 5, 17):  # central finite differences
        e = jnp.zeros_like(v0).at[i].set(eps)
        fd = (metric(v0 + e) - metric(v0 - e)) / (2 * eps)
        np.testing.assert_allclose(grad[i], fd, rtol=2e-2, atol=1e-4)
    assert float(jnp.abs(grad).max()) > 0


def test_jit_recompiles_not_when_intervention_values_change():
    model, params = small_model()
    toks = tokens(B, P)
    name = "blocks.0.hook_resid_post"
    jinterp.run_with_hooks(model, params, toks, {name: Steer(jnp.ones(SMALL.d_model), 0.5)})
    from jinterp.run import _forward
    before = _forward._cache_size()
    for scale in (1.0, 2.0, 3.0):
        jinterp.run_with_hooks(model, params, toks, {name: Steer(jnp.ones(SMALL.d_model), scale)})
    assert _forward._cache_size() == before
