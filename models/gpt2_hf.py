"""HuggingFace GPT-2 <-> jinterp GPT-2: config translation and the explicit weight key map.

HF stores attention as one fused ``c_attn`` Conv1D (``[d_model, 3 * d_model]``, input-major)
and the output projection as ``c_proj`` (``[n_heads * d_head, d_model]``). We split them into
per-head ``W_Q/W_K/W_V [n_heads, d_model, d_head]`` and ``W_O [n_heads, d_head, d_model]``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jinterp.models.gpt2 import GPT2, GPT2Config
from jinterp.models.hf_io import TensorMap, to_jax, unembedding
from jinterp.models.layers import Activation


def config_from_hf(hf: dict) -> GPT2Config:
    """A :class:`GPT2Config` from an HF ``config.json`` dict of ``model_type`` ``gpt2``."""
    d_model, n_heads = hf["n_embd"], hf["n_head"]
    if d_model % n_heads:
        raise ValueError(f"n_embd={d_model} is not divisible by n_head={n_heads}.")
    if not hf.get("scale_attn_weights", True):
        raise ValueError("scale_attn_weights=False is not supported by the GPT-2 port.")
    return GPT2Config(
        n_layers=hf["n_layer"], d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
        d_mlp=hf.get("n_inner") or 4 * d_model, d_vocab=hf["vocab_size"], n_ctx=hf["n_positions"],
        activation=Activation.from_hf(hf.get("activation_function", "gelu_new")),
        ln_eps=hf.get("layer_norm_epsilon", 1e-5),
        tied_embeddings=hf.get("tie_word_embeddings", True),
        attn_scale_by_layer=hf.get("scale_attn_by_inverse_layer_idx", False),
        init_range=hf.get("initializer_range", 0.02),
    )


def params_from_hf(model: GPT2, tensors: dict[str, np.ndarray], dtype=None) -> dict:
    """Converts HF GPT-2 tensors (``transformer.`` prefix optional) to jinterp params."""
    cfg = model.config
    t = TensorMap(tensors, strip_prefixes=("transformer.",),
                  ignore_suffixes=(".attn.bias", ".attn.masked_bias"))
    L, D, H, Dh, V, M = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.d_mlp

    def per_layer(fn):
        return np.stack([fn(l) for l in range(L)])

    def qkv_weight(l):  # [D, 3D] -> [3, H, D, Dh]
        w = t.take(f"h.{l}.attn.c_attn.weight", (D, 3 * H * Dh)).reshape(D, 3, H, Dh)
        return w.transpose(1, 2, 0, 3)

    def qkv_bias(l):  # [3D] -> [3, H, Dh]
        return t.take(f"h.{l}.attn.c_attn.bias", (3 * H * Dh,)).reshape(3, H, Dh)

    w_qkv, b_qkv = per_layer(qkv_weight), per_layer(qkv_bias)
    blocks = {
        "ln1": {"w": per_layer(lambda l: t.take(f"h.{l}.ln_1.weight", (D,))),
                "b": per_layer(lambda l: t.take(f"h.{l}.ln_1.bias", (D,)))},
        "attn": {"W_Q": w_qkv[:, 0], "W_K": w_qkv[:, 1], "W_V": w_qkv[:, 2],
                 "b_Q": b_qkv[:, 0], "b_K": b_qkv[:, 1], "b_V": b_qkv[:, 2],
                 "W_O": per_layer(  # [H * Dh, D] -> [H, Dh, D]
                     lambda l: t.take(f"h.{l}.attn.c_proj.weight", (H * Dh, D)).reshape(H, Dh, D)),
                 "b_O": per_layer(lambda l: t.take(f"h.{l}.attn.c_proj.bias", (D,)))},
        "ln2": {"w": per_layer(lambda l: t.take(f"h.{l}.ln_2.weight", (D,))),
                "b": per_layer(lambda l: t.take(f"h.{l}.ln_2.bias", (D,)))},
        "mlp": {"W_in": per_layer(lambda l: t.take(f"h.{l}.mlp.c_fc.weight", (D, M))),
                "b_in": per_layer(lambda l: t.take(f"h.{l}.mlp.c_fc.bias", (M,))),
                "W_out": per_layer(lambda l: t.take(f"h.{l}.mlp.c_proj.weight", (M, D))),
                "b_out": per_layer(lambda l: t.take(f"h.{l}.mlp.c_proj.bias", (D,)))},
    }
    params = {
        "embed": {"W_E": t.take("wte.weight", (V, D))},
        "pos_embed": {"W_pos": t.take("wpe.weight", (cfg.n_ctx, D))},
        "blocks": blocks,
        "ln_final": {"w": t.take("ln_f.weight", (D,)), "b": t.take("ln_f.bias", (D,))},
    }
    unembed = unembedding(t, cfg.tied_embeddings, (V, D))
    if unembed is not None:
        params["unembed"] = unembed
    t.finish()
    return to_jax(params, jnp.dtype(dtype or cfg.dtype))
