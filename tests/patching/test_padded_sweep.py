"""Patching sweeps on padded batches (prompts of different lengths, one ``attention_mask``).

- Against the slow reference: a loop of ``run_with_hooks(..., attention_mask=mask)`` with the
  core's ``Patch`` per node, for left and right padding, a site feeding keys (the residual) and
  a local one (a head's output by position), suffix buckets and full recomputation.
- Padding changes nothing real: a left-padded prompt's sweep and attribution estimates (AtP,
  AtP*, integrated gradients) at its real positions equal the same prompt's unpadded ones (the
  pads are never attended to, positions count real tokens).
"""

import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens
from patching.reference import loop_sweep, patch_hooks

import jinterp
from jinterp import metrics, patching

N_POS = 6
LENGTHS = (6, 4)  # real tokens per prompt


def padded(seed: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Two prompts of LENGTHS real tokens padded to N_POS (pad id 0) and their mask."""
    toks = tokens(2, N_POS, seed)
    mask = np.zeros((2, N_POS), np.int32)
    for row, n in enumerate(LENGTHS):
        real = slice(N_POS - n, N_POS) if side == "left" else slice(0, n)
        mask[row, real] = 1
    return np.where(mask == 1, toks, 0), mask


def last_real(mask: np.ndarray, side: str):
    """The slot each row's metric reads: its last real token."""
    return -1 if side == "left" else jnp.asarray(mask.sum(1) - 1)


@pytest.mark.parametrize("name,site_name,side,n_buckets", [
    ("gpt2", "resid_pre", "left", 2), ("llama", "attn_head_out_by_pos", "right", 2),
    ("gpt2", "attn_head_out_by_pos", "left", None),
    pytest.param("llama", "resid_pre", "right", None, marks=pytest.mark.full)])
def test_padded_sweep_equals_a_loop_of_masked_patches(name, site_name, side, n_buckets):
    model, params = family(name)
    clean, mask = padded(0, side)
    corrupted, _ = padded(1, side)
    clean_logits, clean_cache = jinterp.run_with_cache(model, params, clean, attention_mask=mask)
    corrupted_logits, corrupted_cache = jinterp.run_with_cache(model, params, corrupted,
                                                              attention_mask=mask)
    metric = metrics.logit_diff(jnp.array([3, 7]), jnp.array([5, 11]), pos=last_real(mask, side))
    got = np.asarray(patching.act_patch(model, params, corrupted, clean_cache, metric, site_name,
                                        suffix_buckets=n_buckets, attention_mask=mask))
    want = loop_sweep(model, params, corrupted, site_name,
                      patch_hooks(site_name, clean_cache, corrupted_cache), metric,
                      attention_mask=mask)
    assert np.ptp(want) > 1e-2  # the patches matter
    np.testing.assert_allclose(got, want, atol=2e-5)
    if side == "right":  # causal: real tokens never see right pads, a mask changes nothing
        return
    # unmasked, the left pads would be attended to: the mask is what the sweep used (an
    # all-ones mask is no mask, and as data it reuses the masked sweep's program: no compile)
    unmasked = np.asarray(patching.act_patch(model, params, corrupted, clean_cache, metric,
                                             site_name, suffix_buckets=n_buckets,
                                             attention_mask=np.ones_like(mask)))
    assert np.abs(unmasked - want).max() > 1e-3


@pytest.mark.parametrize("name", ["llama", pytest.param("gpt2", marks=pytest.mark.full)])
def test_left_padding_leaves_a_prompts_sweep_unchanged(name):
    model, params = family(name)
    n_real, n_pad = 4, 2
    clean, corrupted = tokens(1, n_real, 2), tokens(1, n_real, 3)
    mask = np.concatenate([np.zeros((1, n_pad), np.int32), np.ones((1, n_real), np.int32)], 1)

    def sweep(clean, corrupted, mask):
        _, cache = jinterp.run_with_cache(model, params, clean, attention_mask=mask)
        metric = metrics.logit_diff(jnp.array([3]), jnp.array([5]))
        return np.asarray(patching.get_act_patch_resid_pre(model, params, corrupted, cache,
                                                           metric, attention_mask=mask,
                                                           suffix_buckets=1))

    plain = sweep(clean, corrupted, None)  # layer pos
    pad = lambda t: np.concatenate([np.full((1, n_pad), 9), t], axis=1)  # noqa: E731
    with_pads = sweep(pad(clean), pad(corrupted), mask)
    np.testing.assert_allclose(with_pads[:, n_pad:], plain, atol=2e-5)
    np.testing.assert_allclose(with_pads[:, :n_pad], with_pads[:, :1].repeat(n_pad, 1),
                               atol=2e-5)  # patching a pad changes nothing: corrupted value


def test_attention_mask_of_the_wrong_shape_names_both_shapes():
    model, params = family("gpt2")
    clean, mask = padded(0, "left")
    _, cache = jinterp.run_with_cache(model, params, clean, attention_mask=mask)
    metric = metrics.logit_diff(jnp.array([3, 7]), jnp.array([5, 11]))
    with pytest.raises(ValueError, match=r"\[batch, pos\] = \(2, 6\)"):
        patching.get_act_patch_resid_pre(model, params, clean, cache, metric,
                                         attention_mask=mask[:, 1:])


@pytest.mark.parametrize("name,site_name,method", [
    ("gpt2", "resid_pre", "atp"), ("llama", "attn_head_q_by_pos", "atp*"),
    ("gpt2", "attn_head_out_by_pos", "ig"),
    pytest.param("llama", "resid_pre", "atp*", marks=pytest.mark.full)])
def test_attribution_with_left_padding_equals_the_unpadded_prompt(name, site_name, method):
    """AtP, AtP* (the QK fix) and integrated gradients through the mask: a left-padded prompt's
    estimates at its real positions equal its unpadded estimates (unmasked, they do not)."""
    model, params = family(name)
    n_real, n_pad = 4, 2
    clean, corrupted = tokens(1, n_real, 2), tokens(1, n_real, 3)
    mask = np.concatenate([np.zeros((1, n_pad), np.int32), np.ones((1, n_real), np.int32)], 1)
    pad = lambda t: np.concatenate([np.full((1, n_pad), 9), t], axis=1)  # noqa: E731
    metric = metrics.logit_diff(jnp.array([3]), jnp.array([5]))

    def estimate(clean, corrupted, mask):
        _, cache = jinterp.run_with_cache(model, params, clean, attention_mask=mask)
        return np.asarray(patching.attr_patch(model, params, corrupted, cache, metric,
                                              site_name, method=method, steps=4,
                                              attention_mask=mask))

    plain = estimate(clean, corrupted, None)  # layer pos ...
    padded_est = estimate(pad(clean), pad(corrupted), mask)
    assert np.ptp(plain) > 1e-3
    np.testing.assert_allclose(padded_est[:, n_pad:], plain, atol=2e-5)
    # the mask is what the estimate used; an all-ones mask is no mask (as data it reuses the
    # padded estimate's programs: no compile more)
    unmasked = estimate(pad(clean), pad(corrupted), np.ones_like(mask))
    assert np.abs(unmasked[:, n_pad:] - plain).max() > 1e-3
