"""Logit lens vs the core's own start/stop path; tuned lens: zero init = logit lens, training
beats the logit lens at every layer, exact resume from an orbax checkpoint."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens

from jinterp import lens


def test_logit_lens_equals_unembedding_each_stopped_residual():
    model, params = family("gemma2")  # tied unembedding, final soft-cap, post-norms
    toks = tokens(batch=2, pos=7)
    got = lens.logit_lens(model, params, toks)
    assert got.shape == (model.n_layers, 2, 7, model.d_vocab)
    resid = model(params, toks, stop_at_layer=1)  # reference: stop at 1, unembed with no block
    want = model(params, resid, start_at_layer=model.n_layers)
    np.testing.assert_allclose(got[1], want, atol=1e-5, rtol=1e-5)
    post = lens.logit_lens(model, params, toks, point="hook_resid_post", layers=[2, 0])
    _, final = lens.resid_stack(model, params, toks, point="hook_resid_post", layers=[2, 0])
    np.testing.assert_allclose(post[0], final, atol=1e-5, rtol=1e-5)  # last layer = the logits
    np.testing.assert_allclose(post[1], got[1], atol=1e-5, rtol=1e-5)  # post 0 == pre 1


def test_untrained_tuned_lens_is_the_logit_lens():
    model, params = family("gpt2")
    toks = tokens(batch=2, pos=7)
    tuned = lens.tuned_lens(model, params, lens.init_tuned_lens(model), toks)
    np.testing.assert_array_equal(tuned, lens.logit_lens(model, params, toks))
    # the translator is h + h A + b: check the affine map on a non-zero lens by hand
    key_a, key_b = jax.random.split(jax.random.key(3))
    lp = {"A": 0.1 * jax.random.normal(key_a, (3, 32, 32)),
          "b": jax.random.normal(key_b, (3, 32))}
    resid, _ = lens.resid_stack(model, params, toks)
    moved = lens.translate(lp, resid)
    np.testing.assert_allclose(moved[1], resid[1] + resid[1] @ lp["A"][1] + lp["b"][1][None, None],
                               atol=1e-5)


def test_tuned_lens_training_beats_logit_lens_and_resumes_exactly(tmp_path):
    model, params = family("gpt2")
    data = np.random.default_rng(0).integers(0, model.d_vocab, (32, 8))
    held_out = np.random.default_rng(1).integers(0, model.d_vocab, (8, 8))
    cfg = lens.TunedLensConfig(steps=40, batch_size=8, lr=1e-2, checkpoint_every=20, log_every=5)
    uninterrupted = lens.TunedLensConfig(**{**cfg.__dict__, "checkpoint_every": None})
    full = lens.train_tuned_lens(model, params, data, uninterrupted, eval_tokens=held_out,
                                 out_dir=tmp_path / "full", progress=False)
    s = full.summary
    assert all(t < 0.7 * lo for t, lo in zip(s["tuned_kl"], s["logit_kl"])), s
    assert all(t < lo for t, lo in zip(s["tuned_ce"], s["logit_ce"])) or \
        s["tuned_ce"][-1] < s["logit_ce"][-1] + 0.05, s
    for f in ("summary.json", "history.json", "tuned_lens.png"):
        assert os.path.getsize(tmp_path / "full" / f) > 0
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["steps"] == 40
    # stop at 20 (a checkpoint), rerun with 40 steps: resumes from the checkpoint, same bits
    half = lens.TunedLensConfig(**{**cfg.__dict__, "steps": 20})
    split = dict(eval_tokens=held_out, out_dir=tmp_path / "split", progress=False)
    lens.train_tuned_lens(model, params, data, half, **split)
    resumed = lens.train_tuned_lens(model, params, data, cfg, **split)
    for k in ("A", "b"):
        np.testing.assert_array_equal(resumed.lens[k], full.lens[k])
    assert resumed.history == full.history and resumed.summary == full.summary


def test_lens_bad_inputs_name_the_fix():
    model, params = family("gpt2")
    with pytest.raises(ValueError, match=r"d_model=32.*got \(3, 2, 7, 31\)"):
        lens.unembed_stack(model, params, jnp.zeros((3, 2, 7, 31)))
    with pytest.raises(ValueError, match="init_tuned_lens"):
        lens.tuned_lens_logits(model, params, {"A": jnp.zeros((3, 8, 8)), "b": jnp.zeros((3, 8))},
                               jnp.zeros((3, 2, 7, 32)))
    with pytest.raises(ValueError, match="residual point"):
        lens.logit_lens(model, params, tokens(), point="attn.hook_z")
    with pytest.raises(ValueError, match="0..2"):
        lens.logit_lens(model, params, tokens(), layers=[3])
    with pytest.raises(ValueError, match="fewer than batch_size"):
        lens.train_tuned_lens(model, params, tokens(batch=2), lens.TunedLensConfig(batch_size=4))
