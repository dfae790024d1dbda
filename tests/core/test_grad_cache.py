"""``grad_cache``: d metric / d activation for every cached name from one backward pass.

Checked on every family against ``jax.grad`` through a full-shape ``Steer`` at single names
(the obvious, one-name-at-a-time reference) and against central finite differences.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from families import FAMILIES, families, family, tokens

import jinterp
from jinterp import Steer

PROBED = ("hook_embed", "blocks.0.attn.hook_z", "blocks.1.hook_resid_mid",
          "blocks.1.mlp.hook_post", "blocks.2.attn.hook_pattern", "blocks.2.hook_resid_post",
          "ln_final.hook_normalized")


def metric(logits):
    return logits[:, -1, 5].sum() - logits[:, -2, 9].mean()


# gpt2, llama and gemma3 probe all seven names between them (three each, rotating below).
@pytest.mark.parametrize("name", families("gpt2", "llama", "gemma3"))
def test_gradients_equal_jax_grad_through_a_steer_at_each_name(name):
    model, params = family(name)
    toks = tokens()
    value, cache, grads = jinterp.grad_cache(model, params, toks, metric)
    logits, plain = jinterp.run_with_cache(model, params, toks)
    np.testing.assert_allclose(value, metric(logits), rtol=1e-5)
    assert list(grads) == list(cache) == list(plain)
    for key in grads:
        assert grads[key].shape == cache[key].shape, key
    # Three names per family, rotating, so every probed name is checked on two families or more.
    # One jax.grad through a Steer at each of them (one program): at zero deltas the partial
    # derivative for one name is the single-name gradient.
    i = FAMILIES.index(name)
    keys = [PROBED[(3 * i + j) % len(PROBED)] for j in range(3)]

    def steered(deltas):
        hooks = {key: Steer(delta) for key, delta in deltas.items()}
        return metric(jinterp.run_with_hooks(model, params, toks, hooks))

    expected = jax.grad(steered)({key: jnp.zeros_like(cache[key]) for key in keys})
    for key in keys:
        scale = np.abs(np.asarray(expected[key])).max()
        assert scale > 0, key
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=key)
    # TransformerLens's convention: the residual between two blocks has one gradient.
    # (Equal to float rounding: the two may be summed in different orders.)
    post = np.asarray(grads["blocks.1.hook_resid_post"])
    np.testing.assert_allclose(post, grads["blocks.2.hook_resid_pre"], rtol=1e-6,
                               atol=1e-6 * np.abs(post).max())


def test_gradients_match_central_finite_differences():
    model, params = family("llama")
    toks = tokens()
    names = ["blocks.1.hook_resid_pre", "blocks.0.mlp.hook_pre"]
    _, cache, grads = jinterp.grad_cache(model, params, toks, metric, names=names)
    rng = np.random.default_rng(0)
    for name in names:
        act = cache[name]
        for _ in range(3):
            index = tuple(int(rng.integers(0, s)) for s in act.shape)
            eps = 1e-2

            def at(delta, name=name, index=index, act=act):
                bump = jnp.zeros_like(act).at[index].set(delta)
                return metric(jinterp.run_with_hooks(model, params, toks, {name: Steer(bump)}))

            numeric = (at(eps) - at(-eps)) / (2 * eps)
            np.testing.assert_allclose(grads[name][index], numeric, rtol=2e-2, atol=2e-4,
                                       err_msg=f"{name}{index}")


def test_names_hooks_partial_metrics_and_errors():
    model, params = family("gpt2")
    toks = tokens()
    zero_head = {"blocks.1.attn.hook_z": jinterp.ZeroAblate(head=2)}
    _, cache, grads = jinterp.grad_cache(model, params, toks, metric,
                                         names=["blocks.1.attn.hook_z", "hook_embed"],
                                         hooks=zero_head)
    assert list(grads) == ["hook_embed", "blocks.1.attn.hook_z"]
    np.testing.assert_array_equal(cache["blocks.1.attn.hook_z"][:, :, 2], 0)
    # After the ablation the gradient at the ablated head is still d metric / d z (the hook
    # acts before the point is read downstream).
    assert np.abs(np.asarray(grads["blocks.1.attn.hook_z"][:, :, 2])).max() > 0
    # A metric carrying arrays: jax.tree_util.Partial keeps them dynamic (no recompile).
    answer = lambda token, logits: logits[:, -1, token].sum()  # Partial(fn, a)(x) = fn(a, x)
    v1, _, _ = jinterp.grad_cache(model, params, toks, jax.tree_util.Partial(answer, 3),
                                  names="hook_embed")
    v2, _, _ = jinterp.grad_cache(model, params, toks, jax.tree_util.Partial(answer, 4),
                                  names="hook_embed")
    logits = model(params, toks)
    np.testing.assert_allclose([v1, v2], [logits[:, -1, 3].sum(), logits[:, -1, 4].sum()],
                               rtol=1e-5)
    with pytest.raises(ValueError, match=r"metric must map the logits to a scalar; it returned "
                                         r"shape \(2,\)"):
        jinterp.grad_cache(model, params, toks, lambda lg: lg[:, -1, 0], names="hook_embed")
    with pytest.raises(TypeError, match="metric"):  # beartype (under pytest) or our own check
        jinterp.grad_cache(model, params, toks, 3.0)
