"""Path patching vs a slow three-pass reference built from plain per-name hooks."""

import numpy as np
import pytest
from core.families import family, tokens

import jinterp
from jinterp import Patch
from jinterp.patching.attr_graph import Node
from jinterp.patching.path import (
    get_path_patch_head_to_heads,
    get_path_patch_head_to_receivers,
    path_patch,
)


def metric(logits):
    return logits[:, -1, 3].mean() - logits[:, -1, 5].mean()


def reference(model, params, clean, corrupt, sender, receivers):
    """Pass 1: caches; pass 2: every head's z and every MLP frozen clean by its own hook, the
    sender's head corrupted; pass 3: receiver inputs replaced one name at a time."""
    n = model.n_layers
    keep = lambda name: name.endswith(("attn.hook_z", "hook_mlp_out", "hook_resid_post"))
    _, cc = jinterp.run_with_cache(model, params, clean, names=keep)
    _, kc = jinterp.run_with_cache(model, params, corrupt, names=keep)
    frozen = {}
    for layer in range(n):
        z = np.array(cc[f"blocks.{layer}.attn.hook_z"])
        if sender[0] == layer:
            z[:, :, sender[1]] = np.array(kc[f"blocks.{layer}.attn.hook_z"])[:, :, sender[1]]
        frozen[f"blocks.{layer}.attn.hook_z"] = Patch(z)
        if f"blocks.{layer}.hook_mlp_out" in cc:
            frozen[f"blocks.{layer}.hook_mlp_out"] = Patch(cc[f"blocks.{layer}.hook_mlp_out"])
    read = lambda name: name.endswith(("hook_q", "hook_v", "mlp.hook_pre", "mlp.hook_pre_linear",
                                       f"{n - 1}.hook_resid_post"))
    _, second = jinterp.run_with_cache(model, params, clean, names=read, hooks=frozen)
    final = f"blocks.{n - 1}.hook_resid_post"
    hooks = {}
    for kind, layer, index in receivers:
        if kind == "final":
            delta = second[final] - cc[final]
            hooks[final] = jinterp.Steer(delta, scale=1.0)
        elif kind == "mlp_in":
            for point in ("mlp.hook_pre", "mlp.hook_pre_linear"):
                name = f"blocks.{layer}.{point}"
                if name in second:
                    hooks[name] = Patch(second[name])
        else:
            name = f"blocks.{layer}.attn.hook_{kind}"
            hooks[name] = [*hooks.get(name, []), Patch(second[name][:, :, index], head=index)]
    return float(metric(jinterp.run_with_hooks(model, params, clean, hooks)))


def test_head_sweep_matches_three_pass_reference():
    """Llama (GQA, gated MLP): every sender head of one receiver set of each kind."""
    model, params = family("llama")
    clean, corrupt = tokens(seed=0), tokens(seed=1)
    receivers = [Node.q(2, 1), Node.v(1, 0), Node.mlp_in(1), Node.final()]
    got = get_path_patch_head_to_receivers(model, params, clean, corrupt, metric, receivers,
                                           chunk_size=5)
    assert got.shape == (model.n_layers, model.dims["n_heads"])
    spec = [("q", 2, 1), ("v", 1, 0), ("mlp_in", 1, None), ("final", None, None)]
    senders = [(0, 0), (0, 3), (1, 1), (1, 2), (2, 3)]
    want = np.array([reference(model, params, clean, corrupt, s, spec) for s in senders])
    np.testing.assert_allclose([got[s] for s in senders], want, atol=2e-5)
    assert np.ptp(want) > 0.05  # the senders matter


def test_direct_path_to_logits_is_the_head_output_alone():
    """Into the final residual only, a head's path effect is its own output change added to
    the clean final residual (Llama: no post-norm), and nodes never reach earlier receivers."""
    model, params = family("llama")
    clean, corrupt = tokens(seed=0), tokens(seed=1)
    names = [f"blocks.{l}.attn.hook_result" for l in range(3)]
    _, cc = jinterp.run_with_cache(model, params, clean, names=names)
    _, kc = jinterp.run_with_cache(model, params, corrupt, names=names)
    for layer, head in [(0, 2), (2, 1)]:
        delta = (kc[names[layer]] - cc[names[layer]])[:, :, head]
        hook = {"blocks.2.hook_resid_post": jinterp.Steer(delta, scale=1.0)}
        want = metric(jinterp.run_with_hooks(model, params, clean, hook))
        got = path_patch(model, params, clean, corrupt, metric, Node.head(layer, head),
                         Node.final())
        np.testing.assert_allclose(got, want, atol=2e-5)
    no_path = path_patch(model, params, clean, corrupt, metric,
                         [Node.head(1, 0), Node.head(2, 3), Node.mlp(1)], [Node.q(1, 0)])
    np.testing.assert_allclose(no_path, metric(model(params, clean)), atol=1e-5)


def test_bad_input():
    model, params = family("llama")  # 3 layers, 4 heads, 2 kv heads
    clean, corrupt = tokens(seed=0), tokens(seed=1)
    with pytest.raises(ValueError, match="not a receiver.*Node.q"):
        get_path_patch_head_to_receivers(model, params, clean, corrupt, metric, [Node.q(3, 0)])
    with pytest.raises(ValueError, match="not a receiver"):
        get_path_patch_head_to_receivers(model, params, clean, corrupt, metric, [Node.k(0, 2)])
    with pytest.raises(ValueError, match="not a sender"):
        path_patch(model, params, clean, corrupt, metric, [Node.q(0, 0)], [Node.final()])
    with pytest.raises(ValueError, match="same shape"):
        path_patch(model, params, clean, corrupt[:, :5], metric, [Node.mlp(0)], [Node.final()])
    with pytest.raises(ValueError, match="scalar"):
        path_patch(model, params, clean, corrupt, lambda lg: lg[:, -1, 0], [Node.embed()],
                   [Node.final()])
    with pytest.raises(ValueError, match="chunk_size"):
        get_path_patch_head_to_receivers(model, params, clean, corrupt, metric, Node.final(),
                                         chunk_size=0)
    with pytest.raises(ValueError, match="receiver_input"):
        get_path_patch_head_to_heads(model, params, clean, corrupt, metric, [(1, 0)], "z")
