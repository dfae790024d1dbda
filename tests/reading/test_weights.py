"""Weight processing keeps log-probs; circuits, composition scores and the loss vs naive maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from families import family, tokens

import jinterp
from jinterp import weights


def _logprobs(model, params):
    return jax.nn.log_softmax(model(params, tokens()), -1)


@pytest.mark.parametrize("name", ["gpt2", "gemma2"])  # llama: test_decompose processes it
def test_each_step_and_process_keep_the_log_probs(name):
    model, params = family(name)
    before = _logprobs(model, params)
    # Untie first (itself checked), so that every step returns the same model: one compile.
    untied, p_untied = weights.untie(model, params, bias=name == "gpt2")
    np.testing.assert_allclose(_logprobs(untied, p_untied), before, atol=1e-6)
    steps = [weights.fold_ln, weights.fold_value_biases]
    steps += [weights.center_writing_weights] if name == "gpt2" else []
    steps += [weights.center_unembed] if name != "gemma2" else []
    for step in steps:
        m2, p2 = step(untied, p_untied)
        assert m2 == untied
        np.testing.assert_allclose(_logprobs(m2, p2), before, atol=1e-5, err_msg=step.__name__)
    m2, p2 = weights.process(model, params, refactor_factored_attn_matrices=name == "gpt2")
    np.testing.assert_allclose(_logprobs(m2, p2), before, atol=1e-5)
    identity = 0.0 if model.norm_offset else 1.0
    np.testing.assert_array_equal(p2["ln_final"]["w"], identity)
    if name == "gemma2":  # post-norms keep their weights; soft-capped logits are not centred
        post = p2["blocks"]["ln1_post"]["w"]
        np.testing.assert_array_equal(post, params["blocks"]["ln1_post"]["w"])
        with pytest.raises(ValueError, match="soft-cap"):
            weights.center_unembed(model, params)
    if name != "gpt2":
        with pytest.raises(ValueError, match="LayerNorm models only"):
            weights.center_writing_weights(model, params)
        with pytest.raises(ValueError, match="RoPE"):
            weights.refactor_factored_attn_matrices(model, params)


def test_factored_matrix_and_circuits_match_dense_maths():
    model, params = family("llama")  # GQA: query head h reads value head h // 2
    ov, qk = jinterp.OV_circuit(model, params), jinterp.QK_circuit(model, params)
    attn = params["blocks"]["attn"]
    np.testing.assert_allclose(ov[1, 3].AB, attn["W_V"][1, 1] @ attn["W_O"][1, 3], atol=1e-6)
    np.testing.assert_allclose(qk[2, 2].AB, attn["W_Q"][2, 2] @ attn["W_K"][2, 1].T, atol=1e-6)
    dense = np.asarray(ov.AB, np.float64)
    U, S, Vh = ov.svd()
    np.testing.assert_allclose(S, np.linalg.svd(dense, compute_uv=False)[..., :S.shape[-1]],
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose((U * S[..., None, :]) @ Vh, dense, atol=1e-5)
    np.testing.assert_allclose(ov.norm(), np.linalg.norm(dense, axis=(-2, -1)), rtol=1e-5)
    even = ov.make_even()
    np.testing.assert_allclose(even.AB, dense, atol=1e-5)
    top = np.sort(np.abs(np.linalg.eigvals(dense[0, 0])))[::-1][:8]
    np.testing.assert_allclose(np.sort(np.abs(ov[0, 0].eigenvalues()))[::-1], top, rtol=1e-3,
                               atol=1e-6)


def test_composition_and_copying_scores_match_a_loop_over_head_pairs():
    model, params = family("gpt2")
    ov = np.asarray(jinterp.OV_circuit(model, params).AB, np.float64)
    qk = np.asarray(jinterp.QK_circuit(model, params).AB, np.float64)
    right = {"Q": qk, "K": np.swapaxes(qk, -1, -2), "V": ov}
    fro = lambda m: np.linalg.norm(m)
    for mode in "QKV":
        scores = np.asarray(jinterp.composition_scores(model, params, mode))
        pairs = [(0, 1, 1, 2), (0, 3, 2, 0), (1, 0, 2, 3), (2, 1, 0, 1), (1, 1, 1, 2)]
        for l1, h1, l2, h2 in pairs:
            expected = 0.0 if l1 >= l2 else fro(ov[l1, h1] @ right[mode][l2, h2]) / (
                fro(ov[l1, h1]) * fro(right[mode][l2, h2]))
            np.testing.assert_allclose(scores[l1, h1, l2, h2], expected, rtol=1e-4, atol=1e-7)
    W_E, W_U = np.asarray(params["embed"]["W_E"]), np.asarray(jinterp.W_U(model, params))
    full = W_E @ ov[1, 2] @ W_U  # d_vocab x d_vocab
    eig = np.linalg.eigvals(full)
    np.testing.assert_allclose(jinterp.copying_scores(model, params)[1, 2],
                               eig.real.sum() / np.abs(eig).sum(), rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="choose 'Q', 'K' or 'V'"):
        jinterp.composition_scores(model, params, "O")


def test_readout_and_loss():
    model, params = family("gemma2")  # tied, soft-capped
    logits, cache = jinterp.run_with_cache(model, params, tokens())
    resid = cache["blocks.2.hook_resid_post"]
    np.testing.assert_allclose(jinterp.unembed(model, params, resid), logits, atol=1e-5)
    np.testing.assert_array_equal(jinterp.W_U(model, params), params["embed"]["W_E"].T)
    lp = jax.nn.log_softmax(logits, -1)
    toks = tokens()
    manual = -np.mean([lp[b, p, toks[b, p + 1]] for b in range(2) for p in range(8)])
    np.testing.assert_allclose(jinterp.next_token_loss(model, params, toks), manual, rtol=1e-5)
    per = jinterp.lm_cross_entropy_loss(logits, toks, per_token=True)
    assert per.shape == (2, 8)
    np.testing.assert_allclose(per.mean(), manual, rtol=1e-5)

    class Tok:
        def encode(self, text, prepend_bos=None):
            assert prepend_bos is False
            return np.array([5]) if text == " a" else np.array([5, 6])

    assert jinterp.to_single_token(Tok(), " a") == 5
    with pytest.raises(ValueError, match="is 2 tokens"):
        jinterp.to_single_token(Tok(), " ab")
    assert jnp.isfinite(per).all()
