"""Bad input to the sweeps: each a clear error that names the problem and the fix."""

import jax.numpy as jnp
import pytest
from core.families import family, tokens

import jinterp
from jinterp import metrics, patching


def test_bad_inputs():
    model, params = family("gpt2")
    clean, corrupted = jnp.asarray(tokens(2, 4, 0)), jnp.asarray(tokens(2, 4, 1))
    _, cache = jinterp.run_with_cache(model, params, clean,
                                      names=lambda n: n.endswith("hook_resid_pre"))
    metric = metrics.logit_diff(3, 5)
    sweep = patching.get_act_patch_resid_pre
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\).*same \[batch, pos\] shape"):
        sweep(model, params, corrupted[:, :3], cache, metric)
    with pytest.raises(KeyError, match=r"lacks \['blocks.0.attn.hook_z'.*names="):
        patching.get_act_patch_attn_head_out_all_pos(model, params, corrupted, cache, metric)
    with pytest.raises(ValueError, match=r"must return a scalar.*\(2,\)"):
        sweep(model, params, corrupted, cache, lambda logits: logits[:, -1, 3])
    with pytest.raises(ValueError, match="Unknown patching site 'resid_post'.*Closest"):
        patching.act_patch(model, params, corrupted, cache, metric, "resid_post")
    with pytest.raises(ValueError, match="chunk_size=0.*>= 1"):
        sweep(model, params, corrupted, cache, metric, chunk_size=0)
    with pytest.raises(ValueError, match="Unknown ablation method"):
        patching.ablation_sweep(model, params, corrupted, "resid_pre", metric, method="max")
    with pytest.raises(ValueError, match=r"shape \[batch, pos\]"):
        sweep(model, params, corrupted[0], cache, metric)
