"""Training SAEs on a port's activations: exact resume (buffer and token position included),
refused resumes, the short-run dead window, and the one-command CLI end to end."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402

from jinterp import sae  # noqa: E402
from jinterp.sae.cli import main  # noqa: E402

RESID = "blocks.1.hook_resid_post"
CFG = sae.SAEConfig("topk", d_in=32, d_sae=64, k=4)


def _run(out, steps, **kw):
    model, params = family("gpt2")
    src = sae.SyntheticTokenSource(61, 2, 8, bos_id=0, low=1)
    args = dict(lr=1e-2, batch_size=8, buffer_batches=3, exclude_ids=(0,), log_every=1,
                tcfg=sae.TrainConfig(total_steps=6), progress=False)
    return sae.train_on_model(model, params, CFG, RESID, src, steps, out_dir=out,
                              checkpoint_every=3, **{**args, **kw})


def test_resume_is_exact_and_other_settings_are_refused(tmp_path):
    with pytest.warns(UserWarning, match="fewer than dead_after_tokens.*dead window of 1"):
        full = _run(tmp_path / "full", 6)
    with pytest.warns(UserWarning):
        _run(tmp_path / "cut", 3)  # "crashes" after the checkpoint at step 3
        resumed = _run(tmp_path / "cut", 6)
    for k in full.params[0]:
        np.testing.assert_array_equal(full.params[0][k], resumed.params[0][k], err_msg=k)
    assert full.history == resumed.history and len(full.history) == 6
    for a, b in zip(jax.tree.leaves(full.state["store"]), jax.tree.leaves(resumed.state["store"])):
        np.testing.assert_array_equal(a, b)  # same buffer, same next token batch
    assert max(r["dead_fraction"] for r in full.history) > 0  # the scaled window fires
    assert {"mse", "mse_raw", "fvu", "l0"} <= set(full.history[0])
    before = (tmp_path / "cut" / "run.json").read_text()
    with pytest.raises(ValueError, match=r"other settings.*lr: saved \[0.01\], now \[0.02\]"), \
            pytest.warns(UserWarning):
        _run(tmp_path / "cut", 6, lr=2e-2)
    assert (tmp_path / "cut" / "run.json").read_text() == before  # nothing overwritten
    with pytest.raises(ValueError, match=r"d_in=16.*width 32: set d_in=32"):
        sae.train_on_model(*family("gpt2"), sae.SAEConfig("relu", d_in=16, d_sae=8), RESID,
                           sae.SyntheticTokenSource(61, 2, 8), 2, batch_size=8)


def _write_hf_gpt2(path: Path, model, params) -> None:
    """The family's GPT-2 as a HuggingFace checkpoint (the inverse of the port's key map)."""
    c = model.config
    params = jax.device_get(params)  # numpy: indexing jax arrays per layer compiles each slice
    b, H, D, Dh = params["blocks"], c.n_heads, c.d_model, c.d_head
    t = {"wte.weight": params["embed"]["W_E"], "wpe.weight": params["pos_embed"]["W_pos"],
         "ln_f.weight": params["ln_final"]["w"], "ln_f.bias": params["ln_final"]["b"]}
    a = b["attn"]
    for l in range(c.n_layers):
        w = np.stack([a["W_Q"][l], a["W_K"][l], a["W_V"][l]])  # [3, H, D, Dh]
        t |= {f"h.{l}.attn.c_attn.weight": w.transpose(2, 0, 1, 3).reshape(D, 3 * H * Dh),
              f"h.{l}.attn.c_attn.bias": np.stack([a["b_Q"][l], a["b_K"][l],
                                                   a["b_V"][l]]).reshape(-1),
              f"h.{l}.attn.c_proj.weight": np.asarray(a["W_O"][l]).reshape(H * Dh, D),
              f"h.{l}.attn.c_proj.bias": a["b_O"][l],
              f"h.{l}.mlp.c_fc.weight": b["mlp"]["W_in"][l],
              f"h.{l}.mlp.c_fc.bias": b["mlp"]["b_in"][l],
              f"h.{l}.mlp.c_proj.weight": b["mlp"]["W_out"][l],
              f"h.{l}.mlp.c_proj.bias": b["mlp"]["b_out"][l]}
        for ln, hf in (("ln1", "ln_1"), ("ln2", "ln_2")):
            t |= {f"h.{l}.{hf}.weight": b[ln]["w"][l], f"h.{l}.{hf}.bias": b[ln]["b"][l]}
    path.mkdir()
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in t.items()},
              str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "n_layer": c.n_layers, "n_embd": D, "n_head": H,
        "n_inner": c.d_mlp, "vocab_size": c.d_vocab, "n_positions": c.n_ctx,
        "activation_function": "gelu_new"}))


def test_cli_trains_a_sweep_evaluates_and_writes_saelens_files(tmp_path):
    model, params = family("gpt2")
    _write_hf_gpt2(tmp_path / "gpt2", model, params)
    tokens = np.random.default_rng(0).integers(1, 61, (20, 8))
    tokens[:, 0] = 0
    np.save(tmp_path / "tokens.npy", tokens)
    args = ["--model", str(tmp_path / "gpt2"), "--hook", RESID, "--arch", "topk",
            "--d-sae", "64", "--k", "4", "--lr", "1e-2", "3e-3", "--steps", "4",
            "--batch-size", "8", "--tokens", str(tmp_path / "tokens.npy"), "--seq-len", "8",
            "--forward-batch", "2", "--buffer-batches", "3", "--exclude-ids", "0",
            "--eval-sequences", "4", "--log-every", "1", "--out", str(tmp_path / "run"),
            "--no-progress"]
    with pytest.warns(UserWarning, match="dead_after_tokens"):
        result = main(args)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"metrics.jsonl", "evals.jsonl", "run.json",
                                             "training.png", "summary.json", "sae_0", "sae_1"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["instance"]) for r in rows] == [(s, i) for s in range(1, 5)
                                                          for i in (0, 1)]
    assert rows[0]["lr"] != rows[1]["lr"]  # two instances of one sweep
    loaded = sae.load_saelens(out / "sae_1")
    assert loaded.hook_name == RESID and loaded.metadata["context_size"] == 8
    for k, v in result.params[1].items():
        np.testing.assert_allclose(loaded.params[k], v, rtol=1e-6)
    evals = [json.loads(line) for line in (out / "evals.jsonl").read_text().splitlines()]
    again = sae.evaluate(model, params, loaded.cfg, loaded.params, RESID, tokens[-4:],
                         exclude_ids=(0,))
    assert evals[-1]["instance"] == 1
    assert again["ce_loss_spliced"] == pytest.approx(evals[-1]["ce_loss_spliced"], rel=1e-5)
    assert 0 < again["ce_loss_recovered"] and again["fvu"] < 1.0
