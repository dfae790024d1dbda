"""Residual decompositions and DLA against closed forms: sums, norms, logits (3 families)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from families import family, tokens

import jinterp

FAMS = ("gpt2", "llama")


@pytest.fixture(scope="module", params=FAMS)
def run(request):
    model, params = family(request.param)
    logits, cache = jinterp.run_with_cache(model, params, tokens(),
                                           names=lambda n: not n.endswith("hook_result"))
    return model, params, logits, cache


def test_decompose_resid_sums_to_the_residual_and_apply_ln_to_the_normalised_input(run):
    model, params, _, cache = run
    final = cache[f"blocks.{model.n_layers - 1}.hook_resid_post"]
    np.testing.assert_allclose(cache.decompose_resid().sum(0), final, atol=1e-4)
    mid = cache.decompose_resid(layer=1, mlp_input=True)
    np.testing.assert_allclose(mid.sum(0), cache["blocks.1.hook_resid_mid"], atol=1e-4)
    # Linear maps of a sum: the normalised components add up to the norm's normalised input.
    normed = cache.decompose_resid(apply_ln=True, model=model).sum(0)
    np.testing.assert_allclose(normed, cache["ln_final.hook_normalized"], atol=1e-4)
    at_mlp = cache.decompose_resid(1, mlp_input=True, apply_ln=True, pos_slice=-1, model=model)
    np.testing.assert_allclose(at_mlp.sum(0), cache["blocks.1.ln2.hook_normalized"][:, -1],
                               atol=1e-4)


def test_accumulated_resid_and_the_logit_lens(run):
    model, params, logits, cache = run
    acc, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
    assert labels[:3] == ["0_pre", "0_mid", "1_pre"] and labels[-1] == "final_post"
    assert acc.shape == (2 * model.n_layers + 1, 2, 9, model.d_model)
    np.testing.assert_allclose(acc[2], cache["blocks.1.hook_resid_pre"])
    lens = cache.bind(model, params).accumulated_resid(apply_ln=True, pos_slice=(2, 5))
    # TL 3.x: at the final layer each entry gets the final norm with its own statistics.
    out = jinterp.unembed(model, params, lens[-1], apply_ln=False)
    np.testing.assert_allclose(out, logits[:, 2:5], atol=1e-4)
    with pytest.raises(ValueError, match="needs the model's weights"):
        cache.accumulated_resid(apply_ln=True, model=model)


def test_full_decomposition_is_exact_and_heads_add_up_to_attn_out(run):
    model, params, _, cache = run
    if "ln1_post.hook_scale" in model.block_points:
        with pytest.raises(ValueError, match="post-norms"):
            cache.get_full_resid_decomposition(model=model, params=params)
        return
    for layer, mlp_input in ((None, False), (1, True)):
        stack = cache.get_full_resid_decomposition(layer, mlp_input, model=model, params=params)
        target = (cache["blocks.1.hook_resid_mid"] if mlp_input
                  else cache[f"blocks.{model.n_layers - 1}.hook_resid_post"])
        np.testing.assert_allclose(stack.sum(0), target, atol=1e-4)
    # Without attn.hook_result cached, heads are z @ W_O: per layer they add up to attn_out.
    heads = cache.stack_head_results(pos_slice=[0, 3], params=params).reshape(
        model.n_layers, -1, 2, 2, model.d_model).sum(1)
    b_O = params["blocks"]["attn"]["b_O"][:, None, None]
    np.testing.assert_allclose(heads + b_O, cache.stack("hook_attn_out")[:, :, [0, 3]],
                               atol=1e-5)
    neurons = cache.stack_neuron_results(1, neuron_slice=(2, 6), params=params, model=model)
    w_out = params["blocks"]["mlp"]["W_out"][0, 2:6]
    expected = cache["blocks.0.mlp.hook_post"][..., 3:4] * w_out[1][None, None]
    np.testing.assert_allclose(neurons[1], expected, atol=1e-6)


def test_logit_attrs_of_the_full_decomposition_add_up_to_the_logit(run):
    model, params, _, _ = run
    model, params = jinterp.weights.process(model, params)
    logits, cache = jinterp.run_with_cache(model, params, tokens())
    right, wrong = np.array([3, 7]), np.array([5, 1])
    if "ln1_post.hook_scale" in model.block_points:
        stack = cache.decompose_resid(apply_ln=True, pos_slice=-1, model=model)
    else:
        stack = cache.get_full_resid_decomposition(apply_ln=True, pos_slice=-1, model=model,
                                                   params=params)
    attrs = jinterp.logit_attrs(model, params, stack, right, wrong)
    assert attrs.shape == (stack.shape[0], 2)
    # Folded weights: ln_final is the identity scale, so the parts add up to the logit.
    linear = jinterp.unembed(model, params, cache["ln_final.hook_normalized"][:, -1],
                             apply_ln=False, softcap=False)
    b_U = jinterp.b_U(model, params)  # not in the residual: DLA leaves it out
    target = (linear[np.arange(2), right] - b_U[right]) - (linear[np.arange(2), wrong]
                                                           - b_U[wrong])
    np.testing.assert_allclose(attrs.sum(0), target, atol=1e-4)
    raw = cache.decompose_resid(pos_slice=-1)
    np.testing.assert_allclose(cache.logit_attrs(raw, right, pos_slice=-1, model=model,
                                                 params=params),
                               jinterp.logit_attrs(model, params, cache.apply_ln_to_stack(
                                   raw, pos_slice=-1, model=model), right), atol=1e-5)
    jitted = jax.jit(lambda p, s: jinterp.logit_attrs(model, p, s, jnp.asarray(right)))
    np.testing.assert_allclose(jitted(params, stack), jinterp.logit_attrs(model, params, stack,
                                                                          right), atol=1e-6)


def test_bad_input_names_the_fix():
    model, params = family("gpt2")
    _, cache = jinterp.run_with_cache(model, params, tokens())
    stack = cache.decompose_resid(pos_slice=-1)
    with pytest.raises(ValueError, match="d_model=32 last"):
        jinterp.logit_attrs(model, params, stack[..., :5], 3)
    with pytest.raises(ValueError, match="out of range for an axis of size 9"):
        cache.decompose_resid(pos_slice=9)
    with pytest.raises(ValueError, match="do not match the stack's leading axes"):
        jinterp.logit_attrs(model, params, cache.decompose_resid(), np.array([1, 2]))
    with pytest.raises(ValueError, match="same shape"):
        jinterp.logit_attrs(model, params, stack, np.array([1, 2]), np.array([1]))
    with pytest.raises(ValueError, match="pass params="):
        cache.stack_head_results()
    with pytest.raises(ValueError, match="needs the model"):
        cache.decompose_resid(apply_ln=True)
    with pytest.raises(ValueError, match="outside"):
        cache.decompose_resid(layer=7)
