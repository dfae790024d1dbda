"""Every activation-patching sweep equals a Python loop of single ``run_with_hooks`` patches.

On GPT-2, Llama (grouped-query: k/v sites patch kv heads) and Gemma 2 (soft-capping, sliding
windows, post-norms), with the metric read at one position (the sweep unembeds that position
only; the loop computes full logits). Each sweep compiles one program per layer and suffix
bucket: ``make test`` runs three sites with None (every position recomputed) or 2 buckets, the
``full`` variant every site with 1 and with the default buckets.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens
from reference import loop_sweep, patch_hooks

import jinterp
from jinterp import metrics, patching
from jinterp.patching import activation
from jinterp.patching.sweep import DEFAULT_BUCKETS

N_POS = 5
SITES = [("gpt2", "resid_pre"), ("gpt2", "attn_head_pattern_dest_src_pos"),
         ("llama", "attn_head_k_by_pos"), ("gemma2", "attn_head_out_by_pos"),
         ("gemma2", "attn_head_pattern_by_pos")]
# Default set: the plain path (None) on GPT-2's residual (a site feeding the keys) and two buckets
# on GQA kv heads and on the pattern under a sliding window. test_sweep_speed_paths.py checks two
# buckets against None on Gemma 2's MLP (`full`: one and two buckets on three more sites).
# `full`: the two other sites with one bucket, and every site with the default buckets.
CHEAP = [(*SITES[0], None), (*SITES[2], 2), (*SITES[4], 2)]
CASES = (CHEAP + [pytest.param(*SITES[i], 1, marks=pytest.mark.full) for i in (1, 3)]
         + [pytest.param(*case, DEFAULT_BUCKETS, marks=pytest.mark.full) for case in SITES])


def setup(name):
    model, params = family(name)
    clean, corrupted = jnp.asarray(tokens(2, N_POS, 0)), jnp.asarray(tokens(2, N_POS, 1))
    clean_logits, clean_cache = jinterp.run_with_cache(model, params, clean)
    corrupted_logits, corrupted_cache = jinterp.run_with_cache(model, params, corrupted)
    metric = metrics.normalised_logit_diff(jnp.array([3, 7]), jnp.array([5, 11]), clean_logits,
                                           corrupted_logits)
    return model, params, corrupted, clean_cache, corrupted_cache, metric


def loop(name, site, clean_cache, corrupted_cache):
    model, params, corrupted, _, _, metric = setup(name)
    return loop_sweep(model, params, corrupted, site, patch_hooks(site, clean_cache,
                                                                   corrupted_cache), metric)


@pytest.mark.parametrize("name,site,buckets", CASES)
def test_sweep_equals_loop(name, site, buckets):
    model, params, corrupted, clean_cache, corrupted_cache, metric = setup(name)
    fn = getattr(patching, f"get_act_patch_{site}")
    got = np.asarray(fn(model, params, corrupted, clean_cache, metric, suffix_buckets=buckets))
    want = loop(name, site, clean_cache, corrupted_cache)
    assert got.shape == patching.get_site(site).result_shape(model, N_POS) == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.ptp(want) > 1e-3  # the patches matter
    if "kv" in str(patching.get_site(site).node_axes):
        assert got.shape[-1] == model.dims["n_kv_heads"] < model.dims["n_heads"]


def test_every_functions_stack_their_sites_in_transformer_lens_order(monkeypatch):
    model, _ = family("llama")  # 4 query heads, 2 kv heads
    calls = []

    def fake(model, params, tokens, cache, metric, site, **kw):  # each site's index as values
        calls.append(site)
        shape = patching.get_site(site).result_shape(model, N_POS)
        return float(len(calls) - 1) + jnp.broadcast_to(jnp.arange(shape[-1]), shape)

    monkeypatch.setattr(activation, "act_patch", fake)
    for every, shape in (("block_every", (3, 3, N_POS)), ("attn_head_all_pos_every", (5, 3, 4)),
                         ("attn_head_by_pos_every", (5, 3, N_POS, 4))):
        calls.clear()
        out = np.asarray(getattr(patching, f"get_act_patch_{every}")(
            model, None, np.zeros((2, N_POS), int), {}, lambda logits: logits.sum()))
        assert calls == list(patching.EVERY[every]) and out.shape == shape
        np.testing.assert_array_equal(out[:, 0].reshape(len(calls), -1)[:, 0],
                                      np.arange(len(calls)))
        if every != "block_every":  # kv rows: kv head h // 2 serves query head h
            np.testing.assert_array_equal(out[2, 0, ..., 1] - out[2, 0, ..., 0], 0.0)


def test_chunked_equals_unchunked_and_noising_swaps_arguments():
    model, params, corrupted, clean_cache, corrupted_cache, metric = setup("gpt2")
    clean = jnp.asarray(tokens(2, N_POS, 0))
    # chunks, not buckets, are under test (test_sweep_speed_paths.py chunks the suffix path)
    cheap = dict(suffix_buckets=None)
    whole = patching.get_act_patch_resid_pre(model, params, corrupted, clean_cache, metric, **cheap)
    for chunk in (2, 100):  # several chunks with a ragged last one; one chunk
        chunked = patching.get_act_patch_resid_pre(model, params, corrupted, clean_cache, metric,
                                                   chunk_size=chunk, **cheap)
        np.testing.assert_allclose(chunked, whole, atol=1e-6)
    # Noising: the corrupted activation of one node into the clean run.
    noised = patching.get_act_patch_resid_pre(model, params, clean, corrupted_cache, metric,
                                              **cheap)
    name = "blocks.1.hook_resid_pre"
    one = jinterp.run_with_hooks(model, params, clean,
                                 {name: jinterp.Patch(corrupted_cache[name][:, 2], pos=2)})
    np.testing.assert_allclose(noised[1, 2], metric(one), atol=2e-5)
    assert abs(float(noised[1, 2]) - float(whole[1, 2])) > 1e-3
