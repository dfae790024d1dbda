"""Shared parity machinery for the Llama/Gemma ports vs HuggingFace's PyTorch implementations.

``make_hf`` builds a random HF model from a tiny config (no downloads) with *every* weight
random, norm weights included, so Gemma's ``1 + w`` and Llama's ``w`` both matter.
``hf_intermediates`` records HF's activations with torch forward hooks, renamed to
TransformerLens / jinterp names.
``check_parity`` compares logits, every hidden state, every attention pattern and every
intermediate it can observe, plus the RMSNorm ``hook_scale`` against its closed form.
"""

import numpy as np
import torch
import transformers

import jinterp
from jinterp import models
from jinterp.names import split_name

ATOL = 1e-4

HF_CLASSES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM),
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM),
}


def make_hf(family: str, kwargs: dict, seed: int = 0):
    """A random HF model of ``family`` with a tiny config; all parameters ~ N(0, 0.1..0.3)."""
    config_cls, model_cls = HF_CLASSES[family]
    torch.manual_seed(seed)
    config = config_cls(**kwargs)
    config._attn_implementation = "eager"
    hf = model_cls(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.normal_(0.0, 0.3 if "norm" in name else 0.12)
    return hf


def hf_intermediates(hf, tokens):
    """HF outputs (hidden states, attentions) and a dict of intermediates in jinterp names."""
    cfg = hf.config
    H, K = cfg.num_attention_heads, cfg.num_key_value_heads
    Dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // H
    post_norms = hasattr(hf.model.layers[0], "post_feedforward_layernorm")
    acts, handles = {}, []

    def save(name, fn=lambda x: x):
        return lambda mod, inp, out: acts.__setitem__(name, fn(out).detach().float().numpy())

    def save_input(name, fn=lambda x: x):
        return lambda mod, inp: acts.__setitem__(name, fn(inp[0]).detach().float().numpy())

    heads = lambda n: (lambda o: o.reshape(*o.shape[:2], n, Dh))
    per_head = lambda o: o.transpose(1, 2)  # HF q/k norms see [batch, heads, pos, d_head]
    for l, layer in enumerate(hf.model.layers):
        b = f"blocks.{l}."
        attn, mlp = layer.self_attn, layer.mlp
        pairs = [
            (layer.input_layernorm, save(b + "ln1.hook_normalized")),
            (attn.q_proj, save(b + "attn.hook_q", heads(H))),
            (attn.k_proj, save(b + "attn.hook_k", heads(K))),
            (attn.v_proj, save(b + "attn.hook_v", heads(K))),
            (mlp.gate_proj, save(b + "mlp.hook_pre")),
            (mlp.up_proj, save(b + "mlp.hook_pre_linear")),
            (layer, save(b + "hook_resid_post")),
        ]
        handles += [attn.o_proj.register_forward_pre_hook(save_input(b + "attn.hook_z", heads(H))),
                    mlp.down_proj.register_forward_pre_hook(save_input(b + "mlp.hook_post"))]
        if hasattr(attn, "q_norm"):
            pairs += [(attn.q_norm, save(b + "attn.q_norm.hook_normalized", per_head)),
                      (attn.k_norm, save(b + "attn.k_norm.hook_normalized", per_head))]
        if post_norms:
            pairs += [(layer.post_attention_layernorm, save(b + "hook_attn_out")),
                      (layer.post_attention_layernorm, save(b + "ln1_post.hook_normalized")),
                      (layer.pre_feedforward_layernorm, save(b + "ln2.hook_normalized")),
                      (layer.post_feedforward_layernorm, save(b + "ln2_post.hook_normalized")),
                      (layer.post_feedforward_layernorm, save(b + "hook_mlp_out"))]
        else:
            pairs += [(attn, save(b + "hook_attn_out", lambda o: o[0])),
                      (layer.post_attention_layernorm, save(b + "ln2.hook_normalized")),
                      (mlp, save(b + "hook_mlp_out"))]
        handles += [module.register_forward_hook(fn) for module, fn in pairs]
    handles.append(hf.model.norm.register_forward_hook(save("ln_final.hook_normalized")))
    try:
        with torch.no_grad():
            out = hf(torch.tensor(np.asarray(tokens)), output_hidden_states=True,
                     output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return out, acts


def hf_rope(hf, x_bphd: np.ndarray, layer: int) -> np.ndarray:
    """HF's own RoPE (its rotary module and ``apply_rotary_pos_emb``) applied to ``[b p h d]``."""
    import importlib

    module = importlib.import_module(type(hf).__module__)
    x = torch.tensor(np.asarray(x_bphd, np.float32)).transpose(1, 2)  # b h p d
    positions = torch.arange(x.shape[2])[None]
    if hf.config.model_type == "gemma3_text":  # one rotary table per layer type
        cos, sin = hf.model.rotary_emb(x, positions, hf.config.layer_types[layer])
    else:
        cos, sin = hf.model.rotary_emb(x, positions)
    rotated, _ = module.apply_rotary_pos_emb(x, x, cos, sin)
    return rotated.transpose(1, 2).numpy()


def check_parity(hf, tokens, atol: float = ATOL):
    """Asserts our port matches ``hf`` on ``tokens``: logits and every observable intermediate."""
    model, params = models.from_hf(hf)
    out, hf_acts = hf_intermediates(hf, tokens)
    logits, cache = jinterp.run_with_cache(model, params, tokens)
    np.testing.assert_allclose(logits, out.logits.numpy(), atol=atol, rtol=0, err_msg="logits")
    L = model.n_layers
    eps = model.core.rms_eps
    for l in range(L):  # HF hidden_states[l] is the residual stream entering block l
        b = f"blocks.{l}."
        resid_pre = out.hidden_states[l].numpy()
        np.testing.assert_allclose(cache[b + "hook_resid_pre"], resid_pre, atol=atol,
                                   err_msg=b + "resid_pre")
        np.testing.assert_allclose(cache[b + "attn.hook_pattern"], out.attentions[l].numpy(),
                                   atol=atol, err_msg=b + "pattern")
        rms = np.sqrt(np.mean(resid_pre.astype(np.float64) ** 2, axis=-1, keepdims=True) + eps)
        np.testing.assert_allclose(cache[b + "ln1.hook_scale"], rms, rtol=1e-5,
                                   err_msg=b + "ln1.hook_scale")
        for point in ("attn.hook_rot_q", "attn.hook_rot_k"):
            if model.core.qk_norm:
                source = b + ("attn.q_norm.hook_normalized" if point.endswith("q")
                              else "attn.k_norm.hook_normalized")
                unrotated = rms_norm_output(model, params, source, cache[source])
            else:
                unrotated = cache[b + ("attn.hook_q" if point.endswith("q") else "attn.hook_k")]
            expected = hf_rope(hf, unrotated, l)
            np.testing.assert_allclose(cache[b + point], expected, atol=atol, err_msg=b + point)
        resid_mid = np.asarray(cache[b + "hook_resid_pre"]) + np.asarray(cache[b + "hook_attn_out"])
        np.testing.assert_allclose(cache[b + "hook_resid_mid"], resid_mid, atol=atol)
    for key, value in hf_acts.items():
        ours = (rms_norm_output(model, params, key, cache[key])
                if key.endswith("hook_normalized") else cache[key])
        np.testing.assert_allclose(ours, value, atol=atol, err_msg=key)
    final = rms_norm_output(model, params, "ln_final.hook_normalized",
                            cache["ln_final.hook_normalized"])
    np.testing.assert_allclose(final, out.hidden_states[L].numpy(), atol=atol)
    return model, params, cache


def rms_norm_output(model, params, name, normalized):
    """An RMSNorm's output from ``hook_normalized`` (TL's x / scale): ``* w`` or ``* (1 + w)``."""
    layer, point = split_name(name)
    path = point.rsplit(".hook_normalized", 1)[0].split(".")
    tree = params if layer is None else params["blocks"]
    for key in path:
        tree = tree[key]
    w = np.asarray(tree["w"] if layer is None else tree["w"][layer], np.float32)
    scale = 1.0 + w if model.core.norm_offset else w
    return np.asarray(normalized, np.float32) * scale


def tokens_for(hf, batch: int, n_pos: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, hf.config.vocab_size, (batch, n_pos))


def check_bf16(hf, tokens):
    """bfloat16 port vs bfloat16 HF, judged against the float32 truth.

    Both bf16 runs round at (nearly) the same places, so they should agree far better than either
    agrees with float32; we require our bf16 error vs HF bf16 to be within 4x HF's own bf16 error
    (and small in absolute terms: bf16 has ~3 significant digits).
    """
    with torch.no_grad():
        truth = hf(torch.tensor(tokens)).logits.numpy()
    hf16 = hf.to(torch.bfloat16)
    model, params = models.from_hf(hf16, dtype="bfloat16")
    assert params["embed"]["W_E"].dtype == np.dtype("bfloat16")
    with torch.no_grad():
        hf_logits = hf16(torch.tensor(tokens)).logits.float().numpy()
    logits = model(params, tokens)
    assert logits.dtype == np.dtype("bfloat16"), logits.dtype
    ours = np.asarray(logits.astype(np.float32))
    hf_err = np.abs(hf_logits - truth).max()
    diff = np.abs(ours - hf_logits).max()
    scale = np.abs(truth).max()
    assert diff <= max(4 * hf_err, 1e-2 * scale), (diff, hf_err, scale)
    assert np.abs(ours - truth).max() <= 0.05 * scale
    hf.to(torch.float32)
    return diff, hf_err
