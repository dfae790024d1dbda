"""Greedy and steered generation vs HuggingFace ``generate(do_sample=False)``, token for token.

Random tiny GPT-2 (learned positions, MHA), Llama (GQA, RoPE) and Gemma 2 (a 3-token sliding
window on layer 0, attention and final soft-caps) converted by ``models.from_hf``; prompts of
up to 7 tokens and 12 new ones, so windows slide and cached keys are read many times. Each test
compiles one generation program (padding masks, EOS ids and steering vectors are data).
"""

import numpy as np
import pytest
import torch
from hf_reference import decoder_layers, hf_generate, jinterp_model, left_pad, make_hf, right_pad

import jinterp

N_NEW = 12


def prompts(vocab: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab, 7), rng.integers(1, vocab, 4)]


def test_greedy_gpt2_equals_hf_and_eos_rows_continue_with_pad():
    hf = make_hf("gpt2")
    model, params = jinterp_model(hf)
    tokens = np.random.default_rng(1).integers(1, model.d_vocab, (2, 6))
    expected = hf_generate(hf, tokens, N_NEW)
    out = np.asarray(jinterp.generate(model, params, tokens, N_NEW))
    np.testing.assert_array_equal(out, expected)
    assert len(set(out[:, 6:].ravel())) > 4  # not a constant continuation
    # EOS (same program: the id is data): finished rows continue with pad_token_id.
    eos = int(out[0, 6 + 2])
    stopped = hf_generate(hf, tokens, N_NEW, eos_token_id=eos, pad_token_id=0)
    out = np.asarray(jinterp.generate(model, params, tokens, N_NEW, eos_token_id=eos,
                                      pad_token_id=0))
    n = stopped.shape[1]  # HF stops once every row is done; jinterp runs every step
    np.testing.assert_array_equal(out[:, :n], stopped)
    assert (out[:, n:] == 0).all()
    first = 6 + int(np.argmax(out[0, 6:] == eos))
    assert first <= 6 + 2 and (out[0, first + 1:] == 0).all()


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_greedy_with_padding_equals_hf_with_the_same_mask(family):
    hf = make_hf(family)
    model, params = jinterp_model(hf)
    tokens, mask = left_pad(prompts(model.d_vocab))
    expected = hf_generate(hf, tokens, N_NEW, attention_mask=mask)
    out = np.asarray(jinterp.generate(model, params, tokens, N_NEW, attention_mask=mask))
    np.testing.assert_array_equal(out, expected)
    assert len(set(out[:, -N_NEW:].ravel())) > 4
    # Right padding (same program): each row continues from its last real token, so it
    # generates what the left-padded row does. (HF would read a pad's logits here.)
    right, right_mask = right_pad(prompts(model.d_vocab))
    out_right = np.asarray(jinterp.generate(model, params, right, N_NEW,
                                            attention_mask=right_mask))
    np.testing.assert_array_equal(out_right[:, -N_NEW:], expected[:, -N_NEW:])


def _adds(vector: torch.Tensor, only_single_position: bool):
    """A torch forward hook's body: add ``vector`` to a block's output hidden states."""
    def fn(out):
        hidden = out[0] if isinstance(out, tuple) else out
        if only_single_position and hidden.shape[1] != 1:
            return out
        hidden = hidden + vector
        return (hidden, *out[1:]) if isinstance(out, tuple) else hidden
    return fn


@pytest.mark.parametrize("family,hooks_on", [("gpt2", "all"), ("gemma2", "generated")])
def test_steered_generation_equals_hf_with_a_forward_hook(family, hooks_on):
    """Steer at one block's output == HF with a forward hook adding the vector there.

    GPT-2 steers every position of left-padded prompts; Gemma 2 only generated positions
    (HF's hook acts on one-token forwards, i.e. every decode step, never the prompt).
    """
    hf = make_hf(family)
    model, params = jinterp_model(hf)
    tokens, mask = left_pad(prompts(model.d_vocab))
    vector = np.random.default_rng(2).normal(0, 1.0, model.d_model).astype(np.float32)
    layer = 0
    hook = (decoder_layers(hf)[layer], _adds(torch.tensor(vector), hooks_on == "generated"))
    expected = hf_generate(hf, tokens, N_NEW, attention_mask=mask, hook=hook)
    unsteered = hf_generate(hf, tokens, N_NEW, attention_mask=mask)
    assert (expected != unsteered).mean() > 0.2  # the steering bites
    hooks = {f"blocks.{layer}.hook_resid_post": jinterp.Steer(vector)}
    out = np.asarray(jinterp.generate(model, params, tokens, N_NEW, hooks, hooks_on=hooks_on,
                                      attention_mask=mask))
    np.testing.assert_array_equal(out, expected)
