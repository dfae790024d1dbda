"""Feature analysis against slow references: top-activating contexts and histograms against a
Python loop of run_with_cache + encode per sequence, logit weights against W_dec @ W_U folded
by hand, and steering through the splice against run_with_hooks with a hand-written hook."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402

import jinterp  # noqa: E402
from jinterp import models, sae  # noqa: E402
from jinterp.interventions import Steer  # noqa: E402
from jinterp.sae import features as F  # noqa: E402

HOOK = "blocks.1.hook_resid_post"
CFG = sae.SAEConfig("topk", d_in=32, d_sae=48, k=4)
K, LEFT, RIGHT, BINS = 5, 3, 2, 6


def _sae():
    """A TopK SAE with unit decoder rows and a spread of encoder biases (numpy: no compiles)."""
    rng = np.random.default_rng(3)
    W_dec = rng.normal(size=(CFG.d_sae, CFG.d_in)).astype(np.float32)
    W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
    return {"W_enc": jnp.asarray(W_dec.T), "W_dec": jnp.asarray(W_dec),
            "b_enc": jnp.asarray(0.3 * rng.normal(size=CFG.d_sae), jnp.float32),
            "b_dec": jnp.zeros(CFG.d_in, jnp.float32)}


def _tokens(n=10, pos=12):
    toks = np.random.default_rng(0).integers(1, 61, (n, pos)).astype(np.int32)
    toks[:, 0] = 0  # BOS, excluded
    toks[-1, 5] = 0  # and a BOS inside a sequence
    return toks


def _reference(model, params, p, toks, exclude=(0,)):
    """Per sequence: run_with_cache, encode; then a sort per feature in Python."""
    lat = []
    for row in toks:
        _, cache = jinterp.run_with_cache(model, params, row[None], names=[HOOK])
        lat.append(np.asarray(sae.encode(CFG, p, cache[HOOK][0])))  # pos d_sae
    lat = np.stack(lat)  # n_seq pos d_sae
    keep = ~np.isin(toks, exclude)
    return lat * keep[..., None], keep


def _window(values, i, p):
    out = np.full(LEFT + RIGHT + 1, -1 if values.dtype.kind == "i" else 0, values.dtype)
    for j, q in enumerate(range(p - LEFT, p + RIGHT + 1)):
        if 0 <= q < values.shape[1]:
            out[j] = values[i, q]
    return out


#: A permuted subset: these fire 80, 0 (dead on these tokens), 28, 4, 62, 2, 58 and 1 times.
FEATURES = [11, 1, 3, 13, 0, 14, 23, 28]


def analysis(model, params, p, toks):
    """The analysis both this file and the dashboard's test use (one set of programs)."""
    return F.analyze(model, params, CFG, p, HOOK, toks, features=FEATURES, k=K, left=LEFT,
                     right=RIGHT, n_bins=BINS, batch_size=4, exclude_ids=(0,))


def test_top_contexts_histograms_and_density_equal_a_python_loop():
    model, params = family("gpt2")
    p, toks = _sae(), _tokens()
    lat, keep = _reference(model, params, p, toks)
    a = analysis(model, params, p, toks)  # 10 rows in batches of 4: the last one is padded
    got = a.contexts
    sizes = []
    for row, f in enumerate(FEATURES):
        cands = sorted((-lat[i, q, f], i, q) for i in range(len(toks)) for q in range(12)
                       if keep[i, q] and lat[i, q, f] > 0)[:K]
        n = len(cands)
        sizes.append(n)
        assert np.sum(got.value[row] > 0) == n, f
        np.testing.assert_allclose(got.value[row, :n], [-c[0] for c in cands], rtol=1e-5)
        np.testing.assert_array_equal(got.seq[row, :n], [c[1] for c in cands])
        np.testing.assert_array_equal(got.pos[row, :n], [c[2] for c in cands])
        for j, (_, i, q) in enumerate(cands):
            np.testing.assert_array_equal(got.tokens[row, j], _window(toks, i, q))
            np.testing.assert_allclose(got.acts[row, j], _window(lat[..., f], i, q), atol=1e-5)
        vals = lat[..., f][lat[..., f] > 0]
        assert a.density[row] == pytest.approx(len(vals) / keep.sum())
        if n == 0:  # a feature that never fires: no bins, no mean
            assert a.hist_max[row] == 0 and a.hist_counts[row].sum() == 0
            continue
        assert a.hist_max[row] == pytest.approx(vals.max(), rel=1e-5)
        np.testing.assert_array_equal(a.hist_counts[row],
                                      np.histogram(vals, BINS, (0, vals.max()))[0])
        assert a.mean_act[row] == pytest.approx(vals.mean(), rel=1e-4)
    assert sizes.count(K) >= 4 and 0 in sizes and 0 < min(s for s in sizes if s) < K
    np.testing.assert_array_equal(got.n_fired, np.sum(lat[..., FEATURES] > 0, axis=(0, 1)))
    assert int(got.n_tokens) == keep.sum()
    np.testing.assert_allclose(got.act_sum, lat[..., FEATURES].sum((0, 1)), rtol=1e-4)
    want = F.logit_weights(model, params, CFG, p, FEATURES)
    np.testing.assert_array_equal(a.top_ids, F.top_logits(want, 10)[0])
    assert a.top_ids.shape == (8, 10) and np.all(np.diff(a.top_values, axis=1) <= 0)
    with pytest.raises(ValueError, match=r"features must be integer ids in \[0, d_sae=48\)"):
        F.top_contexts(model, params, CFG, p, HOOK, toks, features=[48])
    with pytest.raises(ValueError, match="k=500 exceeds the 96 positions"):
        F.top_contexts(model, params, CFG, p, HOOK, toks, k=500)


