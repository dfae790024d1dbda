"""Gemma 1 / 2 / 3 ports vs HuggingFace: every family feature made to bite, fp32, bf16, loading."""

import dataclasses

import numpy as np
import pytest
import torch
from llamalike_parity import check_bf16, check_parity, make_hf, rms_norm_output, tokens_for

import jinterp
from jinterp import models

# MQA; d_head != d_model / n_heads
GEMMA1 = dict(vocab_size=71, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=1, head_dim=24, hidden_act="gelu")
GEMMA2 = dict(vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
              attn_logit_softcapping=2.0, final_logit_softcapping=3.0, query_pre_attn_scalar=10)
GEMMA3 = dict(vocab_size=59, hidden_size=32, intermediate_size=40, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
              query_pre_attn_scalar=10,
              layer_types=["sliding_attention", "full_attention", "sliding_attention",
                           "sliding_attention"],
              rope_local_base_freq=50.0, rope_theta=2000.0,
              rope_scaling={"rope_type": "linear", "factor": 4.0}, final_logit_softcapping=3.0)
N_POS = 12  # three times the sliding window


@pytest.mark.parametrize("family,kwargs",
                         [("gemma", GEMMA1), ("gemma2", GEMMA2), ("gemma3_text", GEMMA3)])
def test_logits_hidden_states_patterns_and_intermediates_match_hf(family, kwargs):
    hf = make_hf(family, kwargs)
    model, params, cache = check_parity(hf, tokens_for(hf, 2, N_POS))
    assert cache["blocks.0.attn.hook_k"].shape[2] == kwargs["num_key_value_heads"]
    # Post-norm hooks exist and the TL order holds: ln1_post feeds hook_attn_out.
    if family != "gemma":
        post = rms_norm_output(model, params, "blocks.0.ln1_post.hook_normalized",
                               cache["blocks.0.ln1_post.hook_normalized"])
        np.testing.assert_allclose(post, cache["blocks.0.hook_attn_out"], atol=1e-6)


def _logit_change(model, params, tokens, **changes):
    other = type(model)(dataclasses.replace(model.config, **changes))
    return np.abs(np.asarray(model(params, tokens)) - np.asarray(other(params, tokens))).max()


def test_every_gemma2_feature_bites_in_the_parity_config():
    """Turning a feature off changes the logits, so parity above really tests it."""
    hf = make_hf("gemma2", GEMMA2)
    model, params = models.from_hf(hf)
    tokens = tokens_for(hf, 2, N_POS)
    assert model.core.local_layers == (True, False, True)
    for change in [dict(attn_softcap=None), dict(final_softcap=None),
                   dict(local_layers=(False,) * 3), dict(query_pre_attn_scalar=16)]:
        assert _logit_change(model, params, tokens, **change) > 1e-2, change


def test_every_gemma3_feature_bites_in_the_parity_config():
    hf = make_hf("gemma3_text", GEMMA3)
    model, params = models.from_hf(hf)
    tokens = tokens_for(hf, 2, N_POS)
    assert model.core.local_layers == (True, False, True, True)
    assert model.config.rope_local == models.Rope(50.0)
    assert model.config.rope == models.Rope(2000.0, type="linear", factor=4.0)
    for change in [dict(rope_local=model.config.rope), dict(rope=models.Rope(2000.0)),
                   dict(local_layers=(False,) * 4), dict(final_softcap=None)]:
        assert _logit_change(model, params, tokens, **change) > 1e-2, change


def test_sliding_window_layers_see_only_the_last_window_keys():
    hf = make_hf("gemma3_text", GEMMA3, seed=4)
    model, params = models.from_hf(hf)
    _, cache = jinterp.run_with_cache(model, params, tokens_for(hf, 1, N_POS),
                                      names=lambda n: n.endswith("hook_pattern"))
    q, k = np.indices((N_POS, N_POS))
    for layer, local in enumerate(model.core.local_layers):
        pattern = np.asarray(cache[f"blocks.{layer}.attn.hook_pattern"])
        visible = (k <= q) & ((q - k < 4) if local else True)
        assert np.all(pattern[..., ~visible] == 0) and np.all(pattern[..., visible] > 0), layer


