"""The core owns the layer loop: start_at_layer / stop_at_layer on every family.

Values are checked against the full forward (a cached residual fed back in must reproduce it),
and what is *not* computed is checked on the compiled program (no unembedding dot, a loop that
runs only the requested blocks), not only on values.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from families import families, family, tokens

import jinterp
from jinterp import At, Patch, Steer, ZeroAblate


def _close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    scale = np.abs(b[np.isfinite(b)]).max()  # masked scores are -inf: scale by the finite ones
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


# gemma3: local and global layers on either side of a start. GPT-2's starts are `full`: the
# patching sweeps start there at every layer and equal a loop of full forwards
# (test_activation_patching.py's gpt2 resid_pre case, test_attribution.py's EAP).
DEFAULT_START = ("gemma3",)


@pytest.mark.parametrize("name", families(*DEFAULT_START))
def test_start_at_layer_from_the_cached_residual_equals_the_full_forward(name):
    model, params = family(name)
    toks = tokens()
    logits, cache = jinterp.run_with_cache(model, params, toks)
    n = model.n_layers  # default: the first, a middle and the last start; `full`: every start
    for start in (0, n // 2, n) if name in DEFAULT_START else range(n + 1):
        resid = (cache[f"blocks.{start}.hook_resid_pre"] if start < model.n_layers
                 else cache[f"blocks.{start - 1}.hook_resid_post"])
        _close(model(params, resid, start_at_layer=start), logits)
    # With hooks at layers >= start, and a cache of what runs.
    hooks = {"blocks.2.attn.hook_z": ZeroAblate(head=1), "blocks.1.hook_mlp_out": lambda x: 0.5 * x}
    hooked, full = jinterp.run_with_cache(model, params, toks, hooks=hooks)
    out, part = jinterp.run_with_cache(model, params, full["blocks.1.hook_resid_pre"], hooks=hooks,
                                       start_at_layer=1)
    _close(out, hooked)
    assert "hook_embed" not in part and "blocks.0.hook_resid_post" not in part
    assert list(part)[0] == "blocks.1.hook_resid_pre" and "ln_final.hook_scale" in part
    for key in part:
        _close(part[key], full[key])


@pytest.mark.parametrize("name", families("gemma", "gemma2"))
def test_stop_at_layer_returns_the_residual_entering_that_block(name):
    model, params = family(name)
    toks = tokens()
    _, cache = jinterp.run_with_cache(model, params, toks)
    resid, part = jinterp.run_with_cache(model, params, toks, stop_at_layer=2)
    assert resid.shape == (2, 9, model.d_model)
    _close(resid, cache["blocks.2.hook_resid_pre"])
    assert all(jinterp.names.split_name(n)[0] in (None, 0, 1) for n in part)
    assert "blocks.2.hook_resid_pre" not in part and "ln_final.hook_normalized" not in part
    _close(part["blocks.1.attn.hook_pattern"], cache["blocks.1.attn.hook_pattern"])
    # stop_at_layer=0 is the embedding; stop_at_layer=n_layers the residual before ln_final.
    _close(model(params, toks, stop_at_layer=0), cache["blocks.0.hook_resid_pre"])
    _close(model(params, toks, stop_at_layer=model.n_layers),
           cache[f"blocks.{model.n_layers - 1}.hook_resid_post"])
    # Both at once: run blocks 1..2 only.
    mid = jinterp.run_with_hooks(model, params, cache["blocks.1.hook_resid_pre"], {},
                                 start_at_layer=1, stop_at_layer=3)
    _close(mid, cache["blocks.2.hook_resid_post"])


def _compiled_text(fn, *args):
    return jax.jit(fn).lower(*args).compile().as_text()


def test_stop_at_layer_compiles_no_later_block_and_no_unembedding():
    model, params = family("gpt2")  # d_vocab 61 appears in no other shape
    toks = jnp.asarray(tokens())
    full = _compiled_text(lambda p, t: model(p, t), params, toks)
    stopped = _compiled_text(lambda p, t: model(p, t, stop_at_layer=2), params, toks)
    assert ",61]" in full and re.search(r'known_trip_count":\{"n":"3"', full)
    assert "f32[2,9,61]" in full and "f32[2,9,61]" not in stopped  # the logits never exist
    assert re.search(r'known_trip_count":\{"n":"2"', stopped)
    started = _compiled_text(lambda p, r: model(p, r, start_at_layer=1), params,
                             jnp.zeros((2, 9, 32)))
    assert re.search(r'known_trip_count":\{"n":"2"', started)
    assert "f32[2,9,61]" in started


def test_layer_range_and_residual_errors_name_the_fix():
    model, params = family("llama")
    toks = tokens()
    with pytest.raises(ValueError, match=r"stop_at_layer=4 is outside \[0, 3\]"):
        model(params, toks, stop_at_layer=4)
    with pytest.raises(ValueError, match=r"start_at_layer=-1 is outside \[0, 3\]"):
        model(params, jnp.zeros((2, 9, 32)), start_at_layer=-1)
    with pytest.raises(ValueError, match="start_at_layer=2 is after stop_at_layer=1"):
        jinterp.run_with_hooks(model, params, jnp.zeros((2, 9, 32)), {}, start_at_layer=2,
                               stop_at_layer=1)
    with pytest.raises(TypeError, match="must be a Python int"):
        model(params, toks, stop_at_layer=jnp.int32(1))
    with pytest.raises(ValueError, match=r"d_model=32\]; got shape \(2, 9\)"):
        model(params, toks, start_at_layer=1)
    with pytest.raises(TypeError, match="has dtype float16; the model computes in float32"):
        model(params, jnp.zeros((2, 9, 32), jnp.float16), start_at_layer=1)
    with pytest.raises(ValueError, match="not computed by this call"):
        jinterp.run_with_cache(model, params, toks, names=["blocks.2.attn.hook_z"],
                               stop_at_layer=2)
    with pytest.raises(ValueError, match="outside what this call computes"):
        jinterp.run_with_hooks(model, params, jnp.zeros((2, 9, 32)),
                               {"blocks.0.hook_resid_pre": Steer(jnp.ones(32))}, start_at_layer=1)


def test_hooks_before_the_start_layer_are_refused_and_at_layers_are_checked():
    model, params = family("gpt2")
    resid = jnp.zeros((2, 9, 32))
    outside = r"At\(layer=0\) on 'hook_resid_pre' is outside the layers"
    with pytest.raises(ValueError, match=outside):
        jinterp.run_with_hooks(model, params, resid,
                               {"hook_resid_pre": At(0, Steer(jnp.ones(32)))}, start_at_layer=1)
    with pytest.raises(ValueError, match=r"At\(layer=5\) .* outside the model's layers 0..2"):
        jinterp.run_with_hooks(model, params, tokens(), {"hook_resid_pre": At(5, ZeroAblate())})
    values = jnp.zeros((2, 2, 9, 32))  # a [layer] axis of 2 for a 3-layer model
    with pytest.raises(ValueError, match="leading axis must have the model's 3 layers"):
        jinterp.run_with_hooks(model, params, tokens(), {"hook_resid_pre": At(1, Patch(values))})


def test_device_tokens_are_checked_in_the_program_without_a_host_copy():
    model, params = family("gpt2")
    good = jax.device_put(jnp.asarray(tokens()))
    bad = good.at[0, 3].set(61)
    with jax.transfer_guard_device_to_host("disallow"):
        logits = model(params, good)
        _, cache = jinterp.run_with_cache(model, params, good, names="blocks.1.hook_resid_pre")
    assert isinstance(logits, jax.Array) and cache["blocks.1.hook_resid_pre"].shape == (2, 9, 32)
    with pytest.raises(Exception, match=r"Token ids must lie in \[0, 61\); got ids in \[\d+, 61\]"):
        jax.block_until_ready(model(params, bad))
    # Host tokens are checked on the host, with a plain ValueError.
    with pytest.raises(ValueError, match=r"\[0, 61\); got ids in \[-2, 60\]"):
        model(params, np.array([[-2, 60]]))
