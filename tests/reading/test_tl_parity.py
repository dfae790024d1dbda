"""Same numbers as TransformerLens 3.x on the same weights, GPT-2 and Llama (GQA, RMSNorm,
RoPE, attention biases); runs where transformer_lens is importable."""

import numpy as np
import pytest
from families import family, tokens

import jinterp

torch = pytest.importorskip("torch")
pytest.importorskip("transformer_lens")
from tl_bridge import tl_gpt2, tl_llama  # noqa: E402

CALLS = [("accumulated_resid", dict(apply_ln=True)),
         ("accumulated_resid", dict(layer=2, incl_mid=True, apply_ln=True, pos_slice=-1)),
         ("decompose_resid", dict(layer=1, mlp_input=True, apply_ln=True, pos_slice=(1, 5))),
         ("stack_head_results", dict(apply_ln=True, incl_remainder=True)),
         ("get_full_resid_decomposition", dict(apply_ln=True)),
         ("get_full_resid_decomposition", dict(layer=2, mlp_input=True, expand_neurons=False,
                                               apply_ln=True))]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_decompositions_logit_attrs_and_processing_match_transformer_lens(name):
    model, params = family(name)
    twin = {"gpt2": tl_gpt2, "llama": tl_llama}[name]
    toks = tokens()
    _, cache = jinterp.run_with_cache(model, params, toks)
    tl = twin(model, params)
    _, tl_cache = tl.run_with_cache(torch.tensor(toks))
    for name, kw in CALLS:
        ours, labels = getattr(cache, name)(**kw, return_labels=True, model=model, params=params)
        theirs, tl_labels = getattr(tl_cache, name)(**kw, return_labels=True)
        assert labels == tl_labels, name
        np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=1e-5, err_msg=name)
    right, wrong = np.array([3, 7]), np.array([5, 1])
    stack = cache.decompose_resid(pos_slice=-1)
    np.testing.assert_allclose(
        cache.logit_attrs(stack, right, wrong, pos_slice=-1, model=model, params=params),
        tl_cache.logit_attrs(tl_cache.decompose_resid(pos_slice=-1), torch.tensor(right),
                             torch.tensor(wrong), pos_slice=-1).detach().numpy(), atol=1e-5)
    flags = dict(fold_ln=True, center_writing_weights=True, center_unembed=True,
                 fold_value_biases=True, refactor_factored_attn_matrices=False)
    m2, p2 = jinterp.weights.process(model, params, **flags)
    tlp = twin(model, params, flags)
    logits, c2 = jinterp.run_with_cache(m2, p2, toks)
    tl_logits, tc2 = tlp.run_with_cache(torch.tensor(toks))
    np.testing.assert_allclose(logits, tl_logits.detach().numpy(), atol=1e-5)
    for name in c2:
        if name in tc2:
            np.testing.assert_allclose(c2[name], tc2[name].detach().numpy(), atol=1e-5,
                                       err_msg=name)
    sd = tlp.state_dict()
    np.testing.assert_allclose(p2["blocks"]["attn"]["W_Q"][1], sd["blocks.1.attn.W_Q"], atol=1e-6)
    np.testing.assert_allclose(p2["blocks"]["attn"]["b_O"][1], sd["blocks.1.attn.b_O"], atol=1e-6)
    np.testing.assert_allclose(p2["unembed"]["W_U"], sd["unembed.W_U"], atol=1e-6)
