"""Acausal crosscoders on a port: the block-summed penalty and forward against numpy, the
one-command run over two layers' residual streams (``--hooks``), the saved file, the
per-block evaluation against a slow reference (one ``Patch`` per block, metrics by hand) and
bad input that names the fix."""

import json
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import family  # noqa: E402
from test_model_train import _write_hf_gpt2  # noqa: E402

import jinterp  # noqa: E402
from jinterp import sae  # noqa: E402
from jinterp.sae.cli import main  # noqa: E402

HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3)]


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _crosscoder(cfg, p, blocks):
    """The ReLU crosscoder by hand (numpy): concatenate, encode once, decode every block."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.concatenate([np.asarray(b, np.float64) for b in blocks], -1)
    pre = (x - p["b_dec"] if cfg.subtract_b_dec else x) @ p["W_enc"] + p["b_enc"]
    f = np.maximum(pre, 0.0)
    x_hat = f @ p["W_dec"] + p["b_dec"]
    d = cfg.d_block
    return [x_hat[..., b * d:(b + 1) * d] for b in range(cfg.n_blocks)], f


def test_block_summed_penalty_and_forward_match_numpy():
    cfg = sae.SAEConfig("relu", d_in=3 * 8, d_sae=16, n_blocks=3, l1_coefficient=0.7)
    assert (cfg.d_block, cfg.is_crosscoder) == (8, True)
    rng = np.random.default_rng(0)
    p = {k: np.asarray(v) for k, v in sae.init(cfg, jax.random.key(0)).items()}
    p["W_dec"] = rng.normal(size=p["W_dec"].shape).astype(np.float32)
    p["W_dec"][:4, 8:] = 0.0  # latents 0-3 write block 0 only
    p["b_enc"] = rng.normal(0.1, 0.1, size=16).astype(np.float32)
    x = rng.normal(size=(32, 24)).astype(np.float32)
    loss, metrics = sae.loss(cfg, p, x)
    w = p["W_dec"].astype(np.float64)
    block_norms = sum(np.linalg.norm(w[:, b * 8:(b + 1) * 8], axis=-1) for b in range(3))
    (x0, x1, x2), f = _crosscoder(cfg, p, np.split(x, 3, -1))
    l1 = np.mean(f @ block_norms)
    mse = np.mean(np.sum((np.concatenate([x0, x1, x2], -1) - x) ** 2, -1))
    np.testing.assert_allclose(float(metrics["l1"]), l1, rtol=1e-5)
    np.testing.assert_allclose(float(loss), mse + 0.7 * l1, rtol=1e-5)
    # the sum of per-block norms, not the norm of the whole row (an SAE's penalty)
    assert abs(l1 - np.mean(f @ np.linalg.norm(w, axis=-1))) > 0.1 * l1
    np.testing.assert_allclose(sae.decoder_blocks(cfg, p)[1, 2], w[1, 16:24], rtol=1e-6)

    acts = [jnp.asarray(b.reshape(4, 8, 8)) for b in np.split(x, 3, -1)]
    outs, lat = sae.crosscoder_forward(cfg, p, acts)
    for got, want in zip(outs, (x0, x1, x2)):
        assert got.shape == (4, 8, 8)
        np.testing.assert_allclose(got.reshape(32, 8), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(lat.reshape(32, 16), f, rtol=1e-4, atol=1e-5)

    # fold_block_scales: the same latents and outputs on raw blocks as on scaled ones
    s = np.array([0.5, 2.0, 3.0])
    raw = [a / s[b] for b, a in enumerate(acts)]
    folded = sae.fold_block_scales(cfg, p, s)
    outs_raw, lat_raw = sae.crosscoder_forward(cfg, folded, raw)
    np.testing.assert_allclose(lat_raw, lat, rtol=1e-4, atol=1e-5)
    for b, (o_raw, o) in enumerate(zip(outs_raw, outs)):
        np.testing.assert_allclose(o_raw * s[b], o, rtol=1e-4, atol=1e-5)


def test_crosscoder_bad_input_names_the_fix(tmp_path):
    model, params = family("gpt2")
    with pytest.raises(ValueError, match="must be n_blocks=2 equal blocks"):
        sae.SAEConfig("relu", d_in=33, d_sae=8, n_blocks=2)
    with pytest.raises(ValueError, match="cannot be set too"):
        sae.SAEConfig("relu", d_in=32, d_sae=8, n_blocks=2, d_out=16)
    cfg = sae.SAEConfig("relu", d_in=64, d_sae=8, n_blocks=2)
    p = sae.init(cfg, jax.random.key(0))
    acts = [jnp.ones((1, 4, 32)), jnp.ones((1, 4, 32))]
    with pytest.raises(ValueError, match="has 2 blocks, got 1 activations"):
        sae.crosscoder_forward(cfg, p, acts[:1])
    with pytest.raises(ValueError, match="block 1 has rows of width 16.*d_block=32"):
        sae.crosscoder_forward(cfg, p, [acts[0], jnp.ones((1, 4, 16))])
    with pytest.raises(ValueError, match="use jinterp.sae.crosscoder_patches"):
        sae.splice(cfg, p)
    toks = np.ones((2, 4), np.int32)
    with pytest.raises(ValueError, match="this is a crosscoder: use jinterp.sae.evaluate_cross"):
        sae.evaluate(model, params, cfg, p, HOOKS[0], toks)
    tc = sae.SAEConfig("relu", d_in=32, d_sae=8, d_out=32)
    with pytest.raises(ValueError, match="this is a transcoder: use jinterp.sae.evaluate_trans"):
        sae.evaluate(model, params, tc, sae.init(tc, jax.random.key(0)), HOOKS[0], toks)
    with pytest.raises(ValueError, match="n_blocks=2, got 3 blocks"):
        sae.evaluate_crosscoder(model, params, cfg, p, HOOKS, toks)
    with pytest.raises(ValueError, match=r"block 1 \('blocks.0.mlp.hook_post'\) has rows of "
                                         "width 48"):
        sae.evaluate_crosscoder(model, params, cfg, p, [HOOKS[0], "blocks.0.mlp.hook_post"],
                                toks)
    with pytest.raises(ValueError, match="pass params as a sequence of 2 parameter sets"):
        sae.evaluate_crosscoder(model, params, cfg, p, [(0, HOOKS[0]), (1, HOOKS[0])], toks)
    src = sae.SyntheticTokenSource(61, 2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="blocks must have one width"):
            sae.train_on_model(model, params, cfg, [HOOKS[0], "blocks.0.mlp.hook_post"], src,
                               1, batch_size=8)
        with pytest.raises(ValueError, match="over 3 blocks of width 32 needs n_blocks=3, "
                                             "d_in=96"):
            sae.train_on_model(model, params, cfg, HOOKS, src, 1, batch_size=8)
        with pytest.raises(ValueError, match="needs n_blocks hooks"):
            sae.train_on_model(model, params, cfg, HOOKS[0], src, 1, batch_size=8)
    _write_hf_gpt2(tmp_path / "gpt2", model, params)
    common = ["--model", str(tmp_path / "gpt2"), "--d-sae", "8", "--steps", "1", "--synthetic",
              "--out", str(tmp_path / "x"), "--no-progress"]
    with pytest.raises(SystemExit, match="pass --hooks a,b"):
        main([*common, "--hook", HOOKS[0], "--arch", "crosscoder"])
    with pytest.raises(SystemExit, match="--hook-out \\(a transcoder\\) reads one --hook"):
        main([*common, "--hooks", ",".join(HOOKS), "--hook-out", "blocks.0.hook_mlp_out"])


def test_cli_trains_a_crosscoder_over_layers_and_evaluate_matches_a_reference(tmp_path):
    model, params = family("gpt2")
    hooks = [HOOKS[0], HOOKS[2]]  # two layers, not adjacent
    _write_hf_gpt2(tmp_path / "gpt2", model, params)
    tokens = np.random.default_rng(0).integers(1, 61, (24, 8))
    tokens[:, 0] = 0
    tokens[-2, 5] = 0  # an excluded id inside a held-out sequence
    np.save(tmp_path / "tokens.npy", tokens)
    args = ["--model", str(tmp_path / "gpt2"), "--hooks", ",".join(hooks), "--arch",
            "crosscoder", "--d-sae", "64", "--l1", "0.3", "--lr", "1e-2", "--steps", "30",
            "--batch-size", "16", "--tokens", str(tmp_path / "tokens.npy"), "--seq-len", "8",
            "--forward-batch", "2", "--buffer-batches", "4", "--exclude-ids", "0",
            "--eval-sequences", "3", "--log-every", "10", "--out", str(tmp_path / "run"),
            "--no-progress"]
    with pytest.warns(UserWarning, match="dead_after_tokens"):
        result = main(args)
    out = tmp_path / "run" / "sae"
    raw = json.loads((out / "cfg.json").read_text())
    assert raw["architecture"] == "relu_crosscoder"
    assert raw["metadata"]["crosscoder_blocks"] == [[0, h] for h in hooks]
    weights = load_file(str(out / "sae_weights.safetensors"))
    assert {k: v.shape for k, v in weights.items()} == {
        "W_enc": (64, 64), "b_enc": (64,), "W_dec": (64, 64), "b_dec": (64,)}
    loaded = sae.load_saelens(out)
    cfg = loaded.cfg
    assert cfg == result.configs[0] and (cfg.n_blocks, cfg.d_block) == (2, 32)
    p = {k: np.asarray(v) for k, v in loaded.params.items()}
    for k, v in result.params[0].items():
        np.testing.assert_array_equal(p[k], np.asarray(v))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["kind"] == "crosscoder" and summary["hook_name"] == hooks

    held = tokens[-3:]
    logged = json.loads((tmp_path / "run" / "evals.jsonl").read_text().splitlines()[-1])
    got = sae.evaluate_crosscoder(model, params, cfg, loaded.params, hooks, held,
                                  exclude_ids=(0,))
    assert got["fvu"] == pytest.approx(logged["fvu"], rel=1e-5)

    # slow reference: one clean cache, the crosscoder by hand on the raw activations (the
    # per-block scales were folded into the file), then one Patch per block and variant
    logits_clean, cache = jinterp.run_with_cache(model, params, held, hooks)
    acts = [np.asarray(cache[h], np.float64) for h in hooks]
    keep = held != 0
    x_hats, f = _crosscoder(cfg, p, acts)
    logp_clean = _log_softmax(logits_clean)
    err_total = var_total = 0.0
    for b, (hook, x, x_hat) in enumerate(zip(hooks, acts, x_hats)):
        spliced = np.where(keep[..., None], x_hat, x)
        logp = {"clean": logp_clean, **{k: _log_softmax(jinterp.run_with_hooks(
            model, params, held, {hook: jinterp.Patch(jnp.asarray(v, jnp.float32))}))
            for k, v in (("spliced", spliced), ("zero", np.zeros_like(x)))}}
        ce = {k: [] for k in logp}
        kl = []
        for s, t in enumerate(held):
            for i in range(len(t)):
                if not keep[s, i]:
                    continue
                for k in logp:
                    if i + 1 < len(t):
                        ce[k].append(-logp[k][s, i, t[i + 1]])
                q = np.exp(logp_clean[s, i])
                kl.append(np.sum(q * (logp_clean[s, i] - logp["spliced"][s, i])))
        ref = {k: np.mean(v) for k, v in ce.items()}
        err = np.sum((x - x_hat) ** 2, -1)[keep]
        var = np.sum((x[keep] - x[keep].mean(0)) ** 2)
        err_total, var_total = err_total + err.sum(), var_total + var
        row = got["blocks"][b]
        expect = {"ce_loss_clean": ref["clean"], "ce_loss_spliced": ref["spliced"],
                  "ce_loss_zero_ablation": ref["zero"], "kl_div": np.mean(kl),
                  "ce_loss_recovered": (ref["zero"] - ref["spliced"])
                  / (ref["zero"] - ref["clean"]), "mse": err.mean(), "fvu": err.sum() / var}
        assert (row["hook"], row["checkpoint"]) == (hook, 0)
        for key, value in expect.items():
            assert row[key] == pytest.approx(value, rel=2e-4, abs=1e-6), (hook, key)
        assert row["ce_loss_spliced"] != row["ce_loss_clean"]
    assert got["fvu"] == pytest.approx(err_total / var_total, rel=2e-4)
    assert got["l0"] == pytest.approx(np.sum(f != 0, -1)[keep].mean(), rel=1e-5)
    assert got["dead_fraction"] == pytest.approx(1.0 - np.mean(np.any(f[keep] != 0, 0)))
    assert got["n_tokens"] == keep.sum()
    assert got["fvu"] < 0.9  # it learned something (30 steps)

    # patches from crosscoder_patches, applied one at a time, are the reference's splices
    patches = sae.crosscoder_patches(cfg, loaded.params, [cache[h] for h in hooks],
                                     jnp.asarray(keep))
    np.testing.assert_allclose(np.asarray(patches[1].values),
                               np.where(keep[..., None], x_hats[1], acts[1]), atol=1e-4)


def test_a_crosscoder_run_resumes_exactly_with_its_block_scales(tmp_path):
    model, params = family("gpt2")
    hooks = [HOOKS[0], HOOKS[2]]
    cfg = sae.SAEConfig("relu", d_in=64, d_sae=32, n_blocks=2, l1_coefficient=0.3)
    kw = dict(batch_size=8, buffer_batches=4, lr=1e-2, progress=False,
              tcfg=sae.TrainConfig(total_steps=8), checkpoint_every=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short run: the dead window is scaled down
        full = sae.train_on_model(model, params, cfg, hooks, sae.SyntheticTokenSource(61, 2, 8),
                                  8, out_dir=tmp_path / "full", **kw)
        sae.train_on_model(model, params, cfg, hooks, sae.SyntheticTokenSource(61, 2, 8), 4,
                           out_dir=tmp_path / "cut", **kw)  # "crashes" after step 4
        resumed = sae.train_on_model(model, params, cfg, hooks,
                                     sae.SyntheticTokenSource(61, 2, 8), 8,
                                     out_dir=tmp_path / "cut", **kw)
    for k in full.params[0]:
        np.testing.assert_array_equal(full.params[0][k], resumed.params[0][k], err_msg=k)
    np.testing.assert_array_equal(full.state["scales"], resumed.state["scales"])
    # the per-block scales, E||s_b x_b||^2 = d_block over the first buffer, by hand: the
    # buffer holds 64 rows, filled by the first four forwards of 2 x 8 tokens
    src = sae.SyntheticTokenSource(61, 2, 8)
    tokens = np.concatenate([np.asarray(src.batch(i)) for i in range(4)])
    _, cache = jinterp.run_with_cache(model, params, tokens, hooks)
    s = np.asarray(full.state["scales"])
    for b, h in enumerate(hooks):
        x = np.asarray(cache[h], np.float64).reshape(-1, 32)
        assert s[b] == pytest.approx(np.sqrt(32 / np.mean(np.sum(x ** 2, -1))), rel=1e-4)
    assert s[0] > s[1]  # the residual grows with depth: the later block is scaled down more
