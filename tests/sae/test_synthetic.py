"""Planted-dictionary generator and the feature-recovery score."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from jinterp.sae import synthetic


def test_probabilities_follow_capped_power_law():
    cfg = synthetic.SyntheticConfig(n_features=200, d=32, mean_active=5.0, power_law_exponent=0.8)
    p = np.asarray(synthetic.feature_probabilities(cfg), np.float64)
    np.testing.assert_allclose(p.sum(), 5.0, rtol=1e-4)
    i, j = 10, 150
    np.testing.assert_allclose(p[i] / p[j], ((i + 1) / (j + 1)) ** -0.8, rtol=1e-5)
    capped = synthetic.SyntheticConfig(n_features=50, d=8, mean_active=20.0, power_law_exponent=1.5)
    pc = np.asarray(synthetic.feature_probabilities(capped), np.float64)
    assert pc[0] == 1.0 and np.all(pc <= 1.0) and np.all(np.diff(pc) <= 0)
    np.testing.assert_allclose(pc.sum(), 20.0, rtol=1e-4)


def test_samples_are_sparse_nonnegative_superpositions():
    cfg = synthetic.SyntheticConfig(n_features=64, d=16, mean_active=4.0, magnitude_low=0.5,
                                    magnitude_high=1.5)
    dictionary = synthetic.make_dictionary(cfg, jax.random.key(0))
    np.testing.assert_allclose(jnp.linalg.norm(dictionary, axis=-1), 1.0, rtol=1e-5)
    sample = jax.jit(synthetic.sample, static_argnums=(0, 3))
    x, c = sample(cfg, dictionary, jax.random.key(1), 20000)
    c = np.asarray(c)
    np.testing.assert_allclose(x, c @ np.asarray(dictionary), rtol=1e-4, atol=1e-5)
    active = c > 0
    assert np.all(c[active] >= 0.5) and np.all(c[active] <= 1.5) and np.all(c[~active] == 0)
    p = np.asarray(synthetic.feature_probabilities(cfg))
    freq = active.mean(0)
    # Binomial standard error: 5 sigma band per feature.
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 20000) + 1e-3)
    np.testing.assert_allclose(active.sum(1).mean(), 4.0, rtol=0.03)


def test_feature_recovery_against_loop():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(30, 8))
    learned = rng.normal(size=(50, 8))
    learned[:10] = true[:10] * rng.uniform(0.5, 3, size=(10, 1))  # 10 exact (scaled) copies
    learned[10] = true[10] + 0.05 * rng.normal(size=8)  # one near copy
    cos = np.array([max(t @ w / np.linalg.norm(t) / np.linalg.norm(w) for w in learned)
                    for t in true])
    np.testing.assert_allclose(synthetic.max_cosine(jnp.asarray(true), jnp.asarray(learned)), cos,
                               rtol=1e-5)
    for thr in (0.5, 0.9, 0.999):
        np.testing.assert_allclose(
            synthetic.feature_recovery(jnp.asarray(true), jnp.asarray(learned), thr),
            np.mean(cos >= thr))
    assert float(synthetic.feature_recovery(jnp.asarray(true), jnp.asarray(learned))) >= 11 / 30


def test_recovery_extremes():
    cfg = synthetic.SyntheticConfig(n_features=128, d=32)
    dictionary = synthetic.make_dictionary(cfg, jax.random.key(0))
    shuffled = dictionary[np.random.default_rng(1).permutation(cfg.n_features)] * 2.0
    assert float(synthetic.feature_recovery(dictionary, shuffled)) == 1.0
    unrelated = synthetic.make_dictionary(cfg, jax.random.key(2))
    assert float(synthetic.feature_recovery(dictionary, unrelated)) == 0.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="mean_active"):
        synthetic.SyntheticConfig(n_features=4, d=2, mean_active=5.0)
    # Under the test's jaxtyping checks the shared ``d`` of the signature catches it first;
    # both errors name the two shapes.
    with pytest.raises((ValueError, TypeCheckError), match=r"3, ?4.*5, ?6"):
        synthetic.max_cosine(jnp.zeros((3, 4)), jnp.zeros((5, 6)))
