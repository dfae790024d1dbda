"""The circuit study: the fast pipeline end to end on the planted circuit, and its pieces."""

import json
import os

import jax
import numpy as np
import pytest

import jinterp
from jinterp.experiments.circuits import cli, localise, planted, task
from jinterp.experiments.circuits.config import CircuitConfig

# The fast study's shapes and PRNG (batch 16, r of 7 tokens, rbg keys), so the tests share its
# compiled programs.
FAST = CircuitConfig.fast()


def _prompts(seed: int):
    return task.make_prompts(jax.random.key(seed, impl="rbg"), 16, FAST.half_len, FAST.batch)


def test_metric_is_zero_on_corrupted_and_one_on_clean_and_matches_a_loop():
    model, params = planted.planted_model(d_vocab=16, n_ctx=16)
    clean, corrupted = _prompts(0)
    np.testing.assert_array_equal(clean[:, :7], clean[:, 7:])  # r r
    np.testing.assert_array_equal(corrupted[:, 7:], clean[:, 7:])  # r' r: same second copy
    assert (np.asarray(corrupted[:, :7]) != np.asarray(clean[:, :7])).any()
    metric = task.make_metric(model, params, clean, corrupted, 7)
    assert float(metric(model(params, clean))) == pytest.approx(1.0, abs=1e-6)
    assert float(metric(model(params, corrupted))) == pytest.approx(0.0, abs=1e-6)
    logits = np.asarray(model(params, clean), np.float64)
    losses = []
    for b in range(16):  # the second copy's predictable targets, one at a time
        for q in range(7, 13):
            logp = logits[b, q] - np.log(np.exp(logits[b, q]).sum())
            losses.append(-logp[int(clean[b, q + 1])])
    assert float(metric.clean) == pytest.approx(np.mean(losses), rel=1e-5)
    with pytest.raises(ValueError, match="no induction to localise"):
        task.make_metric(model, params, clean, clean, 7)


def test_planted_model_has_the_planted_attention():
    model, params = planted.planted_model(d_vocab=16, n_ctx=16)
    clean, _ = _prompts(1)
    _, cache = jinterp.run_with_cache(model, params, clean)
    prev = np.asarray(cache["blocks.0.attn.hook_pattern"])[:, 0]  # batch q k
    assert prev[:, np.arange(1, 14), np.arange(0, 13)].mean() > 0.99
    ind = np.asarray(cache["blocks.1.attn.hook_pattern"])[:, 0]
    q = np.arange(7, 14)
    assert ind[:, q, q - 6].mean() > 0.6  # the token after the earlier occurrence


def test_rank_correlation_against_a_reference():
    a = np.array([0.1, 0.5, 0.3, 0.3, 0.9])
    b = np.array([1.0, 3.0, 2.0, 2.5, 4.0])
    ra = np.array([0, 3, 1.5, 1.5, 4])  # ties share their mean rank
    rb = np.array([0, 3, 1, 2, 4])
    want = np.corrcoef(ra, rb)[0, 1]
    assert localise.rank_correlation(a, b) == pytest.approx(want)
    assert localise.rank_correlation(a, -a) == pytest.approx(-1.0)


def test_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="2 <= 2 \\* half_len < n_ctx=64"):
        CircuitConfig.full().__class__(train=CircuitConfig.full().train, half_len=32)
    with pytest.raises(ValueError, match="batch must be >= 1"):
        CircuitConfig(batch=0)


def test_fast_study_end_to_end_finds_the_planted_circuit(tmp_path):
    out = str(tmp_path / "run")
    summary = cli.main(["--out", out, "--fast", "--no-progress"])
    with open(os.path.join(out, "summary.json")) as f:
        on_disk = json.load(f)
    assert on_disk == summary
    checks = on_disk["checks"]
    # the planted circuit: L0H0 (previous token) -> L1H0's key (induction); head 1s distract
    assert checks["induction_heads_found_by_patching"] is True
    assert checks["induction_heads_by_patching"] == checks["induction_heads_by_attention"] == [0]
    assert checks["previous_token_head_found"] is True
    assert checks["previous_token_head_by_path_patching"] == [0, 0]
    assert checks["k_path_dominates"] is True
    assert checks["path_effect_prev_to_induction_k"] > 0.5
    assert abs(checks["path_effect_prev_to_induction_q"]) < 0.05
    assert checks["circuit_contains_k_edge"] is True
    assert 0.9 < checks["faithfulness"] <= 1.05
    assert checks["sweeps_match_direct_patches"] is True
    acdc = on_disk["discovery"]["acdc"]
    assert ["a0.0", "a1.0<k"] in acdc["edges"] and ["a1.0", "final"] in acdc["edges"]
    assert acdc["n_edges"] == len(acdc["edges"]) < acdc["n_total"]
    assert acdc["faithfulness"] == pytest.approx(acdc["search"]["faithfulness"], abs=1e-3)
    assert np.array(on_disk["denoising"]["resid_pre"]).shape == (2, 14)
    assert np.array(on_disk["path_patching"]["into_k"]).shape == (2, 2)
    # every figure listed exists, is non-empty and is linked from the report
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    for key, name in on_disk["figures"].items():
        assert os.path.getsize(os.path.join(out, name)) > 2000, key
        assert f"({name})" in report, key
    assert {"patterns", "viewer", "resid_pre", "noising_cost", "paths",
            "circuit_acdc"} <= set(on_disk["figures"])
    assert "| `circuit_contains_k_edge` | yes |" in report
    with pytest.raises(SystemExit, match="different training configuration"):
        cli.main(["--out", out, "--fast", "--seed", "1", "--no-progress"])
