"""TransformerLens parity: the same numbers as ``transformer_lens.patching`` on the same weights.

Runs where transformer_lens is importable (it is not a dependency of the test extra). A small
random GPT-2 is built in TransformerLens and its weights copied into jinterp's GPT-2 port.
"""

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
tl = pytest.importorskip("transformer_lens")
from transformer_lens import patching as tl_patching  # noqa: E402

from jinterp import metrics, models, patching, run_with_cache  # noqa: E402

BLOCK = {"ln1": ("ln1", ("w", "b")), "ln2": ("ln2", ("w", "b")),
         "attn": ("attn", ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")),
         "mlp": ("mlp", ("W_in", "b_in", "W_out", "b_out"))}


def tl_and_jinterp():
    cfg = tl.HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                                     d_vocab=23, n_ctx=8, act_fn="gelu_new",
                                     normalization_type="LN", seed=0)
    tl_model = tl.HookedTransformer(cfg)
    with torch.no_grad():  # biases and norm weights away from their init, so they matter
        for p in tl_model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    sd = {k: v.detach().numpy() for k, v in tl_model.state_dict().items()}
    stack = lambda key: jnp.asarray(np.stack([sd[f"blocks.{l}.{key}"] for l in range(2)]))
    params = {"embed": {"W_E": jnp.asarray(sd["embed.W_E"])},
              "pos_embed": {"W_pos": jnp.asarray(sd["pos_embed.W_pos"])},
              "ln_final": {"w": jnp.asarray(sd["ln_final.w"]), "b": jnp.asarray(sd["ln_final.b"])},
              "unembed": {"W_U": jnp.asarray(sd["unembed.W_U"]),
                          "b_U": jnp.asarray(sd["unembed.b_U"])},
              "blocks": {group: {name: stack(f"{prefix}.{name}") for name in names}
                         for group, (prefix, names) in BLOCK.items()}}
    model = models.GPT2(models.GPT2Config(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32,
                                          d_vocab=23, n_ctx=8, tied_embeddings=False,
                                          unembed_bias=True))
    return tl_model, model, params


@pytest.mark.parametrize("fn", ["get_act_patch_block_every",
                                "get_act_patch_attn_head_all_pos_every",
                                "get_act_patch_attn_head_by_pos_every",
                                "get_act_patch_attn_head_pattern_dest_src_pos"])
def test_same_numbers_as_transformer_lens(fn):
    tl_model, model, params = tl_and_jinterp()
    rng = np.random.default_rng(0)
    clean, corrupted = rng.integers(0, 23, (2, 5)), rng.integers(0, 23, (2, 5))
    metric_tl = lambda logits: (logits[:, -1, 3] - logits[:, -1, 5]).mean()
    _, tl_cache = tl_model.run_with_cache(torch.tensor(clean))
    with torch.no_grad():
        want = getattr(tl_patching, fn)(tl_model, torch.tensor(corrupted), tl_cache,
                                        metric_tl).numpy()
    _, cache = run_with_cache(model, params, jnp.asarray(clean))
    np.testing.assert_allclose(model(params, jnp.asarray(clean)),
                               tl_model(torch.tensor(clean)).detach().numpy(), atol=1e-4)
    got = getattr(patching, fn)(model, params, jnp.asarray(corrupted), cache,
                                metrics.logit_diff(3, 5))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-4)
