"""Sampling: HF's warpers' rules, the drawn distribution, the decode loop against full forwards,
and every bad option's error."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
from tiny import N_NEW, SAMPLING, gpt2, prompt_tokens
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

import jinterp
from jinterp import models
from jinterp.generation import Sampler, filter_logits, sample


def hf_filter(logits: np.ndarray, temperature: float, top_k, top_p) -> np.ndarray:
    """HF's warpers in ``generate``'s order (temperature, top-k, top-p)."""
    scores = torch.tensor(logits)
    warpers = [TemperatureLogitsWarper(temperature)]
    warpers += [TopKLogitsWarper(top_k)] if top_k else []
    warpers += [TopPLogitsWarper(top_p)] if top_p else []
    for w in warpers:
        scores = w(None, scores)
    return scores.numpy()


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, None, None), (1.0, 5, None),
                                                     (1.3, None, 0.6), (0.5, 20, 0.9)])
def test_filters_equal_hf_logits_warpers(temperature, top_k, top_p):
    logits = np.random.default_rng(0).normal(0, 2, (4, 50)).astype(np.float32)
    sampler = Sampler(greedy=False, top_k=top_k, top_p=top_p is not None)
    ours = np.asarray(filter_logits(logits, np.float32(temperature),
                                    np.float32(top_p or 1.0), sampler))
    theirs = hf_filter(logits, temperature, top_k, top_p)
    np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs))
    kept = np.isfinite(ours)
    np.testing.assert_allclose(ours[kept], theirs[kept], rtol=1e-6)
    assert 0 < kept.sum() < kept.size or (top_k is None and top_p is None)


def test_samples_follow_the_filtered_distribution():
    logits = np.array([[2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]], np.float32)
    sampler = Sampler(greedy=False, top_k=5, top_p=True)
    t, p = np.float32(0.9), np.float32(0.85)
    keys = jax.random.split(jax.random.key(0), 4000)
    draws = np.asarray(jax.vmap(lambda k: sample(logits, k, t, p, sampler))(keys))[:, 0]
    filtered = hf_filter(logits, 0.9, 5, 0.85)[0]
    expected = np.exp(filtered - filtered.max())
    expected /= expected.sum()
    freq = np.bincount(draws, minlength=8) / len(draws)
    assert set(np.flatnonzero(freq)) == set(np.flatnonzero(expected))  # never outside the set
    np.testing.assert_allclose(freq, expected, atol=0.03)


def test_sampled_generation_reproduces_and_reads_the_same_logits_as_a_full_forward():
    model, params = gpt2()
    tokens = prompt_tokens()
    n_prompt = tokens.shape[1]
    key = jax.random.key(7)
    out = np.asarray(jinterp.generate(model, params, tokens, N_NEW, key=key, **SAMPLING))
    again = np.asarray(jinterp.generate(model, params, tokens, N_NEW, key=key, **SAMPLING))
    other = np.asarray(jinterp.generate(model, params, tokens, N_NEW, key=jax.random.key(8),
                                        **SAMPLING))
    np.testing.assert_array_equal(out, again)
    assert (out[:, n_prompt:] != other[:, n_prompt:]).any()
    # The slow obvious reference: a full forward over the final sequence gives each step's
    # logits; every sampled token must lie in that step's filtered set.
    logits = np.asarray(model(params, out))[:, n_prompt - 1:-1]  # 1 new d_vocab
    sampler = Sampler(greedy=False, top_k=SAMPLING["top_k"], top_p=True)
    allowed = np.isfinite(np.asarray(filter_logits(
        logits[0], np.float32(SAMPLING["temperature"]), np.float32(SAMPLING["top_p"]), sampler)))
    assert allowed[np.arange(N_NEW), out[0, n_prompt:]].all()
    assert len(set(out[0, n_prompt:])) > 2
    # A near-zero temperature (same program: the temperature is data) is the argmax of the
    # full forward's logits at every step: the cached decode computes the same logits.
    cold = np.asarray(jinterp.generate(model, params, tokens, N_NEW, key=key,
                                       **(SAMPLING | dict(temperature=1e-4))))
    cold_logits = np.asarray(model(params, cold))[0, n_prompt - 1:-1]
    np.testing.assert_array_equal(cold[0, n_prompt:], cold_logits.argmax(-1))


@dataclasses.dataclass(frozen=True)
class NoContext(models.GPT2):
    """A port that does not take the attention context."""

    accepts_context = False


def test_bad_generation_options_say_what_to_pass():
    model, params = gpt2()
    tokens = prompt_tokens()
    with pytest.raises(ValueError, match=r"needs a random key: pass key=jax.random.key"):
        jinterp.generate(model, params, tokens, 4, temperature=0.7)
    with pytest.raises(ValueError, match=r"top_k=3 .*temperature=0 is greedy"):
        jinterp.generate(model, params, tokens, 4, top_k=3, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"needs a random key"):
        jinterp.generate(model, params, tokens, 4, temperature=1.0, top_p=0.9)
    with pytest.raises(ValueError, match=r"top_p=1.5 must be a number in \(0, 1\]"):
        jinterp.generate(model, params, tokens, 4, temperature=1.0, top_p=1.5,
                         key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"top_k=0 must be an int in \[1, d_vocab"):
        jinterp.generate(model, params, tokens, 4, temperature=1.0, top_k=0,
                         key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"temperature=-1.0 is negative"):
        jinterp.generate(model, params, tokens, 4, temperature=-1.0)
    n_ctx = model.n_ctx
    with pytest.raises(ValueError, match=rf"past the model's context n_ctx={n_ctx}. Pass "
                                         rf"max_new_tokens <= {n_ctx - tokens.shape[1]}"):
        jinterp.generate(model, params, tokens, n_ctx)
    with pytest.raises(ValueError, match=r"hooks_on='prefix'; choose 'all'"):
        jinterp.generate(model, params, tokens, 4, hooks_on="prefix")
    with pytest.raises(ValueError, match=r"max_new_tokens=0: generate at least one"):
        jinterp.generate(model, params, tokens, 0)
    with pytest.raises(ValueError, match=r"attention_mask must have the inputs' shape"):
        jinterp.generate(model, params, tokens, 4, attention_mask=np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"eos_token_id=-3 must be a token id"):
        jinterp.generate(model, params, tokens, 4, eos_token_id=-3)
    with pytest.raises(TypeError, match=r"NoContext does not take an attention context"):
        jinterp.generate(NoContext(model.config), params, tokens, 4)
    with pytest.raises(TypeError, match=r"NoContext does not take an attention context"):
        jinterp.run_with_hooks(NoContext(model.config), params, tokens, {},
                               attention_mask=np.ones(tokens.shape))
