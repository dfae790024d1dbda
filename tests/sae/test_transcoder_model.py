"""Transcoders on a port: ``(x, y)`` streams into ``train``, the one-command run from MLP input to
MLP output with a skip connection, SAELens's file layout, the MLP-replacing splice (one pass,
checked against a two-pass patch) and its evaluation against a slow numpy reference."""

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

IN, OUT = "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"


def _log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _skip_transcoder(p, x):
    """The ReLU skip transcoder by hand (numpy): SAELens's forward."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    f = np.maximum(x @ p["W_enc"] + p["b_enc"], 0.0)
    return f @ p["W_dec"] + p["b_dec"] + x @ p["W_skip"].T, f


def test_cli_trains_a_skip_transcoder_whose_splice_and_evaluation_match_references(tmp_path):
    model, params = family("gpt2")
    _write_hf_gpt2(tmp_path / "gpt2", model, params)
    tokens = np.random.default_rng(0).integers(1, 61, (24, 8))
    tokens[:, 0] = 0
    tokens[-3, 4] = 0  # an excluded id inside a held-out sequence
    np.save(tmp_path / "tokens.npy", tokens)
    args = ["--model", str(tmp_path / "gpt2"), "--hook", IN, "--hook-out", OUT, "--skip",
            "--arch", "relu", "--d-sae", "64", "--l1", "0.5", "--lr", "1e-2", "--steps", "40",
            "--batch-size", "16", "--tokens", str(tmp_path / "tokens.npy"), "--seq-len", "8",
            "--forward-batch", "2", "--buffer-batches", "4", "--exclude-ids", "0",
            "--eval-sequences", "4", "--log-every", "10", "--out", str(tmp_path / "run"),
            "--no-progress"]
    with pytest.warns(UserWarning, match="dead_after_tokens"):
        result = main(args)
    out = tmp_path / "run" / "sae"
    raw = json.loads((out / "cfg.json").read_text())  # SAELens's SkipTranscoder layout
    assert raw["architecture"] == "skip_transcoder" and raw["d_out"] == 32
    assert raw["apply_b_dec_to_input"] is False
    assert (raw["metadata"]["hook_name"], raw["metadata"]["hook_name_out"]) == (IN, OUT)
    weights = load_file(str(out / "sae_weights.safetensors"))
    assert {k: v.shape for k, v in weights.items()} == {
        "W_enc": (32, 64), "b_enc": (64,), "W_dec": (64, 32), "b_dec": (32,),
        "W_skip": (32, 32)}  # W_skip [d_out, d_in], as SAELens
    loaded = sae.load_saelens(out)
    assert loaded.cfg.skip_connection and loaded.hook_name == IN
    p = {k: np.asarray(v) for k, v in loaded.params.items()}
    for k, v in result.params[0].items():
        np.testing.assert_allclose(p[k], v, rtol=1e-6)
    assert np.abs(p["W_skip"]).max() > 1e-3  # the skip path was trained

    held = tokens[-4:]
    got = sae.evaluate_transcoder(model, params, loaded.cfg, loaded.params, IN, OUT, held,
                                  exclude_ids=(0,))
    logged = json.loads((tmp_path / "run" / "evals.jsonl").read_text().splitlines()[-1])
    assert got["ce_loss_spliced"] == pytest.approx(logged["ce_loss_spliced"], rel=1e-5)

    # slow reference: a clean run, the transcoder by hand, a Patch of hook_mlp_out per variant
    _, cache = jinterp.run_with_cache(model, params, held, [IN, OUT])
    x, y = np.asarray(cache[IN], np.float64), np.asarray(cache[OUT], np.float64)
    keep = held != 0
    y_hat, f = _skip_transcoder(p, x)
    mean = y[keep].mean(0)
    replaced = {"clean": y, "spliced": np.where(keep[..., None], y_hat, y),
                "zero": np.zeros_like(y), "mean": np.broadcast_to(mean, y.shape)}
    logp = {k: _log_softmax(jinterp.run_with_hooks(model, params, held, {
        OUT: jinterp.Patch(jnp.asarray(v, jnp.float32))})) for k, v in replaced.items()}
    ce = {k: [] for k in replaced}
    kl = []
    for b, t in enumerate(held):
        for i in range(len(t)):
            if not keep[b, i]:
                continue
            for key in replaced:
                if i + 1 < len(t):
                    ce[key].append(-logp[key][b, i, t[i + 1]])
            q = np.exp(logp["clean"][b, i])
            kl.append(np.sum(q * (logp["clean"][b, i] - logp["spliced"][b, i])))
    ref = {k: np.mean(v) for k, v in ce.items()}
    sq = np.sum((y - y_hat) ** 2, -1)[keep]
    expect = {"ce_loss_clean": ref["clean"], "ce_loss_spliced": ref["spliced"],
              "ce_loss_zero_ablation": ref["zero"], "ce_loss_mean_ablation": ref["mean"],
              "ce_loss_recovered": (ref["zero"] - ref["spliced"]) / (ref["zero"] - ref["clean"]),
              "kl_div": np.mean(kl), "l0": np.sum(f != 0, -1)[keep].mean(), "mse": sq.mean(),
              "fvu": sq.sum() / np.sum((y[keep] - mean) ** 2), "n_tokens": keep.sum()}
    for key, value in expect.items():
        assert got[key] == pytest.approx(value, rel=2e-4, abs=1e-6), key
    assert got["fvu"] < 1.0 and got["ce_loss_spliced"] != got["ce_loss_clean"]
    # (the spliced CE above came from one forward whose hook on hook_mlp_out reads the MLP
    # input of that same pass; the reference patched a value from a separate clean pass.)
    tc = loaded.splice()  # the file's hook_name is the transcoder's input
    assert isinstance(tc, sae.TranscoderSplice)
    assert (tc.input_layer, tc.input_point) == (1, "ln2.hook_normalized")


def test_the_splice_reads_the_input_of_its_own_forward_and_passes_gradients():
    model, params = family("gpt2")
    cfg = sae.SAEConfig("relu", d_in=32, d_sae=64, d_out=32, skip_connection=True)
    rng = np.random.default_rng(1)
    p = {k: np.asarray(v) for k, v in sae.init(cfg, jax.random.key(0)).items()}
    p["W_skip"] = rng.normal(0, 0.2, (32, 32)).astype(np.float32)
    p["b_enc"] = rng.normal(0.05, 0.05, 64).astype(np.float32)
    held = np.random.default_rng(0).integers(1, 61, (4, 8))
    _, cache = jinterp.run_with_cache(model, params, held, [IN])
    y_hat, _ = _skip_transcoder(p, np.asarray(cache[IN], np.float64))
    # It reads the input as upstream hooks left it, not the clean one:
    steer = {"blocks.1.hook_resid_mid": jinterp.Steer(jnp.linspace(-2.0, 2.0, 32))}
    one_pass, steered = jinterp.run_with_cache(model, params, held, [IN], hooks={
        **steer, OUT: sae.splice_transcoder(cfg, p, IN)})
    y_steered, _ = _skip_transcoder(p, np.asarray(steered[IN], np.float64))
    two_pass = jinterp.run_with_hooks(model, params, held, {**steer, OUT: jinterp.Patch(
        jnp.asarray(y_steered, jnp.float32))})
    np.testing.assert_allclose(one_pass, two_pass, atol=2e-5)
    assert not np.allclose(y_steered, y_hat, atol=1e-2)  # the steering changed the input

    def loss(tc_params):
        iv = sae.splice_transcoder(cfg, tc_params, IN, error_term=True)
        logits = jinterp.run_with_hooks(model, params, held, {OUT: iv})
        return jnp.mean(jax.nn.logsumexp(logits, -1)), logits

    (_, with_error), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(p)
    clean = jinterp.run_with_hooks(model, params, held, {})
    np.testing.assert_allclose(with_error, clean, atol=2e-5)  # the clean forward
    assert float(jnp.abs(grads["W_skip"]).max()) > 0  # gradients reach the transcoder
    assert float(jnp.abs(grads["W_enc"]).max()) > 0


def test_train_takes_xy_streams_and_the_skip_path_learns_a_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 16)).astype(np.float32)
    m = rng.normal(size=(16, 12)).astype(np.float32)
    y = x @ m
    src = sae.PairedSource(*(sae.ArraySource(a, 256, seed=3, chunk_rows=512) for a in (x, y)))
    for _, (bx, by) in zip(range(20), src.batches(5)):  # two epochs of shuffled chunks
        np.testing.assert_allclose(by, bx @ m, rtol=1e-5, atol=1e-4)  # rows stay paired
    cfg = sae.SAEConfig("relu", d_in=16, d_sae=32, d_out=12, skip_connection=True,
                        l1_coefficient=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short run: the dead window is scaled down
        res = sae.train(cfg, (x, y), steps=300, lr=1e-2, batch_size=256, steps_per_call=100,
                        progress=False)
    y_hat, _ = sae.forward(cfg, res.params, x)
    fvu = float(np.sum((np.asarray(y_hat) - y) ** 2) / np.sum((y - y.mean(0)) ** 2))
    assert fvu == pytest.approx(res.history[-1]["fvu"], rel=0.3)  # raw units folded back
    assert fvu < 0.02
    # the L1 penalty leaves a linear map to the skip path: W_skip [d_out, d_in] is m^T (the
    # inputs' and targets' different normalisation scales folded out)
    np.testing.assert_allclose(res.params["W_skip"], m.T, atol=0.1 * np.abs(m).max())

    pairs = [(x[i:i + 100], y[i:i + 100]) for i in range(0, 1000, 100)]
    it = sae.transcoder_data.paired_source(lambda: iter(pairs), 64, d_in=16, d_target=12)
    bx, by = next(iter(it.batches(2)))
    np.testing.assert_array_equal(bx, x[128:192])
    np.testing.assert_array_equal(by, y[128:192])
    cfg = sae.SAEConfig("relu", d_in=16, d_sae=32, d_out=12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-step runs: the dead window is scaled down
        with pytest.raises(ValueError, match="same tokens row for row.*n_rows: 4096 vs 4000"):
            sae.train(cfg, (x, y[:4000]), steps=1, batch_size=64)
        with pytest.raises(TypeError, match=r"data=\(x_data, y_data\)"):
            sae.train(cfg, 3.0, steps=1, batch_size=64)
        with pytest.raises(ValueError, match="widths \\(16, 12\\).*d_out=8"):
            sae.train(sae.SAEConfig("relu", d_in=16, d_sae=8, d_out=8), (x, y), steps=1,
                      batch_size=64)


def test_transcoder_bad_input_names_the_fix():
    model, params = family("gpt2")
    cfg = sae.SAEConfig("relu", d_in=32, d_sae=16, d_out=32)
    p = sae.init(cfg, jax.random.key(0))
    toks = np.ones((1, 4), np.int32)
    with pytest.raises(ValueError, match="use jinterp.sae.splice_transcoder"):
        sae.splice(cfg, p)
    with pytest.raises(ValueError, match="another block"):
        jinterp.run_with_hooks(model, params, toks, {OUT: sae.splice_transcoder(
            cfg, p, "blocks.0.ln2.hook_normalized")})
    with pytest.raises(ValueError, match="not an activation this block computes before"):
        jinterp.run_with_hooks(model, params, toks, {OUT: sae.splice_transcoder(
            cfg, p, "blocks.1.hook_resid_post")})
    with pytest.raises(ValueError, match="must name the same block"):
        sae.evaluate_transcoder(model, params, cfg, p, "blocks.0.ln2.hook_normalized", OUT,
                                np.ones((1, 4), np.int32))
    with pytest.raises(ValueError, match="needs the output hook too"):
        sae.train_on_model(model, params, cfg, IN, sae.SyntheticTokenSource(61, 2, 8), 1,
                           batch_size=8)
    with pytest.raises(ValueError, match="skip_connection=True is a transcoder's"):
        sae.SAEConfig("relu", d_in=32, d_sae=16, skip_connection=True)
