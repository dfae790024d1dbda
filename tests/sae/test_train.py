"""SAE training: step vs a hand-written Adam reference, scan == loop, schedules, dead-latent
counters, data sources, normalisation folding, geometric median, exact checkpoint resume."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jinterp.sae import architectures as arch
from jinterp.sae.config import LossContext, SAEConfig
from jinterp.sae.data import ArraySource, IteratorSource, as_source
from jinterp.sae.schedule import TrainConfig, lr_factor, penalty_factor
from jinterp.sae.train_step import make_train_loop, make_train_step, train_state
from jinterp.sae.trainer import fold_norm_scale, geometric_median, train

D_IN, D_SAE = 8, 32

ALL_CONFIGS = {
    "relu": SAEConfig("relu", d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.5),
    "topk": SAEConfig("topk", d_in=D_IN, d_sae=D_SAE, k=3, aux_k=4),
    "batchtopk": SAEConfig("batchtopk", d_in=D_IN, d_sae=D_SAE, k=3, aux_k=4),
    "jumprelu": SAEConfig("jumprelu", d_in=D_IN, d_sae=D_SAE, l0_coefficient=0.1,
                          jumprelu_bandwidth=0.05, jumprelu_init_threshold=0.05),
    "gated": SAEConfig("gated", d_in=D_IN, d_sae=D_SAE, l1_coefficient=0.5),
    "matryoshka": SAEConfig("matryoshka", d_in=D_IN, d_sae=D_SAE, k=3, aux_k=4,
                            matryoshka_prefixes=(8, 16)),
    "switch": SAEConfig("switch", d_in=D_IN, d_sae=D_SAE, k=3, n_experts=4),
}


def _batches(n, batch=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, batch, D_IN)) + 0.5  # numpy: no PRNG compile
    return jnp.asarray(x, jnp.float32)


# ----------------------------------------------------------------------------- schedules
def test_schedules_match_python_reference():
    tcfg = TrainConfig(total_steps=20, lr_warmup_steps=4, lr_decay_steps=5, penalty_warmup_steps=6)
    for step in range(20):
        lr_ref = min((step + 1) / 4, 1.0, (20 - step) / 5)
        pen_ref = min(step / 6, 1.0)
        assert float(lr_factor(tcfg, jnp.int32(step))) == pytest.approx(lr_ref, abs=1e-7)
        assert float(penalty_factor(tcfg, jnp.int32(step))) == pytest.approx(pen_ref, abs=1e-7)


def test_train_config_rejects_decay_without_length():
    with pytest.raises(ValueError, match="total_steps"):
        TrainConfig(lr_decay_steps=5)


# ----------------------------------------------------------------------------- the step
def _reference_run(cfg, tcfg, params, xs, lr, b1=0.9, b2=0.999, eps=1e-8):
    """Plain Python training loop: arch loss/grad + hand-written numpy Adam (no optax); the
    architecture's own loss gradient is jitted only to keep the test fast."""
    grad_fn = jax.jit(lambda p, x, ctx: jax.value_and_grad(
        lambda q: arch.loss(cfg, q, x, ctx=ctx), has_aux=True)(p))
    params = jax.tree.map(np.asarray, params)
    mu = jax.tree.map(np.zeros_like, params)
    nu = jax.tree.map(np.zeros_like, params)
    since = np.zeros(cfg.d_sae, np.int64)
    window = -(-cfg.dead_after_tokens // xs.shape[1])
    losses = []
    for t, x in enumerate(xs):
        ctx = LossContext(penalty_scale=min(t / tcfg.penalty_warmup_steps, 1.0),
                          dead_mask=jnp.asarray(since > window))
        (value, metrics), g = grad_fn(params, x, ctx)
        g = jax.tree.map(np.asarray, arch.after_grad(cfg, params, g))
        mu = jax.tree.map(lambda m, gi: b1 * m + (1 - b1) * gi, mu, g)
        nu = jax.tree.map(lambda v, gi: b2 * v + (1 - b2) * gi * gi, nu, g)
        step_lr = lr * min((t + 1) / tcfg.lr_warmup_steps, 1.0)
        c1, c2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)  # Adam's bias corrections

        def adam(p, m, v, step_lr=step_lr, c1=c1, c2=c2):
            return p - step_lr * (m / c1) / (np.sqrt(v / c2) + eps)

        params = jax.tree.map(adam, params, mu, nu)
        params = jax.tree.map(np.asarray, arch.after_update(cfg, params, metrics))
        since = np.where(np.asarray(metrics["fired"]), 0, since + 1)
        losses.append(float(value))
    return params, losses, since


