"""Tests for the Toy Models of Superposition reproduction (experiments/superposition)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp.experiments.superposition import analysis, model, phase, training
from jinterp.experiments.superposition.cli import ANALYTIC_STEPS, Suite, main

# --- hand-built polytopes ----------------------------------------------------------------


def _regular_polygon(k: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(angles), np.sin(angles)])  # [2 k]


def _tetrahedron() -> np.ndarray:
    v = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float).T
    return v / np.sqrt(3)  # [3 4]


def _square_antiprism() -> np.ndarray:
    """8 unit vectors: two squares at heights +-h, twisted 45 degrees, h chosen so that the
    frame is tight (sum of outer products proportional to the identity), which gives 3/8."""
    h = 1 / np.sqrt(3)  # z^2 = 1/3 balances x^2 + y^2 = 2/3 split over two axes
    r = np.sqrt(1 - h**2)
    top = [(r * np.cos(a), r * np.sin(a), h) for a in np.pi / 2 * np.arange(4)]
    bottom = [(r * np.cos(a), r * np.sin(a), -h) for a in np.pi / 2 * np.arange(4) + np.pi / 4]
    return np.array(top + bottom).T  # [3 8]


def _dimensionality_loop(W: np.ndarray) -> np.ndarray:
    """Slow obvious reference for D_i: a double Python loop over features."""
    n = W.shape[1]
    out = []
    for i in range(n):
        wi = W[:, i]
        norm = math.sqrt(sum(v * v for v in wi))
        if norm < 1e-6:
            out.append(0.0)
            continue
        denom = sum((sum(wi[k] * W[k, j] for k in range(W.shape[0])) / norm) ** 2 for j in range(n))
        out.append(norm**2 / denom)
    return np.array(out)


POLYTOPES = {
    "dedicated": (np.eye(3), 1.0),
    "tetrahedron": (_tetrahedron(), 3 / 4),
    "triangle": (_regular_polygon(3), 2 / 3),
    "digon": (_regular_polygon(2), 1 / 2),
    "pentagon": (_regular_polygon(5), 2 / 5),
    "square_antiprism": (_square_antiprism(), 3 / 8),
}


@pytest.mark.parametrize("name", sorted(POLYTOPES))
def test_feature_dimensionality_of_polytopes(name):
    W, expected = POLYTOPES[name]
    scale = 0.7  # D_i is scale invariant
    d = np.asarray(analysis.feature_dimensionality(jnp.asarray(scale * W, jnp.float32)))
    np.testing.assert_allclose(d, expected, atol=1e-5)
    np.testing.assert_allclose(d, _dimensionality_loop(scale * W), atol=1e-5)


def test_feature_dimensionality_random_and_zero_columns():
    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 9))
    W[:, 3] = 0.0  # a not-learned feature gets D = 0
    d = np.asarray(analysis.feature_dimensionality(jnp.asarray(W, jnp.float32)))
    np.testing.assert_allclose(d, _dimensionality_loop(W), rtol=1e-4, atol=1e-6)
    assert d[3] == 0.0


def test_dims_per_feature_and_angles():
    W = _regular_polygon(5)
    assert float(analysis.dims_per_feature(jnp.asarray(W))) == pytest.approx(2 / 5)
    assert float(analysis.dims_per_feature(jnp.asarray(np.eye(3)))) == pytest.approx(1.0)
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    W_shuffled = (rot @ W)[:, [3, 0, 4, 1, 2]]
    np.testing.assert_allclose(analysis.angular_gaps_deg(W_shuffled), 72.0, atol=1e-9)
    gaps = analysis.angular_gaps_deg(np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(gaps, [90.0, 90.0, 180.0])


def test_histogram_peaks_finds_planted_modes():
    rng = np.random.default_rng(1)
    values = np.concatenate([0.5 + 0.002 * rng.normal(size=300), 0.4 + 0.002 * rng.normal(size=100),
                             rng.uniform(0, 1, size=5)])
    peaks = analysis.histogram_peaks(values)
    assert len(peaks) == 2
    np.testing.assert_allclose(peaks, [0.4, 0.5], atol=0.004)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="hidden, feature"):
        analysis.feature_dimensionality(jnp.ones(3))
    with pytest.raises(ValueError, match=r"\[2, feature\]"):
        analysis.angular_gaps_deg(np.ones((3, 4)))
    cfg = model.ToyModelConfig(4, 2, 3)
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(3, 4\)"):
        model.check_instance_arrays(cfg, jnp.ones((2, 4)), jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        training.TrainConfig(steps=150, steps_per_call=100)
    with pytest.raises(ValueError, match="n_hidden"):
        model.ToyModelConfig(4, 0, 1)


def test_classify_two_feature_model():
    c = analysis.classify_two_feature_model
    assert c(np.array([[1.0, 0.02]])) == analysis.NOT_LEARNED
    assert c(np.array([[0.01, -0.98]])) == analysis.DEDICATED
    assert c(np.array([[0.9, -1.1]])) == analysis.SUPERPOSITION
    assert c(np.array([[0.9, 1.1]])) == analysis.OTHER


# --- model and data ----------------------------------------------------------------------


def test_forward_matches_loop_and_sampling_statistics():
    rng = np.random.default_rng(2)
    W, b, x = rng.normal(size=(2, 5)), rng.normal(size=5), rng.uniform(size=(3, 5))
    out = np.asarray(model.forward(jnp.asarray(W), jnp.asarray(b), jnp.asarray(x)))
    for s in range(3):
        for i in range(5):
            pre = sum(W[k, i] * sum(W[k, j] * x[s, j] for j in range(5)) for k in range(2)) + b[i]
            assert out[s, i] == pytest.approx(max(pre, 0.0), rel=1e-5, abs=1e-6)
    p = jnp.asarray([1.0, 0.3, 0.05])
    xs = np.asarray(model.sample_features(jax.random.PRNGKey(0), p, 200_000))
    present = xs > 0
    np.testing.assert_allclose(present.mean(0), p, atol=0.004)
    for i in range(3):  # present values are uniform on [0, 1]: mean 1/2, variance 1/12
        vals = xs[present[:, i], i]
        assert vals.max() <= 1.0
        assert vals.mean() == pytest.approx(0.5, abs=0.01)
        assert vals.var() == pytest.approx(1 / 12, abs=0.005)


def test_notebook_init_std():
    cfg = model.ToyModelConfig(200, 20, 20)
    assert cfg.weight_std == pytest.approx(math.sqrt(2 / (200 * 20 + 20 * 20)))
    W = model.init_params(cfg, jax.random.PRNGKey(0))["W"]
    assert W.shape == (20, 20, 200)
    assert float(W.std()) == pytest.approx(cfg.weight_std, rel=0.02)


# --- exact loss and analytic phase -------------------------------------------------------


def test_relu_integral_matches_fine_quadrature():
    u = (np.arange(200_000) + 0.5) / 200_000
    grid = itertools.product([0.0, 0.4], [0.0, 1.0], [-1.3, 0.0, 0.8], [-0.5, 0.0, 0.3])
    for t0, t1, a, c in grid:
        ref = np.mean((t0 + t1 * u - np.maximum(a * u + c, 0.0)) ** 2)
        got = float(phase.relu_sq_error_integral(t0, t1, a, c))
        assert got == pytest.approx(ref, rel=1e-4, abs=1e-7), (t0, t1, a, c)


def test_expected_loss_matches_monte_carlo():
    rng = np.random.default_rng(3)
    n = 400_000
    for _ in range(3):
        w, b = rng.normal(size=2), 0.3 * rng.normal(size=2)
        imp, p = np.array([1.0, rng.uniform(0.2, 3.0)]), rng.uniform(0.1, 1.0)
        x = np.where(rng.random((n, 2)) < p, rng.random((n, 2)), 0.0)
        out = np.maximum(np.outer(x @ w, w) + b, 0.0)
        per = 0.5 * (((x - out) ** 2) * imp).sum(1)
        got = float(phase.expected_loss(jnp.asarray(w), jnp.asarray(b), jnp.asarray(imp), p))
        assert abs(got - per.mean()) < 4 * per.std() / math.sqrt(n) + 1e-6


def test_candidate_losses_closed_form():
    p, r = 0.3, 2.0
    var = p / 3 - p**2 / 4
    imp = jnp.asarray([1.0, r])
    not_learned = phase.expected_loss(jnp.asarray([1.0, 0.0]), jnp.asarray([0.0, p / 2]), imp, p)
    dedicated = phase.expected_loss(jnp.asarray([0.0, 1.0]), jnp.asarray([p / 2, 0.0]), imp, p)
    assert float(not_learned) == pytest.approx(0.5 * r * var, rel=1e-5)
    assert float(dedicated) == pytest.approx(0.5 * var, rel=1e-5)


def test_analytic_phase_diagram_limits():
    """Dense: not learned below r = 1, dedicated above, no superposition; sparse, r = 1:
    superposition. Also brute-forces the superposition optimiser: no antipodal point on a grid
    beats its loss in that sparse cell. (Uses the --fast grid so the compiled optimiser is shared
    with the end-to-end test.)"""
    fast = Suite.fast().phase
    r, p = fast.relative_importance, fast.density  # [0.1, 1, 10] x [1, 0.1, 0.01]
    res = phase.analytic_phase_diagram(r, p, ANALYTIC_STEPS)
    ph = res["phase"]
    assert ph[0, 0] == analysis.NOT_LEARNED and ph[2, 0] == analysis.DEDICATED
    assert ph[1, 2] == analysis.SUPERPOSITION
    grid = np.linspace(0.6, 1.4, 9)
    biases = np.linspace(-0.2, 0.05, 6)
    ws = np.array([[a, -c] for a in grid for c in grid])
    bs = np.array([[u, v] for u in biases for v in biases])
    ww, bb = np.repeat(ws, len(bs), 0), np.tile(bs, (len(ws), 1))
    losses = jax.vmap(phase.expected_loss, (0, 0, None, None))(
        jnp.asarray(ww), jnp.asarray(bb), jnp.asarray([1.0, 1.0]), p[2])
    assert res["loss_superposition"][1, 2] <= float(losses.min()) * (1 + 1e-4)


# --- training: determinism and exact resume ----------------------------------------------


def test_resume_after_interruption_is_bit_identical(tmp_path):
    fast = Suite.fast().pentagon  # same shapes as the --fast pentagon: one compiled chunk
    tc = fast.train
    cfg = model.ToyModelConfig(5, 2, fast.n_seeds)
    imp = np.ones((fast.n_seeds, 5), np.float32)
    prob = np.tile(np.array([[0.3], [0.05]], np.float32), (1, 5))
    full, _ = training.train(cfg, tc, imp, prob, checkpoint_dir=tmp_path / "a", progress=False)
    half, _ = training.train(cfg, tc, imp, prob, checkpoint_dir=tmp_path / "b", progress=False,
                             stop_after_step=tc.steps_per_call)
    assert int(half["step"]) == tc.steps_per_call
    resumed, _ = training.train(cfg, tc, imp, prob, checkpoint_dir=tmp_path / "b", progress=False)
    assert int(resumed["step"]) == tc.steps
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(half["params"]["W"]), np.asarray(full["params"]["W"]))
    with pytest.raises(ValueError, match="different run configuration"):
        training.train(cfg, dataclasses.replace(tc, batch_size=64),
                       imp, prob, checkpoint_dir=tmp_path / "b", progress=False)


def test_instances_are_independent():
    """Changing instance 1's parameters leaves instance 0's training untouched: the summed loss
    and elementwise AdamW keep the instances apart (each instance's data key is fixed)."""
    tc = training.TrainConfig(steps=20, batch_size=16, steps_per_call=10)
    imp = np.ones((2, 3), np.float32)
    prob = np.full((2, 3), 0.5, np.float32)
    state = training.init_state(model.ToyModelConfig(3, 2, 2), tc)
    changed = dict(state, params={"W": state["params"]["W"].at[1].set(5.0),
                                  "b": state["params"]["b"]})
    out_a, _ = training.train_chunk(state, jnp.asarray(imp), jnp.asarray(prob), tc)
    out_b, _ = training.train_chunk(changed, jnp.asarray(imp), jnp.asarray(prob), tc)
    np.testing.assert_allclose(out_a["params"]["W"][0], out_b["params"]["W"][0], atol=1e-6)
    assert not np.allclose(out_a["params"]["W"][1], out_b["params"]["W"][1])


# --- the whole pipeline ------------------------------------------------------------------


def test_cli_fast_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    summary = main(["--out", str(out), "--fast", "--no-progress"])
    saved = json.loads((out / "summary.json").read_text())
    for key in ("pentagon_angles_deg", "pentagon_dimensionalities", "phase_diagram_agreement",
                "dims_per_feature", "dimensionality_peaks"):
        assert key in saved
    assert len(saved["pentagon_angles_deg"]) == 5
    assert sum(saved["pentagon_angles_deg"]) == pytest.approx(360.0)
    assert 0.0 <= saved["phase_diagram_agreement"] <= 1.0
    assert len(saved["dims_per_feature"]) == Suite.fast().uniform.n_sparsities
    for name in ("pentagon", "phase_diagram", "dims_per_feature", "feature_dimensionality"):
        assert (out / f"{name}.png").stat().st_size > 1000
    # rerunning reloads the finished checkpoint instead of retraining: same numbers
    again = main(["--out", str(out), "--fast", "--no-progress", "--only", "pentagon"])
    assert again["pentagon_angles_deg"] == summary["pentagon_angles_deg"]
    assert "phase_diagram_agreement" not in again


def test_cli_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--fast" in capsys.readouterr().out


def test_part_dimensionality_fast_end_to_end(tmp_path):
    """``--part dimensionality --fast``: shares the fast uniform study's compiled chunk."""
    out = tmp_path / "dim"
    summary = main(["--part", "dimensionality", "--fast", "--no-progress", "--out", str(out)])
    saved = json.loads((out / "summary.json").read_text())
    ours = saved["ours"]
    assert summary["ours"]["line_fractions"] == ours["line_fractions"]
    assert set(ours["line_fractions"]) == {"3/4", "2/3", "1/2", "2/5", "3/8"}
    assert sum(ours["line_fractions"].values()) <= 1.0 + 1e-9
    assert ours["lines_held"] == sum(v >= 0.03 for v in ours["line_fractions"].values())
    assert sum(s["represented"] for s in ours["per_sparsity"]) == ours["represented_features"]
    assert [p["peak"] for p in ours["peak_geometry"]] == ours["dimensionality_peaks"]
    assert "paper" in saved and saved["config"]["n_restarts"] == 2
    for name in ("dimensionality", "dimensionality_peaks"):
        assert (out / f"{name}.png").stat().st_size > 1000
