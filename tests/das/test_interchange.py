"""The interchange intervention and the rotations, against slow references, on a GPT-2 port.

The reference of an interchange is the definition read literally: rotate both vectors with the
full rotation, copy the source's first ``k`` coordinates into the base's, rotate back.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jinterp
from jinterp import At, Patch, das, models
from jinterp.das import train as das_train

GPT2 = models.GPT2(models.GPT2Config(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                                     d_vocab=20, n_ctx=8))


@functools.lru_cache(maxsize=None)
def gpt2():
    params = GPT2.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    base, source = rng.integers(0, 20, (2, 3, 6))
    _, cache = jinterp.run_with_cache(GPT2, params, source)
    return params, base, source, cache


def reference(h, s, rotation, k, weights=None):
    """Rotate, mix the first ``k`` rotated coordinates (``weights``: softly), rotate back."""
    h, s, r = (np.asarray(x, np.float64) for x in (h, s, rotation))
    w = np.zeros(r.shape[0])
    w[:k] = 1.0 if weights is None else np.asarray(weights)[:k]
    rh, rs = h @ r.T, s @ r.T
    return ((1 - w) * rh + w * rs) @ r


@pytest.mark.parametrize("kind", ["expm", "qr"])
def test_rotations_are_orthonormal_for_any_parameters(kind):
    rot = das.init_rotation(jax.random.key(1), 12, 5, kind)
    moved = rot.replace(generator=rot.generator
                        + jax.random.normal(jax.random.key(2), rot.generator.shape))
    for r in (rot, moved):
        m = np.asarray(r.matrix(), np.float64)
        np.testing.assert_allclose(m @ m.T, np.eye(m.shape[0]), atol=1e-5)
        assert r.basis(5).shape == (5, 12)
    assert rot.n_rows == (12 if kind == "expm" else 5)
    if kind == "expm":  # starts exactly at its Haar-random anchor
        np.testing.assert_allclose(rot.matrix(), rot.anchor, atol=1e-6)
    with pytest.raises(ValueError, match="has 12 rows|has 5 rows"):
        rot.basis(13)


def test_interchange_equals_the_rotated_swap():
    rng = np.random.default_rng(0)
    h, s = rng.normal(size=(2, 4, 3, 10)).astype(np.float32)
    r = das.random_orthogonal(jax.random.key(0), 10)
    for k in (1, 4, 10):
        np.testing.assert_allclose(das.interchange(h, s, r[:k]), reference(h, s, r, k),
                                   atol=1e-5)
    weights = rng.uniform(size=10).astype(np.float32)
    np.testing.assert_allclose(das.interchange(h, s, r, weights), reference(h, s, r, 10, weights),
                               atol=1e-5)
    np.testing.assert_allclose(das.interchange(h, s, r), s, atol=1e-5)  # the whole space: s
    np.testing.assert_allclose(das.interchange(h, s, r, np.zeros(10, np.float32)), h, atol=1e-6)


def test_on_a_port_it_equals_the_reference_at_the_chosen_positions_from_any_start():
    params, base, source, cache = gpt2()
    _, clean = jinterp.run_with_cache(GPT2, params, base)
    name = "blocks.1.hook_resid_mid"
    r = das.random_orthogonal(jax.random.key(3), 16)
    h, src = np.asarray(clean[name]), cache[name]
    want_act = h.copy()
    want_act[:, 4:6] = reference(h[:, 4:6], src[:, 4:6], r, 3)
    want = jinterp.run_with_hooks(GPT2, params, base, {name: Patch(want_act)})
    got = jinterp.run_with_hooks(GPT2, params, base,
                                 {name: das.Interchange(r[:3], src, pos=(4, 5))})
    np.testing.assert_allclose(got, want, atol=1e-4)
    # What training runs: from the residual entering block 1, the source stopped after it.
    start_in = das_train.run_inputs(GPT2, params, base, name)
    source_act = das_train.source_activation(
        GPT2, params, das_train.run_inputs(GPT2, params, source, name), name)
    np.testing.assert_allclose(source_act, src, atol=1e-5)
    fast = das_train.intervened_logits(GPT2, params, start_in, source_act, r[:3], None,
                                       hook=name, pos=(4, 5))
    np.testing.assert_allclose(fast, want, atol=1e-4)


def test_per_head_points_and_at_with_a_stacked_source():
    params, base, source, cache = gpt2()
    r = das.random_orthogonal(jax.random.key(4), 8)
    z = np.asarray(cache["blocks.0.attn.hook_z"])  # batch pos n_heads d_head
    x = np.random.default_rng(1).normal(size=z.shape).astype(np.float32)
    want = x.copy()
    want[:, :, 1] = reference(x[:, :, 1], z[:, :, 1], r, 2)
    got = das.Interchange(r[:2], z, head=1).apply(jnp.asarray(x), GPT2.points["attn.hook_z"])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # A layer as data: At(l, ...) reads layer l of a [layer, ...] source, so a sweep is a vmap.
    basis = das.random_orthogonal(jax.random.key(5), 16)[:4]
    stacked = cache.stack("hook_resid_post")

    @jax.jit
    def by_layer(params, stacked):
        one = lambda l: jinterp.run_with_hooks(
            GPT2, params, base, {"hook_resid_post": At(l, das.Interchange(basis, stacked))})
        return jax.vmap(one)(jnp.arange(2))

    swept = by_layer(params, stacked)
    name = "blocks.1.hook_resid_post"
    named = jinterp.run_with_hooks(GPT2, params, base, {name: das.Interchange(basis, cache[name])})
    np.testing.assert_allclose(swept[1], named, atol=1e-4)
    assert np.abs(np.asarray(swept[0] - swept[1])).max() > 1e-3  # layer 0 is another edit


def test_soft_mask_and_its_schedule():
    mask = das.soft_mask(jnp.float32(3.0), 8, jnp.float32(0.01))
    np.testing.assert_allclose(mask, [1, 1, 1, 0, 0, 0, 0, 0], atol=1e-6)
    warm = das.soft_mask(jnp.float32(3.0), 8, jnp.float32(100.0))
    assert np.all(np.abs(np.asarray(warm) - 0.5) < 0.02)
    cfg = das.DASConfig(hook="x", boundless=True, steps=11, temperature=(4.0, 0.04))
    temps = [float(das_train.temperature_at(cfg, jnp.int32(i))) for i in (0, 5, 10)]
    np.testing.assert_allclose(temps, [4.0, 0.4, 0.04], rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    params, base, source, cache = gpt2()
    name = "blocks.1.hook_resid_post"
    src, labels = cache[name], np.zeros(3, np.int32)
    wide = das.random_orthogonal(jax.random.key(0), 32)[:2]
    with pytest.raises(ValueError, match="width 32 but this activation's last axis has width 16"):
        jinterp.run_with_hooks(GPT2, params, base, {name: das.Interchange(wide, src)})
    basis = das.random_orthogonal(jax.random.key(0), 16)[:2]
    with pytest.raises(ValueError, match="base batch has 3 examples and the source 2"):
        jinterp.run_with_hooks(GPT2, params, base, {name: das.Interchange(basis, src[:2])})
    # Under pytest the jaxtyping hook refuses mismatched shape names ('n', 'batch') at the call
    # (a TypeError naming the parameter); without it the library's own checks raise ValueError.
    with pytest.raises((ValueError, TypeError), match="weights have shape|parameter 'weights'"):
        jinterp.run_with_hooks(GPT2, params, base,
                               {name: das.Interchange(basis, src, jnp.ones(3))})
    with pytest.raises(ValueError, match="n_dims=17 is larger than the width d=16"):
        das.train_das(GPT2, params, base, source, labels, das.DASConfig(hook=name, n_dims=17))
    with pytest.raises((ValueError, TypeError),
                       match="base has 3 examples but source has 2|parameter 'source'"):
        das.train_das(GPT2, params, base, source[:2], labels, das.DASConfig(hook=name))
    with pytest.raises((ValueError, TypeError), match="labels have shape|parameter 'labels'"):
        das.train_das(GPT2, params, base, source, labels[:2], das.DASConfig(hook=name))
    with pytest.raises(KeyError, match="hook_resid_post"):
        das.train_das(GPT2, params, base, source, labels,
                      das.DASConfig(hook="blocks.1.hook_resid_pots"))
    with pytest.raises(ValueError, match="needs \\[n, 16\\]"):
        das.iia(GPT2, params, base, source, labels, wide, hook=name)
    with pytest.raises(ValueError, match="Use parametrisation='expm'"):
        das.DASConfig(hook=name, boundless=True, parametrisation="qr")
    with pytest.raises(ValueError, match=r"n=17 must lie in 1\.\.d=16"):
        das.random_basis(jax.random.key(0), 16, 17)
