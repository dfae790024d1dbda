"""Tests of the reading study: its inputs against Python references, bad input, and the fast
CLI run end to end (files, and the summary's numbers agreeing with each other and with the
structure the induction model is trained to have)."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jinterp.experiments.reading import cli, data, plots
from jinterp.experiments.reading.study import StudyConfig


def test_labels_and_contrast_prompts_match_python_references():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 5, (3, 12)).astype(np.int32)
    previous = np.asarray(data.previous_tokens(jnp.asarray(tokens)))
    for b in range(3):
        for t in range(12):
            assert previous[b, t] == tokens[b, max(t - 1, 0)]
    prompts = data.contrast_prompts(1, 20, half_len=6, answer_at=2, batch=8, answer=3,
                                    avoid=(4,))
    assert prompts.shape == (8, 9)
    for row in prompts:
        r = row[:6]
        assert len(set(r.tolist())) == 6 and 4 not in row  # distinct, avoided token absent
        np.testing.assert_array_equal(row[6:], r[:3])
        last = row[-1]
        assert np.flatnonzero(row[:-1] == last).tolist() == [2]  # one earlier occurrence
        assert row[3] == 3 and (row == 3).sum() == 1  # the induction answer, only there


def test_bad_inputs_raise_with_the_fix():
    with pytest.raises(ValueError, match="answer_at must lie"):
        data.contrast_prompts(0, 20, half_len=6, answer_at=5, batch=2, answer=0, avoid=())
    with pytest.raises(ValueError, match="fewer than"):
        data.contrast_prompts(0, 6, half_len=6, answer_at=2, batch=2, answer=0, avoid=(1,))
    fast = StudyConfig.fast()
    with pytest.raises(ValueError, match="norm.data must equal"):
        StudyConfig(induction=fast.induction,
                    norm=StudyConfig.full().norm)
    with pytest.raises(ValueError, match="probe_half_len"):
        StudyConfig(induction=fast.induction, norm=fast.norm, probe_half_len=20, window=20)


def test_cli_refuses_checkpoints_of_another_training_config(tmp_path):
    out = str(tmp_path)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"induction": {"n_steps": 1}, "norm": {}}, f)
    with pytest.raises(SystemExit, match="different training configuration"):
        cli.main(["--out", out, "--fast", "--no-progress"])


def test_fast_study_writes_every_figure_and_a_consistent_summary(tmp_path):
    out = str(tmp_path / "run")
    summary = cli.main(["--out", out, "--fast", "--no-progress"])
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f) == json.loads(json.dumps(summary))
    assert summary["figures"] == [f"{name}.png" for name in plots.FIGURES]
    for name in summary["figures"]:
        size = os.path.getsize(os.path.join(out, name))
        assert 5_000 < size < 150_000, (name, size)

    # Direct logit attribution: the components add up to the logit, and on repeated tokens an
    # induction head (layer 1, high prefix-matching score) writes the most.
    dla, comp = summary["dla"], summary["composition"]
    assert dla["sum_max_abs_error"] < 1e-4
    assert math.isclose(sum(dla["repeated"]), dla["target_logit_repeated"], abs_tol=1e-3)
    top = dla["top_head_repeated"]
    assert top.startswith("L1H")
    assert comp["induction_scores"][1][int(top[3:])] > 0.4
    assert dla["target_logit_repeated"] > dla["target_logit_first_occurrence"] + 1.0

    # Logit lens: repeated targets become predictable only at the output; first occurrences
    # stay near ln(d_vocab) everywhere.
    ln_vocab = summary["ln_vocab"]
    lens = summary["logit_lens"]["induction"]
    assert lens["loss_repeated"][-1] < ln_vocab - 1.0 < lens["loss_repeated"][0]
    assert min(lens["loss_first_occurrence"]) > ln_vocab - 0.5
    tuned = summary["tuned_lens"]
    assert all(t <= l + 1e-3 for t, l in zip(tuned["tuned_kl"], tuned["logit_kl"]))

    # Probes: the previous token is decodable after layer 0 (the previous-token head), not from
    # the embeddings; the control task stays near chance.
    prev = summary["probes"]
    assert prev["test_by_layer"][1] > prev["test_by_layer"][0] + 0.2
    assert prev["selectivity_by_layer"][1] > 0.2 and max(prev["control_by_layer"]) < 0.3
    np.testing.assert_allclose(np.subtract(prev["test_by_layer"], prev["control_by_layer"]),
                               prev["selectivity_by_layer"], atol=2e-4)

    # Steering: the direction read after layer 1 carries the answer (ablating it removes the
    # A-vs-B separation, adding it flips B-prompts to A); random directions do neither.
    st = summary["steering"]
    assert st["ablated_separation_fraction"][-1] < 0.3
    assert st["random_separation_fraction_mean"] > 0.7
    assert st["steered_flipped"][-1][st["scales"].index(1.0)] > 0.5
    assert max(st["random_steered_flipped"]) < 0.2
    assert st["steered_flipped"][-1][st["scales"].index(0.0)] == 0.0

    # Composition: the factored all-pairs scores equal the formula's direct reference.
    assert comp["k_composition_max_abs_diff_vs_reference"] < 1e-5
    assert min(min(row) for row in comp["copying_scores"][1:]) > 0.5

    # Weight processing keeps the log-probs, and processed weights make DLA add up. Without
    # processing the sum misses ln_final's weight and bias: the fast run's LayerNorm model is
    # at its initialisation (w = 1, b = 0), where there is nothing to miss.
    wp = summary["weight_processing"]
    assert max(wp["max_abs_logprob_diff"]) < 1e-5 and wp["process_max_abs_logprob_diff"] < 1e-5
    err = wp["dla_sum_max_abs_error"]
    assert err["processed"] < 1e-4
    if wp["ln_final_distance_from_identity"] > 1e-2:
        assert err["unprocessed"] > 100 * err["processed"]
    else:
        assert err["unprocessed"] < 1e-4
