"""Compressed Tracr models and dictionary scoring: the fold is exact, training keeps a program
at full width, and SAE / probe scores clear floors measured on frac_prevs (with margin).

Measured (this machine): full-width training reaches accuracy 1.0 in 150 steps (0.998 in
100; the test runs 200, loss down to 6e-4 of its start at 150); the SAE (1500 steps, seeds
0-4) has mean max |cos| 0.61-0.66 on the original residual (a random decoder of the same
size: 0.47) and finds the numerical ``frac_prevs`` direction at |cos| 0.81-0.99; the
one-hot categorical directions it mostly does not (see dictionary.py).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jinterp
from jinterp.experiments.tracr.programs import compiled

pytest.importorskip("tracr.compiler.compiling")

from jinterp.experiments.tracr import dictionary  # noqa: E402
from jinterp.experiments.tracr.compressed import (  # noqa: E402
    compressed_logits,
    compressed_port,
    train_compression,
)


@pytest.fixture(scope="module")
def frac():
    c = compiled("frac_prevs")
    tokens = c.io.encode(c.spec.domain())
    mask = c.io.attention_mask(tokens)
    logits, _ = jinterp.run_with_cache(c.model, c.params, tokens, names=[], attention_mask=mask)
    return c, tokens, mask, logits


def test_identity_and_orthogonal_fold_equal_the_original(frac):
    c, tokens, mask, logits = frac
    D = c.model.d_model
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(D, D)))
    for w in (np.eye(D), q):
        got = compressed_logits(c.model, c.params, jnp.asarray(w, jnp.float32), tokens, mask)
        np.testing.assert_allclose(got, logits, atol=1e-4)
    # a non-orthogonal square w changes the model (the fold is not vacuous)
    w = np.eye(D) + 0.3 * np.random.default_rng(1).normal(size=(D, D))
    got = compressed_logits(c.model, c.params, jnp.asarray(w, jnp.float32), tokens, mask)
    assert float(jnp.abs(got - logits).max()) > 1e-2
    model_c, params_c = compressed_port(c.model, c.params, jnp.ones((5, D)))
    assert model_c.d_model == 5 and params_c["embed"]["W_E"].shape[1] == 5
    assert params_c["blocks"]["attn"]["W_Q"].shape[2] == 5


def test_wrong_w_shape_names_both_shapes(frac):
    c = frac[0]
    with pytest.raises(ValueError, match=r"\[d, 12\].*\(4, 7\)"):
        compressed_port(c.model, c.params, jnp.ones((4, 7)))


def test_full_width_training_keeps_the_program(frac):
    c = frac[0]
    r = train_compression(c.model, c.params, c.io, c.spec.domain(), c.model.d_model,
                          steps=200, seed=0)
    assert r.accuracy == 1.0
    assert r.losses[-1] < 0.05 * r.losses[0]


def test_direction_recovery_on_planted_decoders():
    rng = np.random.default_rng(0)
    dirs = np.eye(10)[[0, 2, 3, 7]]
    perm = np.eye(10)[rng.permutation(10)] * rng.choice([-1.0, 1.0], size=(10, 1))
    r = dictionary.direction_recovery(perm * 3.0, dirs)
    assert r["recovered"] == 1.0 and r["mean_max_cos"] == pytest.approx(1.0)
    rand = dictionary.direction_recovery(rng.normal(size=(10, 10)), dirs)
    assert rand["recovered"] == 0.0 and rand["mean_max_cos"] < 0.7
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(4, 10\)"):
        dictionary.direction_recovery(np.ones((3, 5)), dirs)


def test_sae_and_probes_on_the_original_residual(frac):
    c = frac[0]
    labels = c.io.residual_labels
    resid = dictionary.residual_rows(c.model, c.params, c.io, c.spec.domain())
    idx = dictionary.varying(resid, labels)
    # RASP numbers its variables process-wide (frac_prevs_1, map_3 in a fresh process)
    frac_label = next(label for label in labels if label.startswith("frac_prevs"))
    assert "one" not in [labels[i] for i in idx] and frac_label in [labels[i] for i in idx]
    dirs = np.eye(len(labels))[idx]
    k = int(np.max(np.sum(np.abs(resid) > 1e-4, axis=1)))
    s = dictionary.sae_recovery(resid, dirs, d_sae=len(idx) + 1, k=k, steps=1500, seed=0)
    noise = np.random.default_rng(0).normal(size=(len(idx) + 1, 12))
    rand = dictionary.direction_recovery(noise, dirs)
    assert s["fvu"] < 0.05
    assert s["mean_max_cos"] > 0.58 > rand["mean_max_cos"] + 0.05
    assert s["max_cos"][[labels[i] for i in idx].index(frac_label)] > 0.75
    values = dictionary.variable_values(resid, labels)
    assert set(values) - {"tokens", "indices"} == {frac_label, next(
        v for v in values if v.startswith("map_"))}
    p = dictionary.probe_recovery(resid, values)
    assert p["mean_accuracy"] == 1.0
    assert all(v["accuracy"] > v["chance"] + 0.5 for v in p["variables"].values()
               if v["kind"] == "categorical")
    squeeze = np.random.default_rng(0).normal(size=(12, 2))
    squeezed = dictionary.probe_recovery(resid @ squeeze, values)
    assert squeezed["mean_accuracy"] < 0.95  # two random dimensions cannot hold 7 one-hots
