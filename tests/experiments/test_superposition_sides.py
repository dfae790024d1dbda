"""Tests for the side analysis of the absolute-value model, on planted weights."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from jinterp.experiments.superposition import computation, sides


def _dedicated(n: int):
    """ReLU(x_i) and ReLU(-x_i) on their own neurons: |x| exactly, no superposition."""
    W1 = np.concatenate([np.eye(n), -np.eye(n)])  # [2n n]
    W2 = np.concatenate([np.eye(n), np.eye(n)], axis=1)  # [n 2n]
    return W1, W2, np.zeros(n)


def _crossed():
    """Two neurons, two features, all four sides: n0 = ReLU(x0 - x1), n1 = ReLU(x1 - x0)."""
    W1 = np.array([[1.0, -1.0], [-1.0, 1.0]])
    W2 = np.array([[1.0, 1.0], [1.0, 1.0]])  # each neuron writes to both outputs
    return W1, W2, np.zeros(2)


def test_dedicated_neurons_compute_every_side_without_superposition():
    counts = sides.side_counts(*_dedicated(3))
    assert counts["n_sides"] == 6 and counts["n_features_both"] == 3
    assert counts["n_superposed"] == 0
    np.testing.assert_allclose(sides.side_errors(*_dedicated(3)), 0.0, atol=1e-12)


def test_one_neuron_per_feature_computes_one_side():
    W1, W2, b = _dedicated(3)
    counts = sides.side_counts(W1[:3], W2[:, :3], b)
    assert counts["computed"][:, 0].all() and not counts["computed"][:, 1].any()
    assert (counts["n_sides"], counts["n_features_any"], counts["n_features_both"]) == (3, 3, 0)


def test_crossed_neurons_are_superposition_more_sides_than_neurons():
    counts = sides.side_counts(*_crossed())
    assert counts["n_sides"] == 4 > 2  # more computed sides than neurons
    assert counts["superposed_neurons"] == [0, 1]


def test_bias_alone_is_not_computation():
    n = 2
    W1, W2 = np.zeros((2, n)), np.zeros((n, 2))
    b = np.full(n, 0.5)  # y' = 0.5 everywhere: a fair constant guess, no hidden layer
    np.testing.assert_allclose(sides.side_errors(W1, W2, b), 1.0)
    assert sides.side_counts(W1, W2, b)["n_sides"] == 0


def test_half_slope_is_the_threshold():
    # ReLU(a t) on the positive side: relative error (1 - a)^2; computed iff a > 1 - 1/sqrt 2
    for a, want in ((0.2, False), (0.4, True), (1.0, True), (2.5, False)):
        W1, W2, b = np.array([[1.0]]), np.array([[a]]), np.zeros(1)
        np.testing.assert_allclose(sides.side_errors(W1, W2, b)[0, 0], (1 - a) ** 2, rtol=1e-9)
        assert bool(sides.side_counts(W1, W2, b)["computed"][0, 0]) is want


def test_minor_neurons_do_not_count_as_carrying():
    # neuron 1 adds 10% of the slope to feature 0's positive side: not a carrier at share 0.25
    W1 = np.array([[1.0, 0.0], [0.1, -1.0]])
    W2 = np.array([[1.0, 1.0], [0.0, 1.0]])
    carry = sides.side_supports(W1, W2)
    assert carry[0, 0, 0] and not carry[1, 0, 0] and carry[1, 1, 1]
    assert sides.side_counts(W1, W2, np.zeros(2))["n_superposed"] == 0


def test_shape_errors_name_the_shapes():
    # under pytest jaxtyping checks the annotated shapes first; either error names both shapes
    with pytest.raises((ValueError, TypeError), match=r"2, ?3"):
        sides.side_errors(np.zeros((2, 3)), np.zeros((3, 2)).T, np.zeros(3))


def _alive_sides(params) -> np.ndarray:
    """``[instance, feature, 2]``: is side (i, s)'s alone output pre-activation positive?"""
    W1, W2 = np.asarray(params["W1"]), np.asarray(params["W2"])  # [I h f], [I f h]
    slope = [np.einsum("ifh,ihf->if", W2, np.maximum(0.0, s * W1)) for s in sides.SIGNS]
    return np.stack(slope, -1) > 0


def test_positive_output_init_leaves_every_side_alive():
    """The signed init switches off about half the sides for a feature alone (module doc)."""
    key = jax.random.PRNGKey(0)
    pos = computation.init_abs_params(key, 4, 100, 40, "positive")
    signed = computation.init_abs_params(key, 4, 100, 40, "normal")
    np.testing.assert_array_equal(np.asarray(pos["W2"]), np.abs(np.asarray(signed["W2"])))
    np.testing.assert_array_equal(np.asarray(pos["W1"]), np.asarray(signed["W1"]))
    assert _alive_sides(pos).all()
    assert 0.3 < 1 - _alive_sides(signed).mean() < 0.7
    with pytest.raises(ValueError, match="output_init"):
        computation.init_abs_params(key, 1, 3, 2, "uniform")
    with pytest.raises(ValueError, match="output_init"):
        computation.ComputationStudy(output_init="zeros")


def test_computation_part_reports_sides(tmp_path):
    from jinterp.experiments.superposition.parts import run_part

    ours = run_part("computation", str(tmp_path), fast=True, seed=1, progress=False)["ours"]
    m = ours["n_neurons"]
    assert len(ours["n_sides"]) == len(ours["density"]) == len(ours["superposed_neurons"])
    for sides_, both, comp, sup, flag in zip(ours["n_sides"], ours["n_both_signs"],
                                             ours["n_computed"], ours["n_superposed_neurons"],
                                             ours["superposition"]):
        assert 0 <= sides_ <= 2 * 6 and sup <= m
        assert flag == (comp > m or both > m // 2 or sides_ > m)
        if sides_ > m:  # pigeonhole: some neuron carries computed sides of two features
            assert sup >= 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["train"]["seed"] == 1  # --seed reaches every part
    assert summary["config"]["output_init"] == "positive"


def test_more_sides_than_neurons_always_has_a_carrier_of_two_features():
    """Pigeonhole through side_supports: random weights, the slope spread over many neurons."""
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(200):
        n, m = 6, 3
        W1 = rng.normal(size=(m, n))
        W2 = np.abs(rng.normal(size=(n, m))) * rng.uniform(0.5, 3)
        counts = sides.side_counts(W1, W2, np.zeros(n))
        if counts["n_sides"] > m:
            checked += 1
            assert counts["n_superposed"] >= 1
    assert checked > 20
