"""Splicing an SAE into a port and evaluating it, against hand-computed replacements patched in
with ``jinterp.Patch`` and numpy losses; files from SAELens / Gemma Scope splice as written."""

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402

import jinterp  # noqa: E402
from jinterp import sae  # noqa: E402

RESID, Z = "blocks.1.hook_resid_post", "blocks.0.attn.hook_z"
TOKENS = np.random.default_rng(1).integers(1, 61, (4, 8))
TOKENS[:, 0] = 0
TOKENS[1, 5] = 0  # an excluded id inside a sequence too


def _clean(model, params):
    """Logits and both activations (one program shared by the tests)."""
    logits, cache = jinterp.run_with_cache(model, params, TOKENS, [RESID, Z])
    return np.asarray(logits), np.asarray(cache[RESID]), np.asarray(cache[Z])


def _patched(model, params, name, values):
    return np.asarray(jinterp.run_with_hooks(model, params, TOKENS, {
        name: jinterp.Patch(jnp.asarray(values, jnp.float32))}))


def _perturbed(cfg, seed=0):
    params = sae.init(cfg, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    return {k: v + 0.2 * jnp.asarray(rng.normal(size=v.shape), v.dtype) if v.ndim == 1 else v
            for k, v in params.items()}


def _relu_sae(p, x):
    """The ReLU SAE by hand (numpy): encode x (no b_dec subtraction), decode."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    f = np.maximum(x @ p["W_enc"] + p["b_enc"], 0.0)
    return f @ p["W_dec"] + p["b_dec"], f


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_evaluate_matches_a_slow_reference():
    model, params = family("gpt2")
    cfg = sae.SAEConfig("relu", d_in=32, d_sae=48)
    p = _perturbed(cfg)
    got = sae.evaluate(model, params, cfg, p, RESID, TOKENS, batch_size=4, exclude_ids=(0,))

    keep = TOKENS != 0
    _, acts, _ = _clean(model, params)
    mean = acts[keep].mean(0)
    x_hat, f = _relu_sae(p, acts)
    replaced = {"clean": acts, "spliced": np.where(keep[..., None], x_hat, acts),
                "zero": np.zeros_like(acts), "mean": np.broadcast_to(mean, acts.shape)}
    logp = {k: _log_softmax(_patched(model, params, RESID, v)) for k, v in replaced.items()}
    ce = {k: [] for k in replaced}
    kl, fired = [], np.zeros(48, bool)
    for b, t in enumerate(TOKENS):  # slowly, position by position
        for i in range(len(t)):
            if not keep[b, i]:
                continue
            for key in replaced:
                if i + 1 < len(t):
                    ce[key].append(-logp[key][b, i, t[i + 1]])
            q = np.exp(logp["clean"][b, i])
            kl.append(np.sum(q * (logp["clean"][b, i] - logp["spliced"][b, i])))
            fired |= f[b, i] != 0
    ref_ce = {k: np.mean(v) for k, v in ce.items()}
    sq = np.sum((acts - x_hat) ** 2, -1)[keep]
    expect = {
        "ce_loss_clean": ref_ce["clean"], "ce_loss_spliced": ref_ce["spliced"],
        "ce_loss_zero_ablation": ref_ce["zero"], "ce_loss_mean_ablation": ref_ce["mean"],
        "ce_loss_recovered": (ref_ce["zero"] - ref_ce["spliced"]) / (ref_ce["zero"]
                                                                     - ref_ce["clean"]),
        "kl_div": np.mean(kl), "l0": np.sum(f != 0, -1)[keep].mean(), "mse": sq.mean(),
        "fvu": sq.sum() / np.sum((acts[keep] - mean) ** 2), "dead_fraction": 1 - fired.mean(),
        "n_tokens": keep.sum()}
    for key, value in expect.items():
        assert got[key] == pytest.approx(value, rel=2e-4, abs=1e-6), key
    assert 0 < got["dead_fraction"] < 1 and got["kl_div"] > 1e-4  # the checks can fail


def test_splice_one_head_of_hook_z_error_term_and_gradients():
    model, params = family("gpt2")
    cfg = sae.SAEConfig("relu", d_in=8, d_sae=16)
    p = _perturbed(cfg, 2)
    clean, _, z = _clean(model, params)
    want = z.copy()
    want[:, :, 3] = _relu_sae(p, z[:, :, 3])[0]
    spliced = jinterp.run_with_hooks(model, params, TOKENS, {Z: sae.splice(cfg, p, head=3)})
    np.testing.assert_allclose(spliced, _patched(model, params, Z, want), atol=2e-5)
    assert np.abs(np.asarray(spliced) - clean).max() > 1e-3

    # error term: the clean forward, and gradients reach the SAE through the reconstruction
    # exactly as through a patch of recon(x) + (x - recon(x)) with the second recon frozen
    def run(sae_params, hook):
        return jinterp.run_with_hooks(model, params, TOKENS, {Z: hook(sae_params)})[:, -1, 5].sum()

    # jitted (hook static): one program per gradient instead of many eager pieces
    splice3 = lambda q: sae.splice(cfg, q, error_term=True, head=3)  # noqa: E731
    value, got = jax.jit(jax.value_and_grad(run), static_argnums=1)(p, splice3)
    np.testing.assert_allclose(value, clean[:, -1, 5].sum(), atol=2e-5)
    frozen = sae.splice(cfg, p).reconstruct(jnp.asarray(z[:, :, 3]))

    def patch(q):
        head = sae.splice(cfg, q).reconstruct(jnp.asarray(z[:, :, 3])) + (z[:, :, 3] - frozen)
        return jinterp.Patch(jnp.asarray(z).at[:, :, 3].set(head))

    expected = jax.jit(jax.grad(run), static_argnums=1)(p, patch)
    for k in ("W_enc", "W_dec", "b_enc", "b_dec"):
        np.testing.assert_allclose(got[k], expected[k], atol=1e-5)
    assert float(jnp.abs(got["W_dec"]).max()) > 1e-4

    with pytest.raises(ValueError, match=r"d_in=8.*width 32.*pass head="):
        jinterp.run_with_hooks(model, params, TOKENS, {Z: sae.splice(cfg, p)})
    with pytest.raises(ValueError, match=r"d_in=8 but the activation.*\(4, 8, 32\)"):
        jinterp.run_with_hooks(model, params, TOKENS, {RESID: sae.splice(cfg, p)})


def test_gemma_scope_and_saelens_files_splice_into_gemma2(tmp_path):
    model, params = family("gemma2")
    tokens = np.random.default_rng(3).integers(0, 61, (2, 6))
    _, cache = jinterp.run_with_cache(model, params, tokens, [RESID])
    x = np.asarray(cache[RESID], np.float64)
    rng = np.random.default_rng(4)
    npz = {"W_enc": rng.normal(size=(32, 64)) / 4, "W_dec": rng.normal(size=(64, 32)) / 8,
           "b_enc": rng.normal(size=64) / 4, "b_dec": rng.normal(size=32) / 4,
           "threshold": np.abs(rng.normal(size=64)) / 2}
    np.savez(tmp_path / "params.npz", **{k: v.astype(np.float32) for k, v in npz.items()})
    cfg, p = sae.load_gemma_scope(tmp_path)
    pre = x @ npz["W_enc"] + npz["b_enc"]  # Gemma Scope's JumpReLU, no b_dec subtraction
    want = np.where(pre > npz["threshold"], pre, 0.0) @ npz["W_dec"] + npz["b_dec"]
    got = jinterp.run_with_hooks(model, params, tokens, {RESID: sae.splice(cfg, p)})
    ref = jinterp.run_with_hooks(model, params, tokens, {RESID: jinterp.Patch(want)})
    np.testing.assert_allclose(got, ref, atol=3e-5)

    # SAELens round trip: hook name, head index and run-time layer norm come back and apply
    meta = {"hook_name": RESID, "context_size": 6, "prepend_bos": True, "model_name": "g"}
    sae.save_saelens(tmp_path / "s", cfg, p, metadata=meta, normalize_activations="layer_norm")
    loaded = sae.load_saelens(tmp_path / "s")
    cfg2, p2 = loaded
    assert cfg2 == cfg and loaded.hook_name == RESID
    assert {**meta, "normalize_activations": "layer_norm"}.items() <= loaded.metadata.items()
    mu, sd = x.mean(-1, keepdims=True), x.std(-1, ddof=1, keepdims=True)
    pre = (x - mu) / (sd + 1e-5) @ npz["W_enc"] + npz["b_enc"]
    want = (np.where(pre > npz["threshold"], pre, 0.0) @ npz["W_dec"] + npz["b_dec"]) * sd + mu
    got = jinterp.run_with_hooks(model, params, tokens, {loaded.hook_name: loaded.splice()})
    ref = jinterp.run_with_hooks(model, params, tokens, {RESID: jinterp.Patch(want)})
    np.testing.assert_allclose(got, ref, atol=3e-5)
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    raw["reshape_activations"] = "hook_z"
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="reshape_activations='hook_z'.*not an attn.hook_z"):
        sae.load_saelens(tmp_path / "s")
