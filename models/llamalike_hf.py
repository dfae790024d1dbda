"""HuggingFace Llama/Gemma checkpoints <-> jinterp params: the explicit key map.

All five families share HF's module names (``model.layers.{l}.self_attn.q_proj`` ...); what
differs is decided by the core config's switches, so one converter serves them all:

=============================================  ==========================================
HF tensor (``model.`` prefix stripped)          jinterp param (stacked over ``layer``)
=============================================  ==========================================
``embed_tokens.weight [V, D]``                  ``embed.W_E [V, D]``
``layers.{l}.self_attn.q_proj.weight [H*Dh, D]``  ``blocks.attn.W_Q [L, H, D, Dh]`` (k/v: K heads)
``layers.{l}.self_attn.o_proj.weight [D, H*Dh]``  ``blocks.attn.W_O [L, H, Dh, D]``
``layers.{l}.self_attn.{q,k}_norm.weight``       ``blocks.attn.{q,k}_ln.w [L, Dh]`` (Gemma 3)
``layers.{l}.mlp.gate_proj/up_proj.weight [M, D]``  ``blocks.mlp.W_gate / W_in [L, D, M]``
``layers.{l}.mlp.down_proj.weight [D, M]``       ``blocks.mlp.W_out [L, M, D]``
``layers.{l}.input_layernorm.weight``            ``blocks.ln1.w``
``layers.{l}.post_attention_layernorm.weight``   ``blocks.ln2.w`` (Llama, Gemma 1) or
                                                 ``blocks.ln1_post.w`` (Gemma 2/3)
``layers.{l}.pre_feedforward_layernorm.weight``  ``blocks.ln2.w`` (Gemma 2/3)
``layers.{l}.post_feedforward_layernorm.weight`` ``blocks.ln2_post.w`` (Gemma 2/3)
``norm.weight``                                  ``ln_final.w``
``lm_head.weight [V, D]``                        ``unembed.W_U [D, V]`` (untied only)
=============================================  ==========================================

Biases (``attention_bias`` / ``mlp_bias``) follow their weights. Every tensor must be consumed
and have the shape the config implies (:class:`models.hf_io.TensorMap`).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from jinterp.models.hf_io import TensorMap, to_jax, unembedding
from jinterp.models.llamalike import LlamaLikeConfig
from jinterp.models.rope import Rope


def shape_from_hf(hf: dict) -> dict:
    """The shape fields shared by every family config, from an HF config dict."""
    n_heads = hf["num_attention_heads"]
    n_kv_heads = hf.get("num_key_value_heads") or n_heads
    if n_heads % n_kv_heads:
        raise ValueError(f"num_attention_heads={n_heads} is not divisible by num_key_value_heads="
                         f"{n_kv_heads}; the checkpoint's config is inconsistent.")
    return dict(n_layers=hf["num_hidden_layers"], d_model=hf["hidden_size"], n_heads=n_heads,
                n_kv_heads=n_kv_heads, d_head=hf.get("head_dim") or hf["hidden_size"] // n_heads,
                d_mlp=hf["intermediate_size"], d_vocab=hf["vocab_size"])


def rope_from_hf(hf: dict, default_theta: float = 10_000.0) -> Rope:
    """One global RoPE, from an HF config in either transformers spelling.

    transformers 5 nests it in ``rope_parameters``; 4.x has ``rope_theta`` / ``rope_scaling``.
    """
    params = hf.get("rope_parameters") or hf.get("rope_scaling")
    theta = hf.get("rope_theta") or default_theta
    return Rope.from_hf(params, theta, hf.get("max_position_embeddings"))


def check_causal(hf: dict) -> None:
    """The ports are causal decoders; HF's bidirectional option would change every mask."""
    if hf.get("use_bidirectional_attention"):
        raise ValueError("use_bidirectional_attention=True is not supported: the ports are causal "
                         "decoders.")


def params_from_hf(core: LlamaLikeConfig, tensors: dict[str, np.ndarray], dtype=None,
                   strip_prefixes: tuple[str, ...] = ("model.",)) -> dict:
    """Converts HF Llama/Gemma tensors to jinterp params.

    The layout is documented in :mod:`jinterp.models.llamalike`.
    """
    c = core
    t = TensorMap(tensors, strip_prefixes=strip_prefixes, ignore_suffixes=("rotary_emb.inv_freq",))
    L, D, H, K, Dh = c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head
    M, V = c.d_mlp, c.d_vocab

    def stack(fn: Callable[[str], np.ndarray]) -> np.ndarray:
        return np.stack([fn(f"layers.{l}.") for l in range(L)])  # layer ...

    def heads_in(name: str, n: int) -> np.ndarray:  # [n*Dh, D] -> [n, D, Dh]
        return stack(lambda pre: t.take(pre + name, (n * Dh, D))
                     .reshape(n, Dh, D).transpose(0, 2, 1))

    def vec(name: str, size: int, reshape=None) -> np.ndarray:
        return stack(lambda pre: t.take(pre + name, (size,)).reshape(reshape or (size,)))

    attn = {"W_Q": heads_in("self_attn.q_proj.weight", H),
            "W_K": heads_in("self_attn.k_proj.weight", K),
            "W_V": heads_in("self_attn.v_proj.weight", K),
            "W_O": stack(lambda pre: t.take(pre + "self_attn.o_proj.weight", (D, H * Dh))
                         .reshape(D, H, Dh).transpose(1, 2, 0))}  # layer n_heads d_head d_model
    if c.attn_bias:
        attn |= {"b_Q": vec("self_attn.q_proj.bias", H * Dh, (H, Dh)),
                 "b_K": vec("self_attn.k_proj.bias", K * Dh, (K, Dh)),
                 "b_V": vec("self_attn.v_proj.bias", K * Dh, (K, Dh)),
                 "b_O": vec("self_attn.o_proj.bias", D)}
    if c.qk_norm:
        attn |= {"q_norm": {"w": vec("self_attn.q_norm.weight", Dh)},
                 "k_norm": {"w": vec("self_attn.k_norm.weight", Dh)}}
    mlp = {"W_gate": stack(lambda pre: t.take(pre + "mlp.gate_proj.weight", (M, D)).T),
           "W_in": stack(lambda pre: t.take(pre + "mlp.up_proj.weight", (M, D)).T),
           "W_out": stack(lambda pre: t.take(pre + "mlp.down_proj.weight", (D, M)).T)}
    if c.mlp_bias:
        mlp |= {"b_gate": vec("mlp.gate_proj.bias", M), "b_in": vec("mlp.up_proj.bias", M),
                "b_out": vec("mlp.down_proj.bias", D)}
    norm_keys = ({"ln1": "input_layernorm", "ln1_post": "post_attention_layernorm",
                  "ln2": "pre_feedforward_layernorm", "ln2_post": "post_feedforward_layernorm"}
                 if c.post_norms else {"ln1": "input_layernorm", "ln2": "post_attention_layernorm"})
    norms = {ours: {"w": vec(f"{hf}.weight", D)} for ours, hf in norm_keys.items()}
    blocks = {"attn": attn, "mlp": mlp, **norms}
    params = {"embed": {"W_E": t.take("embed_tokens.weight", (V, D))}, "blocks": blocks,
              "ln_final": {"w": t.take("norm.weight", (D,))}}
    unembed = unembedding(t, c.tied_embeddings, (V, D))
    if unembed is not None:
        params["unembed"] = unembed
    t.finish()
    return to_jax(params, jnp.dtype(dtype or c.dtype))
