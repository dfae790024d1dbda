"""Llama port vs HuggingFace LlamaForCausalLM.

Cases: MHA / GQA / MQA, RoPE scalings, biases, bf16, loading.
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from llamalike_parity import check_bf16, check_parity, make_hf, tokens_for
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

import jinterp
from jinterp import models
from jinterp.models.llamalike_hf import params_from_hf

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
CONFIGS = {
    # wavelengths 6.3, 63, 628, 6283 straddle llama3's 4 / 16 thresholds: all three regimes bite
    "mha-untied": dict(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=4, rms_norm_eps=1e-5),
    "gqa-llama3-rope-biases-tied": dict(vocab_size=53, hidden_size=32, intermediate_size=40,
                                        num_hidden_layers=3, num_attention_heads=4,
                                        num_key_value_heads=2, rope_scaling=LLAMA3_ROPE,
                                        attention_bias=True, mlp_bias=True,
                                        tie_word_embeddings=True),
    "mqa-linear-rope-head_dim12": dict(vocab_size=47, hidden_size=40, intermediate_size=56,
                                       num_hidden_layers=2, num_attention_heads=4,
                                       num_key_value_heads=1, head_dim=12, rope_theta=500.0,
                                       rope_scaling={"rope_type": "linear", "factor": 3.0}),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_hidden_states_patterns_and_intermediates_match_hf(name):
    hf = make_hf("llama", CONFIGS[name])
    model, params, cache = check_parity(hf, tokens_for(hf, 2, 14))
    cfg = hf.config
    # k and v keep n_kv_heads (never expanded); q has n_heads
    d_head = model.core.d_head
    assert cache["blocks.0.attn.hook_q"].shape == (2, 14, cfg.num_attention_heads, d_head)
    assert cache["blocks.0.attn.hook_k"].shape == (2, 14, cfg.num_key_value_heads, d_head)
    assert cache["blocks.0.attn.hook_rot_k"].shape == cache["blocks.0.attn.hook_v"].shape


@pytest.mark.parametrize("rope", [LLAMA3_ROPE, {"rope_type": "linear", "factor": 3.0}, None])
def test_inverse_frequencies_match_hf_rope_init(rope):
    import transformers

    hf_cfg = transformers.LlamaConfig(hidden_size=64, num_attention_heads=2, rope_theta=321.0,
                                      rope_scaling=rope)
    kind = hf_cfg.rope_parameters["rope_type"]
    rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding
    init = ROPE_INIT_FUNCTIONS.get(kind, rotary.compute_default_rope_parameters)
    expected = init(hf_cfg)[0].numpy()
    ours = models.LlamaConfig.from_hf(hf_cfg.to_dict()).rope.inverse_frequencies(32)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)
    if rope is not None:  # the scaling changed something
        assert not np.allclose(ours, models.Rope(321.0).inverse_frequencies(32))


def test_bfloat16_matches_hf_bfloat16():
    hf = make_hf("llama", CONFIGS["gqa-llama3-rope-biases-tied"], seed=2)
    check_bf16(hf, tokens_for(hf, 2, 12))


def test_zero_ablating_a_kv_head_matches_zeroing_its_hf_weights():
    hf = make_hf("llama", CONFIGS["gqa-llama3-rope-biases-tied"], seed=5)
    model, params = models.from_hf(hf)
    tokens = tokens_for(hf, 2, 10)
    ablated = jinterp.run_with_hooks(model, params, tokens,
                                     {"blocks.1.attn.hook_v": jinterp.ZeroAblate(head=1)})
    Dh = model.core.d_head
    with torch.no_grad():  # kv head 1 of layer 1 serves query heads 2 and 3
        v_proj = hf.model.layers[1].self_attn.v_proj
        v_proj.weight[Dh:2 * Dh] = 0
        v_proj.bias[Dh:2 * Dh] = 0
        expected = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(ablated, expected, atol=1e-4)
    assert np.abs(np.asarray(ablated) - np.asarray(model(params, tokens))).max() > 1e-3


def test_save_load_round_trip_single_sharded_and_bf16(tmp_path):
    hf = make_hf("llama", CONFIGS["gqa-llama3-rope-biases-tied"], seed=3)
    tokens = tokens_for(hf, 2, 9)
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    hf.save_pretrained(tmp_path / "single")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    reference, _ = models.from_hf(hf)
    for sub in ("single", "sharded"):
        model, params = models.load_pretrained(tmp_path / sub)
        assert model == reference
        np.testing.assert_allclose(model(params, tokens), expected, atol=1e-4, err_msg=sub)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    # bf16 on disk, float32 on request (the default)
    model, params32 = models.load_pretrained(tmp_path / "bf16")
    _, params16 = models.load_pretrained(tmp_path / "bf16", dtype="bfloat16")
    w32, w16 = params32["blocks"]["attn"]["W_Q"], params16["blocks"]["attn"]["W_Q"]
    assert w32.dtype == jnp.float32 and w16.dtype == jnp.bfloat16
    np.testing.assert_array_equal(w32, w16.astype(jnp.float32))  # exact upcast of the stored values
    assert model(params16, tokens).dtype == jnp.bfloat16


def test_bad_configs_and_checkpoints_give_clear_errors():
    base = dict(CONFIGS["mha-untied"], model_type="llama", max_position_embeddings=64)
    with pytest.raises(ValueError, match="Unsupported RoPE scaling type 'yarn'"):
        models.LlamaConfig.from_hf(base | {"rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
    with pytest.raises(ValueError, match="needs"):
        models.LlamaConfig.from_hf(base | {"rope_scaling": {"rope_type": "llama3", "factor": 2.0}}
                                   | {"max_position_embeddings": None})
    with pytest.raises(ValueError, match="not divisible"):
        models.LlamaConfig.from_hf(base | {"num_attention_heads": 6, "num_key_value_heads": 4,
                                           "hidden_size": 48})
    with pytest.raises(ValueError, match="not divisible by n_kv_heads"):
        models.LlamaConfig(n_layers=1, d_model=32, n_heads=4, n_kv_heads=3, d_head=8, d_mlp=8,
                           d_vocab=10)
    hf = make_hf("llama", CONFIGS["mha-untied"])
    model, _ = models.from_hf(hf)
    tensors = {k: v.numpy() for k, v in hf.state_dict().items()}
    missing = {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(KeyError, match="layers.1.mlp.up_proj.weight"):
        params_from_hf(model.core, missing)
    with pytest.raises(ValueError, match="does not explain"):
        params_from_hf(model.core,
                       tensors | {"model.layers.9.extra.weight": np.zeros(3, np.float32)})
    wrong = dataclasses.replace(model.config, d_mlp=50)
    with pytest.raises(ValueError, match=r"mlp\.gate_proj\.weight.*\(48, 32\).*\(50, 32\)"):
        params_from_hf(wrong.to_core(), tensors)


def test_presets_and_random_init_run():
    cfg = models.LlamaConfig.preset("llama-3.2-1b", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2,
                                    d_head=16, d_mlp=96, d_vocab=100)
    assert cfg.rope.type is models.RopeType.LLAMA3 and cfg.tied_embeddings
    model = models.Llama(cfg)
    import jax

    params = model.init(jax.random.key(0))
    assert "unembed" not in params and params["blocks"]["attn"]["W_K"].shape == (2, 2, 64, 16)
    logits = model(params, np.zeros((1, 5), np.int32))
    assert logits.shape == (1, 5, 100) and np.isfinite(np.asarray(logits)).all()
    with pytest.raises(ValueError, match="Unknown Llama preset"):
        models.LlamaConfig.preset("llama-9")
