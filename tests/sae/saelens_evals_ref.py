"""SAELens's evaluation of an SAE on a GPT-2-shaped model (run by ``test_saelens_parity.py``).

Runs in an interpreter with sae-lens, transformer-lens and torch (not jinterp's): builds a
TransformerLens ``HookedTransformer`` from ``weights.npz`` (TransformerLens's own parameter
names, which the GPT-2 port shares), loads the SAE with ``SAE.load_from_disk``, and prints
SAELens's numbers as JSON: ``evals.get_recons_loss`` per token, averaged as
``evals.get_downstream_reconstruction_metrics`` does (``ignore_tokens`` masking included), and
the sparsity / variance numbers as ``get_sparsity_and_variance_metrics`` computes them.

Usage: ``python saelens_evals_ref.py DIR`` with ``DIR/{weights.npz, config.json, tokens.npy,
sae/}``.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from sae_lens import SAE
from sae_lens.evals import ExplainedVarianceCalculator, get_recons_loss
from sae_lens.training.activation_scaler import ActivationScaler
from transformer_lens import HookedTransformer, HookedTransformerConfig


def main(root: Path) -> dict:
    torch.set_grad_enabled(False)
    spec = json.loads((root / "config.json").read_text())
    cfg = HookedTransformerConfig(**spec["model"], default_prepend_bos=False)
    model = HookedTransformer(cfg)
    with np.load(root / "weights.npz", allow_pickle=False) as f:
        state = {k: torch.tensor(f[k]) for k in f.files}
    model.load_state_dict(state, strict=False)
    sae = SAE.load_from_disk(str(root / "sae"))
    tokens = torch.tensor(np.load(root / "tokens.npy", allow_pickle=False))
    ignore = spec["ignore_tokens"]
    per_token = get_recons_loss(sae, model, ActivationScaler(), tokens, compute_kl=True,
                                compute_ce_loss=True, ignore_tokens=ignore)
    mask = torch.ones_like(tokens, dtype=torch.bool)
    for t in ignore:
        mask &= tokens != t
    out = {}
    for name, value in per_token.items():
        m = mask if value.shape[1] == mask.shape[1] else mask[:, :-1]
        out[name] = value[m].mean().item()
    out["ce_loss_score"] = (out["ce_loss_with_ablation"] - out["ce_loss_with_sae"]) / (
        out["ce_loss_with_ablation"] - out["ce_loss_without_sae"])
    _, cache = model.run_with_cache(tokens, names_filter=[sae.cfg.metadata.hook_name])
    x = cache[sae.cfg.metadata.hook_name][mask]
    f = sae.encode(x)
    x_hat = sae.decode(f)
    calc = ExplainedVarianceCalculator()
    calc.add_batch(sae_output=x_hat, hidden_acts=x)
    out["explained_variance"] = calc.compute()
    out["l0"] = (f != 0).sum(-1).float().mean().item()
    out["mse"] = (x - x_hat).pow(2).sum(-1).mean().item()
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
