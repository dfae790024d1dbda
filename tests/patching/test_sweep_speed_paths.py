"""The sweeps' fast paths equal the plain ones.

- Suffix recomputation (:mod:`jinterp.patching.suffix`): sites feeding keys, local sites (at the
  last layer too) and all-position sites on GPT-2, grouped-query Llama and Gemma 2 (sliding
  window, soft-caps, post-norms), with one, two and one-per-position buckets, and metrics
  reading one position or one per prompt, equal recomputing every position
  (``suffix_buckets=None``), which ``test_activation_patching.py`` checks against a loop of
  ``run_with_hooks`` (with None, 1 and 2 buckets on five more sites; ``full``: the default).
  ``make test`` runs Gemma 2's local site with two buckets in chunks here; the other kinds run
  by default against a loop: feeding keys with buckets (``test_activation_patching.py``'s
  Llama k, ``test_padded_sweep.py``'s GPT-2 residual), a metric position per prompt
  (``test_padded_sweep.py``'s right padding), all positions (``test_ablation_sweeps.py``).
- The logits a metric reads: a logit difference computes two tokens' logits only.
- Attribution patching's gradients with the metric's positions only equal ``grad_cache``'s.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens

import jinterp
from jinterp import metrics, patching
from jinterp.patching import suffix
from jinterp.patching.activation import site_activations
from jinterp.patching.attr_grads import corrupted_grads
from jinterp.patching.attribution import metric_grads
from jinterp.patching.sweep import final_metric, run_sweep

N_POS = 5
# (family, site, buckets, metric position): feeding keys; local at the last layer; local with a
# metric reading a position per prompt (every position's final residual); all positions.
# test_activation_patching.py checks five more sites against a loop.
# Each case compiles one program per layer and bucket; `make test` runs Gemma 2 with two buckets
# (the module docstring names the default tests that cover the other kinds against a loop),
# `full` also the residual with one bucket, Gemma 2 with one bucket per position, the per-prompt
# metric position and an all-position site (every node starts at 0, as one bucket does).
CASES = [pytest.param("gpt2", "resid_pre", 1, -1, marks=pytest.mark.full),
         ("gemma2", "mlp_out", 2, -1),
         pytest.param("gemma2", "mlp_out", 5, -1, marks=pytest.mark.full),
         pytest.param("llama", "attn_head_q_by_pos", 2, (3, 4), marks=pytest.mark.full),
         pytest.param("llama", "attn_head_out_all_pos", 2, -1, marks=pytest.mark.full)]


def setup(name, pos=-1):
    model, params = family(name)
    clean, corrupted = jnp.asarray(tokens(2, N_POS, 0)), jnp.asarray(tokens(2, N_POS, 1))
    clean_logits, clean_cache = jinterp.run_with_cache(model, params, clean)
    corrupted_logits, _ = jinterp.run_with_cache(model, params, corrupted)  # the same program
    metric = metrics.normalised_logit_diff(jnp.array([3, 7]), jnp.array([5, 11]), clean_logits,
                                           corrupted_logits, pos=jnp.asarray(pos))
    return model, params, corrupted, clean_cache, metric


@pytest.mark.parametrize("name,site_name,n_buckets,pos", CASES)
def test_suffix_path_equals_recomputing_every_position(name, site_name, n_buckets, pos):
    model, params, corrupted, cache, metric = setup(name, pos)
    site = patching.get_site(site_name)
    sources = site_activations(model, site, cache, 2, N_POS, "clean_cache")
    full = np.asarray(run_sweep(model, params, corrupted, site, sources, metric,
                                suffix_buckets=None))
    assert np.ptp(full) > 1e-3  # the patches matter
    # chunks of 2: a bucket of 3 positions' nodes (Gemma 2's 2nd) runs in two, the last ragged
    got = run_sweep(model, params, corrupted, site, sources, metric, chunk_size=2,
                    suffix_buckets=n_buckets)
    np.testing.assert_allclose(got, full, atol=1e-5)


def test_buckets_and_node_positions():
    assert suffix.bucket_starts(16, 4) == (0, 4, 8, 12)
    assert suffix.bucket_starts(3, 4) == (0, 1, 2)
    assert suffix.bucket_starts(5, 1) == (0,)
    model, _ = family("llama")  # 4 query heads, 2 kv heads
    by_pos = patching.get_site("attn_head_q_by_pos")  # nodes (pos, head), C order
    np.testing.assert_array_equal(suffix.node_positions(model, by_pos, 3), [0] * 4 + [1] * 4
                                  + [2] * 4)
    pattern = patching.get_site("attn_head_pattern_by_pos")  # nodes (head, dest)
    np.testing.assert_array_equal(suffix.node_positions(model, pattern, 3)[:4], [0, 1, 2, 0])
    all_pos = patching.get_site("attn_head_k_all_pos")
    np.testing.assert_array_equal(suffix.node_positions(model, all_pos, 3), [0, 0])
    parts = suffix.groups(model, by_pos, 3, 2)  # starts 0 and 1
    assert [start for start, _, _ in parts] == [0, 1]
    inverse = suffix.node_order([nodes for _, nodes, _ in parts], 12)
    np.testing.assert_array_equal(np.concatenate([n for _, n, _ in parts])[inverse],
                                  np.arange(12))
    assert suffix.is_local(by_pos) and suffix.is_local(pattern)
    assert not suffix.is_local(patching.get_site("resid_pre"))  # feeds the keys
    assert not suffix.is_local(patching.get_site("attn_head_out_all_pos"))  # every position
    with pytest.raises(ValueError, match="suffix_buckets=0"):
        run_sweep(model, None, np.zeros((1, 3), int), by_pos, [jnp.zeros(())] * 3,
                  metrics.logit_diff(1, 2),
                  suffix_buckets=0)


@pytest.mark.parametrize("name", ["gpt2", "gemma2"])  # tied embeddings; soft-capped logits
def test_logit_difference_reads_two_columns(name):
    model, params = family(name)
    resid = model(params, jnp.asarray(tokens(2, N_POS, 0)), stop_at_layer=model.n_layers)
    logits = model(params, resid, start_at_layer=model.n_layers)
    for metric in (metrics.logit_diff(jnp.array([3, 7]), 5, pos=jnp.array([1, -1])),
                   metrics.NormalisedLogitDiff(4, 9, 2.0, -1.0, pos=2)):
        np.testing.assert_allclose(final_metric(model, params, resid, metric), metric(logits),
                                   rtol=1e-5, atol=1e-6)
    loss = metrics.loss(jnp.asarray(tokens(2, N_POS, 0)))  # all positions, every token
    np.testing.assert_allclose(final_metric(model, params, resid, loss), loss(logits), rtol=1e-6)


# resid_pre alone: the last block at the metric's position only; with z: every position.
# `make test`: each once (Gemma 2's soft-caps and post-norms with z); `full`: the other two.
GRAD_CASES = [("gpt2", ("hook_resid_pre",)), ("gemma2", ("hook_resid_pre", "attn.hook_z")),
              pytest.param("gpt2", ("hook_resid_pre", "attn.hook_z"), marks=pytest.mark.full),
              pytest.param("gemma2", ("hook_resid_pre",), marks=pytest.mark.full)]


@pytest.mark.parametrize("name,points", GRAD_CASES)
def test_attribution_gradients_at_the_metric_positions_equal_grad_cache(name, points):
    model, params, corrupted, _, metric = setup(name)
    value, acts, grads = metric_grads(model, params, corrupted, metric, points)
    want_value, want_acts, want_grads = corrupted_grads(model, params, corrupted, metric,
                                                        points)
    np.testing.assert_allclose(value, want_value, atol=1e-5)  # ~0: the corrupted run
    for point in points:
        np.testing.assert_allclose(acts[point], want_acts[point], atol=1e-5)
        np.testing.assert_allclose(grads[point], want_grads[point], rtol=1e-4, atol=1e-6)
        assert float(jnp.abs(grads[point][-1]).max()) > 1e-3, point  # the last layer too
