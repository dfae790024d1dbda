"""Real-size presets: exact published parameter counts via ``jax.eval_shape`` (nothing allocated).

Each preset is checked three ways: against the published count, against HF's own count for the
same config (the HF model is built on torch's ``meta`` device, so no memory is used either), and
our HF-config translation of that config must give back exactly the preset.
"""

import math

import jax
import pytest
import torch
import transformers

from jinterp import models

LLAMA32_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
CASES = {
    "gemma-2b": (models.Gemma, models.GemmaConfig, 2_506_172_416, transformers.GemmaConfig,
                 transformers.GemmaForCausalLM,
                 dict(vocab_size=256000, hidden_size=2048, intermediate_size=16384,
                      num_hidden_layers=18, num_attention_heads=8, num_key_value_heads=1,
                      head_dim=256, max_position_embeddings=8192)),
    "gemma-2-2b": (models.Gemma2, models.Gemma2Config, 2_614_341_888, transformers.Gemma2Config,
                   transformers.Gemma2ForCausalLM,
                   dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216,
                        num_hidden_layers=26, num_attention_heads=8, num_key_value_heads=4,
                        head_dim=256, query_pre_attn_scalar=256, sliding_window=4096,
                        max_position_embeddings=8192)),
    "gemma-3-1b": (models.Gemma3, models.Gemma3Config, 999_885_952, transformers.Gemma3TextConfig,
                   transformers.Gemma3ForCausalLM,
                   dict(vocab_size=262144, hidden_size=1152, intermediate_size=6912,
                        num_hidden_layers=26, num_attention_heads=4, num_key_value_heads=1,
                        head_dim=256, max_position_embeddings=32768, sliding_window=512,
                        rope_theta=1e6, rope_local_base_freq=1e4, query_pre_attn_scalar=256)),
    "llama-3.2-1b": (models.Llama, models.LlamaConfig, 1_235_814_400, transformers.LlamaConfig,
                     transformers.LlamaForCausalLM,
                     dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                          num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                          head_dim=64, max_position_embeddings=131072, rope_theta=500000.0,
                          rope_scaling=LLAMA32_ROPE, tie_word_embeddings=True,
                          rms_norm_eps=1e-5)),
    "llama-3-8b": (models.Llama, models.LlamaConfig, 8_030_261_248, transformers.LlamaConfig,
                   transformers.LlamaForCausalLM,
                   dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                        num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                        max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5)),
}


def abstract_count(model) -> int:
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    leaves = jax.tree.leaves(shapes)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)  # shapes only, no buffers
    return sum(math.prod(x.shape) for x in leaves)


@pytest.mark.parametrize("name", list(CASES))
def test_published_parameter_count_and_hf_agreement(name):
    model_cls, config_cls, published, hf_config_cls, hf_model_cls, hf_kwargs = CASES[name]
    model = model_cls(config_cls.preset(name))
    assert abstract_count(model) == published
    hf_config = hf_config_cls(**hf_kwargs)
    assert config_cls.from_hf(hf_config.to_dict()) == model.config
    with torch.device("meta"):
        hf = hf_model_cls(hf_config)
    assert sum(p.numel() for p in hf.parameters()) == published
