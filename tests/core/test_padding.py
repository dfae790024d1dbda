"""Padded batches: ``attention_mask`` through forward and cache, vs HF with the same mask.

Left and right padding of prompts of 7 and 4 tokens (the same compiled program: the mask is
data). HF gets the same ``attention_mask`` and the positions its ``generate`` computes
(``cumsum(mask) - 1``), as jinterp uses; Gemma 2 is also checked against each row run alone.
Pads must stay finite, and a left pad attends to itself only.
"""

import os
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "generation"))
from hf_reference import jinterp_model, left_pad, make_hf, right_pad  # noqa: E402

import jinterp  # noqa: E402

NAMES = ["blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post"]


def rows(vocab: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(1, vocab, 7), rng.integers(1, vocab, 4)]


def hf_logits(hf, tokens, mask) -> np.ndarray:
    positions = np.where(mask > 0, np.cumsum(mask, axis=1) - 1, 0)
    with torch.no_grad():
        out = hf(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions))
    return out.logits.numpy()


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_padded_forward_and_cache_equal_hf_with_the_same_mask(family):
    hf = make_hf(family)
    model, params = jinterp_model(hf)
    for pad in (left_pad, right_pad):
        tokens, mask = pad(rows(model.d_vocab))
        logits, cache = jinterp.run_with_cache(model, params, tokens, NAMES, attention_mask=mask)
        logits = np.asarray(logits)
        real = mask.astype(bool)
        np.testing.assert_allclose(logits[real], hf_logits(hf, tokens, mask)[real], atol=1e-4,
                                   err_msg=pad.__name__)
        assert np.isfinite(logits).all() and all(np.isfinite(cache[n]).all() for n in NAMES)
        pattern = np.asarray(cache["blocks.0.attn.hook_pattern"])  # batch head q k
        if pad is left_pad:  # row 1's three left pads see only themselves
            for i in range(3):
                np.testing.assert_allclose(pattern[1, :, i, i], 1.0)
        np.testing.assert_array_equal(pattern[1][:, real[1]][:, :, ~real[1]], 0.0)  # real: no pad
    if family == "gemma2":  # each row alone: the same logits and activations (right padding)
        for b, row in enumerate(rows(model.d_vocab)):
            alone, alone_cache = jinterp.run_with_cache(model, params, row[None], NAMES)
            n = len(row)
            np.testing.assert_allclose(logits[b, :n], np.asarray(alone)[0], atol=1e-5)
            np.testing.assert_allclose(cache[NAMES[1]][b, :n], alone_cache[NAMES[1]][0],
                                       atol=1e-5)
            np.testing.assert_allclose(cache[NAMES[0]][b, :, :n, :n], alone_cache[NAMES[0]][0],
                                       atol=1e-6)


def test_attention_mask_errors_name_the_fix():
    hf = make_hf("gpt2")
    model, params = jinterp_model(hf)
    tokens = np.ones((2, 5), np.int32)
    with pytest.raises(ValueError, match=r"attention_mask must have the inputs' shape"):
        jinterp.run_with_hooks(model, params, tokens, {}, attention_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"only 0 \(pad\) and 1 \(token\)"):
        jinterp.run_with_hooks(model, params, tokens, {}, attention_mask=np.full((2, 5), 2))
    with pytest.raises(TypeError, match=r"must hold 0 / 1"):
        jinterp.run_with_hooks(model, params, tokens, {},
                               attention_mask=np.full((2, 5), "1"))
