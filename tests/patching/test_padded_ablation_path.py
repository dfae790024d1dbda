"""Ablation sweeps and path patching on padded batches (one ``attention_mask``).

- Ablation (zero, masked mean, resample) against the slow reference: a loop of
  ``run_with_hooks(..., attention_mask=mask)`` with the core's ``ZeroAblate`` /
  ``MeanAblate`` / ``ResampleAblate`` per node, the mean computed by a loop over positions.
- Path patching: a left-padded batch's results (into the final residual, into a head's key,
  and one sender set) equal the same prompts' unpadded results, prompt by prompt; without the
  mask they do not.
- A mask of the wrong shape names both shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens
from patching.reference import loop_sweep, node_selectors

import jinterp
from jinterp import MeanAblate, ResampleAblate, ZeroAblate, metrics, patching
from jinterp.patching.attr_graph import Node
from jinterp.patching.path import (
    get_path_patch_head_to_final_resid_post,
    get_path_patch_head_to_heads,
    path_patch,
)

N_POS = 6


def left_padded(lengths, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of ``lengths`` real tokens, left-padded to N_POS (pad id 0), and their mask."""
    toks = tokens(len(lengths), N_POS, seed)
    mask = np.zeros((len(lengths), N_POS), np.int32)
    for row, n in enumerate(lengths):
        mask[row, N_POS - n:] = 1
    return np.where(mask == 1, toks, 0), mask


def loop_mean(acts, mask) -> np.ndarray:
    """``[1, pos, ...]``: at each position the mean over the examples real there (else 0)."""
    acts = np.asarray(acts)
    out = np.zeros((1, *acts.shape[1:]), np.float32)
    for pos in range(acts.shape[1]):
        rows = [b for b in range(acts.shape[0]) if mask[b, pos]]
        if rows:
            out[0, pos] = np.mean(acts[rows, pos], axis=0)
    return out


def test_masked_mean_averages_real_examples_only():
    acts = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 2)), jnp.float32)
    mask = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 1]])
    got = patching.ablation.masked_mean(acts, ("batch", "pos", "d_model"), mask)
    np.testing.assert_allclose(got, loop_mean(acts, mask), atol=1e-6)
    assert not np.any(np.asarray(got)[0, 0])  # real in no example: zeros


@pytest.mark.parametrize("name,site_name,own_reference,methods", [
    ("gpt2", "attn_head_out_all_pos", True, ("mean", "resample")),
    ("llama", "attn_head_k_all_pos", False, ("zero", "mean")),
    pytest.param("llama", "attn_head_out_by_pos", True, ("zero", "mean", "resample"),
                 marks=pytest.mark.full),
    pytest.param("gpt2", "resid_pre", False, ("zero", "mean", "resample"),
                 marks=pytest.mark.full)])
def test_padded_ablation_equals_a_loop_of_masked_ablations(name, site_name, own_reference,
                                                           methods):
    """Left padding; the mean and resample reference is the run itself (computed with its
    mask) or another padded batch (its cache given with ``reference_mask``)."""
    model, params = family(name)
    site = patching.get_site(site_name)
    run, mask = left_padded((6, 3), 0)
    if own_reference:
        ref_tokens, ref_mask = run, mask
    else:
        ref_tokens, ref_mask = left_padded((4, 6, 2), 2)
    _, ref_cache = jinterp.run_with_cache(model, params, ref_tokens, attention_mask=ref_mask)
    metric = metrics.logit_diff(jnp.array([3, 7]), jnp.array([5, 11]))  # reads slot -1
    key = jax.random.key(7)
    index = np.asarray(jax.random.randint(key, (2,), 0, len(ref_tokens)))  # the sweep's draw
    hooks = {
        "zero": lambda layer, c: ZeroAblate(**node_selectors(site, c)),
        "mean": lambda layer, c: MeanAblate(loop_mean(ref_cache[site.hook_name(layer)],
                                                      ref_mask), **node_selectors(site, c)),
        "resample": lambda layer, c: ResampleAblate(
            ref_cache[site.hook_name(layer)], index, **node_selectors(site, c)),
    }

    def sweep(method, attention_mask, **reference):
        if not (own_reference or method == "zero"):
            reference = {"reference_cache": ref_cache, **reference}
        if method == "mean" and not own_reference:
            reference.setdefault("reference_mask", ref_mask)
        return np.asarray(patching.ablation_sweep(model, params, run, site_name, metric,
                                                  method=method, key=key,
                                                  attention_mask=attention_mask, **reference))

    got = {}
    for method in methods:
        got[method] = sweep(method, mask)
        want = loop_sweep(model, params, run, site_name, hooks[method], metric,
                          attention_mask=mask)
        assert got[method].shape == site.result_shape(model, N_POS)
        np.testing.assert_allclose(got[method], want, atol=2e-5, err_msg=method)
        assert np.ptp(want) > 1e-3, method
    # the masks are what the sweep used (all ones is no mask; as data it reuses the programs):
    # the runs' mask, and the mean's (the reference unmasked averages its pads in)
    first = methods[0]
    assert np.abs(sweep(first, np.ones_like(mask)) - got[first]).max() > 1e-3
    plain_mean = sweep("mean", mask, reference_cache=ref_cache, reference_mask=None)
    assert np.abs(plain_mean - got["mean"]).max() > 1e-3


