"""SAE metrics against slow numpy references and hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

from jinterp.sae import metrics

RNG = np.random.default_rng(0)


def data(n=40, d=5, d_sae=12, mean=0.0):
    x = RNG.normal(size=(n, d)) + mean
    x_hat = x + 0.3 * RNG.normal(size=(n, d))
    f = np.maximum(RNG.normal(size=(n, d_sae)) - 0.8, 0)
    return x, x_hat, f


def test_sparsity_metrics_against_loops():
    _, _, f = data()
    f[:, 3] = 0.0  # one dead latent
    f[:, 7] = 1.0  # one always-on latent
    l0 = np.mean([sum(1 for v in row if v != 0) for row in f])
    l1 = np.mean([sum(abs(v) for v in row) for row in f])
    density = np.array([np.mean([row[i] != 0 for row in f]) for i in range(f.shape[1])])
    np.testing.assert_allclose(metrics.l0(jnp.asarray(f)), l0, rtol=1e-6)
    np.testing.assert_allclose(metrics.l1(jnp.asarray(f)), l1, rtol=1e-5)
    np.testing.assert_allclose(metrics.feature_density(jnp.asarray(f)), density, rtol=1e-6)
    np.testing.assert_allclose(metrics.dead_fraction(jnp.asarray(f)), np.mean(density == 0))
    np.testing.assert_allclose(metrics.dense_fraction(jnp.asarray(f), 0.5), np.mean(density > 0.5))
    # leading axes are tokens too
    np.testing.assert_allclose(metrics.l0(jnp.asarray(f).reshape(4, 10, -1)), l0, rtol=1e-6)


def test_density_histogram():
    f = np.zeros((1000, 4))
    f[:1, 0] = 1  # density 1e-3
    f[:100, 1] = 1  # 1e-1
    f[:, 2] = 1  # 1
    counts, edges, n_dead = metrics.feature_density_histogram(jnp.asarray(f), bins=8,
                                                              log10_range=(-4.0, 0.0))
    expected, _ = np.histogram(np.log10([1e-3, 1e-1, 1.0]), bins=np.linspace(-4, 0, 9))
    np.testing.assert_array_equal(counts, expected)
    assert int(n_dead) == 1 and edges.shape == (9,)


def test_reconstruction_metrics_against_numpy():
    x, x_hat, _ = data()
    mse = np.mean(np.sum((x - x_hat) ** 2, -1))
    var = np.mean(np.sum((x - x.mean(0)) ** 2, -1))
    cos = np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(x, x_hat)])
    ratio = np.mean(np.linalg.norm(x_hat, axis=-1) / np.linalg.norm(x, axis=-1))
    bias = np.mean(np.sum(x_hat**2, -1)) / np.mean(np.sum(x * x_hat, -1))
    legacy = np.mean(1 - np.sum((x - x_hat) ** 2, -1) / np.sum((x - x.mean(0)) ** 2, -1))
    X, H = jnp.asarray(x), jnp.asarray(x_hat)
    np.testing.assert_allclose(metrics.mse(X, H), mse, rtol=1e-5)
    np.testing.assert_allclose(metrics.fvu(X, H), mse / var, rtol=1e-5)
    np.testing.assert_allclose(metrics.explained_variance(X, H), 1 - mse / var, rtol=1e-5)
    np.testing.assert_allclose(metrics.cosine_similarity(X, H), cos, rtol=1e-5)
    np.testing.assert_allclose(metrics.l2_ratio(X, H), ratio, rtol=1e-5)
    np.testing.assert_allclose(metrics.relative_reconstruction_bias(X, H), bias, rtol=1e-5)
    np.testing.assert_allclose(metrics.explained_variance_legacy(X, H), legacy, rtol=1e-4)
    assert set(metrics.summary(X, H, jnp.ones((40, 3)))) >= {"fvu", "l0", "dead_fraction"}


def test_hand_computed_values():
    x = jnp.array([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0); variance sum = 1
    x_hat = jnp.array([[1.0, 1.0], [3.0, 0.0]])  # error 1 on the first token
    np.testing.assert_allclose(metrics.mse(x, x_hat), 0.5)
    np.testing.assert_allclose(metrics.fvu(x, x_hat), 0.5)
    np.testing.assert_allclose(metrics.cosine_similarity(x, x_hat), (1 / np.sqrt(2) + 1) / 2,
                               rtol=1e-6)
    # ||x_hat||^2 mean = (2 + 9)/2, <x, x_hat> mean = (1 + 9)/2
    np.testing.assert_allclose(metrics.relative_reconstruction_bias(x, x_hat), 11 / 10, rtol=1e-6)
    # SAELens@91ca16c: E||x||^2 = 5, mean entry x^2 = 10/4 = 2.5 -> variance 5 - 6.25 < 0
    np.testing.assert_allclose(metrics.explained_variance_saelens(x, x_hat), 1 - 0.5 / (5 - 6.25))


def test_saelens_formula_overstates_explained_variance_with_large_mean():
    # Large-mean activations (like a residual stream): centred FVU is honest, the SAELens
    # formula (squares before averaging) treats most of the mean as explained variance.
    x, _, _ = data(n=200, d=16, mean=0.0)
    x = x + 10.0
    x_hat = x.mean(0) + 0.5 * (x - x.mean(0))  # explains 75% of the (centred) variance
    X, H = jnp.asarray(x), jnp.asarray(x_hat)
    ev = float(metrics.explained_variance(X, H))
    ev_saelens = float(metrics.explained_variance_saelens(X, H))
    np.testing.assert_allclose(ev, 0.75, atol=1e-4)
    mean_sq_norm = np.mean(np.sum(x**2, -1))
    ref = 1 - np.mean(np.sum((x - x_hat) ** 2, -1)) / (mean_sq_norm - np.mean(x**2) ** 2)
    np.testing.assert_allclose(ev_saelens, ref, rtol=1e-4)
    assert abs(ev_saelens - ev) > 0.05  # the two definitions really differ here


def test_shape_mismatch_error():
    # Different widths: the signature's shared ``d`` catches it under the test's jaxtyping
    # checks, the function's own check without them; both errors name the two shapes.
    with pytest.raises((ValueError, TypeCheckError), match=r"2, ?3.*2, ?4"):
        metrics.mse(jnp.zeros((2, 3)), jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):  # token axes differ
        metrics.mse(jnp.zeros((2, 3)), jnp.zeros((3, 3)))
