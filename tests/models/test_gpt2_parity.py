"""GPT-2 port vs HuggingFace's PyTorch GPT-2: logits and every intermediate, fp32 within 1e-4."""

import numpy as np
import pytest
import torch
import transformers

import jinterp
from jinterp import models
from jinterp.names import split_name

CONFIGS = {
    "2L-d32-h4-gelu_new": dict(n_layer=2, n_embd=32, n_head=4, vocab_size=61, n_positions=24),
    "3L-d48-h6-gelu-untied": dict(n_layer=3, n_embd=48, n_head=6, vocab_size=53, n_positions=20,
                                  activation_function="gelu", tie_word_embeddings=False),
    "1L-d64-h2-relu-inner100": dict(n_layer=1, n_embd=64, n_head=2, vocab_size=37, n_positions=16,
                                    activation_function="relu", n_inner=100),
    "4L-d40-h5-inverse-layer-scale": dict(n_layer=4, n_embd=40, n_head=5, vocab_size=45,
                                          n_positions=32, scale_attn_by_inverse_layer_idx=True,
                                          layer_norm_epsilon=1e-4),
}
ATOL = 1e-4


def make_hf(kwargs, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(**kwargs, bos_token_id=0, eos_token_id=0,
                                  attn_implementation="eager")
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm weights and biases, so they are exercised
        for name, p in hf.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return hf


def hf_intermediates(hf, tokens):
    """Runs HF with forward hooks; returns its outputs and a dict in TransformerLens names."""
    acts, handles = {}, []
    n_heads, d_head = hf.config.n_head, hf.config.n_embd // hf.config.n_head

    def save(name, fn=lambda x: x):
        return lambda mod, inp, out: acts.__setitem__(name, fn(out).detach().numpy())

    def save_input(name):
        return lambda mod, inp: acts.__setitem__(name, inp[0].detach().numpy())

    for l, block in enumerate(hf.transformer.h):
        split = lambda i: (lambda out: out[..., i * hf.config.n_embd:(i + 1) * hf.config.n_embd]
                           .reshape(*out.shape[:2], n_heads, d_head))
        handles += [
            block.ln_1.register_forward_hook(save(f"blocks.{l}.ln1.hook_normalized")),
            block.attn.c_attn.register_forward_hook(save(f"blocks.{l}.attn.hook_q", split(0))),
            block.attn.c_attn.register_forward_hook(save(f"blocks.{l}.attn.hook_k", split(1))),
            block.attn.c_attn.register_forward_hook(save(f"blocks.{l}.attn.hook_v", split(2))),
            block.attn.c_proj.register_forward_pre_hook(save_input(f"blocks.{l}.attn.hook_z")),
            block.attn.register_forward_hook(save(f"blocks.{l}.hook_attn_out", lambda o: o[0])),
            block.ln_2.register_forward_hook(save(f"blocks.{l}.ln2.hook_normalized")),
            block.mlp.c_fc.register_forward_hook(save(f"blocks.{l}.mlp.hook_pre")),
            block.mlp.act.register_forward_hook(save(f"blocks.{l}.mlp.hook_post")),
            block.mlp.register_forward_hook(save(f"blocks.{l}.hook_mlp_out")),
        ]
    try:
        with torch.no_grad():
            out = hf(torch.tensor(np.asarray(tokens)), output_hidden_states=True,
                     output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    return out, acts


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_every_intermediate_match_hf(name):
    hf = make_hf(CONFIGS[name])
    model, params = models.from_hf(hf)
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, hf.config.vocab_size, (3, hf.config.n_positions - 3))
    out, hf_acts = hf_intermediates(hf, tokens)
    logits, cache = jinterp.run_with_cache(model, params, tokens)

    np.testing.assert_allclose(logits, out.logits.numpy(), atol=ATOL, rtol=0)
    L = hf.config.n_layer
    for l in range(L):  # HF hidden_states[l] is the residual stream entering block l
        np.testing.assert_allclose(cache[f"blocks.{l}.hook_resid_pre"],
                                   out.hidden_states[l].numpy(), atol=ATOL)
        np.testing.assert_allclose(cache[f"blocks.{l}.attn.hook_pattern"],
                                   out.attentions[l].numpy(), atol=ATOL)
        z = cache[f"blocks.{l}.attn.hook_z"]
        np.testing.assert_allclose(z.reshape(*z.shape[:2], -1), hf_acts[f"blocks.{l}.attn.hook_z"],
                                   atol=ATOL)
        resid_mid = cache[f"blocks.{l}.hook_resid_pre"] + cache[f"blocks.{l}.hook_attn_out"]
        np.testing.assert_allclose(cache[f"blocks.{l}.hook_resid_mid"], resid_mid, atol=ATOL)
    for key, value in hf_acts.items():
        if key.endswith("hook_normalized"):  # ours is TL's (x - mean) / scale, before w and b
            np.testing.assert_allclose(layer_norm_output(params, key, cache[key]), value,
                                       atol=ATOL, err_msg=key)
        elif not key.endswith("hook_z"):
            np.testing.assert_allclose(cache[key], value, atol=ATOL, err_msg=key)
    # HF's last hidden state is after the final LayerNorm.
    final = layer_norm_output(params, "ln_final.hook_normalized", cache["ln_final.hook_normalized"])
    np.testing.assert_allclose(final, out.hidden_states[L].numpy(), atol=ATOL)
    for l in range(L):
        resid_post = (np.asarray(cache[f"blocks.{l}.hook_resid_mid"])
                      + np.asarray(cache[f"blocks.{l}.hook_mlp_out"]))
        np.testing.assert_allclose(cache[f"blocks.{l}.hook_resid_post"], resid_post, atol=ATOL)
    # The causal mask shows as -inf above the diagonal of the scores, as in TransformerLens.
    scores = np.asarray(cache["blocks.0.attn.hook_attn_scores"])
    above = np.triu(np.ones(scores.shape[-2:], bool), k=1)
    assert np.all(np.isneginf(scores[..., above])) and np.all(np.isfinite(scores[..., ~above]))


def layer_norm_output(params, name, normalized):
    """The LayerNorm's output from its ``hook_normalized`` value: ``normalized * w + b``."""
    layer, point = split_name(name)
    norm = (params["ln_final"] if layer is None
            else {k: v[layer] for k, v in params["blocks"][point.split(".")[0]].items()})
    return np.asarray(normalized) * np.asarray(norm["w"]) + np.asarray(norm["b"])


def test_save_pretrained_then_load_pretrained_round_trip(tmp_path):
    hf = make_hf(CONFIGS["3L-d48-h6-gelu-untied"], seed=3)
    hf.save_pretrained(tmp_path)
    model, params = models.load_pretrained(tmp_path)
    tokens = np.random.default_rng(0).integers(0, hf.config.vocab_size, (2, 11))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(model(params, tokens), expected, atol=ATOL)
    assert model == models.from_hf(hf)[0]


def test_sharded_checkpoint_with_index_loads(tmp_path):
    hf = make_hf(CONFIGS["2L-d32-h4-gelu_new"], seed=4)
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model, params = models.load_pretrained(tmp_path)
    tokens = np.random.default_rng(0).integers(0, hf.config.vocab_size, (2, 9))
    with torch.no_grad():
        expected = hf(torch.tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(model(params, tokens), expected, atol=ATOL)