@pytest.mark.parametrize("name", ["relu", "topk"])
def test_step_matches_hand_written_adam(name):
    cfg = ALL_CONFIGS[name]
    tcfg = TrainConfig(lr_warmup_steps=2, penalty_warmup_steps=3)
    xs = _batches(3)
    state = train_state(cfg, 0, lr=1e-2, tcfg=tcfg)
    ref_params, ref_losses, ref_since = _reference_run(cfg, tcfg, state.params, xs, 1e-2)
    step = make_train_step(cfg, tcfg)
    losses = []
    for x in xs:
        state, metrics = step(state, x)
        losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for key in ref_params:
        np.testing.assert_allclose(state.params[key], ref_params[key], rtol=1e-4, atol=1e-6,
                                   err_msg=key)
    np.testing.assert_array_equal(state.steps_since_fired, ref_since)
    assert int(state.step) == 3


@pytest.mark.parametrize("name", ["relu", "batchtopk"])  # batchtopk: a threshold in after_update
def test_scan_loop_equals_step_loop(name):
    cfg = ALL_CONFIGS[name]
    tcfg = TrainConfig(total_steps=4, lr_decay_steps=2, penalty_warmup_steps=2)
    xs = _batches(4)
    stepped = train_state(cfg, 1, lr=3e-3, tcfg=tcfg)
    step = make_train_step(cfg, tcfg)
    losses = []
    for x in xs:
        stepped, m = step(stepped, x)
        losses.append(m["loss"])
    scanned, ms = make_train_loop(cfg, tcfg)(train_state(cfg, 1, lr=3e-3, tcfg=tcfg), xs)
    np.testing.assert_allclose(ms["loss"], jnp.stack(losses), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(scanned), jax.tree.leaves(stepped)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.isfinite(ms["loss"]).all()


def test_dead_latent_counter_and_fraction():
    cfg = ALL_CONFIGS["relu"]
    tcfg = TrainConfig(dead_window=2)
    state = train_state(cfg, 0, lr=1e-4, tcfg=tcfg)
    never = np.arange(D_SAE) < 5  # latents 0..4 can never fire
    params = {**state.params, "b_enc": jnp.where(never, -1e4, 0.0)}
    state = train_state(cfg, 0, lr=1e-4, tcfg=tcfg, params=params)
    step = make_train_step(cfg, tcfg)
    for t, x in enumerate(_batches(4, batch=64)):
        state, m = step(state, x)
        np.testing.assert_array_equal(np.asarray(state.steps_since_fired)[never], t + 1)
    fired = np.asarray(state.steps_since_fired) == 0
    assert fired[~never].mean() > 0.9
    assert float(m["dead_fraction"]) == pytest.approx(5 / D_SAE)  # 4 steps > window of 2


def test_same_seed_same_run_and_seed_matters():
    cfg = ALL_CONFIGS["topk"]
    xs = _batches(3)
    loop = make_train_loop(cfg)
    a, _ = loop(train_state(cfg, 7, lr=1e-3), xs)
    b, _ = loop(train_state(cfg, 7, lr=1e-3), xs)
    c, _ = loop(train_state(cfg, 8, lr=1e-3), xs)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a.params["W_enc"], c.params["W_enc"])


