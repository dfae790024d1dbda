"""Live interoperability check between `jinterp.sae.io` and SAELens (prints one JSON object).

Runs in a *separate* virtualenv that has sae-lens (our runtime never imports it)::

    python3 -m venv /tmp/saelens_venv
    /tmp/saelens_venv/bin/pip install torch==2.13.0 sae-lens jax==0.10.2 flax==0.12.8
    /tmp/saelens_venv/bin/python benchmarks/check_saelens_interop.py

Direction 1 (ours -> SAELens): random jinterp SAEs of each architecture SAELens can represent
are written with `save_saelens`, loaded with ``sae_lens.SAE.load_from_disk``, and SAELens'
``encode`` / ``forward`` are compared with ours on the same inputs.
Direction 2 (SAELens -> ours): SAELens SAEs with random weights (inference classes, plus a
BatchTopK training SAE saved with ``save_inference_model``) are saved with SAELens and loaded
with `load_saelens`; outputs are compared the same way. Pass = max abs difference < 1e-5.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import sae_lens  # noqa: E402
import torch  # noqa: E402

from jinterp import sae  # noqa: E402
from jinterp.sae import io  # noqa: E402

D_IN, D_SAE, D_OUT, N = 12, 48, 10, 32
TOL = 1e-5


def ours_random(arch: str, **kw):
    cfg = sae.SAEConfig(arch, d_in=D_IN, d_sae=D_SAE, **kw)
    params = sae.init(cfg, jax.random.key(0))
    keys = iter(jax.random.split(jax.random.key(1), 16))
    params = {k: (v + 0.1 * jax.random.normal(next(keys), v.shape)) if v.ndim == 1 else v
              for k, v in params.items()}
    if arch == "jumprelu":
        params["log_threshold"] = jnp.log(jax.random.uniform(next(keys), (D_SAE,), minval=0.05,
                                                             maxval=0.5))
    if arch in ("batchtopk", "matryoshka"):
        params["threshold"] = jnp.asarray(0.2)
    return cfg, params


def compare(cfg, params, lens_sae, x):
    with torch.no_grad():
        xt = torch.tensor(np.asarray(x))
        f_lens = lens_sae.encode(xt).numpy()
        out_lens = lens_sae.decode(lens_sae.encode(xt)).numpy()
    x_hat, f = sae.forward(cfg, params, x)
    return {"max_abs_diff_latents": float(np.max(np.abs(np.asarray(f) - f_lens))),
            "max_abs_diff_reconstruction": float(np.max(np.abs(np.asarray(x_hat) - out_lens))),
            "l0": float(np.mean(np.sum(f_lens != 0, -1)))}


def ours_to_saelens():
    cases = {
        "relu": {}, "topk": {"k": 5}, "jumprelu": {}, "gated": {}, "batchtopk": {"k": 5},
        "matryoshka": {"k": 5, "matryoshka_prefixes": (12, 24)},
        "relu_transcoder": {"d_out": D_OUT}, "jumprelu_transcoder": {"d_out": D_OUT},
    }
    x = jax.random.normal(jax.random.key(5), (N, D_IN))
    results = {}
    for name, kw in cases.items():
        arch = name.removesuffix("_transcoder")
        cfg, params = ours_random(arch, **kw)
        with tempfile.TemporaryDirectory() as tmp:
            io.save_saelens(tmp, cfg, params)
            lens_sae = sae_lens.SAE.load_from_disk(tmp)
            results[name] = {"saelens_class": type(lens_sae).__name__,
                             **compare(cfg, params, lens_sae, x)}
    return results


def _random_lens(sae_obj):
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in sae_obj.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 1.0 / np.sqrt(p.shape[0])))
            if name == "threshold":
                p.copy_(torch.rand_like(p) * 0.4 + 0.05)
    return sae_obj


def saelens_to_ours():
    from sae_lens import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        JumpReLUTranscoder,
        JumpReLUTranscoderConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
        Transcoder,
        TranscoderConfig,
    )
    from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

    lens = {
        "standard": StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "standard_no_bdec": StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                          apply_b_dec_to_input=False)),
        "topk": TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=6)),
        "jumprelu": JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "gated": GatedSAE(GatedSAEConfig(d_in=D_IN, d_sae=D_SAE)),
        "transcoder": Transcoder(TranscoderConfig(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT,
                                                  apply_b_dec_to_input=False)),
        "jumprelu_transcoder": JumpReLUTranscoder(JumpReLUTranscoderConfig(
            d_in=D_IN, d_sae=D_SAE, d_out=D_OUT, apply_b_dec_to_input=False)),
    }
    x = jax.random.normal(jax.random.key(6), (N, D_IN))
    results = {}
    for name, lens_sae in lens.items():
        _random_lens(lens_sae)
        with tempfile.TemporaryDirectory() as tmp:
            lens_sae.save_model(tmp)
            cfg, params = io.load_saelens(tmp)
            results[name] = {"jinterp_architecture": cfg.architecture.value,
                             "d_out": cfg.d_out, **compare(cfg, params, lens_sae, x)}
    # BatchTopK training SAE saved for inference -> a JumpReLU with a shared threshold.
    lens_cfg = BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=4)
    train = _random_lens(BatchTopKTrainingSAE(lens_cfg))
    train.topk_threshold = torch.tensor(0.3, dtype=torch.double)
    with tempfile.TemporaryDirectory() as tmp:
        train.save_inference_model(tmp)
        cfg, params = io.load_saelens(tmp)
        reloaded = sae_lens.SAE.load_from_disk(tmp)
        results["batchtopk_training_saved_for_inference"] = {
            "jinterp_architecture": cfg.architecture.value, **compare(cfg, params, reloaded, x)}
    return results


def main():
    out = {"sae_lens_version": sae_lens.__version__, "torch": torch.__version__,
           "ours_to_saelens": ours_to_saelens(), "saelens_to_ours": saelens_to_ours()}
    diffs = [v[key] for part in ("ours_to_saelens", "saelens_to_ours") for v in out[part].values()
             for key in ("max_abs_diff_latents", "max_abs_diff_reconstruction")]
    out["max_abs_diff"] = max(diffs)
    out["pass"] = bool(out["max_abs_diff"] < TOL)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
