"""SAELens / Gemma Scope files: layout, round trips, foreign files, clear errors.

The expected layouts below are written out by hand from sae-lens 6.54.12
(``saes/sae.py`` SAEConfig.to_dict / save_model, ``saes/topk_sae.py`` TopKSAEConfig,
``saes/jumprelu_sae.py``, ``saes/gated_sae.py``, ``saes/transcoder.py``). The live
interoperability check against SAELens itself is ``benchmarks/check_saelens_interop.py``
(run in a separate venv; our runtime does not depend on sae_lens).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jinterp import sae
from jinterp.sae import io

D_IN, D_SAE = 6, 16
BASE_KEYS = {"architecture", "d_in", "d_sae", "dtype", "device", "apply_b_dec_to_input",
             "normalize_activations", "reshape_activations", "metadata"}
CASES = {  # ours -> (SAELens architecture, extra cfg keys, tensor name -> shape)
    "relu": ("standard", set(), {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_IN),
                                 "b_dec": (D_IN,)}),
    "topk": ("topk", {"k", "rescale_acts_by_decoder_norm"},
             {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,)}),
    "jumprelu": ("jumprelu", set(), {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,),
                                     "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,),
                                     "threshold": (D_SAE,)}),
    "batchtopk": ("jumprelu", set(), {"W_enc": (D_IN, D_SAE), "b_enc": (D_SAE,),
                                      "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,),
                                      "threshold": (D_SAE,)}),
    "gated": ("gated", set(), {"W_enc": (D_IN, D_SAE), "b_gate": (D_SAE,), "r_mag": (D_SAE,),
                               "b_mag": (D_SAE,), "W_dec": (D_SAE, D_IN), "b_dec": (D_IN,)}),
}
KW = {"topk": {"k": 3}, "batchtopk": {"k": 3}, "matryoshka": {"k": 3, "matryoshka_prefixes": (4,)},
      "switch": {"k": 2, "n_experts": 4}}


def make(arch, **extra):
    cfg = sae.SAEConfig(arch, d_in=D_IN, d_sae=D_SAE, **{**KW.get(arch, {}), **extra})
    params = sae.init(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)  # numpy: jax.random compiles the PRNG per shape (~0.5 s)
    params = {k: v + 0.05 * jnp.asarray(rng.normal(size=v.shape), jnp.float32) if v.ndim < 2
              else v for k, v in params.items()}
    if arch == "jumprelu":
        params["log_threshold"] = jnp.log(jnp.linspace(0.05, 0.3, D_SAE))
    if arch in ("batchtopk", "matryoshka"):
        params["threshold"] = jnp.asarray(0.15)
    return cfg, params


X = jnp.asarray(np.random.default_rng(3).normal(size=(5, D_IN)), jnp.float32)


@pytest.mark.parametrize("arch", list(CASES))
def test_written_layout_matches_saelens(arch, tmp_path):
    cfg, params = make(arch)
    io.save_saelens(tmp_path, cfg, params, metadata={"hook_name": "blocks.3.hook_resid_post"})
    name, extra_keys, shapes = CASES[arch]
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert set(raw) == BASE_KEYS | extra_keys and raw["architecture"] == name
    assert raw["metadata"]["sae_lens_version"] == "6.54.12"
    assert raw["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert raw["apply_b_dec_to_input"] == cfg.subtract_b_dec
    assert raw["normalize_activations"] == "none"
    tensors = load_file(str(tmp_path / "sae_weights.safetensors"))
    assert {k: v.shape for k, v in tensors.items()} == shapes
    if arch == "jumprelu":
        np.testing.assert_allclose(tensors["threshold"], np.linspace(0.05, 0.3, D_SAE), rtol=1e-6)
    if arch == "batchtopk":
        np.testing.assert_allclose(tensors["threshold"], 0.15)
    if arch == "topk":
        assert raw["k"] == 3 and raw["rescale_acts_by_decoder_norm"] is False


def test_transcoder_layout(tmp_path):
    cfg, params = make("jumprelu", d_out=4)
    io.save_saelens(tmp_path, cfg, params)
    raw = json.loads((tmp_path / "cfg.json").read_text())
    assert raw["architecture"] == "jumprelu_transcoder" and raw["d_out"] == 4
    assert raw["apply_b_dec_to_input"] is False
    assert load_file(str(tmp_path / "sae_weights.safetensors"))["W_dec"].shape == (D_SAE, 4)


@pytest.mark.parametrize("arch", ["relu", "topk", "batchtopk", "jumprelu", "gated", "matryoshka",
                                  "switch"])
def test_round_trip_restores_config_and_outputs(arch, tmp_path):
    cfg, params = make(arch)
    io.save_saelens(tmp_path, cfg, params)
    cfg2, params2 = io.load_saelens(tmp_path)
    assert cfg2 == cfg and set(params2) == set(params)
    np.testing.assert_allclose(sae.forward(cfg2, params2, X)[0], sae.forward(cfg, params, X)[0],
                               rtol=1e-6)


def _write_foreign(path, cfg_dict, tensors):
    """A directory as SAELens 6.54 writes it (no jinterp metadata)."""
    path.mkdir(exist_ok=True)
    (path / "cfg.json").write_text(json.dumps(cfg_dict))
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()},
              str(path / "sae_weights.safetensors"))


def foreign_cfg(arch, **extra):
    return {"architecture": arch, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32",
            "device": "cpu", "apply_b_dec_to_input": False, "normalize_activations": "none",
            "reshape_activations": "none", "metadata": {"sae_lens_version": "6.54.12"}, **extra}


def rand_tensors(**shapes):
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}


def test_load_foreign_jumprelu_matches_saelens_semantics(tmp_path):
    t = rand_tensors(W_enc=(D_IN, D_SAE), b_enc=(D_SAE,), W_dec=(D_SAE, D_IN), b_dec=(D_IN,))
    t["threshold"] = np.linspace(0.1, 1.0, D_SAE).astype(np.float32)
    _write_foreign(tmp_path, foreign_cfg("jumprelu"), t)
    cfg, params = io.load_saelens(tmp_path)
    assert cfg.architecture == "jumprelu" and not cfg.subtract_b_dec
    x = np.asarray(X)
    pre = x @ t["W_enc"] + t["b_enc"]  # SAELens JumpReLUSAE.encode
    f_ref = np.maximum(pre, 0) * (pre > t["threshold"])
    np.testing.assert_allclose(sae.encode(cfg, params, X), f_ref, rtol=1e-5, atol=1e-6)


def test_load_foreign_topk_and_gated(tmp_path):
    t = rand_tensors(W_enc=(D_IN, D_SAE), b_enc=(D_SAE,), W_dec=(D_SAE, D_IN), b_dec=(D_IN,))
    _write_foreign(tmp_path / "t", foreign_cfg("topk", k=4, apply_b_dec_to_input=True,
                                               rescale_acts_by_decoder_norm=False), t)
    cfg, params = io.load_saelens(tmp_path / "t")
    assert cfg.architecture == "topk" and cfg.k == 4 and cfg.subtract_b_dec
    pre = (np.asarray(X) - t["b_dec"]) @ t["W_enc"] + t["b_enc"]
    f = np.asarray(sae.encode(cfg, params, X))
    for row, p in zip(f, pre):
        top = np.argsort(-p)[:4]
        np.testing.assert_allclose(row[top], np.maximum(p[top], 0), rtol=1e-5)
        assert np.count_nonzero(row) <= 4
    g = rand_tensors(W_enc=(D_IN, D_SAE), b_gate=(D_SAE,), r_mag=(D_SAE,), b_mag=(D_SAE,),
                     W_dec=(D_SAE, D_IN), b_dec=(D_IN,))
    _write_foreign(tmp_path / "g", foreign_cfg("gated", apply_b_dec_to_input=True), g)
    cfg, params = io.load_saelens(tmp_path / "g")
    assert cfg.architecture == "gated"


def test_bad_files_give_clear_errors(tmp_path):
    t = rand_tensors(W_enc=(D_IN, D_SAE), b_enc=(D_SAE,), W_dec=(D_SAE, D_IN), b_dec=(D_IN,))
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        io.load_saelens(tmp_path / "nothing")
    without_b_enc = {k: v for k, v in t.items() if k != "b_enc"}
    _write_foreign(tmp_path / "a", foreign_cfg("standard"), without_b_enc)
    with pytest.raises(ValueError, match=r"missing \['b_enc'\]"):
        io.load_saelens(tmp_path / "a")
    wide_w_dec = dict(t, W_dec=np.zeros((D_SAE, D_IN + 1)))
    _write_foreign(tmp_path / "b", foreign_cfg("standard"), wide_w_dec)
    with pytest.raises(ValueError, match=r"W_dec.*\(16, 7\).*\(16, 6\)"):
        io.load_saelens(tmp_path / "b")
    _write_foreign(tmp_path / "c", foreign_cfg("temporal"), t)
    with pytest.raises(ValueError, match="'temporal' is not supported"):
        io.load_saelens(tmp_path / "c")
    unfolded = foreign_cfg("standard", normalize_activations="expected_average_only_in")
    _write_foreign(tmp_path / "d", unfolded, t)
    with pytest.raises(ValueError, match="normalize_activations"):
        io.load_saelens(tmp_path / "d")
    cfg, params = make("relu")
    with pytest.raises(ValueError, match="missing"):
        io.save_saelens(tmp_path / "e", cfg, {k: v for k, v in params.items() if k != "b_dec"})


def test_gemma_scope_npz(tmp_path):
    t = rand_tensors(W_enc=(D_IN, D_SAE), W_dec=(D_SAE, D_IN), b_enc=(D_SAE,), b_dec=(D_IN,))
    t["threshold"] = np.full(D_SAE, 0.2, np.float32)
    np.savez(tmp_path / "params.npz", **t)
    cfg, params = io.load_gemma_scope(tmp_path)
    got = (cfg.architecture, cfg.d_in, cfg.d_sae, cfg.subtract_b_dec)
    assert got == ("jumprelu", D_IN, D_SAE, False)
    pre = np.asarray(X) @ t["W_enc"] + t["b_enc"]
    x_hat_ref = np.where(pre > 0.2, pre, 0) @ t["W_dec"] + t["b_dec"]
    np.testing.assert_allclose(sae.forward(cfg, params, X)[0], x_hat_ref, rtol=1e-5, atol=1e-5)
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in t.items() if k != "threshold"})
    with pytest.raises(ValueError, match=r"lacks \['threshold'\]"):
        io.load_gemma_scope(tmp_path / "bad.npz")
    np.savez(tmp_path / "pickled.npz", **t, extra=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="[Pp]ickle"):
        io.load_gemma_scope(tmp_path / "pickled.npz")
