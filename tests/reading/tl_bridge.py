"""A TransformerLens HookedTransformer with the same weights as a jinterp GPT-2 port."""

import numpy as np


def tl_gpt2(model, params, process: dict | None = None):
    """The TL twin of a jinterp ``GPT2`` (``process``: TL's ``process_weights_`` flags)."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = model.config
    cfg = HookedTransformerConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_ctx=c.n_ctx, d_head=c.d_head,
        n_heads=c.n_heads, d_mlp=c.d_mlp, d_vocab=c.d_vocab, act_fn="gelu_new",
        normalization_type="LN", positional_embedding_type="standard", eps=c.ln_eps,
        device="cpu", seed=0, use_attn_result=False)
    tl = HookedTransformer(cfg)
    t = lambda x: torch.tensor(np.asarray(x, np.float32))
    b = params["blocks"]
    sd = {"embed.W_E": t(params["embed"]["W_E"]),
          "pos_embed.W_pos": t(params["pos_embed"]["W_pos"]),
          "ln_final.w": t(params["ln_final"]["w"]), "ln_final.b": t(params["ln_final"]["b"]),
          "unembed.W_U": t(params["embed"]["W_E"]).T.contiguous(),
          "unembed.b_U": torch.zeros(c.d_vocab)}
    for l in range(c.n_layers):
        for group, names in (("attn", ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")),
                             ("mlp", ("W_in", "b_in", "W_out", "b_out")),
                             ("ln1", ("w", "b")), ("ln2", ("w", "b"))):
            for n in names:
                sd[f"blocks.{l}.{group}.{n}"] = t(b[group][n][l])
    if process is None:
        tl.load_state_dict(sd, strict=False)
    else:
        tl.load_and_process_state_dict(sd, **process)
    return tl.eval()


def tl_llama(model, params, process: dict | None = None, n_ctx: int = 16):
    """The TL twin of a jinterp ``Llama`` (RMSNorm, RoPE, SwiGLU, GQA, attention biases)."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    c = model.core
    cfg = HookedTransformerConfig(
        n_layers=c.n_layers, d_model=c.d_model, n_ctx=n_ctx, d_head=c.d_head,
        n_heads=c.n_heads, n_key_value_heads=c.n_kv_heads, d_mlp=c.d_mlp, d_vocab=c.d_vocab,
        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=c.d_head, rotary_base=c.rope.theta, rotary_adjacent_pairs=False,
        final_rms=True, gated_mlp=True, eps=c.rms_eps, device="cpu", seed=0)
    tl = HookedTransformer(cfg)
    t = lambda x: torch.tensor(np.asarray(x, np.float32))
    b = params["blocks"]
    sd = {"embed.W_E": t(params["embed"]["W_E"]), "ln_final.w": t(params["ln_final"]["w"]),
          "unembed.W_U": t(params["unembed"]["W_U"]), "unembed.b_U": torch.zeros(c.d_vocab)}
    kv = "_" if c.n_kv_heads != c.n_heads else ""
    for l in range(c.n_layers):
        for n in ("W_Q", "W_O", "b_Q", "b_O"):
            sd[f"blocks.{l}.attn.{n}"] = t(b["attn"][n][l])
        for n in ("W_K", "W_V", "b_K", "b_V"):
            sd[f"blocks.{l}.attn.{kv}{n}"] = t(b["attn"][n][l])
        for n in ("W_in", "W_gate", "W_out"):
            sd[f"blocks.{l}.mlp.{n}"] = t(b["mlp"][n][l])
        for n in ("ln1", "ln2"):
            sd[f"blocks.{l}.{n}.w"] = t(b[n]["w"][l])
    if process is None:
        tl.load_state_dict(sd, strict=False)
    else:
        tl.load_and_process_state_dict(sd, **process)
    return tl.eval()
