"""Probes on planted features: found at the planted (layer, position) only, control at chance;
the optimum is a true optimum (zero gradient), ridge equals its normal equations and the
optax linear probe; k-sparse finds the planted neuron; the structural probe recovers a planted
tree metric (scored against scipy's Spearman and minimum spanning tree)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse.csgraph
import scipy.stats

from jinterp import probes

L, N, P, D = 4, 400, 3, 16


def _noise(seed=0):
    rng = np.random.default_rng(seed)
    return rng, rng.normal(size=(L, N, P, D)).astype(np.float32)


def test_planted_direction_is_found_there_only_and_control_is_at_chance(tmp_path):
    rng, acts = _noise()
    y = rng.integers(0, 2, N)
    u = rng.normal(size=D)
    u /= np.linalg.norm(u)
    acts[2, :, 1] += 2.0 * (2 * y[:, None] - 1) * u  # planted at layer 2, position 1
    cfg = probes.ProbeConfig(l2=1e-2, steps=50)
    r = probes.fit_probes(acts, y, cfg)
    test, control = np.asarray(r.test_score), np.asarray(r.control_score)
    assert test[2, 1] > 0.95
    others = np.delete(test.ravel(), 2 * P + 1)
    assert others.max() < 0.7 and abs(others.mean() - 0.5) < 0.08, test
    assert control.max() < 0.7 and abs(control.mean() - 0.5) < 0.08, control
    assert r.selectivity[2, 1] > 0.3
    w = np.asarray(r.W[2, 1, :, 0])
    assert abs(w @ u) / np.linalg.norm(w) > 0.85  # the probe points along the planted direction
    # predict() on raw activations reproduces the test accuracy
    pred = np.asarray(r.predict(acts))[:, r.test_index]
    np.testing.assert_allclose((pred == y[r.test_index, None]).mean(1), test, atol=1e-6)
    # optimality: the gradient of the standardised objective vanishes at the returned probe
    x = acts[2, r.train_index, 1]
    mean, std = x.mean(0), np.maximum(x.std(0), 1e-6)
    z = jnp.asarray((x - mean) / std)
    w_std = r.W[2, 1] * jnp.asarray(std)[:, None]
    b_std = r.b[2, 1] + jnp.asarray(mean) @ r.W[2, 1]

    def objective(p):
        out = (z @ p["W"] + p["b"][None])[:, 0]
        bce = optax.sigmoid_binary_cross_entropy(out, jnp.asarray(y[r.train_index], jnp.float32))
        return bce.mean() + 0.5 * cfg.l2 * jnp.sum(p["W"] ** 2)

    grads = jax.grad(objective)({"W": w_std, "b": b_std})
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) < 1e-3
    probes.plot_probe_scores(r, str(tmp_path / "acc.png"), pos=1)
    assert (tmp_path / "acc.png").stat().st_size > 0


def test_ridge_is_its_normal_equations_and_the_optax_linear_probe_agrees():
    rng, acts = _noise(1)
    u = rng.normal(size=D)
    target = acts[1, :, 0] @ u + 0.1 * rng.normal(size=N)
    ridge = probes.fit_probes(acts, target, probes.ProbeConfig("ridge", l2=1e-2), control=False)
    linear = probes.fit_probes(acts, target, probes.ProbeConfig("linear", l2=1e-2, steps=50),
                               control=False)
    assert ridge.test_score[1, 0] > 0.95 and np.delete(np.asarray(ridge.test_score), P).max() < 0.1
    np.testing.assert_allclose(linear.W, ridge.W, atol=2e-4)
    # reference: numpy least squares on the standardised, augmented system of one site
    x = acts[1, ridge.train_index, 0]
    mean, std = x.mean(0), x.std(0)
    z = (x - mean) / std
    n = len(z)
    A = np.vstack([np.hstack([z, np.ones((n, 1))]) / np.sqrt(n),
                   np.hstack([np.sqrt(1e-2) * np.eye(D), np.zeros((D, 1))])])
    rhs = np.concatenate([target[ridge.train_index] / np.sqrt(n), np.zeros(D)])
    sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(ridge.W[1, 0, :, 0]) * std, sol[:D], atol=1e-4)


def test_k_sparse_probe_finds_the_planted_neuron_and_multiclass_per_token_labels():
    rng, acts = _noise(2)
    y = rng.integers(0, 2, N)
    acts[1, :, 2, 5] += 1.5 * (2 * y - 1)  # neuron 5, layer 1, position 2
    r = probes.fit_probes(acts, y, probes.ProbeConfig(k=1, method="adam", lr=0.1, steps=100))
    assert int(r.features[1, 2, 0]) == 5 and r.test_score[1, 2] > 0.9
    assert np.count_nonzero(np.asarray(r.W[1, 2])) == 1
    assert np.delete(np.asarray(r.test_score), P + 2).max() < 0.7
    labels = rng.integers(0, 3, (N, P))  # three classes, one label per token, at layer 0
    centres = 2.0 * rng.normal(size=(3, D))
    acts[0] += centres[labels]
    m = probes.fit_probes(acts, labels, probes.ProbeConfig(method="adam", lr=0.1, steps=100))
    assert m.W.shape == (L, P, D, 3)
    assert np.asarray(m.test_score)[0].min() > 0.9 and np.asarray(m.test_score)[1:].max() < 0.5
    assert np.asarray(m.control_score).max() < 0.5


def test_structural_probe_recovers_a_planted_tree_metric():
    acts, dist = probes.synthetic_trees(80, 10, 24, 3, planted_layer=1, seed=0)
    r = probes.fit_structural_probe(acts, dist, steps=300, lr=2e-2)
    assert r.spearman[1] > 0.9 and r.uuas[1] > 0.9, (r.spearman, r.uuas)
    assert max(abs(float(r.spearman[l])) for l in (0, 2)) < 0.2
    assert max(float(r.uuas[l]) for l in (0, 2)) < 0.4
    # the metric functions against scipy on one held-out sentence
    h = acts[1, r.test_index[:1]]
    pred = np.asarray(probes.probe_distances(r.B[1], jnp.asarray(h)))[0]
    true = dist[r.test_index[0]]
    i, j = np.triu_indices(10, k=1)
    want = scipy.stats.spearmanr(pred[i, j], true[i, j]).statistic
    np.testing.assert_allclose(probes.spearman(jnp.asarray(pred), jnp.asarray(true)), want,
                               atol=1e-5)
    mst = scipy.sparse.csgraph.minimum_spanning_tree(pred + 1e-9).toarray()
    gold = np.mean(true[mst > 0] == 1)
    np.testing.assert_allclose(probes.uuas(jnp.asarray(pred), jnp.asarray(true)), gold)
    np.testing.assert_array_equal(probes.tree_distances(np.array([-1, 0, 0, 1])),
                                  [[0, 1, 1, 2], [1, 0, 2, 1], [1, 2, 0, 3], [2, 1, 3, 0]])


def test_probe_bad_inputs_name_the_fix():
    acts = np.zeros((2, 10, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"labels of shape \(9,\).*\(2, 10, 3, 4\).*\(10,\)"):
        probes.fit_probes(acts, np.zeros(9, int))
    with pytest.raises(ValueError, match="kind='linear'"):
        probes.fit_probes(acts, np.zeros(10))
    with pytest.raises(ValueError, match=r"acts\[:, :, None\]"):
        probes.fit_probes(acts[:, :, 0], np.zeros(10, int))
    with pytest.raises(ValueError, match="two classes"):
        probes.fit_probes(acts, np.arange(10) % 3, probes.ProbeConfig(k=2))
    with pytest.raises(ValueError, match="kind="):
        probes.ProbeConfig(kind="svm")
    with pytest.raises(ValueError, match=r"\[batch, pos, pos\] = \(10, 3, 3\)"):
        probes.fit_structural_probe(acts, np.zeros((10, 3, 4)))
