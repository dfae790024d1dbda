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