def row_metric(logits):
    """Mean over rows of a per-row logit difference at the last slot (rows add up)."""
    return logits[:, -1, 3].mean() - logits[:, -1, 5].mean()


@pytest.mark.parametrize("name", ["llama", pytest.param("gpt2", marks=pytest.mark.full)])
def test_left_padded_path_patching_equals_each_prompt_unpadded(name):
    """Path patching is row by row, so with a per-row mean metric a padded batch's result is
    the mean of each prompt's unpadded result (RoPE / learned positions count real tokens)."""
    model, params = family(name)
    lengths = (6, 4)
    clean, mask = left_padded(lengths, 0)
    corrupt, _ = left_padded(lengths, 1)
    receivers = dict(receiver_heads=[(2, 1)], receiver_input="k")

    def results(clean, corrupt, mask):
        final = get_path_patch_head_to_final_resid_post(model, params, clean, corrupt, row_metric,
                                                        attention_mask=mask)
        keys = get_path_patch_head_to_heads(model, params, clean, corrupt, row_metric,
                                            attention_mask=mask, **receivers)
        one = path_patch(model, params, clean, corrupt, row_metric,
                         [Node.head(0, 1), Node.mlp(1)], [Node.q(2, 0), Node.final()],
                         attention_mask=mask)
        return np.asarray(final), np.asarray(keys), np.asarray(one)

    padded = results(clean, corrupt, mask)
    rows = [results(clean[r:r + 1, N_POS - n:], corrupt[r:r + 1, N_POS - n:], None)
            for r, n in enumerate(lengths)]
    for label, got, *per_row in zip(("final", "k", "set"), padded, *rows):
        np.testing.assert_allclose(got, np.mean(per_row, axis=0), atol=2e-5, err_msg=label)
        assert np.ptp(per_row[0]) > 1e-3 or label == "set"
    # the mask is what every run used: all ones (no mask; as data it reuses the programs)
    unmasked = results(clean, corrupt, np.ones_like(mask))
    for label, got, want in zip(("final", "k", "set"), unmasked, padded):
        assert np.abs(got - want).max() > 1e-3, label


def test_attention_mask_of_the_wrong_shape_names_both_shapes():
    model, params = family("gpt2")
    run, mask = left_padded((6, 3), 0)
    corrupt, _ = left_padded((6, 3), 1)
    both = r"\(2, 6\).*\(2, 5\)"
    with pytest.raises(ValueError, match=both):
        get_path_patch_head_to_final_resid_post(model, params, run, corrupt, row_metric,
                                                attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match=both):
        path_patch(model, params, run, corrupt, row_metric, Node.embed(), Node.final(),
                   attention_mask=mask[:, 1:])
    metric = metrics.logit_diff(jnp.array([3, 7]), jnp.array([5, 11]))
    for method in ("zero", "mean"):
        with pytest.raises(ValueError, match=both):
            patching.ablation_sweep(model, params, run, "resid_pre", metric, method=method,
                                    attention_mask=mask[:, 1:])
    _, cache = jinterp.run_with_cache(model, params, run, attention_mask=mask)
    with pytest.raises(ValueError, match=r"reference_mask.*\(2, 6\).*\(1, 6\)"):
        patching.ablation_sweep(model, params, run, "resid_pre", metric, method="mean",
                                reference_cache=cache, reference_mask=mask[:1])
    with pytest.raises(ValueError, match="reference_mask describes reference_cache"):
        patching.ablation_sweep(model, params, run, "resid_pre", metric, method="mean",
                                reference_mask=mask)
    with pytest.raises(ValueError, match="does not use it"):
        patching.ablation_sweep(model, params, run, "resid_pre", metric, method="resample",
                                reference_cache=cache, reference_mask=mask)