def _random_port(port, config):
    """A port with N(0, 0.1) numpy params (norm weights far from identity; nothing compiled)."""
    model = port(config(n_layers=1, d_model=32, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=40,
                        d_vocab=61))
    rng = np.random.default_rng(0)
    return model, jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.1, s.shape), s.dtype),
                               model.param_shapes())


@pytest.mark.parametrize("name", ["gpt2", "llama", "gemma2"])
def test_logit_weights_fold_the_final_norm_as_transformer_lens(name):
    if name == "gpt2":  # LayerNorm, tied unembedding
        model, params = family(name)
    else:  # RMSNorm; Gemma 2: a 1 + w scale and a final soft-cap (no vocabulary centring)
        port = {"llama": (models.Llama, models.LlamaConfig),
                "gemma2": (models.Gemma2, models.Gemma2Config)}[name]
        model, params = _random_port(*port)
    p = _sae()
    W_U = np.asarray(jinterp.W_U(model, params), np.float64)  # d_model d_vocab
    w = np.asarray(params["ln_final"]["w"], np.float64)
    W = ((1 + w) if model.norm_offset else w)[:, None] * W_U
    if model.normalization == "layernorm":
        W = W - W.mean(0, keepdims=True)  # LayerNorm removes a direction's mean
    if model.final_softcap is None:
        W = W - W.mean(1, keepdims=True)  # TL's center_unembed
    want = np.asarray(p["W_dec"], np.float64)[[1, 5]] @ W
    got = F.logit_weights(model, params, CFG, p, [1, 5])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    top_i, top_v, low_i, low_v = F.top_logits(got, 4)
    np.testing.assert_array_equal(top_i, np.argsort(-want, axis=1)[:, :4])
    np.testing.assert_array_equal(low_i, np.argsort(want, axis=1)[:, :4])
    np.testing.assert_allclose(low_v, np.sort(want, axis=1)[:, :4], rtol=1e-4, atol=1e-5)


def test_logit_weights_refuse_a_decoder_outside_the_residual_stream():
    model, params = family("gpt2")
    cfg = sae.SAEConfig("topk", d_in=48, d_sae=8, k=2)
    with pytest.raises(ValueError, match=r"d_out = d_model = 32.*writes 48 columns"):
        F.logit_weights(model, params, cfg, {"W_dec": np.zeros((8, 48), np.float32)})


def test_steering_through_the_splice_equals_a_hand_written_hook():
    model, params = family("gpt2")
    p, toks = _sae(), _tokens(2, 9)
    d3, d7 = p["W_dec"][3][None, None], p["W_dec"][7][None, None]  # 1 1 d_model

    def run(hook):
        return np.asarray(jinterp.run_with_hooks(model, params, toks, {HOOK: hook}))

    def by_hand(x):
        return sae.decode(CFG, p, sae.encode(CFG, p, x)) + 2.5 * d3

    replaced = run(F.steer(CFG, p, 3, 2.5, error_term=False))  # x_hat + alpha * W_dec[f]
    np.testing.assert_allclose(replaced, run(by_hand), rtol=1e-5, atol=1e-5)
    latent_edit = sae.splice(CFG, p, latent_fn=lambda f: f.at[..., 3].add(2.5))
    np.testing.assert_allclose(replaced, run(latent_edit), rtol=1e-5, atol=1e-5)

    # with the error term: x + sum_i alpha_i W_dec[f_i]; strengths as data, one vmapped program
    alphas = jnp.array([[0.0, 0.0], [2.5, 0.0], [1.0, -2.0]])
    swept = np.asarray(jax.vmap(lambda a: jinterp.run_with_hooks(
        model, params, toks, {HOOK: F.steer(CFG, p, [3, 7], a)}))(alphas))
    for got, vector in zip(swept, [0.0 * d3, 2.5 * d3, d3 - 2.0 * d7]):
        np.testing.assert_allclose(got, run(Steer(vector=vector)), rtol=1e-5, atol=1e-5)
    assert np.abs(swept[1] - swept[0]).max() > 1e-2  # steering moves the logits
    with pytest.raises(ValueError, match=r"feature must be integer id\(s\) in \[0, d_sae=48\)"):
        F.steer(CFG, p, 48, 1.0)
    with pytest.raises(ValueError, match="alpha has shape"):
        F.steer(CFG, p, [1, 2], [1.0, 2.0, 3.0])
