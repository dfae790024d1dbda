"""Metrics: closed forms on the full logits, and the sweep's unembed-only-``pos`` path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from core.families import family, tokens

import jinterp
from jinterp import metrics
from jinterp.patching.sweep import patched_metric


def test_metrics_match_closed_forms_and_the_positions_only_path():
    model, params = family("gemma2")  # final soft-capping: unembedding stays per position
    toks = jnp.asarray(tokens(2, 5, 0))
    other = jnp.asarray(tokens(2, 5, 1))
    logits = np.asarray(model(params, toks), np.float64)
    ref_logits = model(params, other)
    answer, wrong, last = np.array([3, 7]), np.array([5, 11]), np.array([4, 2])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    ref_logp = np.asarray(jax.nn.log_softmax(ref_logits), np.float64)
    b = np.arange(2)
    cases = {
        "logit_diff": (metrics.logit_diff(answer, wrong),
                       (logits[b, -1, answer] - logits[b, -1, wrong]).mean()),
        "per-prompt pos": (metrics.logit_diff(answer, 9, pos=last),
                           (logits[b, last, answer] - logits[b, last, 9]).mean()),
        "prob": (metrics.prob(answer, pos=2), np.exp(logp[b, 2, answer]).mean()),
        "loss": (metrics.loss(toks), -np.take_along_axis(
            logp[:, :-1], np.asarray(toks)[:, 1:, None], 2).mean()),
        "loss at pos": (metrics.loss(answer, pos=-1), -logp[b, -1, answer].mean()),
        "kl": (metrics.kl(ref_logits),
               (np.exp(ref_logp[:, -1]) * (ref_logp[:, -1] - logp[:, -1])).sum(-1).mean()),
    }
    _, cache = jinterp.run_with_cache(model, params, toks, names="blocks.1.hook_resid_pre")
    resid = cache["blocks.1.hook_resid_pre"]
    for label, (metric, want) in cases.items():
        np.testing.assert_allclose(metric(model(params, toks)), want, rtol=1e-5, err_msg=label)
        # From layer 1, unembedding only metric.pos (or everything for loss over all positions).
        got = patched_metric(model, params, resid, {}, 1, metric)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=label)


def test_normalised_logit_diff_is_0_corrupted_1_clean():
    model, params = family("gpt2")
    clean, corrupted = model(params, tokens(2, 4, 0)), model(params, tokens(2, 4, 1))
    metric = metrics.normalised_logit_diff(3, 5, clean, corrupted)
    np.testing.assert_allclose([metric(clean), metric(corrupted)], [1.0, 0.0], atol=1e-5)
    with pytest.raises(ValueError, match="equal"):
        metrics.normalised_logit_diff(3, 5, clean, clean)
    with pytest.raises(ValueError, match="next-token loss"):
        metrics.loss(3)
