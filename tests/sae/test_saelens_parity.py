"""``jinterp.sae.evaluate`` gives SAELens's numbers on the same SAE, model and tokens.

SAELens and TransformerLens need torch and their own pins, so their side runs in its own
interpreter (``saelens_evals_ref.py``): ``$SAELENS_PYTHON`` if set, else this one when it can
import sae_lens; the test is skipped where neither exists. fp32, within 1e-5 relative (KL and
other small differences of large numbers: 1e-5 absolute).
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from families import family  # noqa: E402

from jinterp import sae  # noqa: E402

HOOK = "blocks.1.hook_resid_post"


def _interpreter() -> str | None:
    if os.environ.get("SAELENS_PYTHON"):
        return os.environ["SAELENS_PYTHON"]
    return sys.executable if importlib.util.find_spec("sae_lens") else None


@pytest.mark.skipif(_interpreter() is None, reason="needs sae-lens (set SAELENS_PYTHON)")
def test_evaluate_matches_saelens(tmp_path):
    model, params = family("gpt2")
    c = model.config
    flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v, np.float32)
            for path, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    weights = {}
    for name, value in flat.items():
        parts = name.split("/")
        if parts[0] == "blocks":  # stacked [layer, ...] -> one tensor per block
            for layer in range(c.n_layers):
                weights[".".join(["blocks", str(layer), *parts[1:]])] = value[layer]
        else:
            weights[".".join(parts)] = value
    weights["unembed.W_U"] = weights["embed.W_E"].T.copy()  # tied embeddings
    weights["unembed.b_U"] = np.zeros(c.d_vocab, np.float32)
    np.savez(tmp_path / "weights.npz", **weights)
    (tmp_path / "config.json").write_text(json.dumps({"model": dict(
        n_layers=c.n_layers, d_model=c.d_model, n_heads=c.n_heads, d_head=c.d_head,
        d_mlp=c.d_mlp, d_vocab=c.d_vocab, n_ctx=c.n_ctx, act_fn="gelu_new",
        normalization_type="LN"), "ignore_tokens": [0]}))
    tokens = np.random.default_rng(0).integers(1, 61, (4, 8))
    tokens[:, 0] = 0
    np.save(tmp_path / "tokens.npy", tokens)
    cfg = sae.SAEConfig("topk", d_in=32, d_sae=64, k=6)
    sae_params = sae.init(cfg, jax.random.key(3))
    sae.save_saelens(tmp_path / "sae", cfg, sae_params, metadata={"hook_name": HOOK})

    proc = subprocess.run([_interpreter(), str(Path(__file__).with_name("saelens_evals_ref.py")),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = sae.evaluate(model, params, cfg, sae_params, HOOK, tokens, batch_size=4,
                        exclude_ids=(0,))
    pairs = {"ce_loss_clean": "ce_loss_without_sae", "ce_loss_spliced": "ce_loss_with_sae",
             "ce_loss_zero_ablation": "ce_loss_with_ablation", "ce_loss_recovered": "ce_loss_score",
             "kl_div": "kl_div_with_sae", "kl_div_zero_ablation": "kl_div_with_ablation",
             "explained_variance": "explained_variance", "l0": "l0", "mse": "mse"}
    for mine, lens in pairs.items():
        assert ours[mine] == pytest.approx(theirs[lens], rel=1e-5, abs=1e-5), (mine, theirs)
