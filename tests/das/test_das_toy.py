"""DAS on toy MLPs: a hand-built model with a planted variable, and one trained in-process.

One model shape serves both (``CONFIG``), so the planted and the trained runs share their
compiled programs. The task is :mod:`jinterp.das.tasks` with the ``BOTH`` readout: output
``2 V1 + V2`` with ``V1 = (a == b)``, ``V2 = (c == d)``; we align ``V1``.
"""

import functools

import jax
import numpy as np

import jinterp
from jinterp import das
from jinterp.das import tasks, toy

CONFIG = toy.ToyConfig(n_slots=4, n_values=4, n_layers=1, d_model=18, d_mlp=16, n_classes=4)
MODEL = toy.ToyMLP(CONFIG)
HOOK = "blocks.0.hook_resid_post"
DAS = das.DASConfig(hook=HOOK, n_dims=1, steps=150, batch_size=128, lr=2e-2)
BOUNDLESS = das.DASConfig(hook=HOOK, boundless=True, steps=250, batch_size=128, lr=2e-2)


def tokens(values):
    return np.asarray(toy.encode(values, CONFIG))


@functools.lru_cache(maxsize=None)
def data(seed: int):
    """Training and held-out counterfactual pairs for V1 (as tokens) and their labels."""
    rng = np.random.default_rng(seed)
    out = []
    for n in (1024, 512):
        cf = tasks.interchange_data(rng, n, CONFIG.n_values, "V1", tasks.Readout.BOTH)
        out.append((tokens(cf.base), tokens(cf.source), cf.label, cf.base_label))
    return out


@functools.lru_cache(maxsize=None)
def trained():
    rng = np.random.default_rng(0)
    x = tasks.sample_inputs(rng, 1024, CONFIG.n_values)
    y = tasks.causal_model(x, tasks.Readout.BOTH)[2]
    params, losses = toy.train_toy(MODEL, tokens(x), y, toy.ToyTrainConfig(steps=600))
    return params, np.asarray(losses)


def score(params, basis, hook=HOOK, split=1):
    base, source, label, _ = data(0)[split]
    return das.iia(MODEL, params, base, source, label, basis, hook=hook)


def test_the_planted_model_computes_the_task_and_its_variable_is_its_direction():
    params, u = toy.planted_params(CONFIG, jax.random.key(7))
    x = tasks.all_inputs(CONFIG.n_values)
    v1, v2, y = tasks.causal_model(x, tasks.Readout.BOTH)
    logits, cache = jinterp.run_with_cache(MODEL, params, tokens(x), names=[HOOK])
    assert (np.asarray(logits[:, -1]).argmax(-1) == y).all()
    h = np.asarray(cache[HOOK][:, 0])
    np.testing.assert_allclose(h @ np.asarray(u).T, np.stack([v1, v2], 1), atol=1e-5)
    # The interchange on u1 is the causal model's interchange on V1; on u2 it swaps V2 instead.
    assert score(params, u[:1]) == 1.0
    base, source, label, base_label = data(0)[1]
    assert 0.4 < np.mean(label == base_label) < 0.6  # chance: the null intervention's IIA
    assert score(params, u[1:]) < 0.6
    assert score(params, das.random_basis(jax.random.key(3), 18, 1)) < 0.65


def test_das_recovers_the_planted_direction():
    params, u = toy.planted_params(CONFIG, jax.random.key(7))
    base, source, label, _ = data(0)[0]
    result = das.train_das(MODEL, params, base, source, label, DAS)
    cos = np.abs(np.asarray(result.basis @ u.T))[0]  # |cos| with u1, u2
    assert cos[0] > 0.99 and cos[1] < 0.05, cos
    assert score(params, result.basis) == 1.0
    assert result.losses[-10:].mean() < 0.1 * result.losses[:5].mean()


def test_das_on_a_trained_model_finds_the_variable_and_a_random_subspace_does_not():
    params, losses = trained()
    x = tasks.sample_inputs(np.random.default_rng(1), 512, CONFIG.n_values)
    y = tasks.causal_model(x, tasks.Readout.BOTH)[2]
    assert (np.asarray(MODEL(params, tokens(x))[:, -1]).argmax(-1) == y).mean() > 0.99
    base, source, label, _ = data(0)[0]
    result = das.train_das(MODEL, params, base, source, label, DAS)
    assert score(params, result.basis) >= 0.9
    assert score(params, das.random_basis(jax.random.key(1), 18, 1)) <= 0.65
    # In the embedding the variable does not exist yet: one direction there cannot carry it
    # (the QR parametrisation here, so both are trained somewhere).
    embed = das.train_das(MODEL, params, base, source, label,
                          das.DASConfig(hook="hook_embed", n_dims=1, steps=150, lr=2e-2,
                                        parametrisation="qr"))
    assert score(params, embed.basis, hook="hook_embed") <= 0.7


def test_boundless_das_finds_a_small_subspace():
    params, _ = trained()
    base, source, label, _ = data(0)[0]
    result = das.train_das(MODEL, params, base, source, label, BOUNDLESS)
    assert result.size is not None and result.n_dims <= 3, (result.size, result.sizes[::25])
    assert result.sizes[0] > 8  # it started at half of d = 18 and shrank
    assert score(params, result.basis) >= 0.9
