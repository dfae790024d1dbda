"""Tests for the ``--part`` analyses of the superposition study: planted geometry, no training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp.experiments.superposition import (
    analysis,
    basis,
    computation,
    correlated,
    geometry,
    neurons,
    training,
)


def _polygon(k: int) -> np.ndarray:
    a = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)])  # [2 k]


def _tetrahedron() -> np.ndarray:
    return np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float).T / np.sqrt(3)


def _antiprism() -> np.ndarray:
    h = 1 / np.sqrt(3)
    r = np.sqrt(1 - h**2)
    a = np.pi / 2 * np.arange(4)
    top = np.stack([r * np.cos(a), r * np.sin(a), np.full(4, h)])
    bottom = np.stack([r * np.cos(a + np.pi / 4), r * np.sin(a + np.pi / 4), np.full(4, -h)])
    return np.concatenate([top, bottom], axis=1)  # [3 8]


def _harmonic_frame(k: int, d: int) -> np.ndarray:
    """k equal-norm vectors in 2d dims forming a tight frame (D_i = 2d / k for every i)."""
    j = np.arange(k)
    rows = [f(2 * np.pi * j * (l + 1) / k) for l in range(d) for f in (np.cos, np.sin)]
    W = np.stack(rows)
    return W / np.linalg.norm(W, axis=0)


def _tegum(blocks, n_unrepresented=3, seed=0):
    """Block-diagonal tegum product of the given polytopes, randomly rotated, plus zeros."""
    dims = sum(b.shape[0] for b in blocks)
    feats = sum(b.shape[1] for b in blocks)
    W = np.zeros((dims, feats + n_unrepresented))
    r = c = 0
    for b in blocks:
        W[r:r + b.shape[0], c:c + b.shape[1]] = b
        r, c = r + b.shape[0], c + b.shape[1]
    W[:, feats:] = 0.01 * np.random.default_rng(seed).normal(size=(dims, n_unrepresented))
    Q, _ = np.linalg.qr(np.random.default_rng(seed + 1).normal(size=(dims, dims)))
    perm = np.random.default_rng(seed + 2).permutation(W.shape[1])
    return (Q @ W)[:, perm], perm


BLOCKS = {"tetra": (_tetrahedron(), 3, 4), "triangle": (_polygon(3), 2, 3),
          "digon": (_polygon(2), 1, 2), "pentagon": (_polygon(5), 2, 5),
          "antiprism": (_antiprism(), 3, 8), "frame": (_harmonic_frame(11, 2), 4, 11)}


def test_tegum_factors_recover_planted_polytopes():
    W, perm = _tegum([b for b, _, _ in BLOCKS.values()])
    represented = (W**2).sum(0) > 0.5
    assert represented.sum() == sum(k for _, _, k in BLOCKS.values())
    labels, factors = geometry.tegum_factors(W, represented)
    got = sorted((f["rank"], f["size"]) for f in factors)
    assert got == sorted((r, k) for _, r, k in BLOCKS.values())
    assert (labels[~represented] == -1).all()
    # every member's measured D_i equals its factor's rank / size: the tegum-product claim
    d = np.asarray(analysis.feature_dimensionality(jnp.asarray(W, jnp.float32)))
    for f in factors:
        np.testing.assert_allclose(d[f["features"]], f["predicted"], atol=1e-3)
    # planted block of each original column survives the permutation
    for f in factors:
        originals = perm[f["features"]]
        assert originals.max() - originals.min() + 1 == f["size"]  # one contiguous block


def test_tegum_factors_merge_when_blocks_interfere():
    """Two pentagons sharing a plane are one factor of rank 2, not two."""
    W = np.concatenate([_polygon(5), np.array([[0.0, 1.0], [1.0, 0.0]]) @ _polygon(5) * 0.9],
                       axis=1)
    _, factors = geometry.tegum_factors(W, np.ones(10, bool))
    assert [(f["rank"], f["size"]) for f in factors] == [(2, 10)]
    with pytest.raises(ValueError, match="hidden, feature"):
        geometry.tegum_factors(W, np.ones(9, bool))


def test_line_fractions_nearest_line_and_held_count():
    d = np.array([0.75, 0.74, 0.5, 0.51, 0.49, 0.4, 0.39, 0.376, 0.37, 0.62, 0.2])
    fr = geometry.line_fractions(d, tol=0.02)
    # 0.39 is within 0.02 of both 2/5 and 3/8 but counts once, for 2/5 (nearer)
    expected = {"3/4": 2, "2/3": 0, "1/2": 3, "2/5": 2, "3/8": 2}
    assert fr == {k: pytest.approx(v / d.size) for k, v in expected.items()}
    assert sum(fr.values()) <= 1.0
    assert geometry.lines_held(fr, 0.15) == 4
    assert geometry.line_fractions(np.array([]))["1/2"] == 0.0


def test_explain_peaks_attributes_frames():
    rng = np.random.default_rng(0)
    d = np.concatenate([0.5 + 0.001 * rng.normal(size=40), 20 / 90 + 0.002 * rng.normal(size=90)])
    types = [(1, 2)] * 40 + [(20, 90)] * 90
    peaks = analysis.histogram_peaks(d)
    out = geometry.explain_peaks(peaks, d, types)
    assert [round(p["peak"], 2) for p in out] == [0.22, 0.5]
    assert out[0]["factors"][0] == pytest.approx(
        {"rank": 20, "size": 90, "share": 1.0, "mean_D": 20 / 90}, abs=1e-3)
    assert out[1]["factors"][0]["size"] == 2


def test_neuron_counts_and_alignment():
    W = np.zeros((5, 10))
    W[np.arange(5), np.arange(5)] = 1.0  # five monosemantic neurons
    W[4, 7] = 0.6  # ... but neuron 4 also carries feature 7
    counts = neurons.neuron_counts(W)
    assert counts == {"monosemantic": 4, "polysemantic": 1, "dead": 0}
    rep = (W**2).sum(0) > 0.3
    assert neurons.aligned_fraction(W, rep) == pytest.approx(1.0)
    Q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(5, 5)))
    assert neurons.aligned_fraction(Q @ W, rep) < 0.5  # a rotation destroys alignment
    assert neurons.neuron_counts(np.zeros((3, 4)))["dead"] == 3


def test_set_sampler_statistics():
    key = jax.random.PRNGKey(0)
    group = jnp.asarray(correlated.pair_layout(2))
    x = np.asarray(correlated.sample_sets(key, jnp.float32(0.3), 40_000, group, anti=False))
    on = x > 0
    np.testing.assert_array_equal(on[:, 0], on[:, 1])  # a correlated pair is on together
    np.testing.assert_allclose(on.mean(0), 0.3, atol=0.015)
    assert abs(np.corrcoef(on[:, 0], on[:, 2])[0, 1]) < 0.03  # different sets independent
    y = np.asarray(correlated.sample_sets(key, jnp.float32(0.3), 40_000, group, anti=True))
    on = y > 0
    assert not (on[:, 0] & on[:, 1]).any()  # never both members of an anticorrelated pair
    np.testing.assert_allclose(on.mean(0), 0.15, atol=0.015)
    np.testing.assert_allclose((on[:, 0] | on[:, 1]).mean(), 0.3, atol=0.015)
    assert y[on].max() <= 1.0 and y[on].mean() == pytest.approx(0.5, abs=0.01)


def test_pair_geometry_predictions():
    ortho = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])  # pairs (0,1), (2,3)
    anti = ortho[:, [0, 2, 1, 3]]  # pairs antipodal
    norm_sq = np.ones((2, 2))
    np.testing.assert_allclose(correlated.pair_angles_deg(ortho), [90.0, 90.0])
    np.testing.assert_allclose(correlated.pair_angles_deg(anti), [180.0, 180.0])
    m = correlated.matches_prediction
    assert m("correlated", correlated.pair_angles_deg(ortho), norm_sq, False, 10).all()
    assert not m("correlated", correlated.pair_angles_deg(anti), norm_sq, False, 10).any()
    assert m("anticorrelated", correlated.pair_angles_deg(anti), norm_sq, False, 10).all()
    assert not m("anticorrelated", correlated.pair_angles_deg(anti), norm_sq * 0.1, False,
                 10).any()  # unrepresented features never match
    hexagon = _polygon(6)[:, [0, 1, 2, 3, 4, 5]]  # neighbours paired: 60 degrees
    assert m("collapse", correlated.pair_angles_deg(hexagon), np.ones((3, 2)), False, 10).all()
    merged = np.repeat(_polygon(3), 2, axis=1) / np.sqrt(2)
    assert m("collapse", correlated.pair_angles_deg(merged), np.full((3, 2), 0.5), True,
             10).all()


def test_abs_model_exact_and_one_sided_solutions():
    n = 3
    W1 = np.concatenate([np.eye(n), -np.eye(n)])  # [2n n]: ReLU(x_i) and ReLU(-x_i)
    W2 = np.concatenate([np.eye(n), np.eye(n)], axis=1)  # [n 2n]
    x = np.random.default_rng(0).uniform(-1, 1, (5, n))
    out = np.asarray(computation.abs_forward(jnp.asarray(W1), jnp.asarray(W2), jnp.zeros(n),
                                             jnp.asarray(x)))
    np.testing.assert_allclose(out, np.abs(x), atol=1e-6)
    half = {"W1": jnp.asarray(W1[None, :n]), "W2": jnp.asarray(W2[None, :, :n]),
            "b": jnp.zeros((1, n))}  # ReLU(x) only: relative error 1/2
    keys = jax.random.split(jax.random.PRNGKey(0), 1)
    err, sq = computation.per_feature_error(half, keys, jnp.full((1, n), 0.5), 40_000)
    np.testing.assert_allclose(np.asarray(err / sq), 0.5, atol=0.02)
    # rescaling a hidden unit does not change the function
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(4, n)), rng.normal(size=(n, 4))
    A2, B2 = computation.normalise_neurons(A, B)
    np.testing.assert_allclose(np.abs(A2).max(axis=1), 1.0)
    f = lambda a, b: np.asarray(computation.abs_forward(jnp.asarray(a), jnp.asarray(b),  # noqa: E731
                                                        jnp.zeros(n), jnp.asarray(x)))
    np.testing.assert_allclose(f(A, B), f(A2, B2), rtol=1e-5, atol=1e-6)


def test_asymmetric_motif_detector():
    W1 = np.array([[1.0, -0.3, 0.0], [1.0, 0.0, 0.0], [1.0, -0.8, 0.0]])
    W2 = np.array([[0.3, 1.0, 0.5], [2.0, 0.0, 0.4], [0.0, 0.0, 0.0]])  # [feature neuron]
    found = computation.asymmetric_neurons(W1, W2)
    assert [f["neuron"] for f in found] == [0]  # neuron 2 is not 2x asymmetric
    assert found[0]["strong"] == 0 and found[0]["weak"] == 1


def test_relu_hidden_forward_matches_loop():
    rng = np.random.default_rng(3)
    W, b, x = rng.normal(size=(2, 4)), rng.normal(size=4), rng.uniform(size=(3, 4))
    out = np.asarray(basis.relu_hidden_forward(jnp.asarray(W), jnp.asarray(b), jnp.asarray(x)))
    for s in range(3):
        h = [max(sum(W[k, j] * x[s, j] for j in range(4)), 0.0) for k in range(2)]
        for i in range(4):
            ref = max(sum(W[k, i] * h[k] for k in range(2)) + b[i], 0.0)
            assert out[s, i] == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_lr_schedules_follow_the_notebook():
    cfg = training.TrainConfig(steps=100, steps_per_call=50, lr_schedule="cosine")
    sched = training.learning_rate(cfg)
    for step in (0, 37, 99):
        assert float(sched(step)) == pytest.approx(1e-3 * np.cos(0.5 * np.pi * step / 99),
                                                   abs=1e-9)
    lin = training.learning_rate(training.TrainConfig(steps=100, steps_per_call=50,
                                                      lr_schedule="linear"))
    assert float(lin(25)) == pytest.approx(1e-3 * 0.75)
    assert training.learning_rate(training.TrainConfig()) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        training.TrainConfig(lr_schedule="warmup")
