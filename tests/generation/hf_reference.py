"""Random tiny HuggingFace models and HF's own generation, the reference of the generation tests.

Each family is built from a tiny config with every weight random (norm weights and biases
included, so Gemma's ``1 + w`` and GPT-2's LayerNorm biases matter), converted by the
project's converter (``models.from_hf``), and run by HF with eager attention.
"""

import numpy as np
import torch
import transformers

from jinterp import models

#: GPT-2 (MHA, learned positions), Llama (GQA, RoPE), Gemma 2 (sliding window 3 on layer 0,
#: attention and final soft-caps small enough to bite).
CONFIGS = {
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel,
             dict(n_layer=2, n_embd=32, n_head=4, vocab_size=64, n_positions=40)),
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=40,
                   rope_theta=100.0)),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=3,
                    attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                    query_pre_attn_scalar=10, max_position_embeddings=40)),
}


#: Seeds whose greedy continuations vary (random Gemma 2 models often repeat one token).
SEEDS = {"gpt2": 0, "llama": 0, "gemma2": 3}


def make_hf(family: str, seed: int | None = None, std: float = 0.3):
    """A random HF model of ``family``.

    Matrices ~ N(0, std); norm scales ~ 1 + N(0, 0.3) (Gemma stores the offset from 1); biases
    ~ N(0, 0.02), because large norm biases make every position predict the same token and
    greedy generation a constant (a weak test).
    """
    config_cls, model_cls, kwargs = CONFIGS[family]
    torch.manual_seed(SEEDS[family] if seed is None else seed)
    config = config_cls(**kwargs, bos_token_id=0, eos_token_id=None, pad_token_id=0)
    config._attn_implementation = "eager"
    hf = model_cls(config).eval()
    offset = family.startswith("gemma")
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if ("norm" in name or "ln_" in name) and name.endswith("weight"):
                p.normal_(0.0 if offset else 1.0, 0.3)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
            else:  # Gemma's tied, sqrt(d_model)-scaled embedding would otherwise dominate
                p.normal_(0.0, std / 4 if offset and "embed_tokens" in name else std)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    return hf


def jinterp_model(hf):
    """The project's port of ``hf`` and its params."""
    return models.from_hf(hf)


def hf_generate(hf, tokens, max_new_tokens: int, attention_mask=None, hook=None, **kwargs):
    """HF's greedy ``generate`` (``do_sample=False``), optionally with a torch forward hook.

    Args:
        hook: ``(module, fn)``: ``fn(output) -> output`` registered as a forward hook.
    """
    handle = None
    if hook is not None:
        module, fn = hook
        handle = module.register_forward_hook(lambda mod, inp, out: fn(out))
    mask = None if attention_mask is None else torch.tensor(np.asarray(attention_mask))
    try:
        with torch.no_grad():
            out = hf.generate(torch.tensor(np.asarray(tokens)), attention_mask=mask,
                              max_new_tokens=max_new_tokens, do_sample=False,
                              **kwargs)
    finally:
        if handle is not None:
            handle.remove()
    return out.numpy()


def decoder_layers(hf):
    """HF's list of blocks (``transformer.h`` for GPT-2, ``model.layers`` otherwise)."""
    return hf.transformer.h if hasattr(hf, "transformer") else hf.model.layers


def left_pad(rows: list[np.ndarray], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ``[batch, pos]`` tokens and their attention mask."""
    n = max(len(r) for r in rows)
    tokens = np.full((len(rows), n), pad, np.int64)
    mask = np.zeros((len(rows), n), np.int64)
    for i, r in enumerate(rows):
        tokens[i, n - len(r):], mask[i, n - len(r):] = r, 1
    return tokens, mask


def right_pad(rows: list[np.ndarray], pad: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``[batch, pos]`` tokens and their attention mask."""
    n = max(len(r) for r in rows)
    tokens = np.full((len(rows), n), pad, np.int64)
    mask = np.zeros((len(rows), n), np.int64)
    for i, r in enumerate(rows):
        tokens[i, :len(r)], mask[i, :len(r)] = r, 1
    return tokens, mask