@pytest.mark.parametrize("family,kwargs", [("gemma2", GEMMA2), ("gemma3_text", GEMMA3)])
def test_bfloat16_matches_hf_bfloat16(family, kwargs):
    # d_model 32: sqrt = 5.657 rounds to 5.656 in bf16; the embedding scale is rounded as in HF
    hf = make_hf(family, kwargs, seed=2)
    check_bf16(hf, tokens_for(hf, 2, N_POS))


def test_gemma_embedding_scale_is_rounded_to_the_model_dtype():
    hf = make_hf("gemma", GEMMA1 | {"hidden_size": 3072 // 64, "intermediate_size": 8}, seed=1)
    model, params = models.from_hf(hf, dtype="bfloat16")
    tokens = tokens_for(hf, 1, 4)
    _, cache = jinterp.run_with_cache(model, params, tokens, names="hook_embed")
    W_E = np.asarray(params["embed"]["W_E"].astype(np.float32))[tokens]
    scale_bf16 = float(np.float32(np.sqrt(48)).astype("bfloat16"))  # 6.9282 -> 6.9375
    expected = (W_E * scale_bf16).astype("bfloat16").astype(np.float32)
    np.testing.assert_array_equal(np.asarray(cache["hook_embed"].astype(np.float32)), expected)


def test_save_load_round_trip_sharded(tmp_path):
    hf = make_hf("gemma2", GEMMA2, seed=3)
    tokens = tokens_for(hf, 2, N_POS)
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model, params = models.load_pretrained(tmp_path)
    assert model == models.from_hf(hf)[0]
    np.testing.assert_allclose(model(params, tokens), expected, atol=1e-4)


def test_multimodal_gemma3_checkpoint_loads_its_text_model(tmp_path):
    import transformers

    text = {k: v for k, v in GEMMA3.items()}
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  image_size=28, patch_size=14)
    cfg = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(0)
    hf = transformers.Gemma3ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(0.0, 0.3 if "norm" in name else 0.12)
    hf.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    assert isinstance(model, models.Gemma3) and model.core.local_layers == (True, False, True, True)
    tokens = np.random.default_rng(0).integers(0, GEMMA3["vocab_size"], (2, N_POS))
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(model(params, tokens), expected, atol=1e-4)


def test_gemma_config_translation_old_and_new_spellings():
    old = dict(model_type="gemma3_text", num_hidden_layers=7, hidden_size=32, intermediate_size=8,
               num_attention_heads=2, num_key_value_heads=1, head_dim=16, vocab_size=10,
               rope_theta=1e6, rope_local_base_freq=1e4,
               rope_scaling={"type": "linear", "factor": 8.0}, sliding_window=512,
               sliding_window_pattern=6, max_position_embeddings=4096)
    new = dict(old, layer_types=["sliding_attention"] * 5 + ["full_attention", "sliding_attention"],
               rope_parameters={
                   "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    for key in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern"):
        new.pop(key)
    a, b = models.Gemma3Config.from_hf(old), models.Gemma3Config.from_hf(new)
    assert a == b and a.local_layers == (True,) * 5 + (False, True)
    gemma1 = models.GemmaConfig.from_hf(dict(GEMMA1, model_type="gemma", rope_theta=10000.0))
    assert gemma1.activation.value == "gelu_tanh"  # legacy "gelu" means the tanh form
    with pytest.raises(ValueError, match="Unsupported layer_types"):
        models.Gemma2Config.from_hf(dict(GEMMA2, layer_types=["chunked_attention"] * 3))
    with pytest.raises(ValueError, match="bidirectional"):
        models.Gemma3Config.from_hf(dict(old, use_bidirectional_attention=True))
