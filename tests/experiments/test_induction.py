"""Tests of the induction-heads study: metrics on hand-built cases, sweeps vs loops, resume, CLI."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jinterp
from jinterp.experiments.induction import cli, data, patching, phase, scores, train
from jinterp.experiments.induction.study import StudyConfig

T = 5  # half length of the hand-built r r patterns


def _hand_patterns() -> np.ndarray:
    """[batch=2, heads=3, 2T, 2T]: perfect induction, perfect previous-token, uniform causal."""
    n = 2 * T
    p = np.zeros((3, n, n))
    for q in range(n):
        p[0, q, q - T + 1 if q >= T else 0] = 1.0
        p[1, q, max(q - 1, 0)] = 1.0
        p[2, q, : q + 1] = 1.0 / (q + 1)
    return np.stack([p, p])


def test_induction_and_previous_token_scores_of_hand_set_patterns():
    pattern = jnp.asarray(_hand_patterns())
    uniform_ind = np.mean([1 / (q + 1) for q in range(T, 2 * T)])
    uniform_prev = np.mean([1 / (q + 1) for q in range(1, 2 * T)])
    np.testing.assert_allclose(scores.induction_score(pattern, T), [1.0, 0.0, uniform_ind],
                               rtol=1e-6)
    # the induction head's query 1 attends to 0 = its previous token: one hit out of 2T - 1 queries
    np.testing.assert_allclose(scores.previous_token_score(pattern),
                               [1 / (2 * T - 1), 1.0, uniform_prev], rtol=1e-6)
    stacked = jnp.stack([pattern, pattern[:, ::-1]])  # layer axis in front
    assert scores.induction_score(stacked, T).shape == (2, 3)
    with pytest.raises(ValueError, match="half_len=4 has 8 positions"):
        scores.induction_score(pattern, 4)


def test_k_composition_matches_formula_and_planted_subspaces():
    rng = np.random.default_rng(0)
    qk, ov = rng.normal(size=(3, 6, 6)), rng.normal(size=(2, 6, 6))
    norm = np.linalg.norm
    want = np.array([[norm(qk[r] @ ov[w].T) / (norm(qk[r]) * norm(ov[w])) for r in range(3)]
                     for w in range(2)])
    got = scores.k_composition(jnp.asarray(qk)[None], jnp.asarray(ov)[:, None])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # planted: the writer writes only dims 0-1; reader 0's keys read dims 0-1, reader 1's dims 2-3
    d, e = 6, 2
    W_V, W_O = rng.normal(size=(d, e)), np.zeros((e, d))
    W_O[:, :2] = np.eye(2)
    W_Q = rng.normal(size=(2, d, e))
    W_K = np.zeros((2, d, e))
    W_K[0, :2], W_K[1, 2:4] = np.eye(2), np.eye(2)
    params = {"blocks": {"attn": {
        "W_Q": jnp.asarray(np.stack([np.zeros((2, d, e)), W_Q])),
        "W_K": jnp.asarray(np.stack([np.zeros((2, d, e)), W_K])),
        "W_V": jnp.asarray(np.stack([np.stack([W_V, W_V]), np.zeros((2, d, e))])),
        "W_O": jnp.asarray(np.stack([np.stack([W_O, -W_O]), np.zeros((2, e, d))]))}}}
    kc = np.asarray(scores.layer_k_composition(params))
    assert kc.shape == (2, 2)
    assert np.all(kc[:, 1] < 1e-6) and np.all(kc[:, 0] > 0.3)
    qk_full = W_Q[0] @ W_K[0].T
    ov_full = W_V @ W_O
    np.testing.assert_allclose(kc[0, 0], np.linalg.norm(qk_full @ ov_full.T)
                               / (np.linalg.norm(qk_full) * np.linalg.norm(ov_full)), rtol=1e-5)
    baseline = scores.random_composition_baseline(jax.random.key(0, impl="rbg"), 48, 12)
    assert 0.05 < baseline < 0.5


def test_copying_score_uses_the_full_ov_spectrum():
    rng = np.random.default_rng(1)
    V, D, E = 10, 6, 3
    params = {"embed": {"W_E": jnp.asarray(rng.normal(size=(V, D)))},
              "unembed": {"W_U": jnp.asarray(rng.normal(size=(D, V)))},
              "blocks": {"attn": {"W_V": jnp.asarray(rng.normal(size=(1, 2, D, E))),
                                  "W_O": jnp.asarray(rng.normal(size=(1, 2, E, D)))}}}
    got = np.asarray(scores.copying_scores(params))
    for h in range(2):
        attn = params["blocks"]["attn"]
        full = (np.asarray(params["embed"]["W_E"]) @ np.asarray(attn["W_V"][0, h])
                @ np.asarray(attn["W_O"][0, h]) @ np.asarray(params["unembed"]["W_U"]))
        eig = np.linalg.eigvals(full)  # V eigenvalues, V - E of them ~0
        np.testing.assert_allclose(got[0, h], eig.sum().real / np.abs(eig).sum(), atol=1e-6)
    # planted copier / anti-copier: W_U = W_E^T and W_V W_O = +-I gives M = +-W_E W_E^T
    W_E = rng.normal(size=(V, D))
    eye = np.eye(D)
    planted = {"embed": {"W_E": jnp.asarray(W_E)}, "unembed": {"W_U": jnp.asarray(W_E.T)},
               "blocks": {"attn": {"W_V": jnp.asarray(np.stack([eye, eye])[None]),
                                   "W_O": jnp.asarray(np.stack([eye, -eye])[None])}}}
    np.testing.assert_allclose(scores.copying_scores(planted), [[1.0, -1.0]], atol=1e-6)


def test_sampled_sequences_match_a_python_reference():
    cfg = data.DataConfig(d_vocab=50, n_ctx=30, subseq_len=5, n_repeats=3, batch_size=4)
    key = jax.random.key(0, impl="rbg")
    filler, subseq, cuts = map(np.asarray, data.draw(key, cfg, 4))
    tokens, predictable = map(np.asarray, data.sample_batch(key, cfg))
    for b in range(4):
        want_tokens, want_mask = filler[b].copy(), np.zeros(cfg.n_ctx - 1, bool)
        start = 0
        for i, cut in enumerate(cuts[b]):  # copy i starts after i copies and the first i + 1 gaps
            start = cut + i * cfg.subseq_len
            want_tokens[start: start + cfg.subseq_len] = subseq[b]
            if i:
                want_mask[start: start + cfg.subseq_len - 1] = True
        assert start + cfg.subseq_len <= cfg.n_ctx
        np.testing.assert_array_equal(tokens[b], want_tokens)
        np.testing.assert_array_equal(predictable[b], want_mask)
    assert np.all((filler >= 0) & (filler < 50)) and np.all((cuts >= 0) & (cuts <= cfg.n_filler))
    assert tokens.shape == (4, 30) and predictable.shape == (4, 29)
    assert predictable.sum() == 4 * 2 * 4
    with pytest.raises(ValueError, match="do not fit"):
        data.DataConfig(n_ctx=20, subseq_len=8, n_repeats=3)


def test_phase_change_rule_on_planted_curves():
    steps = np.arange(1, 2001)
    curve = 4.8 - 4.3 / (1 + np.exp(-(steps - 800) / 20))  # plateau 4.8, midpoint at 800, final 0.5
    found = phase.find_phase_change(curve, window=1)
    assert found is not None and abs(found.step - 800) <= 1 and found.start < 800 < found.end
    assert found.width == pytest.approx(2 * 20 * np.log(9), abs=2)  # 10%-90% width of a logistic
    # a gradual 1.2-nat decline is no phase change
    assert phase.find_phase_change(4.8 - steps * 6e-4) is None
    x = np.random.default_rng(0).normal(size=50)
    naive = [x[max(0, i - 6): i + 1].mean() for i in range(50)]
    np.testing.assert_allclose(phase.smooth(x, 7), naive, rtol=1e-12)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = StudyConfig.fast().train
    model = cfg.model()
    return model, jax.jit(model.init)(jax.random.key(3, impl="rbg"))


def test_vmapped_head_sweeps_equal_python_loops(tiny_model):
    model, params = tiny_model
    half = 6
    key_clean, key_corrupt = jax.random.split(jax.random.key(0, impl="rbg"))
    clean = data.repeated_tokens(key_clean, model.d_vocab, half, 3)
    corrupted = patching.corrupt_first_copy(key_corrupt, clean, half, model.d_vocab)
    _, corrupted_z = patching.head_outputs(model, params, corrupted)
    base = float(patching.repeated_loss(model(params, clean), clean, half))
    for make_hooks in (patching.ablate_heads, patching.patch_heads):
        fast = patching.head_sweep(model, params, clean, half, make_hooks, corrupted_z)
        slow = patching.head_sweep_loop(model, params, clean, half, make_hooks, corrupted_z)
        assert fast.shape == (2, 2)
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(np.asarray(slow) - base) > 1e-7)  # every head's intervention matters
    # the hooks do what they say: compare with hand-written functions on one head
    by_hand = {
        patching.ablate_heads: lambda z: z.at[:, :, 0].set(0),
        patching.patch_heads: lambda z: z.at[:, :, 0].set(corrupted_z[1][:, :, 0]),
    }
    for make_hooks, fn in by_hand.items():
        logits = jinterp.run_with_hooks(model, params, clean, {"blocks.1.attn.hook_z": fn})
        manual = patching.repeated_loss(logits, clean, half)
        swept = patching.head_sweep(model, params, clean, half, make_hooks, corrupted_z)
        np.testing.assert_allclose(swept[1, 0], manual, rtol=1e-5)


def test_resume_after_interruption_gives_identical_state(tmp_path):
    cfg = StudyConfig.fast().train
    straight = train.run_training(cfg)
    ckpt = str(tmp_path / "ckpt")
    half = train.run_training(cfg, ckpt, checkpoint_every=1, stop_after=cfg.steps_per_call)
    assert int(half["step"]) == cfg.steps_per_call < cfg.n_steps
    resumed = train.run_training(cfg, ckpt, checkpoint_every=1)
    assert int(resumed["step"]) == cfg.n_steps
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cli_fast_pipeline_end_to_end(tmp_path):
    out = str(tmp_path / "run")
    summary = cli.main(["--out", out, "--fast", "--no-progress"])
    with open(os.path.join(out, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(summary))
    for key in ("phase_change_step", "induction_heads", "previous_token_heads", "induction_scores",
                "previous_token_scores", "one_layer_final_loss", "two_layer_final_loss"):
        assert key in on_disk
    for name in on_disk["figures"]:
        assert os.path.getsize(os.path.join(out, name)) > 1000
    assert np.array(on_disk["induction_score_after"]).shape == (2, 2)
    assert np.array(on_disk["k_composition_l0_to_l1"]).shape == (2, 2)
    assert on_disk["two_layer_final_loss"] < np.log(32) + 0.5
    with pytest.raises(SystemExit, match="different training configuration"):
        cli.main(["--out", out, "--fast", "--seed", "1", "--no-progress"])
