"""Zero, mean and resample ablation sweeps equal loops of the core's ablation interventions."""

import jax
import jax.numpy as jnp
import numpy as np
from core.families import family, tokens
from reference import loop_sweep, node_selectors

import jinterp
from jinterp import MeanAblate, ResampleAblate, ZeroAblate, metrics, patching

SITE = "attn_head_out_all_pos"


def test_zero_mean_resample_equal_loops():
    model, params = family("gpt2")
    run, ref_tokens = jnp.asarray(tokens(2, 4, 0)), jnp.asarray(tokens(3, 4, 2))
    metric = metrics.logit_diff(3, 5)
    site = patching.get_site(SITE)
    _, ref_cache = jinterp.run_with_cache(model, params, ref_tokens)
    key = jax.random.key(7)
    index = np.asarray(jax.random.randint(key, (2,), 0, 3))  # the sweep's draw
    hooks = {
        "zero": lambda layer, c: ZeroAblate(**node_selectors(site, c)),
        "mean": lambda layer, c: MeanAblate.from_activations(
            ref_cache[site.hook_name(layer)], **node_selectors(site, c)),
        "resample": lambda layer, c: ResampleAblate(
            ref_cache[site.hook_name(layer)], index, **node_selectors(site, c)),
    }
    for method, make_hook in hooks.items():
        got = patching.ablation_sweep(model, params, run, SITE, metric, method=method,
                                      reference_cache=None if method == "zero" else ref_cache,
                                      key=key)
        want = loop_sweep(model, params, run, SITE, make_hook, metric)
        assert got.shape == (model.n_layers, model.dims["n_heads"])
        np.testing.assert_allclose(got, want, atol=2e-5, err_msg=method)
        assert np.ptp(want) > 1e-3