def test_step_rejects_wrong_batch_shape():
    cfg = ALL_CONFIGS["relu"]
    step = make_train_step(cfg, donate=False)
    with pytest.raises(ValueError, match=r"\[batch, d_in=8\].*\(4, 5\)"):
        step(train_state(cfg, 0, lr=1e-3), jnp.ones((4, 5)))


def test_transcoder_step_uses_target():
    cfg = SAEConfig("relu", d_in=D_IN, d_sae=D_SAE, d_out=4, l1_coefficient=0.1)
    x = _batches(1)[0]
    y = x[:, :4] * 2.0
    state = train_state(cfg, 0, lr=1e-2)
    state, m = make_train_step(cfg)(state, (x, y))
    expected, _ = arch.loss(cfg, train_state(cfg, 0, lr=1e-2).params, x, target=y)
    assert float(m["loss"]) == pytest.approx(float(expected), rel=1e-5)


# ----------------------------------------------------------------------------- statistics
def test_geometric_median_is_the_median_in_1d_and_optimal_in_nd():
    x1 = np.array([[0.0], [1.0], [2.0], [10.0], [100.0]], np.float32)
    assert float(geometric_median(x1, 500)[0]) == pytest.approx(2.0, abs=1e-3)
    x = np.random.default_rng(3).normal(size=(200, 5)).astype(np.float32) ** 3
    y = np.asarray(geometric_median(x, 500))
    unit = (x - y) / np.linalg.norm(x - y, axis=-1, keepdims=True)
    assert np.linalg.norm(unit.sum(0)) < 1e-2 * len(x)  # sub-gradient condition
    assert np.linalg.norm(x - y, axis=-1).sum() < np.linalg.norm(x - x.mean(0), axis=-1).sum()


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_fold_norm_scale_gives_same_latents_on_raw_inputs(name):
    cfg = ALL_CONFIGS[name]
    params = arch.init(cfg, jax.random.PRNGKey(0))
    params = {k: v + 0.1 if k.startswith("b_") else v for k, v in params.items()}
    params["b_dec"] = jnp.linspace(-1, 1, D_IN)
    s = 0.37
    folded = fold_norm_scale(cfg, params, s)
    x = _batches(1, batch=32)[0] * 3.0
    forward = jax.jit(arch.forward, static_argnums=0)
    x_hat, f = forward(cfg, params, x * s)
    x_hat_raw, f_raw = forward(cfg, folded, x)
    np.testing.assert_allclose(f_raw, f, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x_hat_raw, x_hat / s, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- data sources
def test_array_source_epochs_cover_every_row_once_and_resume(tmp_path):
    rows = np.arange(103 * 2, dtype=np.float32).reshape(103, 2)  # row id = first column / 2
    src = ArraySource(rows, batch_size=10, seed=1, chunk_rows=7, buffer_chunks=3)
    it = src.batches(0)
    epoch = np.concatenate([next(it) for _ in range(src.batches_per_epoch)])
    ids = epoch[:, 0] / 2
    assert len(set(ids)) == 100 and set(ids) <= set(range(103))  # 3 rows dropped, no repeats
    assert not np.array_equal(ids, np.sort(ids))  # shuffled
    later = [next(it) for _ in range(13)]  # into epoch 2
    resumed = src.batches(src.batches_per_epoch + 5)
    for want in later[5:]:
        np.testing.assert_array_equal(next(resumed), want)
    again = ArraySource(rows, batch_size=10, seed=1, chunk_rows=7, buffer_chunks=3).batches(0)
    np.testing.assert_array_equal(next(again), epoch[:10])


def test_array_source_reads_npy_files_like_the_concatenation(tmp_path):
    rows = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", rows[:20])
    np.save(tmp_path / "b.npy", rows[20:].reshape(5, 6, 3))  # [seq, pos, d] is flattened
    files = ArraySource([tmp_path / "a.npy", str(tmp_path / "b.npy")], 8, seed=2, chunk_rows=9)
    whole = ArraySource(rows, 8, seed=2, chunk_rows=9)
    for a, b, _ in zip(files.batches(3), whole.batches(3), range(10)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="share d_in"):
        ArraySource([rows, rows[:, :2]], 8)


def test_iterator_source_rebatches_and_skips_on_resume():
    chunks = [np.full((3, 2, 4), i, np.float32) for i in range(5)]  # 6 rows each
    src = as_source(lambda: iter(chunks), 4, d_in=4)
    assert isinstance(src, IteratorSource)
    got = list(src.batches(0))
    assert len(got) == 7 and all(b.shape == (4, 4) for b in got)
    np.testing.assert_array_equal(np.concatenate(got)[:, 0], np.repeat(np.arange(5), 6)[:28])
    for a, b in zip(src.batches(2), got[2:]):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- the driver
TRAIN_CFG = SAEConfig("topk", d_in=D_IN, d_sae=D_SAE, k=3, aux_k=4, dead_after_tokens=64)
TRAIN_TCFG = TrainConfig(total_steps=12, lr_decay_steps=4, penalty_warmup_steps=2)


def _train(out_dir, steps, data, **kw):
    return train(TRAIN_CFG, data, steps, lr=1e-2, tcfg=TRAIN_TCFG, batch_size=16, seed=4,
                 out_dir=out_dir, progress=False, **kw)


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    data = (np.random.default_rng(5).normal(size=(300, D_IN)) * 4 + 1).astype(np.float32)
    kw = dict(checkpoint_every=4, steps_per_call=2)
    full = _train(tmp_path / "full", 12, data, **kw)
    _train(tmp_path / "cut", 8, data, **kw)  # "crashes" after step 8
    resumed = _train(tmp_path / "cut", 12, data, **kw)
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(a, b)

    def curve(d):
        return [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]

    assert curve(tmp_path / "full") == curve(tmp_path / "cut")
    assert [r["step"] for r in curve(tmp_path / "full")] == list(range(1, 13))
    assert full.history == curve(tmp_path / "full")


def test_train_normalises_inits_b_dec_and_folds(tmp_path):
    data = (np.random.default_rng(6).normal(size=(256, D_IN)) * 5 + 3).astype(np.float32)
    result = _train(None, 12, data, init_batches=2)
    sample = np.concatenate(list(zip(*zip(range(2), ArraySource(data, 16, seed=4).batches(0))))[1])
    scale = np.sqrt(D_IN / np.mean(np.sum(sample.astype(np.float64) ** 2, -1)))
    assert float(result.state.norm_scale) == pytest.approx(scale, rel=1e-5)
    fresh = _train(None, 0, data, init_batches=2).state
    np.testing.assert_allclose(fresh.params["b_dec"], geometric_median(sample * scale), rtol=1e-5)
    x = data[:32]
    _, f = arch.forward(TRAIN_CFG, result.state.params, x * scale)
    _, f_raw = arch.forward(TRAIN_CFG, result.params, x)
    np.testing.assert_allclose(f_raw, f, rtol=1e-4, atol=1e-4)
    losses = [r["mse"] for r in result.history]
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])  # it learns
    # mse is in normalised units; mse_raw and fvu are the first batch's, in raw units
    batch0 = next(ArraySource(data, 16, seed=4).batches(0))
    x_hat, _ = arch.forward(TRAIN_CFG, fold_norm_scale(TRAIN_CFG, fresh.params, scale), batch0)
    raw = np.mean(np.sum((batch0 - np.asarray(x_hat)) ** 2, -1))
    assert result.history[0]["mse_raw"] == pytest.approx(raw, rel=1e-4)
    assert result.history[0]["mse"] == pytest.approx(raw * scale ** 2, rel=1e-4)
    var = np.mean(np.sum((batch0 - batch0.mean(0)) ** 2, -1))
    assert result.history[0]["fvu"] == pytest.approx(raw / var, rel=1e-4)
